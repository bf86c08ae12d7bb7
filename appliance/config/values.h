// Grammar of the values in the config file, shared with the code that
// checks the same kinds of values at run time (the `ns` query parameter
// names an upstream exactly as an `upstreams` key does).
//
// Each parser returns `ErrorCode::Invalid` with a short description of
// what is wrong, without the value itself, so the caller can add the key,
// the value and the accepted forms.
#pragma once

#include <cstddef>
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

// Maximum freshness window and budget window, in seconds (30 days). A tag
// that moves upstream goes unnoticed for at most this long.
inline constexpr double MaxWindowSeconds = 30 * 86400.0;

// Bounds of `tls.server_lifetime`, in seconds. The minimum lets tests watch
// a renewal within a minute. The maximum, 825 days, is the longest validity
// iOS 13 and macOS 10.15 accept for a TLS server certificate issued after
// 1 July 2019, private CAs included (Apple support article 103769).
inline constexpr double MinCertificateLifetimeSeconds = 60;
inline constexpr double MaxCertificateLifetimeSeconds = 825 * 86400.0;

// Bounds of `prewarm.interval`, in seconds: one minute to seven days.
inline constexpr double MinPrewarmIntervalSeconds = 60;
inline constexpr double MaxPrewarmIntervalSeconds = 7 * 86400.0;

// Maximum length of a cluster name, matching [a-z0-9][a-z0-9_-]{0,62}.
inline constexpr size_t MaxClusterNameLength = 63;

// Maximum length of an image set name, so that "<name>.yaml" fits the 255-byte
// file name limit of Linux file systems.
inline constexpr size_t MaxImageSetNameLength = 250;

// Accepted range of a duration value. Both bounds are inclusive. Zero is
// valid only with `allow_zero`, even when `min_seconds` is 0.
struct DurationRange {
  double min_seconds = 0;
  double max_seconds = MaxDurationSeconds;
  bool allow_zero = false;
};

// Parses a byte count: decimal digits, optionally followed by a unit:
// KiB, MiB, GiB, TiB (powers of 1024) or KB, MB, GB, TB (powers of 1000).
// Spaces may separate the number from the unit. Units are case-sensitive,
// because "mb" could as well mean megabits. Values over `MaxByteSize` and
// zero are invalid.
[[nodiscard]] Result<uint64_t> parse_byte_size(std::string_view text);

// Parses a duration into seconds: a decimal number ("10", "0.5"),
// optionally followed by a unit: ms, s, m, h or d (default s). Negative
// values, exponents and values outside `range` are invalid.
[[nodiscard]] Result<double> parse_duration(std::string_view text,
                                            DurationRange range = {});

// Formats whole seconds in the largest unit that divides them ("90s",
// "10m", "6h", "30d"), for messages about duration bounds. One day prints
// as "24h", the form timeouts are usually written in.
std::string format_duration(double seconds);

// Parses a non-negative integer written in decimal digits, with no sign,
// spaces or base prefix. Values over `UINT32_MAX` are invalid, because no
// count in the config needs more.
[[nodiscard]] Result<uint64_t> parse_count(std::string_view text);

// Parses a non-negative decimal number: digits, optionally followed by a
// dot and more digits ("0.25", "8"). Signs, exponents, "inf" and "nan" are
// invalid.
[[nodiscard]] Result<double> parse_decimal(std::string_view text);

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

// Parses an IP network "address/prefix" or a single address, which means
// /32 for IPv4 and /128 for IPv6. The address comes back canonical. An
// address with bits set past the prefix is invalid, and the message names
// the network it was probably meant as ("10.1.2.0/16" -> "10.1.0.0/16").
// IPv4-mapped IPv6 networks (::ffff:a.b.c.d/96 and longer) are invalid,
// because IPv4 networks already match IPv4-mapped peers.
[[nodiscard]] Result<Cidr> parse_cidr(std::string_view text);

// True for an address in 127.0.0.0/8 or ::1, in the form `ListenAddress`
// stores it.
bool is_loopback_address(std::string_view host);

// True for a cluster name: [a-z0-9][a-z0-9_-]{0,62}.
bool is_cluster_name(std::string_view text);

// True for a tag glob of `FreshnessRule`: 1 to 128 characters, each
// allowed in a tag ([A-Za-z0-9_.-]) or `*` or `?`.
bool is_tag_pattern(std::string_view text);

// Checks the name of an image set in `prewarm.images_dir`: the file name
// without ".yaml", made of [A-Za-z0-9._-], not "." or "..", at most
// `MaxImageSetNameLength` characters. A name that ends in ".yaml" or
// ".yml" is invalid, because the extension is added to it.
[[nodiscard]] Result<void> check_image_set_name(std::string_view text);

// Parses a listen address "address:port": a literal IPv4 address or a
// bracketed IPv6 address, and a port from 1 to 65535. Host names are
// invalid, because binding must not depend on name resolution.
[[nodiscard]] Result<ListenAddress> parse_listen_address(std::string_view text);

} // namespace gatecache::config
