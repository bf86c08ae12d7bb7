#include "appliance/scheduler/freshness.h"

#include <cmath>

namespace gatecache::scheduler {

bool match_tag_pattern(std::string_view pattern, std::string_view tag) {
  size_t p = 0;
  size_t t = 0;
  // Where the last `*` was seen and the tag position it currently covers
  // up to. On a mismatch only this one `*` takes one more character, and
  // earlier stars never need revisiting, because the later star can
  // absorb anything they could.
  size_t star = std::string_view::npos;
  size_t star_tag = 0;
  while (t < tag.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      star_tag = t;
    } else if (p < pattern.size() &&
               (pattern[p] == '?' || pattern[p] == tag[t])) {
      ++p;
      ++t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++star_tag;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') {
    ++p;
  }
  return p == pattern.size();
}

double freshness_window(const config::UpstreamConfig &upstream,
                        std::string_view tag, double stretch) {
  double window = upstream.default_freshness_s;
  for (const config::FreshnessRule &rule : upstream.freshness) {
    if (match_tag_pattern(rule.pattern, tag)) {
      window = rule.window_s;
      break;
    }
  }
  if (!(stretch >= 1)) {
    stretch = 1; // Also catches NaN.
  }
  return window * stretch;
}

} // namespace gatecache::scheduler
