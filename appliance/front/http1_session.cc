#include "appliance/front/http1_session.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <memory>
#include <string_view>
#include <utility>

#include <ev.h>

#include "appliance/front/connection.h"
#include "appliance/front/front_config.h"
#include "appliance/front/http_util.h"
#include "common/ascii.h"
#include "common/log.h"

namespace gatecache::front {

namespace {

// Maximum length of a request target. Longer ones get 414.
constexpr size_t MaxTargetBytes = 8 * 1024;
// Most header fields in one request head; more get 431.
constexpr size_t MaxHeaderFields = 128;
// Request body bytes read and dropped before the connection stops reading
// and closes after the response. Registry clients send bodies only with
// pushes, which the handler rejects anyway.
constexpr uint64_t MaxDiscardedBodyBytes = 64 * 1024;
// Requests whose heads were read but whose responses are not finished.
// Beyond this the session stops reading until responses go out.
constexpr size_t MaxPipelinedRequests = 16;
// Most body bytes passed to one `SSL_write`.
constexpr size_t MaxBodyWriteBytes = 1024 * 1024;
// Bodies up to this size are copied behind the head so that both leave in
// as few TLS records as possible. Larger ones get the first record filled
// and the rest is written from the source's memory.
constexpr uint64_t SmallBodyBytes = 64 * 1024;
constexpr size_t TlsRecordBytes = 16 * 1024;
// Room kept in the output buffer for a chunk's size line and the last
// chunk.
constexpr size_t ChunkFramingBytes = 32;
// A response head may use at most this much of the output buffer.
constexpr size_t MaxResponseHeadBytes = WriteBuffer::Capacity / 2;

Http1Session &session_of(http_parser *parser) {
  return *static_cast<Http1Session *>(parser->data);
}

int on_message_begin(http_parser *parser) {
  return session_of(parser).on_message_begin();
}

int on_url(http_parser *parser, const char *at, size_t size) {
  return session_of(parser).on_url(at, size);
}

int on_header_field(http_parser *parser, const char *at, size_t size) {
  return session_of(parser).on_header_field(at, size);
}

int on_header_value(http_parser *parser, const char *at, size_t size) {
  return session_of(parser).on_header_value(at, size);
}

int on_headers_complete(http_parser *parser) {
  return session_of(parser).on_headers_complete();
}

int on_body(http_parser *parser, const char *, size_t size) {
  return session_of(parser).on_body(size);
}

int on_message_complete(http_parser *parser) {
  return session_of(parser).on_message_complete();
}

const http_parser_settings ParserSettings = [] {
  http_parser_settings settings;
  http_parser_settings_init(&settings);
  settings.on_message_begin = on_message_begin;
  settings.on_url = on_url;
  settings.on_header_field = on_header_field;
  settings.on_header_value = on_header_value;
  settings.on_headers_complete = on_headers_complete;
  settings.on_body = on_body;
  settings.on_message_complete = on_message_complete;
  return settings;
}();

} // namespace

Http1Session::Http1Session(Connection &connection)
    : connection_(connection), output_(connection.buffers()) {
  http_parser_init(&parser_, HTTP_REQUEST);
  parser_.data = this;
}

Http1Session::~Http1Session() {
  if (!closing_) {
    close();
  }
}

bool Http1Session::on_read(const uint8_t *data, size_t size) {
  if (stop_parsing_) {
    // Reading on lets a client's close be seen while its last request is
    // handled; past a limit, dropping bytes is not worth the work.
    discarded_bytes_ += size;
    if (discarded_bytes_ > MaxDiscardedBodyBytes) {
      connection_.pause_reading();
    }
    return true;
  }
  if (paused_) {
    held_input_.append(reinterpret_cast<const char *>(data), size);
    return true;
  }
  return parse(data, size);
}

bool Http1Session::parse(const uint8_t *data, size_t size) {
  size_t parsed = http_parser_execute(
      &parser_, &ParserSettings, reinterpret_cast<const char *>(data), size);
  auto error = static_cast<http_errno>(parser_.http_errno);
  if (error == HPE_OK) {
    if (parser_.upgrade) {
      // What follows an Upgrade or CONNECT request is not HTTP/1.1. The
      // handler responds to the request and the connection closes.
      stop_parsing_ = true;
    }
    return true;
  }
  if (error == HPE_PAUSED) {
    if (stop_parsing_) {
      return true;
    }
    held_input_.assign(reinterpret_cast<const char *>(data) + parsed,
                       size - parsed);
    paused_ = true;
    connection_.pause_reading();
    return true;
  }

  stop_parsing_ = true;
  connection_.pause_reading();
  if (body_too_large_) {
    GC_LOG(Front, debug,
           "request body passed {} bytes c={}, closing after the response",
           MaxDiscardedBodyBytes, connection_.id());
    return true;
  }
  int status = reject_status_;
  if (status == 0) {
    status = error == HPE_HEADER_OVERFLOW ? 431 : 400;
  }
  GC_LOG(Front, debug, "invalid HTTP/1.1 request: {} c={} status={}",
         http_errno_description(error), connection_.id(), status);
  respond_with_error(status);
  return true;
}

void Http1Session::resume_parsing() {
  paused_ = false;
  http_parser_pause(&parser_, 0);
  std::string input = std::move(held_input_);
  held_input_.clear();
  if (!input.empty() &&
      !parse(reinterpret_cast<const uint8_t *>(input.data()), input.size())) {
    return;
  }
  if (!paused_ && !stop_parsing_) {
    connection_.resume_reading();
  }
}

int Http1Session::reject(int status) {
  reject_status_ = status;
  return -1;
}

int Http1Session::on_message_begin() {
  in_head_ = true;
  in_value_ = false;
  head_started_at_ = ev_now(connection_.loop());
  request_ = Request{};
  field_.clear();
  value_.clear();
  header_bytes_ = 0;
  header_count_ = 0;
  host_count_ = 0;
  body_bytes_ = 0;
  connection_.check_deadline_within(connection_.config().header_timeout_s);
  return 0;
}

int Http1Session::on_url(const char *at, size_t size) {
  header_bytes_ += size;
  if (request_.path.size() + size > MaxTargetBytes) {
    return reject(414);
  }
  if (header_bytes_ > connection_.config().max_header_bytes) {
    return reject(431);
  }
  request_.path.append(at, size);
  return 0;
}

int Http1Session::on_header_field(const char *at, size_t size) {
  if (in_value_) {
    if (!finish_header_field()) {
      return -1;
    }
    in_value_ = false;
    field_.clear();
    value_.clear();
  }
  header_bytes_ += size;
  if (header_bytes_ > connection_.config().max_header_bytes) {
    return reject(431);
  }
  field_.append(at, size);
  return 0;
}

int Http1Session::on_header_value(const char *at, size_t size) {
  in_value_ = true;
  header_bytes_ += size;
  if (header_bytes_ > connection_.config().max_header_bytes) {
    return reject(431);
  }
  value_.append(at, size);
  return 0;
}

bool Http1Session::finish_header_field() {
  if (++header_count_ > MaxHeaderFields) {
    reject_status_ = 431;
    return false;
  }
  // http-parser drops the whitespace before a field value but keeps the
  // whitespace after it, which RFC 9112 section 5 excludes from the value.
  trim_trailing_blanks(value_);
  if (equals_ignoring_ascii_case(field_, "accept")) {
    if (!request_.accept.empty()) {
      request_.accept += ", ";
    }
    request_.accept += value_;
  } else if (equals_ignoring_ascii_case(field_, "range")) {
    // A second Range field makes the request ambiguous.
    if (!request_.range.empty()) {
      reject_status_ = 400;
      return false;
    }
    request_.range = value_;
  } else if (equals_ignoring_ascii_case(field_, "host")) {
    ++host_count_;
  }
  return true;
}

bool Http1Session::split_target() {
  std::string &target = request_.path;
  if (!target.empty() && target[0] == '/') {
    size_t query = target.find('?');
    if (query != std::string::npos) {
      request_.query.assign(target, query + 1);
      target.resize(query);
    }
    return true;
  }
  if (target == "*") {
    return true;
  }

  // Absolute form (RFC 9112 section 3.2.2), which a server must accept
  // though only proxies are sent it. Keep the path and the query.
  http_parser_url url;
  http_parser_url_init(&url);
  if (http_parser_parse_url(target.data(), target.size(), 0, &url) != 0) {
    // Authority form, used by CONNECT only: keep it for the log.
    return parser_.method == HTTP_CONNECT;
  }
  std::string path = "/";
  if ((url.field_set & (1 << UF_PATH)) != 0) {
    path.assign(target, url.field_data[UF_PATH].off,
                url.field_data[UF_PATH].len);
  }
  if ((url.field_set & (1 << UF_QUERY)) != 0) {
    request_.query.assign(target, url.field_data[UF_QUERY].off,
                          url.field_data[UF_QUERY].len);
  }
  target = std::move(path);
  return true;
}

int Http1Session::on_headers_complete() {
  if (in_value_ && !finish_header_field()) {
    return -1;
  }
  in_head_ = false;
  if (parser_.http_major != 1) {
    return reject(505);
  }
  // RFC 9112 section 3.2: a request without exactly one Host field, or an
  // HTTP/1.0 request with several, gets 400.
  if (host_count_ > 1 || (parser_.http_minor >= 1 && host_count_ == 0)) {
    return reject(400);
  }
  if (!split_target()) {
    return reject(400);
  }

  auto method = static_cast<http_method>(parser_.method);
  request_.method = method == HTTP_GET    ? Method::Get
                    : method == HTTP_HEAD ? Method::Head
                                          : Method::Other;
  request_.method_name = http_method_str(method);
  request_.protocol = "http/1.1";
  request_.peer = connection_.peer();
  request_.client_name = connection_.client_name();
  request_.connection_id = connection_.id();
  request_.request_id = next_request_id_++;

  auto exchange = std::make_shared<SessionExchange>(
      std::move(request_), static_cast<ExchangeOwner *>(this));
  ExchangeState &state = exchange->state();
  state.keep_alive = http_should_keep_alive(&parser_) != 0;
  state.http10 = parser_.http_minor == 0;
  exchanges_.push_back(exchange);
  reading_body_of_ = exchange.get();

  connection_.handler().handle(std::move(exchange));
  return 0;
}

int Http1Session::on_body(size_t size) {
  body_bytes_ += size;
  if (body_bytes_ > MaxDiscardedBodyBytes) {
    body_too_large_ = true;
    return -1;
  }
  return 0;
}

int Http1Session::on_message_complete() {
  if (reading_body_of_ != nullptr) {
    reading_body_of_->state().request_complete = true;
    reading_body_of_ = nullptr;
  }
  if (!http_should_keep_alive(&parser_) || shutting_down_) {
    stop_parsing_ = true;
    http_parser_pause(&parser_, 1);
  } else if (exchanges_.size() >= MaxPipelinedRequests) {
    http_parser_pause(&parser_, 1);
  }
  return 0;
}

void Http1Session::respond_with_error(int status) {
  in_head_ = false;
  if (request_.method_name.empty()) {
    request_.method_name =
        http_method_str(static_cast<http_method>(parser_.method));
  }
  request_.protocol = "http/1.1";
  request_.peer = connection_.peer();
  request_.client_name = connection_.client_name();
  request_.connection_id = connection_.id();
  request_.request_id = next_request_id_++;

  auto exchange = std::make_shared<SessionExchange>(
      std::move(request_), static_cast<ExchangeOwner *>(this));
  exchange->state().request_complete = true;
  exchanges_.push_back(exchange);

  Response response;
  response.status = status;
  response.headers.emplace_back("content-type", "text/plain");
  std::string text(reason_phrase(status));
  text += '\n';
  response.body = std::make_unique<MemoryBody>(std::move(text));
  exchange->respond(std::move(response));
}

void Http1Session::on_response(SessionExchange &exchange) {
  if (!closing_ && &exchange == exchanges_.front()) {
    connection_.request_write();
  }
}

void Http1Session::on_body_ready(SessionExchange &exchange) {
  if (!closing_ && &exchange == exchanges_.front()) {
    exchange.state().deferred = false;
    connection_.request_write();
  }
}

bool Http1Session::on_write() {
  for (;;) {
    if (!output_.empty()) {
      Step step = flush();
      if (step == Step::Failed) {
        return false;
      }
      if (step == Step::Blocked) {
        return true;
      }
    }

    SessionExchange *exchange = exchanges_.front();
    if (exchange == nullptr || !exchange->responded()) {
      break;
    }
    ExchangeState &state = exchange->state();
    if (!state.head_sent) {
      if (!write_head(*exchange)) {
        return false;
      }
      continue;
    }
    if (!state.finished) {
      Step step =
          state.chunked ? write_chunked_body(*exchange) : write_body(*exchange);
      if (step == Step::Failed) {
        return false;
      }
      if (step != Step::Done) {
        return true;
      }
      continue;
    }

    finish_exchange(*exchange);
    if (close_after_) {
      connection_.close_after_flush();
      return true;
    }
  }

  if (paused_ && !stop_parsing_ && exchanges_.size() < MaxPipelinedRequests) {
    resume_parsing();
  }
  if (shutting_down_ && exchanges_.empty()) {
    connection_.close_after_flush();
  }
  return true;
}

Http1Session::Step Http1Session::flush() {
  while (!output_.empty()) {
    auto result = connection_.write(output_.data(), output_.size());
    if (result.status == Connection::IoStatus::WouldBlock) {
      return Step::Blocked;
    }
    if (result.status == Connection::IoStatus::Error) {
      return Step::Failed;
    }
    output_.drain(result.bytes);
  }
  return Step::Done;
}

bool Http1Session::closes_after(SessionExchange &exchange) const {
  const ExchangeState &state = exchange.state();
  bool last = ExchangeList::next(exchange) == nullptr;
  return !state.keep_alive || !state.request_complete ||
         (last && (stop_parsing_ || shutting_down_));
}

bool Http1Session::write_head(SessionExchange &exchange) {
  Response &response = exchange.response();
  ExchangeState &state = exchange.state();
  const Request &request = exchange.request();

  size_t head_bytes = 0;
  for (const auto &[name, value] : response.headers) {
    head_bytes += name.size() + value.size() + 4;
  }
  if (response.status < 200 || response.status > 599 ||
      head_bytes > MaxResponseHeadBytes) {
    if (invalid_response_warnings.next()) {
      GC_LOG(Front, error,
             "handler sent an invalid response (status {}, {} header "
             "bytes) r={}.{}, sending 500 instead invalid_responses={}",
             response.status, head_bytes, request.connection_id,
             request.request_id, invalid_response_warnings.count());
    }
    response = Response{};
    response.status = 500;
  }

  BodyPlan plan = plan_body(request.method, response);
  state.send_body = plan.send_body;
  state.length = plan.content_length;
  state.chunked = plan.send_body && plan.content_length < 0 && !state.http10;
  // An HTTP/1.0 client knows no chunked coding, so a body of unknown
  // length ends with the connection.
  bool close = closes_after(exchange) ||
               (plan.send_body && plan.content_length < 0 && state.http10);
  if (close) {
    close_after_ = true;
    stop_parsing_ = true;
  }

  output_.append("HTTP/1.1 ");
  output_.append_decimal(static_cast<uint64_t>(response.status));
  output_.append(" ");
  output_.append(reason_phrase(response.status));
  output_.append("\r\nserver: gatecache\r\ndate: ");
  output_.append(http_date());
  if (plan.content_length >= 0) {
    output_.append("\r\ncontent-length: ");
    output_.append_decimal(static_cast<uint64_t>(plan.content_length));
  }
  if (state.chunked) {
    output_.append("\r\ntransfer-encoding: chunked");
  }
  if (close) {
    output_.append("\r\nconnection: close");
  } else if (state.http10) {
    output_.append("\r\nconnection: keep-alive");
  }
  for (const auto &[name, value] : response.headers) {
    if (is_reserved_header(name)) {
      continue;
    }
    if (!is_valid_header_name(name) || !is_valid_header_value(value)) {
      if (invalid_response_warnings.next()) {
        GC_LOG(Front, warn,
               "dropped invalid response header '{}' r={}.{} "
               "invalid_responses={}",
               LogText{name}, request.connection_id, request.request_id,
               invalid_response_warnings.count());
      }
      continue;
    }
    output_.append("\r\n");
    output_.append(name);
    output_.append(": ");
    output_.append(value);
  }
  output_.append("\r\n\r\n");

  state.head_sent = true;
  state.status = response.status;
  if (!state.send_body) {
    state.finished = true;
    return true;
  }
  if (!state.chunked && state.length > 0) {
    coalesce_body(exchange);
  }
  return true;
}

void Http1Session::coalesce_body(SessionExchange &exchange) {
  ExchangeState &state = exchange.state();
  BodySource &body = *exchange.response().body;
  auto length = static_cast<uint64_t>(state.length);
  uint64_t budget = 0;
  if (length <= SmallBodyBytes) {
    budget = length;
  } else if (output_.size() < TlsRecordBytes) {
    budget = TlsRecordBytes - output_.size();
  }
  budget = std::min<uint64_t>(budget, output_.space());

  while (budget > 0) {
    BodyChunk chunk = body.next(budget);
    if (chunk.state != BodyChunk::State::Data || chunk.size == 0) {
      // `write_body()` calls `next()` again and handles Wait, End and
      // Error.
      return;
    }
    size_t size = std::min<uint64_t>(chunk.size, budget);
    output_.append(chunk.data, size);
    body.consume(size);
    state.sent += size;
    budget -= size;
  }
}

Http1Session::Step Http1Session::write_body(SessionExchange &exchange) {
  ExchangeState &state = exchange.state();
  const Request &request = exchange.request();
  BodySource &body = *exchange.response().body;
  state.deferred = false;
  for (;;) {
    uint64_t remaining = UINT64_MAX;
    if (state.length >= 0) {
      remaining = static_cast<uint64_t>(state.length) - state.sent;
    }
    if (remaining == 0) {
      state.finished = true;
      return Step::Done;
    }

    // TODO: with kernel TLS (`BIO_get_ktls_send()` true), send `FileBody`
    // ranges with `SSL_sendfile()` instead of pulling mapped pages.
    size_t max = std::min<uint64_t>(remaining, MaxBodyWriteBytes);
    BodyChunk chunk = body.next(max);
    switch (chunk.state) {
    case BodyChunk::State::Data: {
      if (chunk.size == 0) {
        GC_LOG(Front, error, "response body returned no data r={}.{}",
               request.connection_id, request.request_id);
        return Step::Failed;
      }
      size_t size = std::min(chunk.size, max);
      auto result = connection_.write(chunk.data, size);
      if (result.status == Connection::IoStatus::WouldBlock) {
        return Step::Blocked;
      }
      if (result.status == Connection::IoStatus::Error) {
        return Step::Failed;
      }
      body.consume(result.bytes);
      state.sent += result.bytes;
      break;
    }
    case BodyChunk::State::Wait:
      state.deferred = true;
      return Step::Waiting;
    case BodyChunk::State::End:
      if (state.length < 0) {
        state.finished = true;
        return Step::Done;
      }
      GC_LOG(Front, warn,
             "response body ended after {} of {} bytes r={}.{}, closing",
             state.sent, state.length, request.connection_id,
             request.request_id);
      return Step::Failed;
    case BodyChunk::State::Error:
      GC_LOG(Front, warn,
             "response body failed after {} bytes r={}.{}, closing", state.sent,
             request.connection_id, request.request_id);
      return Step::Failed;
    }
  }
}

Http1Session::Step Http1Session::write_chunked_body(SessionExchange &exchange) {
  ExchangeState &state = exchange.state();
  const Request &request = exchange.request();
  BodySource &body = *exchange.response().body;
  state.deferred = false;
  for (;;) {
    // Each chunk is framed and copied into the output buffer, since
    // writing the size line and the data apart would cost extra TLS
    // records.
    if (output_.space() < ChunkFramingBytes + 1) {
      Step step = flush();
      if (step != Step::Done) {
        return step;
      }
    }
    size_t max = output_.space() - ChunkFramingBytes;
    BodyChunk chunk = body.next(max);
    switch (chunk.state) {
    case BodyChunk::State::Data: {
      if (chunk.size == 0) {
        GC_LOG(Front, error, "response body returned no data r={}.{}",
               request.connection_id, request.request_id);
        return Step::Failed;
      }
      size_t size = std::min(chunk.size, max);
      output_.append_hex(size);
      output_.append("\r\n");
      output_.append(chunk.data, size);
      output_.append("\r\n");
      body.consume(size);
      state.sent += size;
      break;
    }
    case BodyChunk::State::Wait:
      state.deferred = true;
      return flush() == Step::Failed ? Step::Failed : Step::Waiting;
    case BodyChunk::State::End:
      output_.append("0\r\n\r\n");
      state.finished = true;
      return Step::Done;
    case BodyChunk::State::Error:
      GC_LOG(Front, warn,
             "response body failed after {} bytes r={}.{}, closing", state.sent,
             request.connection_id, request.request_id);
      return Step::Failed;
    }
  }
}

void Http1Session::finish_exchange(SessionExchange &exchange) {
  if (&exchange == reading_body_of_) {
    reading_body_of_ = nullptr;
  }
  exchange.log_access(false);
  std::shared_ptr<SessionExchange> owned = exchanges_.remove(exchange);
  owned->detach(false);
}

void Http1Session::shutdown() {
  shutting_down_ = true;
  if (exchanges_.empty()) {
    connection_.close_after_flush();
    return;
  }
  stop_parsing_ = true;
  connection_.request_write();
}

void Http1Session::on_timeout() {
  if (exchanges_.empty() && !in_head_) {
    GC_LOG(Front, debug, "idle connection timed out c={}", connection_.id());
    connection_.close_after_flush();
    return;
  }
  if (in_head_ && exchanges_.empty()) {
    GC_LOG(Front, debug, "request head timed out c={} peer={}",
           connection_.id(), connection_.peer());
  } else {
    GC_LOG(Front, debug, "client stopped reading the response c={}",
           connection_.id());
  }
  connection_.abort();
}

double Http1Session::deadline(double last_io) const {
  const FrontConfig &config = connection_.config();
  SessionExchange *front = exchanges_.front();
  if (front != nullptr) {
    if (!front->responded() || front->state().deferred) {
      return INFINITY;
    }
    return last_io + config.idle_timeout_s;
  }
  if (in_head_) {
    return std::min(head_started_at_ + config.header_timeout_s,
                    last_io + config.idle_timeout_s);
  }
  return last_io + config.idle_timeout_s;
}

void Http1Session::close() {
  closing_ = true;
  reading_body_of_ = nullptr;
  while (!exchanges_.empty()) {
    std::shared_ptr<SessionExchange> exchange =
        exchanges_.remove(*exchanges_.front());
    exchange->log_access(true);
    exchange->detach(true);
  }
}

} // namespace gatecache::front
