// Absolute https URLs and RFC 3986 reference resolution for `Location`.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/error.h"

namespace gatecache::upstream {

// An absolute https URL split into the parts a request needs. The fragment
// is dropped because it never goes on the wire.
struct Url {
  std::string host; // Lower-case name or IP literal, without brackets.
  uint16_t port = 443;
  std::string path;  // Starts with '/'; percent-encoding kept as received.
  std::string query; // Without '?'.
  bool has_query = false;

  // Returns true when `host` is an IPv4 or IPv6 literal.
  bool is_ip_literal() const;
  // Returns the Host header or `:authority` value: "host", "[::1]:8443".
  std::string authority() const;
  // Returns "https://host:port" with the port always present, the key that
  // decides whether two URLs are the same origin (RFC 6454 section 4).
  std::string origin() const;
  // Returns the request target: the path, then '?' and the query if any.
  std::string target() const;
  // Returns the whole URL, for `ResponseHead::url`.
  std::string str() const;
  // Returns the URL without its query, for logs and error messages: the
  // query of a CDN redirect is often a signature that grants access.
  std::string redacted() const;
};

// Returns true when `host` is an IPv4 or IPv6 literal without brackets.
bool is_ip_literal(const std::string &host);

// Parses an absolute URL. Only the https scheme is accepted. Bytes above
// 0x7e and spaces in the path or query are percent-encoded, and other
// control bytes are rejected, so the result is safe to put in a request
// line. Returns `ErrorCode::Invalid` naming the URL on failure.
[[nodiscard]] Result<Url> parse_url(std::string_view text);

// Resolves `reference` (a `Location` value) against `base` as RFC 3986
// section 5.2 describes: an absolute URL, a network-path reference
// ("//host/path"), an absolute path, a relative path or a query alone.
// Dot segments are removed. Returns `ErrorCode::Invalid` when the result
// is not a valid https URL.
[[nodiscard]] Result<Url> resolve_reference(const Url &base,
                                            std::string_view reference);

// Percent-encodes `value` for use as a query parameter name or value: every
// byte except RFC 3986 unreserved characters becomes %XX.
std::string encode_query_component(std::string_view value);

} // namespace gatecache::upstream
