// HTTP helpers shared by the HTTP/1.1 and HTTP/2 sessions.
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>

#include <fmt/format.h>

#include "appliance/front/exchange.h"

namespace gatecache::front {

// Length of an IMF-fixdate such as "Sun, 06 Nov 1994 08:49:37 GMT".
inline constexpr size_t HttpDateLength = 29;

// Returns the current time as an IMF-fixdate (RFC 9110 section 5.6.7). The
// text is cached per thread and second, and the view stays valid until the
// thread ends; its bytes change when the second changes.
std::string_view http_date();

// Returns the reason phrase of `status`, or "Unknown" for a code without
// one in RFC 9110.
std::string_view reason_phrase(int status);

// True when `name` is a non-empty lower-case token (RFC 9110 section
// 5.6.2). HTTP/2 forbids upper-case field names, so both sessions demand
// lower case.
bool is_valid_header_name(std::string_view name);

// True when `value` contains no CR, LF or NUL and no other control byte
// but HTAB (RFC 9110 section 5.5), so it cannot split a header.
bool is_valid_header_value(std::string_view value);

// True for fields that the sessions write themselves (content-length,
// date, server) or that belong to one connection only (connection,
// keep-alive, proxy-connection, transfer-encoding, upgrade, te), which
// RFC 9113 section 8.2.2 forbids in HTTP/2.
bool is_reserved_header(std::string_view name);

// Body decision for one response: whether a body follows, and the
// Content-Length that the response head announces.
struct BodyPlan {
  bool send_body = false;
  // Content-Length to send, or -1 for none (HTTP/1.1 then uses chunked
  // encoding when a body follows).
  int64_t content_length = -1;
};

// Decides the body and Content-Length of `response` to a `method` request.
// RFC 9110 section 6.4.1: HEAD, 1xx, 204 and 304 responses carry no body.
// HEAD announces `head_length` when set, else the body's length, else 0.
// A 304 announces `head_length` only, and 1xx and 204 never announce one.
// Any other response announces the body's length when known, and 0
// without a body.
BodyPlan plan_body(Method method, const Response &response);

// Rate limit for a warning that can repeat once per request: `next()`
// returns true on the 1st, 2nd, 4th, 8th... occurrence in the process.
class EveryPowerOfTwo {
public:
  bool next() {
    uint64_t n = count_.fetch_add(1, std::memory_order_relaxed) + 1;
    return (n & (n - 1)) == 0;
  }

  // Occurrences so far.
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }

private:
  std::atomic<uint64_t> count_{0};
};

// Counts warnings about invalid responses from the handler, which repeat
// on every request while the handler is broken.
extern EveryPowerOfTwo invalid_response_warnings;

// Text for a log line. Formatting writes every byte outside 0x21..0x7e,
// and the backslash, as `\xHH`, so a client cannot forge fields or lines,
// and writes empty text as "-" unless `dash_if_empty` is false.
struct LogText {
  std::string_view text;
  bool dash_if_empty = true;
};

} // namespace gatecache::front

template <> struct fmt::formatter<gatecache::front::LogText> {
  constexpr auto parse(fmt::format_parse_context &context) {
    return context.begin();
  }

  fmt::format_context::iterator format(gatecache::front::LogText value,
                                       fmt::format_context &context) const;
};
