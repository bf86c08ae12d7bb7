// Test fixtures of the admin endpoint: a libev loop on its own thread, a
// temporary directory, a `StatusSource` test double, a handler that echoes
// requests, and a raw HTTP/1.1 client over Unix or TCP sockets.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <ev.h>
#include <nlohmann/json.hpp>

#include "appliance/admin/api.h"
#include "appliance/admin/server.h"

namespace gatecache::admin::test {

// Upper bound on any wait of a test, so that a bug fails the test instead
// of hanging it. No test measures time.
inline constexpr double SafetyTimeoutS = 20;

// A directory under $TMPDIR (or /tmp), removed with its contents.
class TempDir {
public:
  TempDir();
  ~TempDir();

  const std::string &path() const { return path_; }

private:
  std::string path_;
};

// A libev loop running on its own thread.
class LoopThread {
public:
  LoopThread();
  ~LoopThread();

  struct ev_loop *loop() const {
    return loop_;
  }

  // Runs `task` on the loop thread and waits for it to return.
  void call(const std::function<void()> &task);

private:
  static void on_async(struct ev_loop *loop, ev_async *watcher, int events);

  struct ev_loop *loop_;
  ev_async async_;
  std::mutex mutex_;
  std::vector<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::thread thread_;
};

// Polls `condition` until it is true or the safety timeout passes. Returns
// its last value.
bool wait_until(const std::function<bool()> &condition);

// `StatusSource` with fixed answers that records its calls. Loop thread
// only, except before the server starts and after it stops.
class FakeSource final : public StatusSource {
public:
  nlohmann::json status() override;
  nlohmann::json pulls(const std::string &client_ip, double since,
                       size_t limit) override;
  std::string metrics() override;
  Result<uint64_t> start_prewarm(const nlohmann::json &sets) override;
  std::optional<nlohmann::json> prewarm_job(uint64_t id) override;

  void start_scrub() override { ++scrubs_started; }

  // Calls of `start_scrub()`.
  int scrubs_started = 0;
  // Arguments of the last `pulls()` call.
  std::string pulls_client;
  double pulls_since = -1;
  size_t pulls_limit = 0;
  // Sets of every `start_prewarm()` call, in order. Job ids start at 1.
  std::vector<nlohmann::json> started;
  // When set, `start_prewarm()` fails with it.
  std::optional<Error> start_error;
  // When true, `status()` throws.
  bool throw_in_status = false;
  // Jobs by id for `prewarm_job()`.
  std::map<uint64_t, nlohmann::json> jobs;
  // When not empty, `prewarm_job()` returns these for any id, one per
  // call, and repeats the last one.
  std::vector<nlohmann::json> job_sequence;
  size_t job_calls = 0;
};

// Example status object in the documented schema.
nlohmann::json example_status();

// Handler that replies with the request's fields as JSON:
// {"method","path","query","body","peer","local_socket"}. Requests for
// /hold are kept unanswered in `held` until the test replies through
// `reply_held()`.
class EchoHandler final : public AdminHandler {
public:
  void handle(const AdminRequest &request,
              std::function<void(AdminResponse)> reply) override;

  // Loop thread only.
  std::vector<std::function<void(AdminResponse)>> held;
  int handled = 0;
};

// A real server with `handler` on a Unix socket in a temporary directory
// and on 127.0.0.1:0, running on its own loop.
class ServerFixture {
public:
  explicit ServerFixture(AdminHandler &handler, AdminLimits limits = {},
                         bool with_tcp = true);
  ~ServerFixture();

  const std::string &socket_path() const { return socket_path_; }

  uint16_t tcp_port() const { return tcp_port_; }

  LoopThread &loop() { return loop_; }

  AdminServer &server() { return *server_; }

  size_t connection_count();

private:
  TempDir dir_;
  LoopThread loop_;
  std::string socket_path_;
  uint16_t tcp_port_ = 0;
  std::unique_ptr<AdminServer> server_;
};

struct RawResponse {
  int status = 0;
  std::map<std::string, std::string> headers; // Lower-case names.
  std::string body;
};

// A blocking client that writes raw bytes and reads responses framed by
// Content-Length, to test what `AdminClient` never sends.
class RawClient {
public:
  // Connects to a Unix socket.
  explicit RawClient(const std::string &socket_path);
  // Connects to 127.0.0.1:`port`.
  explicit RawClient(uint16_t port);
  ~RawClient();
  RawClient(const RawClient &) = delete;
  RawClient &operator=(const RawClient &) = delete;

  bool connected() const { return fd_ >= 0; }

  void send(const std::string &bytes);
  // Shuts down the sending side, as `nc -N` does after its input.
  void finish_sending();
  // Reads the next response, with no body when it answers a HEAD request
  // (`head`). Status 0 when the connection ended first or the safety
  // timeout passed.
  RawResponse read_response(bool head = false);
  // True when the server closed the connection and sent nothing more.
  bool closed_by_server();

private:
  bool fill();

  int fd_ = -1;
  std::string buffer_;
};

// Builds a request with a Host field and, when `body` is set, a
// Content-Length.
std::string make_request(const std::string &method, const std::string &target,
                         const std::string &body = "",
                         const std::string &extra_headers = "");

} // namespace gatecache::admin::test
