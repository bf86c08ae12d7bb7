#include "appliance/front/http2_session.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <memory>
#include <utility>

#include "appliance/front/connection.h"
#include "appliance/front/front_config.h"
#include "appliance/front/http_util.h"
#include "common/log.h"

namespace gatecache::front {

namespace {

// Size of an HTTP/2 frame header (RFC 9113 section 4.1).
constexpr size_t FrameHeaderBytes = 9;
// The output buffer is flushed once less than one full DATA frame fits.
constexpr size_t MinFillSpace = 16384 + FrameHeaderBytes;
// RFC 9113 section 6.5.2 counts 32 bytes of overhead per header field
// towards SETTINGS_MAX_HEADER_LIST_SIZE.
constexpr size_t HeaderFieldOverhead = 32;
// Request body bytes dropped before the stream is reset. Registry clients
// send bodies only with pushes, which the handler rejects anyway.
constexpr uint64_t MaxDiscardedBodyBytes = 64 * 1024;

Http2Session &session_of(void *user_data) {
  return *static_cast<Http2Session *>(user_data);
}

int on_begin_headers(nghttp2_session *, const nghttp2_frame *frame,
                     void *user_data) noexcept {
  return session_of(user_data).on_begin_headers(*frame);
}

int on_header(nghttp2_session *, const nghttp2_frame *frame,
              const uint8_t *name, size_t name_size, const uint8_t *value,
              size_t value_size, uint8_t, void *user_data) noexcept {
  return session_of(user_data).on_header(
      *frame, {reinterpret_cast<const char *>(name), name_size},
      {reinterpret_cast<const char *>(value), value_size});
}

int on_frame_recv(nghttp2_session *, const nghttp2_frame *frame,
                  void *user_data) noexcept {
  return session_of(user_data).on_frame_recv(*frame);
}

int on_data_chunk_recv(nghttp2_session *, uint8_t, int32_t stream_id,
                       const uint8_t *, size_t size, void *user_data) noexcept {
  return session_of(user_data).on_data_chunk_recv(stream_id, size);
}

int on_frame_send(nghttp2_session *, const nghttp2_frame *frame,
                  void *user_data) noexcept {
  return session_of(user_data).on_frame_send(*frame);
}

int on_stream_close(nghttp2_session *, int32_t stream_id, uint32_t error_code,
                    void *user_data) noexcept {
  return session_of(user_data).on_stream_close(stream_id, error_code);
}

ssize_t on_read_body(nghttp2_session *, int32_t, uint8_t *, size_t max,
                     uint32_t *flags, nghttp2_data_source *source,
                     void *user_data) noexcept {
  auto &exchange = *static_cast<SessionExchange *>(source->ptr);
  return session_of(user_data).read_body(exchange, max, *flags);
}

int on_send_data(nghttp2_session *, nghttp2_frame *frame,
                 const uint8_t *frame_head, size_t size,
                 nghttp2_data_source *source, void *user_data) noexcept {
  auto &exchange = *static_cast<SessionExchange *>(source->ptr);
  return session_of(user_data).send_data(*frame, frame_head, size, exchange);
}

// Callbacks and options are the same for every session, so they are built
// once per process.
struct SessionSetup {
  nghttp2_session_callbacks *callbacks = nullptr;
  nghttp2_option *option = nullptr;

  SessionSetup() {
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks,
                                                            on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks,
                                                         on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
        callbacks, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(callbacks,
                                                         on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks,
                                                           on_stream_close);
    nghttp2_session_callbacks_set_send_data_callback(callbacks, on_send_data);

    nghttp2_option_new(&option);
    // Closed streams are kept only for the RFC 7540 priority tree, which
    // a cache serving independent blobs does not need.
    nghttp2_option_set_no_closed_streams(option, 1);
    // The libnghttp2 1.52.0-1+deb12u3 in Debian 12 limits RST_STREAM
    // floods and CONTINUATION floods by default, so no option is set for
    // them.
  }

  ~SessionSetup() {
    nghttp2_option_del(option);
    nghttp2_session_callbacks_del(callbacks);
  }
};

const SessionSetup &session_setup() {
  static const SessionSetup setup;
  return setup;
}

nghttp2_nv make_field(std::string_view name, std::string_view value) {
  return {reinterpret_cast<uint8_t *>(const_cast<char *>(name.data())),
          reinterpret_cast<uint8_t *>(const_cast<char *>(value.data())),
          name.size(), value.size(),
          NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
}

} // namespace

Http2Session::Http2Session(Connection &connection)
    : connection_(connection), output_(connection.buffers()) {
  const SessionSetup &setup = session_setup();
  if (nghttp2_session_server_new2(&session_, setup.callbacks, this,
                                  setup.option) != 0) {
    // Only allocation fails here, and out of memory ends the process.
    GC_LOG(Front, critical, "cannot create an HTTP/2 session: out of memory");
    std::abort();
  }
}

Http2Session::~Http2Session() {
  if (!closing_) {
    close();
  }
  nghttp2_session_del(session_);
}

void Http2Session::start() {
  const FrontConfig &config = connection_.config();
  nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, config.max_concurrent_streams},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
       static_cast<uint32_t>(config.max_header_bytes)},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings,
                          std::size(settings));
  connection_.request_write();
}

bool Http2Session::on_read(const uint8_t *data, size_t size) {
  ssize_t rv = nghttp2_session_mem_recv(session_, data, size);
  if (rv >= 0) {
    return true;
  }
  GC_LOG(Front, debug, "HTTP/2 receive failed: {} c={}",
         nghttp2_strerror(static_cast<int>(rv)), connection_.id());
  if (rv == NGHTTP2_ERR_BAD_CLIENT_MAGIC) {
    return false;
  }
  // nghttp2 has usually queued a GOAWAY already; this one is ignored then.
  nghttp2_session_terminate_session(session_, NGHTTP2_PROTOCOL_ERROR);
  connection_.pause_reading();
  connection_.close_after_flush();
  return true;
}

int Http2Session::on_begin_headers(const nghttp2_frame &frame) {
  if (frame.hd.type != NGHTTP2_HEADERS ||
      frame.headers.cat != NGHTTP2_HCAT_REQUEST) {
    return 0;
  }
  reset_request();
  request_stream_ = frame.hd.stream_id;
  header_bytes_ = 0;
  request_error_status_ = 0;
  return 0;
}

int Http2Session::on_header(const nghttp2_frame &frame, std::string_view name,
                            std::string_view value) {
  if (frame.hd.stream_id != request_stream_ ||
      frame.headers.cat != NGHTTP2_HCAT_REQUEST) {
    return 0;
  }
  header_bytes_ += name.size() + value.size() + HeaderFieldOverhead;
  if (header_bytes_ > connection_.config().max_header_bytes) {
    request_error_status_ = 431;
  }
  if (request_error_status_ != 0) {
    return 0;
  }

  if (name == ":method") {
    request_.method_name.assign(value);
    request_.method = value == "GET"    ? Method::Get
                      : value == "HEAD" ? Method::Head
                                        : Method::Other;
  } else if (name == ":path") {
    size_t query = value.find('?');
    if (query == std::string_view::npos) {
      request_.path.assign(value);
    } else {
      request_.path.assign(value.substr(0, query));
      request_.query.assign(value.substr(query + 1));
    }
  } else if (name == "accept") {
    if (!request_.accept.empty()) {
      request_.accept += ", ";
    }
    request_.accept.append(value);
  } else if (name == "range") {
    // A second Range field makes the request ambiguous.
    if (!request_.range.empty()) {
      request_error_status_ = 400;
    }
    request_.range.assign(value);
  }
  return 0;
}

int Http2Session::on_frame_recv(const nghttp2_frame &frame) {
  if (frame.hd.type == NGHTTP2_HEADERS &&
      frame.headers.cat == NGHTTP2_HCAT_REQUEST) {
    dispatch(frame.hd.stream_id);
  }
  return 0;
}

int Http2Session::on_data_chunk_recv(int32_t stream_id, size_t size) {
  // Request bodies are dropped, and nghttp2 returns the flow-control
  // credit. Past a limit the stream is reset, so a client cannot make the
  // server decrypt uploads without end.
  SessionExchange *exchange = exchange_of(stream_id);
  if (exchange == nullptr) {
    return 0;
  }
  ExchangeState &state = exchange->state();
  state.request_body_bytes += size;
  if (state.request_body_bytes > MaxDiscardedBodyBytes &&
      state.request_body_bytes - size <= MaxDiscardedBodyBytes) {
    // RFC 9113 section 8.1: after a complete response, NO_ERROR tells the
    // client to stop sending without failing the request.
    uint32_t error = state.finished ? NGHTTP2_NO_ERROR : NGHTTP2_CANCEL;
    GC_LOG(Front, debug,
           "request body passed {} bytes r={}.{}, resetting the stream",
           MaxDiscardedBodyBytes, connection_.id(), stream_id);
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, error);
  }
  return 0;
}

void Http2Session::reset_request() {
  // Clearing keeps whatever capacity the strings still have, which a
  // fresh `Request` would not.
  request_.method = Method::Other;
  request_.method_name.clear();
  request_.path.clear();
  request_.query.clear();
  request_.accept.clear();
  request_.range.clear();
}

void Http2Session::dispatch(int32_t stream_id) {
  if (stream_id != request_stream_ || closing_) {
    return;
  }
  request_stream_ = 0;
  if (request_error_status_ != 0) {
    respond_with_error(stream_id, request_error_status_);
    return;
  }

  request_.protocol = "h2";
  request_.peer = connection_.peer();
  request_.client_name = connection_.client_name();
  request_.connection_id = connection_.id();
  request_.request_id = static_cast<uint64_t>(stream_id);
  auto exchange = std::make_shared<SessionExchange>(
      std::move(request_), static_cast<ExchangeOwner *>(this));
  exchange->state().stream_id = stream_id;
  nghttp2_session_set_stream_user_data(session_, stream_id, exchange.get());
  exchanges_.push_back(exchange);
  connection_.handler().handle(std::move(exchange));
}

void Http2Session::respond_with_error(int32_t stream_id, int status) {
  GC_LOG(Front, debug, "rejected HTTP/2 request c={} stream={} status={}",
         connection_.id(), stream_id, status);
  request_.protocol = "h2";
  request_.peer = connection_.peer();
  request_.client_name = connection_.client_name();
  request_.connection_id = connection_.id();
  request_.request_id = static_cast<uint64_t>(stream_id);
  auto exchange = std::make_shared<SessionExchange>(
      std::move(request_), static_cast<ExchangeOwner *>(this));
  exchange->state().stream_id = stream_id;
  nghttp2_session_set_stream_user_data(session_, stream_id, exchange.get());
  exchanges_.push_back(exchange);

  Response response;
  response.status = status;
  response.headers.emplace_back("content-type", "text/plain");
  std::string text(reason_phrase(status));
  text += '\n';
  response.body = std::make_unique<MemoryBody>(std::move(text));
  exchange->respond(std::move(response));
}

void Http2Session::on_response(SessionExchange &exchange) {
  if (closing_) {
    return;
  }
  submit_response(exchange);
  connection_.request_write();
}

void Http2Session::submit_response(SessionExchange &exchange) {
  Response &response = exchange.response();
  ExchangeState &state = exchange.state();
  const Request &request = exchange.request();
  if (response.status < 200 || response.status > 599) {
    if (invalid_response_warnings.next()) {
      GC_LOG(Front, error,
             "handler sent invalid status {} r={}.{}, sending 500 instead "
             "invalid_responses={}",
             response.status, request.connection_id, request.request_id,
             invalid_response_warnings.count());
    }
    response = Response{};
    response.status = 500;
  }

  BodyPlan plan = plan_body(request.method, response);
  state.send_body = plan.send_body;
  state.length = plan.content_length;
  state.status = response.status;
  state.head_sent = true;

  std::to_chars(state.status_text, state.status_text + 3, response.status);
  std::string_view date = http_date();
  std::memcpy(state.date_text, date.data(), date.size());

  fields_.clear();
  fields_.push_back(make_field(":status", state.status_text));
  fields_.push_back(make_field("server", "gatecache"));
  fields_.push_back(make_field("date", {state.date_text, date.size()}));
  if (plan.content_length >= 0) {
    auto end = std::to_chars(state.length_text,
                             state.length_text + sizeof(state.length_text),
                             plan.content_length)
                   .ptr;
    fields_.push_back(make_field(
        "content-length",
        {state.length_text, static_cast<size_t>(end - state.length_text)}));
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
    fields_.push_back(make_field(name, value));
  }

  nghttp2_data_provider provider;
  provider.source.ptr = &exchange;
  provider.read_callback = on_read_body;
  int rv = nghttp2_submit_response(session_, state.stream_id, fields_.data(),
                                   fields_.size(),
                                   plan.send_body ? &provider : nullptr);
  if (rv != 0) {
    GC_LOG(Front, error, "cannot submit HTTP/2 response: {} r={}.{}",
           nghttp2_strerror(rv), request.connection_id, request.request_id);
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, state.stream_id,
                              NGHTTP2_INTERNAL_ERROR);
  }
}

void Http2Session::on_body_ready(SessionExchange &exchange) {
  ExchangeState &state = exchange.state();
  if (closing_) {
    return;
  }
  if (!state.deferred) {
    // The body woke from inside its own `next()`, before `read_body()`
    // could defer the stream. `read_body()` checks `woke` and resumes it.
    state.woke = true;
    return;
  }
  state.deferred = false;
  nghttp2_session_resume_data(session_, state.stream_id);
  connection_.request_write();
}

ssize_t Http2Session::read_body(SessionExchange &exchange, size_t max,
                                uint32_t &flags) {
  ExchangeState &state = exchange.state();
  const Request &request = exchange.request();
  uint64_t remaining = UINT64_MAX;
  if (state.length >= 0) {
    remaining = static_cast<uint64_t>(state.length) - state.sent;
  }
  size_t limit = std::min<uint64_t>(max, remaining);
  if (limit == 0) {
    flags |= NGHTTP2_DATA_FLAG_EOF;
    return 0;
  }

  state.woke = false;
  BodyChunk chunk = exchange.response().body->next(limit);
  switch (chunk.state) {
  case BodyChunk::State::Data: {
    if (chunk.size == 0) {
      GC_LOG(Front, error, "response body returned no data r={}.{}",
             request.connection_id, request.request_id);
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    size_t size = std::min(chunk.size, limit);
    state.chunk = chunk.data;
    flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (size == remaining) {
      flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    return static_cast<ssize_t>(size);
  }
  case BodyChunk::State::Wait:
    if (state.woke) {
      // nghttp2 cannot resume a stream before it is deferred, which happens
      // only after this callback returns.
      streams_to_resume_.push_back(state.stream_id);
      connection_.request_write();
    } else {
      state.deferred = true;
    }
    return NGHTTP2_ERR_DEFERRED;
  case BodyChunk::State::End:
    if (state.length < 0) {
      flags |= NGHTTP2_DATA_FLAG_EOF;
      return 0;
    }
    GC_LOG(Front, warn,
           "response body ended after {} of {} bytes r={}.{}, resetting "
           "the stream",
           state.sent, state.length, request.connection_id, request.request_id);
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  case BodyChunk::State::Error:
    GC_LOG(Front, warn,
           "response body failed after {} bytes r={}.{}, resetting the "
           "stream",
           state.sent, request.connection_id, request.request_id);
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

int Http2Session::send_data(const nghttp2_frame &frame,
                            const uint8_t *frame_head, size_t size,
                            SessionExchange &exchange) {
  // No padding callback is set, so frames carry no padding.
  if (frame.data.padlen != 0) {
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  if (output_.space() < FrameHeaderBytes + size) {
    return NGHTTP2_ERR_WOULDBLOCK;
  }
  ExchangeState &state = exchange.state();
  output_.append(frame_head, FrameHeaderBytes);
  output_.append(state.chunk, size);
  exchange.response().body->consume(size);
  state.sent += size;
  state.chunk = nullptr;
  return 0;
}

int Http2Session::on_frame_send(const nghttp2_frame &frame) {
  if ((frame.hd.type == NGHTTP2_HEADERS || frame.hd.type == NGHTTP2_DATA) &&
      (frame.hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
    SessionExchange *exchange = exchange_of(frame.hd.stream_id);
    if (exchange != nullptr) {
      exchange->state().finished = true;
    }
  }
  return 0;
}

int Http2Session::on_stream_close(int32_t stream_id, uint32_t error_code) {
  SessionExchange *exchange = exchange_of(stream_id);
  if (exchange == nullptr || closing_) {
    return 0;
  }
  nghttp2_session_set_stream_user_data(session_, stream_id, nullptr);
  bool aborted = !exchange->state().finished;
  if (aborted) {
    GC_LOG(Front, debug,
           "stream closed before the response ended r={}.{} "
           "error={}",
           connection_.id(), stream_id, nghttp2_http2_strerror(error_code));
  }
  exchange->log_access(aborted);
  std::shared_ptr<SessionExchange> owned = exchanges_.remove(*exchange);
  owned->detach(aborted);
  return 0;
}

SessionExchange *Http2Session::exchange_of(int32_t stream_id) const {
  return static_cast<SessionExchange *>(
      nghttp2_session_get_stream_user_data(session_, stream_id));
}

bool Http2Session::fill_output() {
  for (;;) {
    if (pending_size_ > 0) {
      size_t size = std::min(pending_size_, output_.space());
      output_.append(pending_, size);
      pending_ += size;
      pending_size_ -= size;
      if (pending_size_ > 0) {
        return true;
      }
    }
    if (output_.space() < MinFillSpace) {
      return true;
    }
    for (int32_t stream_id : streams_to_resume_) {
      nghttp2_session_resume_data(session_, stream_id);
    }
    streams_to_resume_.clear();

    const uint8_t *data = nullptr;
    ssize_t size = nghttp2_session_mem_send(session_, &data);
    if (size < 0) {
      GC_LOG(Front, error, "HTTP/2 send failed: {} c={}",
             nghttp2_strerror(static_cast<int>(size)), connection_.id());
      return false;
    }
    if (size == 0) {
      // Nothing more to send, or a DATA frame waits for buffer space.
      return true;
    }
    pending_ = data;
    pending_size_ = static_cast<size_t>(size);
  }
}

bool Http2Session::on_write() {
  for (;;) {
    if (!fill_output()) {
      return false;
    }
    if (output_.empty()) {
      break;
    }
    auto result = connection_.write(output_.data(), output_.size());
    if (result.status == Connection::IoStatus::WouldBlock) {
      return true;
    }
    if (result.status == Connection::IoStatus::Error) {
      return false;
    }
    output_.drain(result.bytes);
  }

  if (nghttp2_session_want_read(session_) == 0 &&
      nghttp2_session_want_write(session_) == 0) {
    connection_.close_after_flush();
  }
  return true;
}

void Http2Session::shutdown() {
  if (shutting_down_) {
    return;
  }
  shutting_down_ = true;
  // Streams up to the last one processed still get their responses; the
  // client may retry later ones on a new connection (RFC 9113 section
  // 6.8).
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session_),
                        NGHTTP2_NO_ERROR, nullptr, 0);
  connection_.request_write();
}

void Http2Session::on_timeout() {
  for (SessionExchange *exchange = exchanges_.front(); exchange != nullptr;
       exchange = ExchangeList::next(*exchange)) {
    if (!exchange->state().finished) {
      GC_LOG(Front, debug, "client stopped reading responses c={}",
             connection_.id());
      connection_.abort();
      return;
    }
  }
  GC_LOG(Front, debug, "idle connection timed out c={}", connection_.id());
  nghttp2_session_terminate_session(session_, NGHTTP2_NO_ERROR);
  connection_.close_after_flush();
}

double Http2Session::deadline(double last_io) const {
  for (SessionExchange *exchange = exchanges_.front(); exchange != nullptr;
       exchange = ExchangeList::next(*exchange)) {
    const ExchangeState &state = exchange->state();
    if (!state.finished && (!exchange->responded() || state.deferred)) {
      return INFINITY;
    }
  }
  return last_io + connection_.config().idle_timeout_s;
}

void Http2Session::close() {
  closing_ = true;
  // Bytes still in the output buffer never reach the client.
  bool unsent = !output_.empty() || pending_size_ > 0;
  while (!exchanges_.empty()) {
    std::shared_ptr<SessionExchange> exchange =
        exchanges_.remove(*exchanges_.front());
    int32_t stream_id = exchange->state().stream_id;
    nghttp2_session_set_stream_user_data(session_, stream_id, nullptr);
    bool aborted = !exchange->state().finished || unsent;
    exchange->log_access(aborted);
    exchange->detach(aborted);
  }
}

} // namespace gatecache::front
