#include "appliance/registry/range.h"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <system_error>

namespace gatecache::registry {
namespace {

bool is_ows(char c) { return c == ' ' || c == '\t'; }

std::string_view trim_ows(std::string_view text) {
  while (!text.empty() && is_ows(text.front())) {
    text.remove_prefix(1);
  }
  while (!text.empty() && is_ows(text.back())) {
    text.remove_suffix(1);
  }
  return text;
}

// The token characters of RFC 9110, section 5.6.2.
bool is_token_char(char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
      (c >= 'A' && c <= 'Z')) {
    return true;
  }
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view text) {
  if (text.empty()) {
    return false;
  }
  for (char c : text) {
    if (!is_token_char(c)) {
      return false;
    }
  }
  return true;
}

bool equals_ignoring_case(std::string_view text, std::string_view lower) {
  if (text.size() != lower.size()) {
    return false;
  }
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
    if (c != lower[i]) {
      return false;
    }
  }
  return true;
}

bool is_digits(std::string_view text) {
  if (text.empty()) {
    return false;
  }
  for (char c : text) {
    if (c < '0' || c > '9') {
      return false;
    }
  }
  return true;
}

// Parses 1*DIGIT. A number above UINT64_MAX saturates to UINT64_MAX,
// because RFC 9110 puts no limit on positions and a position that large
// is past the end of every body, so the saturated value resolves the same.
bool parse_position(std::string_view text, uint64_t &value) {
  if (!is_digits(text)) {
    return false;
  }
  auto [end, error] =
      std::from_chars(text.data(), text.data() + text.size(), value);
  if (error == std::errc::result_out_of_range) {
    value = UINT64_MAX;
    return true;
  }
  return error == std::errc() && end == text.data() + text.size();
}

// Returns true when the decimal number `low` is at most `high`, both
// 1*DIGIT of any length, so that saturated positions compare exactly.
bool decimal_at_most(std::string_view low, std::string_view high) {
  low.remove_prefix(std::min(low.find_first_not_of('0'), low.size()));
  high.remove_prefix(std::min(high.find_first_not_of('0'), high.size()));
  if (low.size() != high.size()) {
    return low.size() < high.size();
  }
  return low <= high;
}

// One range-spec: int-range (`first-` or `first-last`) or suffix-range
// (`-length`).
struct RangeSpec {
  bool suffix = false;
  bool has_last = false;
  uint64_t first = 0;
  uint64_t last = 0;
  uint64_t suffix_length = 0;
};

bool parse_range_spec(std::string_view text, RangeSpec &spec) {
  size_t dash = text.find('-');
  if (dash == std::string_view::npos) {
    return false;
  }
  if (dash == 0) {
    spec.suffix = true;
    return parse_position(text.substr(1), spec.suffix_length);
  }
  if (!parse_position(text.substr(0, dash), spec.first)) {
    return false;
  }
  std::string_view last = text.substr(dash + 1);
  if (last.empty()) {
    return true;
  }
  spec.has_last = true;
  // RFC 9110, section 14.1.1: last-pos below first-pos is invalid.
  return parse_position(last, spec.last) &&
         decimal_at_most(text.substr(0, dash), last);
}

ByteRange resolve(const RangeSpec &spec, uint64_t size) {
  ByteRange range;
  if (spec.suffix) {
    // RFC 9110, section 14.1.1: a suffix of zero bytes is unsatisfiable.
    if (spec.suffix_length == 0) {
      range.kind = RangeKind::Unsatisfiable;
      return range;
    }
    // The same section counts a non-zero suffix of an empty body as
    // satisfiable, but no Content-Range can describe zero bytes, so the
    // Range is ignored and the empty body is sent with 200.
    if (size == 0) {
      range.kind = RangeKind::None;
      return range;
    }
    uint64_t length = spec.suffix_length < size ? spec.suffix_length : size;
    range.kind = RangeKind::Satisfiable;
    range.first = size - length;
    range.last = size - 1;
    return range;
  }

  if (spec.first >= size) {
    range.kind = RangeKind::Unsatisfiable;
    return range;
  }
  // RFC 9110, section 14.1.2: a last-pos at or past the end, or none,
  // means the last byte of the body.
  range.kind = RangeKind::Satisfiable;
  range.first = spec.first;
  range.last = (spec.has_last && spec.last < size) ? spec.last : size - 1;
  return range;
}

} // namespace

ByteRange parse_range(std::string_view header, uint64_t size) {
  header = trim_ows(header);
  if (header.empty()) {
    return {RangeKind::None};
  }

  size_t equals = header.find('=');
  if (equals == std::string_view::npos || !is_token(header.substr(0, equals))) {
    return {RangeKind::Invalid};
  }
  if (!equals_ignoring_case(header.substr(0, equals), "bytes")) {
    return {RangeKind::None};
  }

  // range-set = 1#range-spec. Every element is checked, so a malformed
  // element makes the header Invalid even when others are fine.
  std::string_view set = header.substr(equals + 1);
  RangeSpec first_spec;
  size_t count = 0;
  while (true) {
    size_t comma = set.find(',');
    std::string_view element = trim_ows(set.substr(0, comma));
    if (!element.empty()) {
      RangeSpec spec;
      if (!parse_range_spec(element, spec)) {
        return {RangeKind::Invalid};
      }
      if (count == 0) {
        first_spec = spec;
      }
      ++count;
    }
    if (comma == std::string_view::npos) {
      break;
    }
    set.remove_prefix(comma + 1);
  }

  if (count == 0) {
    return {RangeKind::Invalid};
  }
  // gatecache sends no multipart/byteranges body, so it ignores a set of
  // several ranges and sends the whole body.
  if (count > 1) {
    return {RangeKind::None};
  }
  return resolve(first_spec, size);
}

std::string content_range(uint64_t first, uint64_t last, uint64_t size) {
  return "bytes " + std::to_string(first) + "-" + std::to_string(last) + "/" +
         std::to_string(size);
}

std::string unsatisfied_content_range(uint64_t size) {
  return "bytes */" + std::to_string(size);
}

} // namespace gatecache::registry
