// Helpers for the upstream client tests: temporary directories, child
// processes, a test PKI made with the openssl CLI, and loop driving.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

#include "appliance/upstream/client.h"

struct ev_loop;

namespace gatecache::upstream::testing {

// A directory under /tmp, removed with its contents on destruction.
class TempDir {
public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir &) = delete;
  TempDir &operator=(const TempDir &) = delete;

  const std::string &path() const { return path_; }

private:
  std::string path_;
};

// A child process, stopped with SIGTERM and reaped on destruction.
class ChildProcess {
public:
  // Starts `argv`; stdout is kept readable through `read_line()` when
  // `capture_stdout` is set, else it goes with stderr to `log_path`.
  ChildProcess(const std::vector<std::string> &argv,
               const std::string &log_path, bool capture_stdout);
  ~ChildProcess();
  ChildProcess(const ChildProcess &) = delete;
  ChildProcess &operator=(const ChildProcess &) = delete;

  bool running() const { return pid_ > 0; }

  // Reads one line of the child's stdout, waiting up to `max_wait_s`.
  std::optional<std::string> read_line(double max_wait_s);

private:
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string pending_;
};

// Runs `argv` to completion with output to `log_path`; returns true on
// exit status 0.
bool run_command(const std::vector<std::string> &argv,
                 const std::string &log_path);

// A CA and a server certificate for localhost, 127.0.0.1 and ::1.
struct TestPki {
  std::string ca_cert;
  std::string server_cert;
  std::string server_key;
};

// Creates the PKI under `dir` with the openssl CLI.
std::optional<TestPki> make_test_pki(const std::string &dir);

// Returns a TCP port on 127.0.0.1 that was free a moment ago.
uint16_t find_free_port();

// Polls until something accepts TCP connections on 127.0.0.1:`port`, up to
// `max_wait_s`. This waits for a server to start; it measures nothing.
bool wait_for_port(uint16_t port, double max_wait_s);

// Runs `loop` until `done()` holds or `max_wait_s` passes (a guard against
// a hung test, never the condition under test). Returns `done()`.
bool run_until(struct ev_loop *loop, const std::function<bool()> &done,
               double max_wait_s = 30);

// Records every callback of one response.
class RecordingHandler : public ResponseHandler {
public:
  void on_head(const ResponseHead &head) override;
  bool on_data(const uint8_t *data, size_t size) override;
  void on_complete(std::optional<Error> error) override;

  bool finished() const { return completions > 0; }

  std::optional<ResponseHead> head;
  std::string body;
  std::optional<Error> error;
  int heads = 0;
  int data_calls = 0;
  int completions = 0;
  // Called at the first body chunk, when set.
  std::function<void()> on_first_data;
};

// Returns the lower-case hex SHA-256 of `data`.
std::string sha256_hex(const std::string &data);

} // namespace gatecache::upstream::testing
