#include "appliance/upstream/http1_session.h"

#include <cctype>
#include <climits>

#include <fmt/format.h>

#include "appliance/upstream/exchange.h"

namespace gatecache::upstream {

namespace {

Http1Session &session_of(http_parser *parser) {
  return *static_cast<Http1Session *>(parser->data);
}

} // namespace

const http_parser_settings Http1Session::Settings = [] {
  http_parser_settings settings{};
  settings.on_header_field = on_header_field;
  settings.on_header_value = on_header_value;
  settings.on_headers_complete = on_headers_complete;
  settings.on_body = on_body;
  settings.on_message_complete = on_message_complete;
  return settings;
}();

Http1Session::Http1Session(Connection &connection) : connection_(connection) {
  http_parser_init(&parser_, HTTP_RESPONSE);
  parser_.data = this;
}

size_t Http1Session::capacity() const {
  return current_ == nullptr && reusable_ ? 1 : 0;
}

bool Http1Session::submit(Exchange *exchange) {
  if (capacity() == 0) {
    return false;
  }
  current_ = exchange;
  headers_.clear();
  field_.clear();
  value_.clear();
  in_value_ = false;
  head_bytes_ = 0;
  interim_ = false;
  head_delivered_ = false;
  body_bytes_ = 0;
  content_length_.reset();
  callback_error_.reset();
  http_parser_init(&parser_, HTTP_RESPONSE);
  parser_.data = this;

  const Url &url = exchange->url();
  request_ = exchange->method() + " " + url.target() +
             " HTTP/1.1\r\nhost: " + url.authority() + "\r\n";
  for (const auto &[name, value] : exchange->headers()) {
    request_ += name;
    request_ += ": ";
    request_ += value;
    request_ += "\r\n";
  }
  request_ += "\r\n";
  connection_.request_write();
  return true;
}

void Http1Session::abort(Exchange *exchange) {
  if (current_ != exchange) {
    return;
  }
  // HTTP/1.1 cannot skip the rest of a response, so the connection goes.
  current_ = nullptr;
  reusable_ = false;
  connection_.close(std::nullopt);
}

void Http1Session::produce(std::string &out) {
  out.append(request_);
  request_.clear();
}

Result<void> Http1Session::on_read(const uint8_t *data, size_t size) {
  if (current_ == nullptr) {
    return fail(ErrorCode::UpstreamRejected,
                "unexpected bytes on an idle HTTP/1.1 connection");
  }
  size_t parsed = http_parser_execute(
      &parser_, &Settings, reinterpret_cast<const char *>(data), size);
  if (connection_.closed()) {
    return {};
  }
  http_errno error = HTTP_PARSER_ERRNO(&parser_);
  if (error == HPE_PAUSED) {
    // `on_message_complete` paused the parser: one response is done.
    http_parser_pause(&parser_, 0);
    if (parsed < size) {
      return fail(ErrorCode::UpstreamRejected,
                  "bytes after the end of an HTTP/1.1 response");
    }
    if (!reusable_) {
      connection_.close(std::nullopt);
    }
    return {};
  }
  if (error == HPE_OK) {
    return {};
  }
  Error failure = callback_error_.value_or(Error{
      ErrorCode::UpstreamRejected, std::string("invalid HTTP/1.1 response: ") +
                                       http_errno_description(error)});
  if (current_ != nullptr) {
    Exchange *exchange = current_;
    current_ = nullptr;
    connection_.fail_exchange(exchange, failure, false);
  }
  return tl::unexpected(std::move(failure));
}

std::string Http1Session::truncation_detail() const {
  if (content_length_) {
    return fmt::format("connection closed after {} of {} body bytes",
                       body_bytes_, *content_length_);
  }
  return fmt::format("connection closed after {} body bytes", body_bytes_);
}

void Http1Session::on_eof() {
  if (current_ == nullptr) {
    return;
  }
  // A body delimited by the connection's end completes here
  // (RFC 9112 section 6.3, item 8).
  http_parser_execute(&parser_, &Settings, nullptr, 0);
  if (connection_.closed() || current_ == nullptr) {
    return;
  }
  Exchange *exchange = current_;
  current_ = nullptr;
  if (head_delivered_) {
    connection_.fail_exchange(
        exchange,
        Error{ErrorCode::Corrupt,
              "response body truncated: " + truncation_detail()},
        false);
    return;
  }
  connection_.fail_exchange(
      exchange,
      Error{ErrorCode::Unreachable,
            "connection closed by upstream before the response head"},
      true);
}

void Http1Session::fail_all(const Error &error) {
  if (current_ == nullptr) {
    return;
  }
  Exchange *exchange = current_;
  current_ = nullptr;
  if (head_delivered_) {
    connection_.fail_exchange(
        exchange,
        Error{ErrorCode::Corrupt, "response body truncated after " +
                                      std::to_string(body_bytes_) +
                                      " bytes: " + error.message},
        false);
    return;
  }
  connection_.fail_exchange(exchange, error, true);
}

bool Http1Session::add_head_bytes(size_t length) {
  head_bytes_ += length;
  if (head_bytes_ > MaxHeadBytes) {
    callback_error_ =
        Error{ErrorCode::UpstreamRejected,
              fmt::format("response head exceeds {} bytes", MaxHeadBytes)};
    return false;
  }
  return true;
}

bool Http1Session::store_header() {
  if (!in_value_ && field_.empty()) {
    return true;
  }
  for (char &c : field_) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  headers_.emplace_back(std::move(field_), std::move(value_));
  field_.clear();
  value_.clear();
  in_value_ = false;
  if (headers_.size() > MaxHeaderCount) {
    callback_error_ = Error{ErrorCode::UpstreamRejected,
                            fmt::format("response head has more than {} "
                                        "header fields",
                                        MaxHeaderCount)};
    return false;
  }
  return true;
}

int Http1Session::handle_header_field(const char *at, size_t length) {
  if (in_value_ && !store_header()) {
    return -1;
  }
  field_.append(at, length);
  return add_head_bytes(length) ? 0 : -1;
}

int Http1Session::handle_header_value(const char *at, size_t length) {
  in_value_ = true;
  value_.append(at, length);
  return add_head_bytes(length) ? 0 : -1;
}

int Http1Session::handle_headers_complete() {
  if (!store_header()) {
    return -1;
  }
  int status = parser_.status_code;
  if (status >= 100 && status < 200) {
    if (status == 101) {
      callback_error_ = Error{ErrorCode::UpstreamRejected,
                              "unexpected 101 Switching Protocols"};
      return -1;
    }
    // Interim responses such as 103 Early Hints precede the real one.
    interim_ = true;
    headers_.clear();
    head_bytes_ = 0;
    return 0;
  }
  head_delivered_ = true;
  if ((parser_.flags & F_CHUNKED) == 0 &&
      parser_.content_length != ULLONG_MAX) {
    content_length_ = parser_.content_length;
  }
  Exchange *exchange = current_;
  if (!exchange->deliver_head(status, std::move(headers_), "http/1.1")) {
    return -1;
  }
  headers_.clear();
  // A response to HEAD has no body whatever its Content-Length (RFC 9110
  // section 9.3.2), and returning 1 makes http-parser skip it.
  return exchange->is_head() ? 1 : 0;
}

int Http1Session::handle_body(const char *at, size_t length) {
  body_bytes_ += length;
  return current_->deliver_data(reinterpret_cast<const uint8_t *>(at), length)
             ? 0
             : -1;
}

int Http1Session::handle_message_complete() {
  if (interim_) {
    interim_ = false;
    return 0;
  }
  Exchange *exchange = current_;
  current_ = nullptr;
  if (http_should_keep_alive(&parser_) == 0) {
    reusable_ = false;
  }
  http_parser_pause(&parser_, 1);
  connection_.on_exchange_done();
  exchange->finish(std::nullopt);
  return 0;
}

int Http1Session::on_header_field(http_parser *parser, const char *at,
                                  size_t length) noexcept {
  return session_of(parser).handle_header_field(at, length);
}

int Http1Session::on_header_value(http_parser *parser, const char *at,
                                  size_t length) noexcept {
  return session_of(parser).handle_header_value(at, length);
}

int Http1Session::on_headers_complete(http_parser *parser) noexcept {
  return session_of(parser).handle_headers_complete();
}

int Http1Session::on_body(http_parser *parser, const char *at,
                          size_t length) noexcept {
  return session_of(parser).handle_body(at, length);
}

int Http1Session::on_message_complete(http_parser *parser) noexcept {
  return session_of(parser).handle_message_complete();
}

} // namespace gatecache::upstream
