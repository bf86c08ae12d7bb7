// ASCII case folding for protocol tokens: header names, media types,
// parameter keys. Locale-independent, unlike <cctype>, and leaves bytes
// outside A-Z unchanged.
#pragma once

#include <string_view>

namespace gatecache {

inline char to_lower_ascii(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

// Returns true when `a` and `b` are equal after folding A-Z to a-z.
inline bool equals_ignoring_ascii_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (to_lower_ascii(a[i]) != to_lower_ascii(b[i])) {
      return false;
    }
  }
  return true;
}

} // namespace gatecache
