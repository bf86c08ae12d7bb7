// How long a stored tag is served without asking the upstream.
#pragma once

#include <string_view>

#include "appliance/config/config.h"

namespace gatecache::scheduler {

// Matches `tag` against a glob: `*` matches any run of characters (also an
// empty one), `?` exactly one, and every other character itself. Matching
// takes at most O(pattern size x tag size) steps, whatever the pattern.
bool match_tag_pattern(std::string_view pattern, std::string_view tag);

// Returns the window in seconds for `tag` of `upstream`: the window of the
// first `freshness` rule whose pattern matches, else
// `default_freshness_s`, times `stretch` (see
// `UpstreamScheduler::freshness_stretch()`). A stretch below 1 or not a
// number counts as 1.
double freshness_window(const config::UpstreamConfig &upstream,
                        std::string_view tag, double stretch);

} // namespace gatecache::scheduler
