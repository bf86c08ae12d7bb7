// The rate-limit budget of one upstream: what its response headers
// announce, how long a 429 blocks it, and the state kept across restarts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>

#include "appliance/front/exchange.h"

namespace gatecache::scheduler {

// Most spend times kept in `BudgetState::spends`. A configured budget
// with a larger limit is enforced as if its limit were this number.
inline constexpr size_t MaxSpends = 4096;

// Largest reset delay and Retry-After accepted, in seconds (366 days).
// Larger values are taken as malformed, for example a Unix time sent where
// a delay belongs.
inline constexpr double MaxResetSeconds = 366.0 * 86400;

// The upstream's rate limit as one response reports it. Every field is
// optional because each header form carries a different subset.
struct BudgetObservation {
  std::optional<uint64_t> limit;     // Requests per window, at least 1.
  std::optional<uint64_t> remaining; // Requests left in the window.
  std::optional<double> window_s;    // Length of the policy window.
  std::optional<double> reset_s;     // Seconds until the quota resets.
};

// Reads the rate-limit headers of a response (names compared without
// case). Repeated fields are joined with ", " as RFC 9110 section 5.3
// allows. Understood forms:
//  - Docker Hub and the first IETF drafts: `ratelimit-limit: 100;w=21600`,
//    `ratelimit-remaining: 76;w=21600` (each also as a plain number) and
//    `ratelimit-reset: 30`;
//  - the structured IETF form: `ratelimit: limit=100, remaining=50,
//    reset=30` with `ratelimit-policy: 100;w=3600`;
//  - the newest IETF form: `ratelimit-policy: "default";q=100;w=3600` with
//    `ratelimit: "default";r=50;t=30`.
// With several policies, the `ratelimit` item with the smallest remaining
// quota is taken, and a policy gives the window when its name (newest
// form) or its quota (older forms) matches. Policies counting units other
// than requests (`qu` other than "requests") are skipped. Malformed
// members are skipped. Returns nullopt when neither a limit nor a
// remaining count can be read.
std::optional<BudgetObservation>
parse_budget_headers(const front::HeaderList &headers);

// Parses a Retry-After value (RFC 9110 section 10.2.3): delta-seconds or
// an HTTP-date in any of its three forms. Returns the seconds to wait from
// `now_unix`, 0 for a date in the past, or nullopt when the value is
// malformed or larger than `MaxResetSeconds`.
std::optional<double> parse_retry_after(std::string_view value,
                                        double now_unix);

// The budget of one upstream as the scheduler tracks it, stored as JSON
// across restarts.
struct BudgetState {
  uint64_t limit = 0; // 0: no known budget, so every request is granted.
  // With `Source::Headers`, the count of the last observation. With
  // `Source::Config`, `limit` minus the spends inside the window, updated
  // whenever the state changes.
  uint64_t remaining = 0;
  double window_s = 0;
  enum class Source { None, Config, Headers } source = Source::None;
  double observed_at = 0;   // Unix seconds of the last observation.
  double reset_at = 0;      // Unix seconds when the budget returns, 0 unknown.
  double blocked_until = 0; // Unix seconds a 429 blocks until, 0 none.
  // Unix seconds of counted requests, oldest first, from the last hour or
  // window (whichever is longer) and at most `MaxSpends` of them.
  std::deque<double> spends;

  // Serialises the state as a JSON object with a "version" member.
  std::string to_json() const;

  // Parses what `to_json()` wrote. Returns nullopt on malformed JSON, a
  // missing or mistyped member, a negative or non-finite number, an
  // unknown source or version, or `remaining` above a non-zero `limit`.
  // Spends are sorted and only the newest `MaxSpends` are kept.
  static std::optional<BudgetState> from_json(std::string_view text);

  // Returns when the budget is expected back. Without a reset time from
  // the upstream the window is taken as rolling, so one credit returns at
  // the oldest spend inside the window plus the window, or at
  // `observed_at` plus the window when no spend is known. Returns 0 when
  // none of these is known.
  double expected_reset_at(double now) const;

  // Counts spends after `since` (Unix seconds).
  size_t spends_since(double since) const;
};

// Returns "none", "config" or "headers".
const char *to_string(BudgetState::Source source);

} // namespace gatecache::scheduler
