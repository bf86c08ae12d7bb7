// HTTP/2 client session through nghttp2: many exchanges, one stream each.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include <nghttp2/nghttp2.h>

#include "appliance/upstream/client.h"
#include "appliance/upstream/connection.h"

namespace gatecache::upstream {

class Http2Session final : public Session {
public:
  // Receive windows large enough that one blob download is not throttled
  // by flow control on a long fat link: 16 MiB per stream, 64 MiB for the
  // connection. nghttp2 sends WINDOW_UPDATE as soon as data is consumed,
  // which the handler does synchronously.
  static constexpr int32_t StreamWindowBytes = 16 << 20;
  static constexpr int32_t ConnectionWindowBytes = 64 << 20;
  // Cap on streams per connection whatever the server allows, so one
  // connection never carries an unbounded number of requests.
  static constexpr uint32_t MaxStreams = 256;
  static constexpr size_t MaxHeadBytes = 64 * 1024;
  // Bytes of frames produced per write round before the socket gets them.
  static constexpr size_t MaxOutputBytes = 64 * 1024;

  explicit Http2Session(Connection &connection);
  ~Http2Session() override;

  void start() override;
  bool submit(Exchange *exchange) override;
  void abort(Exchange *exchange) override;
  Result<void> on_read(const uint8_t *data, size_t size) override;
  void on_eof() override;
  void produce(std::string &out) override;

  size_t active() const override { return streams_.size(); }

  size_t capacity() const override;
  void fail_all(const Error &error) override;
  bool finished() const override;

  bool draining() const override { return going_away_ || fatal_.has_value(); }

private:
  struct Stream {
    int32_t id = 0;
    Exchange *exchange = nullptr;
    HeaderList headers;
    int status = 0;
    size_t head_bytes = 0;
    bool head_delivered = false;
    bool end_stream = false;
    bool is_head = false;
    uint64_t body_bytes = 0;
    std::optional<uint64_t> content_length;
    std::optional<Error> error;
  };

  static int on_header(nghttp2_session *session, const nghttp2_frame *frame,
                       const uint8_t *name, size_t name_length,
                       const uint8_t *value, size_t value_length, uint8_t flags,
                       void *user_data) noexcept;
  static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame,
                           void *user_data) noexcept;
  static int on_data_chunk_recv(nghttp2_session *session, uint8_t flags,
                                int32_t stream_id, const uint8_t *data,
                                size_t length, void *user_data) noexcept;
  static int on_stream_close(nghttp2_session *session, int32_t stream_id,
                             uint32_t error_code, void *user_data) noexcept;

  Stream *find_stream(int32_t stream_id) const;
  int handle_header(const nghttp2_frame *frame, std::string_view name,
                    std::string_view value);
  int handle_headers_frame(const nghttp2_frame *frame);
  int handle_data_chunk(int32_t stream_id, const uint8_t *data, size_t length);
  int handle_stream_close(int32_t stream_id, uint32_t error_code);
  void deliver_head(Stream &stream);

  Connection &connection_;
  nghttp2_session *session_ = nullptr;
  std::unordered_map<int32_t, std::unique_ptr<Stream>> streams_;
  bool going_away_ = false;
  std::optional<Error> fatal_;
};

} // namespace gatecache::upstream
