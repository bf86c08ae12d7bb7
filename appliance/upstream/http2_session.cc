#include "appliance/upstream/http2_session.h"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <vector>

#include <fmt/format.h>

#include "appliance/upstream/exchange.h"
#include "common/log.h"

namespace gatecache::upstream {

namespace {

Http2Session &session_of(void *user_data) {
  return *static_cast<Http2Session *>(user_data);
}

// Connection-specific header fields are forbidden in HTTP/2 requests
// (RFC 9113 section 8.2.2), and Host is carried by `:authority`.
bool is_connection_specific(std::string_view name) {
  return name == "connection" || name == "keep-alive" ||
         name == "proxy-connection" || name == "transfer-encoding" ||
         name == "upgrade" || name == "host" || name == "te";
}

nghttp2_nv make_nv(std::string_view name, std::string_view value) {
  return nghttp2_nv{
      const_cast<uint8_t *>(reinterpret_cast<const uint8_t *>(name.data())),
      const_cast<uint8_t *>(reinterpret_cast<const uint8_t *>(value.data())),
      name.size(), value.size(), NGHTTP2_NV_FLAG_NONE};
}

std::optional<uint64_t> parse_decimal(std::string_view text) {
  uint64_t value = 0;
  auto [end, ec] =
      std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) {
    return std::nullopt;
  }
  return value;
}

} // namespace

Http2Session::Http2Session(Connection &connection) : connection_(connection) {
  nghttp2_session_callbacks *callbacks = nullptr;
  nghttp2_option *option = nullptr;
  if (nghttp2_session_callbacks_new(&callbacks) != 0 ||
      nghttp2_option_new(&option) != 0) {
    // nghttp2 fails here only when memory is exhausted.
    std::abort();
  }
  nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks,
                                                       on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks,
                                                            on_data_chunk_recv);
  nghttp2_session_callbacks_set_on_stream_close_callback(callbacks,
                                                         on_stream_close);
  int rv = nghttp2_session_client_new2(&session_, callbacks, this, option);
  nghttp2_option_del(option);
  nghttp2_session_callbacks_del(callbacks);
  if (rv != 0) {
    std::abort();
  }
}

Http2Session::~Http2Session() { nghttp2_session_del(session_); }

void Http2Session::start() {
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, StreamWindowBytes},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, MaxHeadBytes},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings,
                          std::size(settings));
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0,
                                        ConnectionWindowBytes);
  connection_.request_write();
}

size_t Http2Session::capacity() const {
  if (going_away_ || fatal_) {
    return 0;
  }
  // Client stream ids are odd and end at 2^31 - 1 (RFC 9113 section 5.1.1).
  if (nghttp2_session_get_next_stream_id(session_) > 0x7fffffffU) {
    return 0;
  }
  uint32_t limit =
      std::min(nghttp2_session_get_remote_settings(
                   session_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS),
               MaxStreams);
  return limit > streams_.size() ? limit - streams_.size() : 0;
}

bool Http2Session::submit(Exchange *exchange) {
  if (capacity() == 0) {
    return false;
  }
  const Url &url = exchange->url();
  std::string authority = url.authority();
  std::string path = url.target();
  std::vector<nghttp2_nv> nva;
  nva.reserve(4 + exchange->headers().size());
  nva.push_back(make_nv(":method", exchange->method()));
  nva.push_back(make_nv(":scheme", "https"));
  nva.push_back(make_nv(":authority", authority));
  nva.push_back(make_nv(":path", path));
  for (const auto &[name, value] : exchange->headers()) {
    if (!is_connection_specific(name)) {
      nva.push_back(make_nv(name, value));
    }
  }
  auto stream = std::make_unique<Stream>();
  stream->exchange = exchange;
  stream->is_head = exchange->is_head();
  int32_t id = nghttp2_submit_request(session_, nullptr, nva.data(), nva.size(),
                                      nullptr, stream.get());
  if (id < 0) {
    GC_LOG(Upstream, debug, "cannot open a stream on c={}: {}",
           connection_.id(), nghttp2_strerror(id));
    going_away_ = true;
    return false;
  }
  stream->id = id;
  streams_.emplace(id, std::move(stream));
  connection_.request_write();
  return true;
}

void Http2Session::abort(Exchange *exchange) {
  for (auto &[id, stream] : streams_) {
    if (stream->exchange == exchange) {
      stream->exchange = nullptr;
      nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id,
                                NGHTTP2_CANCEL);
      connection_.request_write();
      return;
    }
  }
}

Result<void> Http2Session::on_read(const uint8_t *data, size_t size) {
  ssize_t rv = nghttp2_session_mem_recv(session_, data, size);
  if (rv < 0) {
    return fail(ErrorCode::UpstreamRejected,
                std::string("HTTP/2 session failed: ") +
                    nghttp2_strerror(static_cast<int>(rv)));
  }
  return {};
}

void Http2Session::on_eof() {
  // `Connection::close()` follows and ends the open streams.
}

void Http2Session::produce(std::string &out) {
  while (out.size() < MaxOutputBytes) {
    const uint8_t *data = nullptr;
    ssize_t n = nghttp2_session_mem_send(session_, &data);
    if (n < 0) {
      fatal_ =
          Error{ErrorCode::Internal, std::string("nghttp2_session_mem_send: ") +
                                         nghttp2_strerror(static_cast<int>(n))};
      connection_.close(*fatal_);
      return;
    }
    if (n == 0) {
      return;
    }
    out.append(reinterpret_cast<const char *>(data), static_cast<size_t>(n));
  }
}

bool Http2Session::finished() const {
  return nghttp2_session_want_read(session_) == 0 &&
         nghttp2_session_want_write(session_) == 0;
}

void Http2Session::fail_all(const Error &error) {
  std::vector<std::pair<Exchange *, bool>> victims;
  for (auto &[id, stream] : streams_) {
    if (stream->exchange != nullptr) {
      victims.emplace_back(stream->exchange, stream->head_delivered);
      stream->exchange = nullptr;
    }
  }
  for (auto [exchange, head_delivered] : victims) {
    // A handler called for an earlier victim may have cancelled this one.
    if (exchange->done()) {
      continue;
    }
    if (head_delivered) {
      connection_.fail_exchange(
          exchange,
          Error{ErrorCode::Corrupt,
                "response body truncated: " + error.message},
          false);
    } else {
      connection_.fail_exchange(exchange, error, true);
    }
  }
}

Http2Session::Stream *Http2Session::find_stream(int32_t stream_id) const {
  auto it = streams_.find(stream_id);
  return it == streams_.end() ? nullptr : it->second.get();
}

int Http2Session::handle_header(const nghttp2_frame *frame,
                                std::string_view name, std::string_view value) {
  Stream *stream = find_stream(frame->hd.stream_id);
  if (stream == nullptr || stream->exchange == nullptr ||
      stream->head_delivered) {
    // Trailers and headers of abandoned streams are dropped.
    return 0;
  }
  // RFC 9113 section 6.5.2 counts 32 bytes of overhead per field.
  stream->head_bytes += name.size() + value.size() + 32;
  if (stream->head_bytes > MaxHeadBytes) {
    stream->error =
        Error{ErrorCode::UpstreamRejected,
              fmt::format("response head exceeds {} bytes", MaxHeadBytes)};
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  if (name == ":status") {
    stream->status = static_cast<int>(parse_decimal(value).value_or(0));
  } else if (!name.starts_with(':')) {
    stream->headers.emplace_back(name, value);
  }
  return 0;
}

void Http2Session::deliver_head(Stream &stream) {
  stream.head_delivered = true;
  for (const auto &[name, value] : stream.headers) {
    if (name == "content-length") {
      stream.content_length = parse_decimal(value);
    }
  }
  Exchange *exchange = stream.exchange;
  if (exchange == nullptr) {
    return;
  }
  exchange->deliver_head(stream.status, std::move(stream.headers), "h2");
  stream.headers.clear();
}

int Http2Session::handle_headers_frame(const nghttp2_frame *frame) {
  Stream *stream = find_stream(frame->hd.stream_id);
  if (stream == nullptr) {
    return 0;
  }
  if (!stream->head_delivered) {
    if (stream->status >= 100 && stream->status < 200) {
      // An interim response; the final one follows on the same stream.
      stream->headers.clear();
      stream->status = 0;
      stream->head_bytes = 0;
    } else if (stream->status >= 200) {
      deliver_head(*stream);
    }
  }
  if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
    stream->end_stream = true;
  }
  return 0;
}

int Http2Session::handle_data_chunk(int32_t stream_id, const uint8_t *data,
                                    size_t length) {
  Stream *stream = find_stream(stream_id);
  if (stream == nullptr || stream->exchange == nullptr) {
    return 0;
  }
  stream->body_bytes += length;
  // On false the exchange was aborted and `abort()` reset the stream.
  stream->exchange->deliver_data(data, length);
  return 0;
}

int Http2Session::handle_stream_close(int32_t stream_id, uint32_t error_code) {
  auto it = streams_.find(stream_id);
  if (it == streams_.end()) {
    return 0;
  }
  std::unique_ptr<Stream> stream = std::move(it->second);
  streams_.erase(it);
  connection_.on_exchange_done();
  Exchange *exchange = stream->exchange;
  if (exchange == nullptr) {
    return 0;
  }
  if (error_code == NGHTTP2_NO_ERROR && stream->head_delivered &&
      stream->end_stream) {
    if (!stream->is_head && stream->content_length &&
        stream->body_bytes != *stream->content_length) {
      connection_.fail_exchange(
          exchange,
          Error{ErrorCode::Corrupt,
                fmt::format("response body has {} bytes but Content-Length "
                            "is {}",
                            stream->body_bytes, *stream->content_length)},
          false);
      return 0;
    }
    exchange->finish(std::nullopt);
    return 0;
  }
  if (stream->error) {
    connection_.fail_exchange(exchange, *stream->error, false);
    return 0;
  }
  std::string reason =
      error_code == NGHTTP2_NO_ERROR
          ? std::string("stream closed before the response ended")
          : fmt::format("stream reset with {}",
                        nghttp2_http2_strerror(error_code));
  if (stream->head_delivered) {
    reason = fmt::format("response body truncated after {} bytes: {}",
                         stream->body_bytes, reason);
  }
  // A refused stream was not processed (RFC 9113 section 8.7), so it can
  // go to another connection.
  bool refused =
      error_code == NGHTTP2_REFUSED_STREAM && !stream->head_delivered;
  connection_.fail_exchange(
      exchange, Error{ErrorCode::UpstreamRejected, reason}, refused);
  return 0;
}

int Http2Session::on_header(nghttp2_session *, const nghttp2_frame *frame,
                            const uint8_t *name, size_t name_length,
                            const uint8_t *value, size_t value_length, uint8_t,
                            void *user_data) noexcept {
  if (frame->hd.type != NGHTTP2_HEADERS) {
    return 0;
  }
  return session_of(user_data).handle_header(
      frame,
      std::string_view(reinterpret_cast<const char *>(name), name_length),
      std::string_view(reinterpret_cast<const char *>(value), value_length));
}

int Http2Session::on_frame_recv(nghttp2_session *, const nghttp2_frame *frame,
                                void *user_data) noexcept {
  Http2Session &self = session_of(user_data);
  switch (frame->hd.type) {
  case NGHTTP2_HEADERS:
    return self.handle_headers_frame(frame);
  case NGHTTP2_DATA:
    if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
      if (Stream *stream = self.find_stream(frame->hd.stream_id)) {
        stream->end_stream = true;
      }
    }
    return 0;
  case NGHTTP2_GOAWAY:
    GC_LOG(Upstream, debug, "GOAWAY on c={} with {}", self.connection_.id(),
           nghttp2_http2_strerror(frame->goaway.error_code));
    self.going_away_ = true;
    return 0;
  default:
    return 0;
  }
}

int Http2Session::on_data_chunk_recv(nghttp2_session *, uint8_t,
                                     int32_t stream_id, const uint8_t *data,
                                     size_t length, void *user_data) noexcept {
  return session_of(user_data).handle_data_chunk(stream_id, data, length);
}

int Http2Session::on_stream_close(nghttp2_session *, int32_t stream_id,
                                  uint32_t error_code,
                                  void *user_data) noexcept {
  return session_of(user_data).handle_stream_close(stream_id, error_code);
}

} // namespace gatecache::upstream
