// Value grammar of the config file (see values.h) and `ListenAddress`.
#include "appliance/config/config.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <system_error>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "appliance/config/values.h"

namespace gatecache::config {
namespace {

constexpr size_t MaxDnsNameLength = 253;
constexpr size_t MaxDnsLabelLength = 63;

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool is_alnum(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

char to_lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

std::string_view trim_spaces(std::string_view text) {
  while (!text.empty() && text.front() == ' ') {
    text.remove_prefix(1);
  }
  while (!text.empty() && text.back() == ' ') {
    text.remove_suffix(1);
  }
  return text;
}

// Splits "123 GiB" into the leading digits (and dots when `allow_dot`) and
// the rest with the spaces in between removed.
void split_number(std::string_view text, bool allow_dot,
                  std::string_view &number, std::string_view &unit) {
  size_t end = 0;
  while (end < text.size() &&
         (is_digit(text[end]) || (allow_dot && text[end] == '.'))) {
    ++end;
  }
  number = text.substr(0, end);
  unit = trim_spaces(text.substr(end));
}

// Parses decimal digits only; no sign, no spaces, no base prefix.
bool parse_digits(std::string_view text, uint64_t &value) {
  if (text.empty()) {
    return false;
  }
  for (char c : text) {
    if (!is_digit(c)) {
      return false;
    }
  }
  auto [end, error] =
      std::from_chars(text.data(), text.data() + text.size(), value);
  return error == std::errc() && end == text.data() + text.size();
}

bool parse_port(std::string_view text, uint16_t &port) {
  uint64_t value = 0;
  // Five digits at most, so "000000443" is not a port.
  if (text.size() > 5 || !parse_digits(text, value)) {
    return false;
  }
  if (value < 1 || value > 65535) {
    return false;
  }
  port = static_cast<uint16_t>(value);
  return true;
}

bool is_ipv4_address(std::string_view text) {
  // INET_ADDRSTRLEN includes the terminating NUL.
  if (text.empty() || text.size() >= INET_ADDRSTRLEN) {
    return false;
  }
  std::string copy(text);
  in_addr address;
  return inet_pton(AF_INET, copy.c_str(), &address) == 1;
}

bool is_ipv6_address(std::string_view text) {
  if (text.empty() || text.size() >= INET6_ADDRSTRLEN) {
    return false;
  }
  std::string copy(text);
  in6_addr address;
  return inet_pton(AF_INET6, copy.c_str(), &address) == 1;
}

bool is_dns_label(std::string_view label) {
  if (label.empty() || label.size() > MaxDnsLabelLength) {
    return false;
  }
  if (label.front() == '-' || label.back() == '-') {
    return false;
  }
  for (char c : label) {
    if (!is_alnum(c) && c != '-') {
      return false;
    }
  }
  return true;
}

bool is_all_digits(std::string_view text) {
  for (char c : text) {
    if (!is_digit(c)) {
      return false;
    }
  }
  return !text.empty();
}

std::string to_lower(std::string_view text) {
  std::string lower(text);
  for (char &c : lower) {
    c = to_lower(c);
  }
  return lower;
}

} // namespace

std::string ListenAddress::str() const {
  std::string text;
  if (host.find(':') != std::string::npos) {
    text = "[" + host + "]";
  } else {
    text = host;
  }
  return text + ":" + std::to_string(port);
}

std::string Cidr::str() const {
  return address + "/" + std::to_string(prefix_length);
}

Result<uint64_t> parse_byte_size(std::string_view text) {
  struct Unit {
    std::string_view name;
    uint64_t factor;
  };

  static constexpr std::array<Unit, 8> units = {{
      {"KiB", 1ULL << 10},
      {"MiB", 1ULL << 20},
      {"GiB", 1ULL << 30},
      {"TiB", 1ULL << 40},
      {"KB", 1000ULL},
      {"MB", 1000ULL * 1000},
      {"GB", 1000ULL * 1000 * 1000},
      {"TB", 1000ULL * 1000 * 1000 * 1000},
  }};

  std::string_view number;
  std::string_view unit;
  split_number(trim_spaces(text), false, number, unit);
  if (!is_all_digits(number)) {
    return fail(ErrorCode::Invalid, "invalid size");
  }
  uint64_t value = 0;
  if (!parse_digits(number, value)) {
    return fail(ErrorCode::Invalid, "size is too large");
  }

  uint64_t factor = 1;
  if (!unit.empty()) {
    factor = 0;
    for (const Unit &candidate : units) {
      if (candidate.name == unit) {
        factor = candidate.factor;
      }
    }
    if (factor == 0) {
      return fail(ErrorCode::Invalid, "unknown size unit");
    }
  }

  if (value == 0) {
    return fail(ErrorCode::Invalid, "size must be greater than 0");
  }
  if (value > MaxByteSize / factor) {
    return fail(ErrorCode::Invalid, "size is too large");
  }
  return value * factor;
}

Result<double> parse_duration(std::string_view text, DurationRange range) {
  std::string_view number;
  std::string_view unit;
  split_number(trim_spaces(text), true, number, unit);

  // Digits, then optionally one dot and more digits: no sign, exponent,
  // "inf" or "nan", which from_chars would accept.
  size_t dot = number.find('.');
  bool well_formed = !number.empty() && is_digit(number.front());
  if (dot != std::string_view::npos) {
    std::string_view fraction = number.substr(dot + 1);
    well_formed = well_formed && is_all_digits(fraction);
  }
  double value = 0;
  if (well_formed) {
    auto [end, error] =
        std::from_chars(number.data(), number.data() + number.size(), value);
    well_formed = error == std::errc() && end == number.data() + number.size();
  }
  if (!well_formed) {
    return fail(ErrorCode::Invalid, "invalid duration");
  }

  if (unit == "ms") {
    value /= 1000;
  } else if (unit == "m") {
    value *= 60;
  } else if (unit == "h") {
    value *= 3600;
  } else if (unit == "d") {
    value *= 86400;
  } else if (unit != "s" && !unit.empty()) {
    return fail(ErrorCode::Invalid, "unknown duration unit");
  }

  if (value == 0 && range.allow_zero) {
    return value;
  }
  if (!(value > 0)) {
    return fail(ErrorCode::Invalid, "duration must be greater than 0");
  }
  if (!std::isfinite(value) || value > range.max_seconds) {
    return fail(ErrorCode::Invalid, "duration is too long");
  }
  if (value < range.min_seconds) {
    return fail(ErrorCode::Invalid, "duration is shorter than " +
                                        format_duration(range.min_seconds));
  }
  return value;
}

std::string format_duration(double seconds) {
  struct Unit {
    std::string_view name;
    uint64_t seconds;
  };

  static constexpr std::array<Unit, 3> units = {{
      {"d", 86400},
      {"h", 3600},
      {"m", 60},
  }};

  auto whole = static_cast<uint64_t>(seconds);
  if (static_cast<double>(whole) != seconds || whole == 0) {
    char buffer[32];
    std::snprintf(buffer, sizeof(buffer), "%gs", seconds);
    return buffer;
  }
  for (const Unit &unit : units) {
    bool one_day = unit.seconds == 86400 && whole == 86400;
    if (whole % unit.seconds == 0 && !one_day) {
      return std::to_string(whole / unit.seconds) + std::string(unit.name);
    }
  }
  return std::to_string(whole) + "s";
}

Result<uint64_t> parse_count(std::string_view text) {
  uint64_t value = 0;
  if (!is_all_digits(text)) {
    return fail(ErrorCode::Invalid, "invalid number");
  }
  if (!parse_digits(text, value) || value > UINT32_MAX) {
    return fail(ErrorCode::Invalid, "number is too large");
  }
  return value;
}

Result<double> parse_decimal(std::string_view text) {
  size_t dot = text.find('.');
  std::string_view whole = text.substr(0, dot);
  bool valid = is_all_digits(whole);
  if (dot != std::string_view::npos) {
    valid = valid && is_all_digits(text.substr(dot + 1));
  }
  double value = 0;
  if (valid) {
    auto [end, error] =
        std::from_chars(text.data(), text.data() + text.size(), value);
    valid = error == std::errc() && end == text.data() + text.size() &&
            std::isfinite(value);
  }
  if (!valid) {
    return fail(ErrorCode::Invalid, "invalid number");
  }
  return value;
}

bool is_ip_address(std::string_view text) {
  return is_ipv4_address(text) || is_ipv6_address(text);
}

std::string canonical_ip_address(std::string_view text) {
  if (!is_ipv6_address(text)) {
    return std::string(text);
  }
  std::string copy(text);
  in6_addr address;
  char buffer[INET6_ADDRSTRLEN];
  if (inet_pton(AF_INET6, copy.c_str(), &address) != 1 ||
      inet_ntop(AF_INET6, &address, buffer, sizeof(buffer)) == nullptr) {
    return copy;
  }
  return buffer;
}

bool is_dns_name(std::string_view text, bool allow_wildcard) {
  if (text.empty() || text.size() > MaxDnsNameLength) {
    return false;
  }
  std::string_view rest = text;
  if (allow_wildcard && rest.starts_with("*.")) {
    rest.remove_prefix(2);
  }

  std::string_view last_label;
  while (true) {
    size_t dot = rest.find('.');
    std::string_view label = rest.substr(0, dot);
    if (!is_dns_label(label)) {
      return false;
    }
    last_label = label;
    if (dot == std::string_view::npos) {
      break;
    }
    rest.remove_prefix(dot + 1);
  }
  return !is_all_digits(last_label);
}

Result<std::string> parse_registry_host(std::string_view text) {
  std::string_view host = text;
  std::string_view port_text;
  bool bracketed = false;
  bool has_port = false;

  if (host.starts_with('[')) {
    size_t close = host.find(']');
    if (close == std::string_view::npos) {
      return fail(ErrorCode::Invalid, "missing ']' after IPv6 address");
    }
    std::string_view after = host.substr(close + 1);
    if (!after.empty() && !after.starts_with(':')) {
      return fail(ErrorCode::Invalid, "unexpected text after ']'");
    }
    if (!after.empty()) {
      port_text = after.substr(1);
      has_port = true;
    }
    host = host.substr(1, close - 1);
    bracketed = true;
  } else {
    size_t colon = host.find(':');
    if (colon != host.rfind(':') && is_ipv6_address(host)) {
      return fail(ErrorCode::Invalid, "IPv6 address without brackets");
    }
    if (colon != std::string_view::npos) {
      port_text = host.substr(colon + 1);
      host = host.substr(0, colon);
      has_port = true;
    }
  }

  uint16_t port = 0;
  if (has_port && !parse_port(port_text, port)) {
    return fail(ErrorCode::Invalid, "invalid port");
  }

  std::string normalised;
  if (bracketed) {
    if (!is_ipv6_address(host)) {
      return fail(ErrorCode::Invalid, "invalid IPv6 address");
    }
    normalised = "[" + canonical_ip_address(host) + "]";
  } else if (is_ipv4_address(host)) {
    normalised = std::string(host);
  } else if (is_dns_name(host)) {
    normalised = to_lower(host);
  } else {
    return fail(ErrorCode::Invalid, "invalid host name");
  }

  if (has_port) {
    normalised += ":" + std::to_string(port);
  }
  return normalised;
}

Result<Cidr> parse_cidr(std::string_view text) {
  size_t slash = text.find('/');
  std::string address_text(text.substr(0, slash));
  Cidr cidr;
  std::array<unsigned char, 16> bytes = {};
  if (is_ipv4_address(address_text)) {
    inet_pton(AF_INET, address_text.c_str(), bytes.data());
  } else if (is_ipv6_address(address_text)) {
    inet_pton(AF_INET6, address_text.c_str(), bytes.data());
    cidr.ipv6 = true;
  } else {
    return fail(ErrorCode::Invalid, "invalid IP address");
  }

  unsigned max_length = cidr.ipv6 ? 128 : 32;
  cidr.prefix_length = max_length;
  if (slash != std::string_view::npos) {
    std::string_view length_text = text.substr(slash + 1);
    uint64_t length = 0;
    // Three digits at most, so "/0032" is not a prefix length.
    if (length_text.size() > 3 || !parse_digits(length_text, length)) {
      return fail(ErrorCode::Invalid, "invalid prefix length");
    }
    if (length > max_length) {
      return fail(ErrorCode::Invalid,
                  "prefix length is larger than " + std::to_string(max_length));
    }
    cidr.prefix_length = static_cast<unsigned>(length);
  }

  // ::ffff:0:0/96 contains the IPv4-mapped addresses.
  static constexpr std::array<unsigned char, 12> mapped_prefix = {
      0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
  bool mapped =
      cidr.ipv6 && cidr.prefix_length >= 96 &&
      std::equal(mapped_prefix.begin(), mapped_prefix.end(), bytes.begin());
  if (mapped) {
    char ipv4[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, bytes.data() + 12, ipv4, sizeof(ipv4));
    return fail(ErrorCode::Invalid,
                "IPv4-mapped IPv6 address (write the IPv4 network " +
                    std::string(ipv4) + "/" +
                    std::to_string(cidr.prefix_length - 96) + ")");
  }

  std::array<unsigned char, 16> network = bytes;
  size_t byte_count = max_length / 8;
  for (size_t i = 0; i < byte_count; ++i) {
    size_t first_bit = i * 8;
    if (first_bit >= cidr.prefix_length) {
      network[i] = 0;
    } else if (first_bit + 8 > cidr.prefix_length) {
      unsigned kept = cidr.prefix_length - static_cast<unsigned>(first_bit);
      network[i] &= static_cast<unsigned char>(0xFF00 >> kept);
    }
  }

  char buffer[INET6_ADDRSTRLEN];
  inet_ntop(cidr.ipv6 ? AF_INET6 : AF_INET, network.data(), buffer,
            sizeof(buffer));
  cidr.address = buffer;
  if (network != bytes) {
    return fail(ErrorCode::Invalid,
                "host bits are set (the network is " + cidr.str() + ")");
  }
  return cidr;
}

bool is_loopback_address(std::string_view host) {
  if (is_ipv4_address(host)) {
    return host.starts_with("127.");
  }
  return canonical_ip_address(host) == "::1";
}

bool is_cluster_name(std::string_view text) {
  if (text.empty() || text.size() > MaxClusterNameLength) {
    return false;
  }
  auto is_lower_alnum = [](char c) {
    return is_digit(c) || (c >= 'a' && c <= 'z');
  };
  if (!is_lower_alnum(text.front())) {
    return false;
  }
  for (char c : text) {
    if (!is_lower_alnum(c) && c != '_' && c != '-') {
      return false;
    }
  }
  return true;
}

bool is_tag_pattern(std::string_view text) {
  // Maximum tag length in the OCI distribution specification.
  constexpr size_t max_length = 128;
  if (text.empty() || text.size() > max_length) {
    return false;
  }
  for (char c : text) {
    if (!is_alnum(c) && c != '_' && c != '.' && c != '-' && c != '*' &&
        c != '?') {
      return false;
    }
  }
  return true;
}

Result<void> check_image_set_name(std::string_view text) {
  if (text.empty()) {
    return fail(ErrorCode::Invalid, "empty image set name");
  }
  if (text.size() > MaxImageSetNameLength) {
    return fail(ErrorCode::Invalid, "image set name is longer than " +
                                        std::to_string(MaxImageSetNameLength) +
                                        " characters");
  }
  for (char c : text) {
    if (!is_alnum(c) && c != '.' && c != '_' && c != '-') {
      return fail(ErrorCode::Invalid,
                  "image set name contains a character other than letters, "
                  "digits, '.', '_' and '-'");
    }
  }
  if (text == "." || text == "..") {
    return fail(ErrorCode::Invalid, "image set name is '.' or '..'");
  }
  if (text.ends_with(".yaml") || text.ends_with(".yml")) {
    return fail(ErrorCode::Invalid,
                "image set name ends with a file extension (name the set "
                "without .yaml, or give an absolute path)");
  }
  return {};
}

Result<ListenAddress> parse_listen_address(std::string_view text) {
  ListenAddress address;
  std::string_view host;
  std::string_view port_text;

  if (text.starts_with('[')) {
    size_t close = text.find("]:");
    if (close == std::string_view::npos) {
      return fail(ErrorCode::Invalid, "missing ']:port' after IPv6 address");
    }
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
    if (!is_ipv6_address(host)) {
      return fail(ErrorCode::Invalid, "invalid IPv6 address");
    }
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return fail(ErrorCode::Invalid, "missing port");
    }
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return fail(ErrorCode::Invalid, "IPv6 address without brackets");
    }
    if (!is_ipv4_address(host)) {
      return fail(ErrorCode::Invalid, "not an IP address");
    }
  }

  if (!parse_port(port_text, address.port)) {
    return fail(ErrorCode::Invalid, "invalid port");
  }
  address.host = canonical_ip_address(host);
  return address;
}

} // namespace gatecache::config
