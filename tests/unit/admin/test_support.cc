#include "tests/unit/admin/test_support.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <stdexcept>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace gatecache::admin::test {

namespace {

// A client that writes to a connection the server closed gets SIGPIPE,
// which would end the test process.
const bool sigpipe_ignored = [] {
  std::signal(SIGPIPE, SIG_IGN);
  return true;
}();

double monotonic_s() {
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string lower(std::string text) {
  for (char &c : text) {
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
  }
  return text;
}

} // namespace

TempDir::TempDir() {
  const char *base = std::getenv("TMPDIR");
  std::string pattern =
      std::string(base != nullptr ? base : "/tmp") + "/admin-test-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    throw std::runtime_error("mkdtemp failed: " +
                             std::string(std::strerror(errno)));
  }
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

LoopThread::LoopThread() : loop_(ev_loop_new(EVFLAG_AUTO)) {
  ev_async_init(&async_, on_async);
  async_.data = this;
  ev_async_start(loop_, &async_);
  thread_ = std::thread([this] { ev_run(loop_, 0); });
}

LoopThread::~LoopThread() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  ev_async_send(loop_, &async_);
  thread_.join();
  ev_loop_destroy(loop_);
}

void LoopThread::call(const std::function<void()> &task) {
  std::promise<void> done;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    tasks_.push_back([&] {
      task();
      done.set_value();
    });
  }
  ev_async_send(loop_, &async_);
  done.get_future().wait();
}

void LoopThread::on_async(struct ev_loop *loop, ev_async *watcher, int) {
  auto *self = static_cast<LoopThread *>(watcher->data);
  std::vector<std::function<void()>> tasks;
  bool stopping = false;
  {
    std::lock_guard<std::mutex> lock(self->mutex_);
    tasks.swap(self->tasks_);
    stopping = self->stopping_;
  }
  for (auto &task : tasks) {
    task();
  }
  if (stopping) {
    ev_break(loop, EVBREAK_ALL);
  }
}

bool wait_until(const std::function<bool()> &condition) {
  double deadline = monotonic_s() + SafetyTimeoutS;
  while (!condition()) {
    if (monotonic_s() > deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

nlohmann::json example_status() {
  return nlohmann::json::parse(R"({
    "version": "0.1.0", "now": 1765000000.5, "started_at": 1764990000.0,
    "upstreams": [{"name": "docker.io", "limit": 100, "remaining": 76,
      "window_s": 21600, "source": "headers", "reset_at": 1765003600.0,
      "blocked_until": null, "exhaust_at": 1765001200.0,
      "spent_last_hour": 12, "granted": 40,
      "queued": {"node": 0, "revalidation": 0, "prewarm": 3},
      "in_flight": 1, "stale_served": 4, "throttled": 0}],
    "denied": 3,
    "clusters": [{"name": "dev", "weight": 1, "requests": 900, "counted": 12,
      "hits": 800, "revalidated": 50, "misses": 30, "stale": 2,
      "refused": 1}],
    "prewarm": [{"id": 1, "sets": ["kubernetes-1.31"], "state": "running",
      "images_total": 8, "images_done": 3, "bytes": 123456, "counted": 4,
      "errors": []}]
  })");
}

nlohmann::json FakeSource::status() {
  if (throw_in_status) {
    throw std::runtime_error("status table unavailable");
  }
  return example_status();
}

nlohmann::json FakeSource::pulls(const std::string &client_ip, double since,
                                 size_t limit) {
  pulls_client = client_ip;
  pulls_since = since;
  pulls_limit = limit;
  return nlohmann::json::parse(R"({"pulls": [{"time": 1765000000.1,
    "client": "10.0.0.5", "cluster": "dev", "ns": "docker.io",
    "repository": "library/busybox", "reference": "latest",
    "kind": "manifest", "status": 200, "cache": "hit"}]})");
}

std::string FakeSource::metrics() {
  return "# TYPE gatecache_requests_total counter\n"
         "gatecache_requests_total{cluster=\"dev\"} 900\n";
}

Result<uint64_t> FakeSource::start_prewarm(const nlohmann::json &sets) {
  if (start_error) {
    return tl::unexpected(*start_error);
  }
  started.push_back(sets);
  return started.size();
}

std::optional<nlohmann::json> FakeSource::prewarm_job(uint64_t id) {
  if (!job_sequence.empty()) {
    size_t index = std::min(job_calls, job_sequence.size() - 1);
    ++job_calls;
    return job_sequence[index];
  }
  auto found = jobs.find(id);
  if (found == jobs.end()) {
    return std::nullopt;
  }
  return found->second;
}

void EchoHandler::handle(const AdminRequest &request,
                         std::function<void(AdminResponse)> reply) {
  ++handled;
  if (request.path == "/hold") {
    held.push_back(std::move(reply));
    return;
  }
  AdminResponse response;
  response.body =
      nlohmann::json{
          {"method", request.method}, {"path", request.path},
          {"query", request.query},   {"body", request.body},
          {"peer", request.peer},     {"local_socket", request.local_socket}}
          .dump();
  reply(std::move(response));
}

ServerFixture::ServerFixture(AdminHandler &handler, AdminLimits limits,
                             bool with_tcp)
    : socket_path_(dir_.path() + "/admin.sock") {
  config::AdminConfig config;
  config.socket = socket_path_;
  if (with_tcp) {
    config::ListenAddress address;
    address.host = "127.0.0.1";
    address.port = 0;
    config.listen.push_back(address);
  }
  loop_.call([&] {
    auto opened = AdminServer::open(loop_.loop(), config, &handler, limits);
    if (!opened) {
      throw std::runtime_error("cannot open admin server: " +
                               opened.error().message);
    }
    server_ = std::move(*opened);
    if (with_tcp) {
      tcp_port_ = server_->tcp_ports().at(0);
    }
  });
}

ServerFixture::~ServerFixture() {
  loop_.call([&] { server_.reset(); });
}

size_t ServerFixture::connection_count() {
  size_t count = 0;
  loop_.call([&] { count = server_->connection_count(); });
  return count;
}

RawClient::RawClient(const std::string &socket_path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, socket_path.c_str(),
               sizeof(address.sun_path) - 1);
  if (::connect(fd, reinterpret_cast<sockaddr *>(&address), sizeof(address)) !=
      0) {
    ::close(fd);
    return;
  }
  fd_ = fd;
}

RawClient::RawClient(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr *>(&address), sizeof(address)) !=
      0) {
    ::close(fd);
    return;
  }
  fd_ = fd;
}

RawClient::~RawClient() {
  if (fd_ >= 0) {
    ::close(fd_);
  }
}

void RawClient::send(const std::string &bytes) {
  size_t sent = 0;
  while (fd_ >= 0 && sent < bytes.size()) {
    ssize_t n =
        ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) {
      return;
    }
    sent += static_cast<size_t>(n);
  }
}

void RawClient::finish_sending() { ::shutdown(fd_, SHUT_WR); }

bool RawClient::fill() {
  pollfd ready = {fd_, POLLIN, 0};
  if (::poll(&ready, 1, static_cast<int>(SafetyTimeoutS * 1000)) <= 0) {
    return false;
  }
  char chunk[16 * 1024];
  ssize_t got = ::recv(fd_, chunk, sizeof(chunk), 0);
  if (got <= 0) {
    return false;
  }
  buffer_.append(chunk, static_cast<size_t>(got));
  return true;
}

RawResponse RawClient::read_response(bool head_request) {
  RawResponse response;
  size_t head_end;
  while ((head_end = buffer_.find("\r\n\r\n")) == std::string::npos) {
    if (!fill()) {
      return response;
    }
  }
  std::string head = buffer_.substr(0, head_end);
  buffer_.erase(0, head_end + 4);

  size_t line_end = head.find("\r\n");
  std::string status_line = head.substr(0, line_end);
  size_t space = status_line.find(' ');
  int status = std::atoi(status_line.c_str() + space + 1);
  size_t position = line_end;
  while (position != std::string::npos && position < head.size()) {
    size_t start = position + 2;
    size_t end = head.find("\r\n", start);
    std::string line = head.substr(start, end - start);
    size_t colon = line.find(':');
    if (colon != std::string::npos) {
      std::string value = line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(' '));
      response.headers[lower(line.substr(0, colon))] = value;
    }
    position = end;
  }

  size_t length = 0;
  if (auto found = response.headers.find("content-length");
      found != response.headers.end() && !head_request) {
    length = std::stoul(found->second);
  }
  while (buffer_.size() < length) {
    if (!fill()) {
      return response;
    }
  }
  response.body = buffer_.substr(0, length);
  buffer_.erase(0, length);
  response.status = status;
  return response;
}

bool RawClient::closed_by_server() {
  pollfd ready = {fd_, POLLIN, 0};
  if (::poll(&ready, 1, static_cast<int>(SafetyTimeoutS * 1000)) <= 0) {
    return false;
  }
  char byte;
  return ::recv(fd_, &byte, 1, 0) == 0;
}

std::string make_request(const std::string &method, const std::string &target,
                         const std::string &body,
                         const std::string &extra_headers) {
  std::string request = method + " " + target + " HTTP/1.1\r\n";
  request += "Host: localhost\r\n";
  request += extra_headers;
  if (!body.empty() || method == "POST") {
    request += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  }
  request += "\r\n";
  request += body;
  return request;
}

} // namespace gatecache::admin::test
