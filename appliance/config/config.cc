// Value grammar of the config file (see values.h) and `ListenAddress`.
#include "appliance/config/config.h"

#include <array>
#include <charconv>
#include <cmath>
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

Result<double> parse_duration(std::string_view text) {
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
  } else if (unit != "s" && !unit.empty()) {
    return fail(ErrorCode::Invalid, "unknown duration unit");
  }

  if (!(value > 0)) {
    return fail(ErrorCode::Invalid, "duration must be greater than 0");
  }
  if (!std::isfinite(value) || value > MaxDurationSeconds) {
    return fail(ErrorCode::Invalid, "duration is too long");
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
