// Grammar of the values in the config file, shared with the code that
// checks the same kinds of values at run time (the `ns` query parameter
// names an upstream exactly as an `upstreams` key does).
//
// Each parser returns `ErrorCode::Invalid` with a short description of
// what is wrong, without the value itself, so the caller can add the key,
// the value and the accepted forms.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "appliance/config/config.h"
#include "common/error.h"

namespace gatecache::config {

// Largest byte size and byte position accepted anywhere in the config, so
// every value also fits `off_t` and `int64_t` lengths.
inline constexpr uint64_t MaxByteSize = INT64_MAX;

// Longest duration accepted for a timeout, in seconds (one day).
inline constexpr double MaxDurationSeconds = 86400;

// Parses a byte count: decimal digits, optionally followed by a unit:
// KiB, MiB, GiB, TiB (powers of 1024) or KB, MB, GB, TB (powers of 1000).
// Spaces may separate the number from the unit. Units are case-sensitive,
// because "mb" could as well mean megabits. Values over `MaxByteSize` and
// zero are invalid.
[[nodiscard]] Result<uint64_t> parse_byte_size(std::string_view text);

// Parses a duration into seconds: a decimal number ("10", "0.5"),
// optionally followed by a unit: ms, s, m or h (default s). Zero, negative
// values, exponents and values over `MaxDurationSeconds` are invalid.
[[nodiscard]] Result<double> parse_duration(std::string_view text);

// True for a literal IPv4 address in dotted-quad form ("127.0.0.1"), or an
// IPv6 address without brackets or zone ("::1"), as inet_pton(3) accepts
// them.
bool is_ip_address(std::string_view text);

// Returns the canonical text of an IP address accepted by `is_ip_address`:
// IPv6 compressed and lower case as inet_ntop(3) writes it. Returns `text`
// unchanged when it is not an IP address.
std::string canonical_ip_address(std::string_view text);

// True for a DNS host name made of RFC 1123 labels: 1 to 63 letters, digits
// or hyphens, neither starting nor ending with a hyphen, at most 253
// characters in all. With `allow_wildcard`, the first label may be `*`
// (as in "*.example.com") when at least one label follows it. A name whose
// last label is all digits is rejected, because resolvers read it as a
// malformed IPv4 address ("127.1").
bool is_dns_name(std::string_view text, bool allow_wildcard = false);

// Parses a registry host as image references and containerd name it:
// a DNS name, an IPv4 address or a bracketed IPv6 address, each with an
// optional ":port" (1 to 65535). Returns the normalised form: DNS names in
// lower case, IPv6 canonical and bracketed, the port without leading zeros
// ("Docker.IO" -> "docker.io", "[0::1]:05000" -> "[::1]:5000").
[[nodiscard]] Result<std::string> parse_registry_host(std::string_view text);

// Parses a listen address "address:port": a literal IPv4 address or a
// bracketed IPv6 address, and a port from 1 to 65535. Host names are
// invalid, because binding must not depend on name resolution.
[[nodiscard]] Result<ListenAddress> parse_listen_address(std::string_view text);

} // namespace gatecache::config
