// HTTP/1.1 over one TLS connection, parsed with http-parser 2.9.
//
// Requests may be pipelined: each is handed to the handler as soon as its
// head arrives, and the responses go out strictly in request order. The
// response body is written straight from the pointer the body source
// returns, so a cached blob reaches `SSL_write` without a copy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include <http_parser.h>

#include "appliance/front/session.h"
#include "appliance/front/session_exchange.h"
#include "appliance/front/write_buffer.h"

namespace gatecache::front {

class Connection;

class Http1Session final : public Session, private ExchangeOwner {
public:
  explicit Http1Session(Connection &connection);
  ~Http1Session() override;

  void start() override {}

  bool on_read(const uint8_t *data, size_t size) override;
  bool on_write() override;
  void shutdown() override;
  void on_timeout() override;
  double deadline(double last_io) const override;
  void close() override;

  // http-parser callbacks, called through C trampolines.
  int on_message_begin();
  int on_url(const char *at, size_t size);
  int on_header_field(const char *at, size_t size);
  int on_header_value(const char *at, size_t size);
  int on_headers_complete();
  int on_body(size_t size);
  int on_message_complete();

private:
  // Result of one step of writing the front response.
  enum class Step { Done, Blocked, Waiting, Failed };

  void on_response(SessionExchange &exchange) override;
  void on_body_ready(SessionExchange &exchange) override;

  bool parse(const uint8_t *data, size_t size);
  void resume_parsing();
  bool finish_header_field();
  bool split_target();
  int reject(int status);
  void respond_with_error(int status);

  Step flush();
  bool write_head(SessionExchange &exchange);
  void coalesce_body(SessionExchange &exchange);
  Step write_body(SessionExchange &exchange);
  Step write_chunked_body(SessionExchange &exchange);
  bool closes_after(SessionExchange &exchange) const;
  void finish_exchange(SessionExchange &exchange);

  Connection &connection_;
  http_parser parser_;
  ExchangeList exchanges_;
  // The newest exchange whose request body is still being read.
  SessionExchange *reading_body_of_ = nullptr;
  WriteBuffer output_;

  // The request head being parsed.
  Request request_;
  std::string field_;
  std::string value_;
  bool in_head_ = false;
  bool in_value_ = false;
  double head_started_at_ = 0;
  size_t header_bytes_ = 0;
  size_t header_count_ = 0;
  unsigned host_count_ = 0;
  uint64_t body_bytes_ = 0;
  // Bytes dropped after the last request the connection serves.
  uint64_t discarded_bytes_ = 0;
  // Status chosen by a callback that rejected the request.
  int reject_status_ = 0;
  bool body_too_large_ = false;

  // Input received while the parser is paused by a full pipeline.
  std::string held_input_;
  bool paused_ = false;
  // No further request is read on this connection.
  bool stop_parsing_ = false;
  // The response being written ends the connection.
  bool close_after_ = false;
  bool shutting_down_ = false;
  bool closing_ = false;
  uint64_t next_request_id_ = 1;
};

} // namespace gatecache::front
