#include "appliance/scheduler/freshness.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

using gatecache::config::UpstreamConfig;
using gatecache::scheduler::freshness_window;
using gatecache::scheduler::match_tag_pattern;

TEST_CASE("tag patterns match globs", "[scheduler][freshness]") {
  struct Case {
    std::string pattern;
    std::string tag;
    bool matches;
  };

  const std::vector<Case> cases = {
      {"latest", "latest", true},
      {"latest", "latest2", false},
      {"latest", "latesT", false},
      {"latest", "", false},
      {"", "", true},
      {"", "a", false},
      {"*", "", true},
      {"*", "anything-at.all_1", true},
      {"v*", "v1.2.3", true},
      {"v*", "v", true},
      {"v*", "1.2.3", false},
      {"*-alpine", "3.19-alpine", true},
      {"*-alpine", "3.19-alpine3.19", false},
      {"*-alpine*", "3.19-alpine3.19", true},
      {"?", "a", true},
      {"?", "", false},
      {"?", "ab", false},
      {"v?.*", "v1.2", true},
      {"v?.*", "v10.2", false},
      {"1.*.*", "1.2.3", true},
      {"1.*.*", "1.2", false},
      {"**", "x", true},
      {"a*b*c", "abc", true},
      {"a*b*c", "axxbyyc", true},
      {"a*b*c", "axxbyy", false},
      {"a*b*c", "acb", false},
      {"*a", "aaaa", true},
      {"*ab", "aab", true},
      {"a*", "ba", false},
      // A `*` in the tag is an ordinary character for `?` and `*`.
      {"?", "*", true},
      {"a*", "a*", true},
  };
  for (const Case &c : cases) {
    INFO("pattern '" << c.pattern << "' tag '" << c.tag << "'");
    CHECK(match_tag_pattern(c.pattern, c.tag) == c.matches);
  }
}

TEST_CASE("tag patterns avoid backtracking blow-up", "[scheduler][freshness]") {
  // Exponential backtracking would take about 2^30 steps here; the
  // single-star restart takes at most pattern x tag steps.
  std::string pattern;
  for (int i = 0; i < 30; ++i) {
    pattern += "a*";
  }
  pattern += "b";
  std::string tag(128, 'a');
  CHECK_FALSE(match_tag_pattern(pattern, tag));
  CHECK(match_tag_pattern(pattern, tag + "b"));
}

TEST_CASE("freshness window picks first rule", "[scheduler][freshness]") {
  UpstreamConfig upstream;
  upstream.default_freshness_s = 600;
  upstream.freshness = {{"latest", 60}, {"v*", 86400}, {"*", 3600}};

  CHECK(freshness_window(upstream, "latest", 1) == 60.0);
  CHECK(freshness_window(upstream, "v1.2", 1) == 86400.0);
  CHECK(freshness_window(upstream, "stable", 1) == 3600.0);

  upstream.freshness = {{"latest", 60}};
  CHECK(freshness_window(upstream, "stable", 1) == 600.0);
}

TEST_CASE("freshness window stretches", "[scheduler][freshness]") {
  UpstreamConfig upstream;
  upstream.default_freshness_s = 600;
  CHECK(freshness_window(upstream, "x", 4) == 2400.0);
  CHECK(freshness_window(upstream, "x", 1.5) == 900.0);
  // Stretches below 1 or undefined do not shorten the window.
  CHECK(freshness_window(upstream, "x", 0.5) == 600.0);
  CHECK(freshness_window(upstream, "x", -3) == 600.0);
  CHECK(freshness_window(upstream, "x",
                         std::numeric_limits<double>::quiet_NaN()) == 600.0);
}
