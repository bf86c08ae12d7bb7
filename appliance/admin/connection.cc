#include "appliance/admin/connection.h"

#include <cerrno>
#include <climits>
#include <string_view>
#include <utility>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>
#include <unistd.h>

#include "common/ascii.h"
#include "common/log.h"

namespace gatecache::admin {

namespace {

// Accepts "localhost", an address in 127.0.0.0/8 or "::1", with or without
// a port ("127.0.0.1:9100", "[::1]:9100").
bool is_loopback_host(std::string_view host) {
  std::string name;
  if (!host.empty() && host.front() == '[') {
    size_t close = host.find(']');
    if (close == std::string_view::npos) {
      return false;
    }
    name = host.substr(1, close - 1);
  } else {
    size_t colon = host.find(':');
    name = host.substr(0, colon);
  }
  if (equals_ignoring_ascii_case(name, "localhost")) {
    return true;
  }
  in_addr v4 = {};
  if (inet_pton(AF_INET, name.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  in6_addr v6 = {};
  return inet_pton(AF_INET6, name.c_str(), &v6) == 1 &&
         IN6_IS_ADDR_LOOPBACK(&v6);
}

} // namespace

AdminServer::Connection::Connection(AdminServer &server, int fd, uint64_t id,
                                    std::string peer, bool local_socket)
    : server_(server), fd_(fd), id_(id), peer_(std::move(peer)),
      local_socket_(local_socket) {
  http_parser_init(&parser_, HTTP_REQUEST);
  parser_.data = this;
  ev_io_init(&read_watcher_, on_io_ready, fd_, EV_READ);
  read_watcher_.data = this;
  ev_io_init(&write_watcher_, on_io_ready, fd_, EV_WRITE);
  write_watcher_.data = this;
  ev_timer_init(&timer_, on_timeout, 0., 0.);
  timer_.data = this;
}

AdminServer::Connection::~Connection() {
  if (!closed_) {
    ev_io_stop(server_.loop_, &read_watcher_);
    ev_io_stop(server_.loop_, &write_watcher_);
    ev_timer_stop(server_.loop_, &timer_);
    ::close(fd_);
  }
}

void AdminServer::Connection::start() {
  GC_LOG(Main, debug, "admin connection opened c={} peer={}", id_, peer_);
  update_watchers();
  arm_timer();
}

void AdminServer::Connection::close() {
  if (closed_) {
    return;
  }
  closed_ = true;
  ev_io_stop(server_.loop_, &read_watcher_);
  ev_io_stop(server_.loop_, &write_watcher_);
  ev_timer_stop(server_.loop_, &timer_);
  ::close(fd_);
  fd_ = -1;
  GC_LOG(Main, debug, "admin connection closed c={}", id_);
  // May destroy this object when no callback holds a reference.
  server_.release(id_);
}

void AdminServer::Connection::on_io_ready(struct ev_loop *, ev_io *watcher,
                                          int events) noexcept {
  auto self = static_cast<Connection *>(watcher->data)->shared_from_this();
  if ((events & EV_READ) != 0) {
    self->read_input();
  }
  if ((events & EV_WRITE) != 0 && !self->closed_) {
    // Output pending outside the Writing state is a 100 Continue.
    if (self->state_ != State::Writing) {
      self->flush();
    }
    self->advance();
  }
}

void AdminServer::Connection::on_timeout(struct ev_loop *, ev_timer *watcher,
                                         int) noexcept {
  auto self = static_cast<Connection *>(watcher->data)->shared_from_this();
  const char *reason = self->state_ == State::Reading   ? "request not received"
                       : self->state_ == State::Writing ? "response not read"
                                                        : "idle";
  GC_LOG(Main, debug, "admin connection timed out ({}) c={}", reason,
         self->id_);
  self->close();
}

void AdminServer::Connection::read_input() {
  char *buffer = server_.read_buffer_.get();
  ssize_t got = ::recv(fd_, buffer, ReadBufferBytes, 0);
  if (got < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      return;
    }
    GC_LOG(Main, debug, "admin connection read failed: {} c={}",
           errno_message("recv", errno), id_);
    close();
    return;
  }
  if (got == 0) {
    end_of_input_ = true;
  } else {
    input_.append(buffer, static_cast<size_t>(got));
    if (state_ == State::Idle) {
      arm_timer();
    }
  }
  advance();
}

// Moves the connection forward until it has to wait for the client, the
// handler or the socket. A loop rather than recursion, because a handler
// that replies at once and pipelined requests would otherwise nest calls.
void AdminServer::Connection::advance() {
  auto self = shared_from_this();
  while (!closed_) {
    if (state_ == State::Handling) {
      break;
    }
    if (state_ == State::Writing) {
      if (!flush()) {
        break;
      }
      if (close_after_) {
        close();
        return;
      }
      state_ = State::Idle;
      arm_timer();
      continue;
    }
    if (input_.empty()) {
      if (end_of_input_) {
        close();
        return;
      }
      break;
    }
    parse_input();
  }
  if (!closed_) {
    update_watchers();
  }
}

void AdminServer::Connection::parse_input() {
  size_t parsed = http_parser_execute(&parser_, &parser_settings(),
                                      input_.data(), input_.size());
  auto error = HTTP_PARSER_ERRNO(&parser_);
  if (error == HPE_OK || error == HPE_PAUSED) {
    input_.erase(0, parsed);
    if (error == HPE_PAUSED) {
      http_parser_pause(&parser_, 0);
    }
    if (request_ready_) {
      request_ready_ = false;
      dispatch();
    }
    return;
  }

  // The stream cannot be parsed further, so the connection ends with this
  // response.
  input_.clear();
  int status = reject_status_;
  std::string message = reject_message_;
  if (status == 0) {
    status = error == HPE_HEADER_OVERFLOW ? 431 : 400;
    message = std::string("invalid HTTP/1.1 request: ") +
              http_errno_description(error);
  }
  GC_LOG(Main, debug, "admin request rejected c={} status={}: {}", id_, status,
         message);
  close_after_ = true;
  queue_error(status, message);
}

void AdminServer::Connection::dispatch() {
  state_ = State::Handling;
  arm_timer();
  uint64_t sequence = ++sequence_;
  std::weak_ptr<Connection> weak = weak_from_this();
  auto reply = [weak, sequence](AdminResponse response) {
    if (auto connection = weak.lock()) {
      connection->on_reply(sequence, std::move(response));
    }
  };
  GC_LOG(Main, debug, "admin request c={} peer={} {} {}{}{}", id_, peer_,
         request_.method, request_.path, request_.query.empty() ? "" : "?",
         request_.query);
  in_dispatch_ = true;
  try {
    server_.handler_->handle(request_, std::move(reply));
  } catch (const std::exception &e) {
    GC_LOG(Main, error, "admin handler failed on {} {}: {} c={}",
           request_.method, request_.path, e.what(), id_);
    if (state_ == State::Handling) {
      queue_error(500, std::string("internal error: ") + e.what());
    }
  }
  in_dispatch_ = false;
}

void AdminServer::Connection::on_reply(uint64_t sequence,
                                       AdminResponse response) {
  if (closed_ || state_ != State::Handling || sequence != sequence_) {
    return;
  }
  queue_response(response);
  if (!in_dispatch_) {
    advance();
  }
}

void AdminServer::Connection::queue_response(const AdminResponse &response) {
  std::string reason =
      http_status_str(static_cast<http_status>(response.status));
  if (reason == "<unknown>") {
    reason.clear();
  }
  std::string head =
      "HTTP/1.1 " + std::to_string(response.status) + " " + reason + "\r\n";
  head += "Content-Type: " + response.content_type + "\r\n";
  head += "Content-Length: " + std::to_string(response.body.size()) + "\r\n";
  head += "Cache-Control: no-store\r\n";
  for (const auto &[name, value] : response.headers) {
    head += name + ": " + value + "\r\n";
  }
  if (close_after_) {
    head += "Connection: close\r\n";
  } else if (parser_.http_minor == 0) {
    head += "Connection: keep-alive\r\n";
  }
  head += "\r\n";

  output_ += head;
  if (!head_request_) {
    output_ += response.body;
  }
  state_ = State::Writing;
  arm_timer();
}

void AdminServer::Connection::queue_error(int status,
                                          const std::string &message) {
  AdminResponse response;
  response.status = status;
  // Replacing invalid UTF-8 keeps `dump()` from throwing on bytes that a
  // client put into a rejected request.
  response.body =
      nlohmann::json{{"error", message}}.dump(
          -1, ' ', false, nlohmann::json::error_handler_t::replace) +
      "\n";
  if (status == 405) {
    response.headers.emplace_back("Allow", "GET, HEAD");
  }
  queue_response(response);
}

// Writes queued output. Returns true when everything is written, false
// when the socket is full (the write watcher then waits) or the connection
// closed.
bool AdminServer::Connection::flush() {
  while (output_sent_ < output_.size()) {
    ssize_t sent = ::send(fd_, output_.data() + output_sent_,
                          output_.size() - output_sent_, MSG_NOSIGNAL);
    if (sent < 0) {
      if (errno == EINTR) {
        continue;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        return false;
      }
      GC_LOG(Main, debug, "admin connection write failed: {} c={}",
             errno_message("send", errno), id_);
      close();
      return false;
    }
    output_sent_ += static_cast<size_t>(sent);
    // Progress restarts the clock of a client that reads slowly.
    arm_timer();
  }
  output_.clear();
  output_sent_ = 0;
  return true;
}

// Reads only while a request can be taken, so a client cannot queue
// unbounded input behind a request the handler still holds. Writes wait
// for the socket only while output is pending.
void AdminServer::Connection::update_watchers() {
  struct ev_loop *loop = server_.loop_;
  bool want_read =
      (state_ == State::Idle || state_ == State::Reading) && !end_of_input_;
  if (want_read && !ev_is_active(&read_watcher_)) {
    ev_io_start(loop, &read_watcher_);
  } else if (!want_read && ev_is_active(&read_watcher_)) {
    ev_io_stop(loop, &read_watcher_);
  }
  bool want_write = output_sent_ < output_.size();
  if (want_write && !ev_is_active(&write_watcher_)) {
    ev_io_start(loop, &write_watcher_);
  } else if (!want_write && ev_is_active(&write_watcher_)) {
    ev_io_stop(loop, &write_watcher_);
  }
}

void AdminServer::Connection::arm_timer() {
  struct ev_loop *loop = server_.loop_;
  ev_timer_stop(loop, &timer_);
  double timeout = 0;
  switch (state_) {
  case State::Idle:
  case State::Writing:
    timeout = server_.limits_.idle_timeout_s;
    break;
  case State::Reading:
    timeout =
        request_started_at_ + server_.limits_.request_timeout_s - ev_now(loop);
    break;
  case State::Handling:
    return;
  }
  ev_timer_set(&timer_, timeout > 0 ? timeout : 0., 0.);
  ev_timer_start(loop, &timer_);
}

int AdminServer::Connection::reject(int status, std::string message) {
  reject_status_ = status;
  reject_message_ = std::move(message);
  return -1;
}

int AdminServer::Connection::on_message_begin() {
  state_ = State::Reading;
  request_started_at_ = ev_now(server_.loop_);
  request_ = AdminRequest{};
  request_.peer = peer_;
  request_.local_socket = local_socket_;
  field_.clear();
  value_.clear();
  in_value_ = false;
  header_bytes_ = 0;
  header_count_ = 0;
  host_count_ = 0;
  host_.clear();
  expect_continue_ = false;
  head_request_ = false;
  arm_timer();
  return 0;
}

int AdminServer::Connection::on_url(const char *at, size_t size) {
  header_bytes_ += size;
  if (request_.path.size() + size > server_.limits_.max_target_bytes) {
    return reject(414, "request target longer than " +
                           std::to_string(server_.limits_.max_target_bytes) +
                           " bytes");
  }
  request_.path.append(at, size);
  return 0;
}

int AdminServer::Connection::on_header_field(const char *at, size_t size) {
  if (in_value_) {
    if (!finish_header_field()) {
      return -1;
    }
    in_value_ = false;
    field_.clear();
    value_.clear();
  }
  header_bytes_ += size;
  if (header_bytes_ > server_.limits_.max_header_bytes) {
    return reject(431, "request header larger than " +
                           std::to_string(server_.limits_.max_header_bytes) +
                           " bytes");
  }
  field_.append(at, size);
  return 0;
}

int AdminServer::Connection::on_header_value(const char *at, size_t size) {
  in_value_ = true;
  header_bytes_ += size;
  if (header_bytes_ > server_.limits_.max_header_bytes) {
    return reject(431, "request header larger than " +
                           std::to_string(server_.limits_.max_header_bytes) +
                           " bytes");
  }
  value_.append(at, size);
  return 0;
}

bool AdminServer::Connection::finish_header_field() {
  if (++header_count_ > server_.limits_.max_header_fields) {
    reject(431, "more than " +
                    std::to_string(server_.limits_.max_header_fields) +
                    " header fields");
    return false;
  }
  trim_trailing_blanks(value_);
  if (equals_ignoring_ascii_case(field_, "host")) {
    ++host_count_;
    host_ = value_;
  } else if (equals_ignoring_ascii_case(field_, "expect")) {
    if (!equals_ignoring_ascii_case(value_, "100-continue")) {
      reject(417, "unsupported Expect value '" + value_ + "'");
      return false;
    }
    expect_continue_ = true;
  }
  return true;
}

int AdminServer::Connection::on_headers_complete() {
  if (in_value_ && !finish_header_field()) {
    return -1;
  }
  if (parser_.http_major != 1) {
    return reject(505, "only HTTP/1.0 and HTTP/1.1 are supported");
  }
  // RFC 9112 section 3.2: a request without exactly one Host field, or an
  // HTTP/1.0 request with several, gets 400.
  if (host_count_ > 1 || (parser_.http_minor >= 1 && host_count_ == 0)) {
    return reject(400, "a request needs exactly one Host header field");
  }
  if (request_.path.empty() || request_.path.front() != '/') {
    return reject(400, "request target '" + request_.path +
                           "' is not an absolute path");
  }
  size_t query = request_.path.find('?');
  if (query != std::string::npos) {
    request_.query.assign(request_.path, query + 1);
    request_.path.resize(query);
  }

  auto method = static_cast<http_method>(parser_.method);
  request_.method = http_method_str(method);
  head_request_ = method == HTTP_HEAD;
  if (!local_socket_) {
    // The TCP listeners are read-only.
    if (method != HTTP_GET && method != HTTP_HEAD) {
      return reject(405, "only GET and HEAD are allowed on the TCP admin "
                         "listener; use the admin Unix socket for " +
                             request_.method);
    }
    // A web page that rebinds its DNS name to 127.0.0.1 could otherwise
    // read this endpoint from a browser, which sends the page's name in
    // Host.
    if (host_count_ == 1 && !is_loopback_host(host_)) {
      return reject(403, "Host '" + host_ +
                             "' is not a loopback name; address the admin "
                             "endpoint as localhost, 127.0.0.1 or [::1]");
    }
  }

  bool chunked = (parser_.flags & F_CHUNKED) != 0;
  if (!chunked && parser_.content_length != ULLONG_MAX &&
      parser_.content_length > server_.limits_.max_body_bytes) {
    return reject(413, "request body larger than " +
                           std::to_string(server_.limits_.max_body_bytes) +
                           " bytes");
  }
  if (expect_continue_ && parser_.http_minor >= 1) {
    output_ += "HTTP/1.1 100 Continue\r\n\r\n";
    flush();
  }
  return 0;
}

int AdminServer::Connection::on_body(const char *at, size_t size) {
  if (request_.body.size() + size > server_.limits_.max_body_bytes) {
    return reject(413, "request body larger than " +
                           std::to_string(server_.limits_.max_body_bytes) +
                           " bytes");
  }
  request_.body.append(at, size);
  return 0;
}

int AdminServer::Connection::on_message_complete() {
  if (!http_should_keep_alive(&parser_)) {
    close_after_ = true;
  }
  request_ready_ = true;
  // Parsing stops after each request and resumes once its response is
  // written, so responses leave in request order.
  http_parser_pause(&parser_, 1);
  return 0;
}

// The trampolines are lambdas inside a member so that they may call the
// private callbacks.
const http_parser_settings &AdminServer::Connection::parser_settings() {
  static const http_parser_settings settings = [] {
    http_parser_settings value;
    http_parser_settings_init(&value);
    value.on_message_begin = [](http_parser *parser) {
      return from(parser).on_message_begin();
    };
    value.on_url = [](http_parser *parser, const char *at, size_t size) {
      return from(parser).on_url(at, size);
    };
    value.on_header_field = [](http_parser *parser, const char *at,
                               size_t size) {
      return from(parser).on_header_field(at, size);
    };
    value.on_header_value = [](http_parser *parser, const char *at,
                               size_t size) {
      return from(parser).on_header_value(at, size);
    };
    value.on_headers_complete = [](http_parser *parser) {
      return from(parser).on_headers_complete();
    };
    value.on_body = [](http_parser *parser, const char *at, size_t size) {
      return from(parser).on_body(at, size);
    };
    value.on_message_complete = [](http_parser *parser) {
      return from(parser).on_message_complete();
    };
    return value;
  }();
  return settings;
}

} // namespace gatecache::admin
