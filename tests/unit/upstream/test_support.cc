#include "test_support.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <arpa/inet.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

namespace gatecache::upstream::testing {

namespace {

pid_t spawn(const std::vector<std::string> &argv, int stdout_fd,
            int stderr_fd) {
  pid_t pid = fork();
  if (pid != 0) {
    return pid;
  }
  dup2(stdout_fd, STDOUT_FILENO);
  dup2(stderr_fd, STDERR_FILENO);
  int null_fd = open("/dev/null", O_RDONLY);
  dup2(null_fd, STDIN_FILENO);
  std::vector<char *> args;
  for (const std::string &arg : argv) {
    args.push_back(const_cast<char *>(arg.c_str()));
  }
  args.push_back(nullptr);
  execv(args[0], args.data());
  _exit(127);
}

double monotonic_s() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<double>(now.tv_sec) + now.tv_nsec / 1e9;
}

} // namespace

TempDir::TempDir() {
  char pattern[] = "/tmp/gatecache-upstream-XXXXXX";
  const char *made = mkdtemp(pattern);
  path_ = made != nullptr ? made : "";
}

TempDir::~TempDir() {
  std::error_code ignored;
  if (!path_.empty()) {
    std::filesystem::remove_all(path_, ignored);
  }
}

ChildProcess::ChildProcess(const std::vector<std::string> &argv,
                           const std::string &log_path, bool capture_stdout) {
  int log_fd =
      open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  int out_fd = log_fd;
  int pipe_fds[2] = {-1, -1};
  if (capture_stdout && pipe2(pipe_fds, O_CLOEXEC) == 0) {
    out_fd = pipe_fds[1];
    stdout_fd_ = pipe_fds[0];
  }
  pid_ = spawn(argv, out_fd, log_fd);
  if (pipe_fds[1] >= 0) {
    close(pipe_fds[1]);
  }
  close(log_fd);
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  if (stdout_fd_ >= 0) {
    close(stdout_fd_);
  }
}

std::optional<std::string> ChildProcess::read_line(double max_wait_s) {
  double deadline = monotonic_s() + max_wait_s;
  while (true) {
    size_t newline = pending_.find('\n');
    if (newline != std::string::npos) {
      std::string line = pending_.substr(0, newline);
      pending_.erase(0, newline + 1);
      return line;
    }
    double left = deadline - monotonic_s();
    if (stdout_fd_ < 0 || left <= 0) {
      return std::nullopt;
    }
    pollfd pfd{stdout_fd_, POLLIN, 0};
    int ready = poll(&pfd, 1, static_cast<int>(left * 1000) + 1);
    if (ready < 0 && errno == EINTR) {
      continue;
    }
    if (ready <= 0) {
      return std::nullopt;
    }
    char buffer[512];
    ssize_t n = read(stdout_fd_, buffer, sizeof(buffer));
    if (n <= 0) {
      return std::nullopt;
    }
    pending_.append(buffer, static_cast<size_t>(n));
  }
}

bool run_command(const std::vector<std::string> &argv,
                 const std::string &log_path) {
  int log_fd =
      open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  pid_t pid = spawn(argv, log_fd, log_fd);
  close(log_fd);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      return false;
    }
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

std::optional<TestPki> make_test_pki(const std::string &dir) {
  TestPki pki{dir + "/ca.crt", dir + "/server.crt", dir + "/server.key"};
  std::string log = dir + "/openssl.log";
  std::string ext = dir + "/server.ext";
  std::ofstream(ext) << "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n"
                        "basicConstraints=CA:FALSE\n"
                        "extendedKeyUsage=serverAuth\n";
  const std::string openssl = "/usr/bin/openssl";
  bool ok =
      run_command({openssl,
                   "req",
                   "-x509",
                   "-newkey",
                   "ec",
                   "-pkeyopt",
                   "ec_paramgen_curve:prime256v1",
                   "-nodes",
                   "-keyout",
                   dir + "/ca.key",
                   "-out",
                   pki.ca_cert,
                   "-days",
                   "2",
                   "-subj",
                   "/CN=gatecache upstream test CA",
                   "-addext",
                   "basicConstraints=critical,CA:TRUE",
                   "-addext",
                   "keyUsage=critical,keyCertSign,cRLSign"},
                  log) &&
      run_command({openssl, "req", "-newkey", "ec", "-pkeyopt",
                   "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
                   pki.server_key, "-out", dir + "/server.csr", "-subj",
                   "/CN=localhost"},
                  log) &&
      run_command({openssl, "x509", "-req", "-in", dir + "/server.csr", "-CA",
                   pki.ca_cert, "-CAkey", dir + "/ca.key", "-CAcreateserial",
                   "-out", pki.server_cert, "-days", "2", "-extfile", ext},
                  log);
  if (!ok) {
    return std::nullopt;
  }
  return pki;
}

uint16_t find_free_port() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(addr);
  bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof(addr));
  getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &length);
  close(fd);
  return ntohs(addr.sin_port);
}

bool wait_for_port(uint16_t port, double max_wait_s) {
  double deadline = monotonic_s() + max_wait_s;
  while (monotonic_s() < deadline) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof(addr));
    close(fd);
    if (rc == 0) {
      return true;
    }
    usleep(50 * 1000);
  }
  return false;
}

bool run_until(struct ev_loop *loop, const std::function<bool()> &done,
               double max_wait_s) {
  ev_timer guard;
  ev_timer_init(
      &guard, [](struct ev_loop *, ev_timer *, int) {}, max_wait_s, 0);
  ev_timer_start(loop, &guard);
  while (!done() && ev_is_active(&guard)) {
    ev_run(loop, EVRUN_ONCE);
  }
  ev_timer_stop(loop, &guard);
  return done();
}

void RecordingHandler::on_head(const ResponseHead &response) {
  head = response;
  ++heads;
}

bool RecordingHandler::on_data(const uint8_t *data, size_t size) {
  ++data_calls;
  body.append(reinterpret_cast<const char *>(data), size);
  if (data_calls == 1 && on_first_data) {
    on_first_data();
  }
  return true;
}

void RecordingHandler::on_complete(std::optional<Error> result) {
  error = std::move(result);
  ++completions;
}

std::string sha256_hex(const std::string &data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr);
  std::string hex;
  char byte[3];
  for (unsigned int i = 0; i < length; ++i) {
    std::snprintf(byte, sizeof(byte), "%02x", digest[i]);
    hex += byte;
  }
  return hex;
}

} // namespace gatecache::upstream::testing
