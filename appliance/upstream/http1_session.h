// HTTP/1.1 on a keep-alive connection: one exchange at a time, no
// pipelining, responses parsed by http-parser.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <http_parser.h>

#include "appliance/upstream/client.h"
#include "appliance/upstream/connection.h"

namespace gatecache::upstream {

class Http1Session final : public Session {
public:
  // Limits on a response head, against hostile or broken upstreams.
  static constexpr size_t MaxHeadBytes = 64 * 1024;
  static constexpr size_t MaxHeaderCount = 256;

  explicit Http1Session(Connection &connection);

  void start() override {}

  bool submit(Exchange *exchange) override;
  void abort(Exchange *exchange) override;
  Result<void> on_read(const uint8_t *data, size_t size) override;
  void on_eof() override;
  void produce(std::string &out) override;

  size_t active() const override { return current_ != nullptr ? 1 : 0; }

  size_t capacity() const override;
  void fail_all(const Error &error) override;

  bool finished() const override { return false; }

  bool draining() const override { return !reusable_; }

private:
  static int on_header_field(http_parser *parser, const char *at,
                             size_t length) noexcept;
  static int on_header_value(http_parser *parser, const char *at,
                             size_t length) noexcept;
  static int on_headers_complete(http_parser *parser) noexcept;
  static int on_body(http_parser *parser, const char *at,
                     size_t length) noexcept;
  static int on_message_complete(http_parser *parser) noexcept;
  static const http_parser_settings Settings;

  int handle_header_field(const char *at, size_t length);
  int handle_header_value(const char *at, size_t length);
  int handle_headers_complete();
  int handle_body(const char *at, size_t length);
  int handle_message_complete();
  bool store_header();
  bool add_head_bytes(size_t length);
  std::string truncation_detail() const;

  Connection &connection_;
  http_parser parser_;
  Exchange *current_ = nullptr;
  bool reusable_ = true;
  std::string request_;
  HeaderList headers_;
  std::string field_;
  std::string value_;
  bool in_value_ = false;
  size_t head_bytes_ = 0;
  bool interim_ = false;
  bool head_delivered_ = false;
  uint64_t body_bytes_ = 0;
  std::optional<uint64_t> content_length_;
  std::optional<Error> callback_error_;
};

} // namespace gatecache::upstream
