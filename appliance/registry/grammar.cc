#include "appliance/registry/grammar.h"

namespace gatecache::registry {

namespace {

// Client input echoed in an error message is cut to this many bytes.
constexpr size_t MaxEchoedBytes = 128;

bool is_lower_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

bool is_lower_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

bool is_control_character(char c) {
  auto byte = static_cast<unsigned char>(c);
  return byte < 0x20 || byte == 0x7f;
}

// Checks one component of a repository name against
// [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*.
bool is_name_component(std::string_view component) {
  size_t i = 0;
  while (true) {
    size_t start = i;
    while (i < component.size() && is_lower_alnum(component[i])) {
      ++i;
    }
    if (i == start) {
      return false;
    }
    if (i == component.size()) {
      return true;
    }
    // One separator, then another alphanumeric run must follow.
    if (component[i] == '.') {
      ++i;
    } else if (component[i] == '_') {
      ++i;
      if (i < component.size() && component[i] == '_') {
        ++i;
      }
    } else if (component[i] == '-') {
      while (i < component.size() && component[i] == '-') {
        ++i;
      }
    } else {
      return false;
    }
  }
}

} // namespace

std::string echo_value(std::string_view text) {
  bool cut = text.size() > MaxEchoedBytes;
  std::string result;
  for (char c : text.substr(0, MaxEchoedBytes)) {
    if (is_control_character(c)) {
      static constexpr char hex[] = "0123456789abcdef";
      auto byte = static_cast<unsigned char>(c);
      result += "\\x";
      result += hex[byte >> 4];
      result += hex[byte & 0xF];
    } else {
      result += c;
    }
  }
  if (cut) {
    result += "...";
  }
  return result;
}

Result<void> check_repository_name(std::string_view name) {
  if (name.empty()) {
    return fail(ErrorCode::Invalid, "missing repository name");
  }
  if (name.size() > MaxRepositoryNameLength) {
    return fail(ErrorCode::Invalid,
                "repository name is longer than " +
                    std::to_string(MaxRepositoryNameLength) + " characters");
  }
  for (char c : name) {
    if (c >= 'A' && c <= 'Z') {
      return fail(ErrorCode::Invalid, "repository name '" + echo_value(name) +
                                          "' must be lower case");
    }
  }
  std::string_view rest = name;
  while (true) {
    size_t slash = rest.find('/');
    if (!is_name_component(rest.substr(0, slash))) {
      return fail(ErrorCode::Invalid, "invalid repository name '" +
                                          echo_value(name) +
                                          "': components must match "
                                          "[a-z0-9]+((.|_|__|-+)[a-z0-9]+)*");
    }
    if (slash == std::string_view::npos) {
      return {};
    }
    rest.remove_prefix(slash + 1);
  }
}

Result<void> check_tag(std::string_view tag) {
  bool valid = !tag.empty() && tag.size() <= MaxTagLength &&
               tag.front() != '.' && tag.front() != '-';
  for (char c : tag) {
    bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                   (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
    valid = valid && allowed;
  }
  if (!valid) {
    return fail(ErrorCode::Invalid,
                "invalid tag '" + echo_value(tag) +
                    "': tags must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}");
  }
  return {};
}

Result<void> check_digest(std::string_view digest) {
  size_t colon = digest.find(':');
  std::string_view algorithm = digest.substr(0, colon);
  std::string_view encoded = colon == std::string_view::npos
                                 ? std::string_view()
                                 : digest.substr(colon + 1);
  size_t expected_length = 0;
  if (algorithm == "sha256") {
    expected_length = 64;
  } else if (algorithm == "sha512") {
    expected_length = 128;
  }
  bool valid = expected_length != 0 && encoded.size() == expected_length;
  for (char c : encoded) {
    valid = valid && is_lower_hex(c);
  }
  if (!valid) {
    return fail(ErrorCode::Invalid,
                "invalid digest '" + echo_value(digest) +
                    "': expected sha256:<64 lower-case hex digits> or "
                    "sha512:<128 lower-case hex digits>");
  }
  return {};
}

} // namespace gatecache::registry
