// HTTP/2 over one TLS connection, with nghttp2's server API.
//
// Frames are produced by `nghttp2_session_mem_send()` into one pooled
// output buffer and leave in large `SSL_write` calls, so TLS records are
// full. DATA frames use NGHTTP2_DATA_FLAG_NO_COPY: the frame header and
// the body bytes are copied once, straight from the body source into the
// output buffer. The client's flow control and stream limits are kept by
// nghttp2.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include <nghttp2/nghttp2.h>

#include "appliance/front/session.h"
#include "appliance/front/session_exchange.h"
#include "appliance/front/write_buffer.h"

namespace gatecache::front {

class Connection;

class Http2Session final : public Session, private ExchangeOwner {
public:
  explicit Http2Session(Connection &connection);
  ~Http2Session() override;

  void start() override;
  bool on_read(const uint8_t *data, size_t size) override;
  bool on_write() override;
  void shutdown() override;
  void on_timeout() override;
  double deadline(double last_io) const override;
  void close() override;

  // nghttp2 callbacks, called through C trampolines.
  int on_begin_headers(const nghttp2_frame &frame);
  int on_header(const nghttp2_frame &frame, std::string_view name,
                std::string_view value);
  int on_frame_recv(const nghttp2_frame &frame);
  int on_data_chunk_recv(int32_t stream_id, size_t size);
  int on_frame_send(const nghttp2_frame &frame);
  int on_stream_close(int32_t stream_id, uint32_t error_code);
  ssize_t read_body(SessionExchange &exchange, size_t max, uint32_t &flags);
  int send_data(const nghttp2_frame &frame, const uint8_t *frame_head,
                size_t size, SessionExchange &exchange);

private:
  void on_response(SessionExchange &exchange) override;
  void on_body_ready(SessionExchange &exchange) override;

  void reset_request();
  void dispatch(int32_t stream_id);
  void respond_with_error(int32_t stream_id, int status);
  void submit_response(SessionExchange &exchange);
  bool fill_output();
  SessionExchange *exchange_of(int32_t stream_id) const;

  Connection &connection_;
  nghttp2_session *session_ = nullptr;
  WriteBuffer output_;
  // Bytes from `nghttp2_session_mem_send()` that did not fit into
  // `output_` yet. Valid until the next call of it.
  const uint8_t *pending_ = nullptr;
  size_t pending_size_ = 0;
  ExchangeList exchanges_;
  // Reused header list for `nghttp2_submit_response()`.
  std::vector<nghttp2_nv> fields_;
  // Deferred streams whose bodies woke before nghttp2 deferred them.
  std::vector<int32_t> streams_to_resume_;

  // The request header block being received.
  Request request_;
  int32_t request_stream_ = 0;
  size_t header_bytes_ = 0;
  int request_error_status_ = 0;

  bool shutting_down_ = false;
  bool closing_ = false;
};

} // namespace gatecache::front
