#include "appliance/scheduler/budget.h"

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

using gatecache::front::HeaderList;
using gatecache::scheduler::BudgetObservation;
using gatecache::scheduler::BudgetState;
using gatecache::scheduler::MaxSpends;
using gatecache::scheduler::parse_budget_headers;
using gatecache::scheduler::parse_retry_after;

namespace {

// 2026-12-04T19:05:44Z, a Friday.
constexpr double Now = 1796411144;

struct HeaderCase {
  std::string label;
  HeaderList headers;
  std::optional<uint64_t> limit;
  std::optional<uint64_t> remaining;
  std::optional<double> window_s;
  std::optional<double> reset_s;
};

} // namespace

TEST_CASE("budget headers parse every form", "[scheduler][budget]") {
  const std::vector<HeaderCase> cases = {
      {"docker hub",
       {{"ratelimit-limit", "100;w=21600"},
        {"ratelimit-remaining", "76;w=21600"},
        {"docker-ratelimit-source", "203.0.113.7"}},
       100,
       76,
       21600,
       std::nullopt},
      {"docker hub with reset",
       {{"ratelimit-limit", "100;w=21600"},
        {"ratelimit-remaining", "0;w=21600"},
        {"ratelimit-reset", "1200"}},
       100,
       0,
       21600,
       1200},
      {"plain numbers",
       {{"ratelimit-limit", "5000"},
        {"ratelimit-remaining", "4999"},
        {"ratelimit-reset", "30"}},
       5000,
       4999,
       std::nullopt,
       30},
      {"names in mixed case",
       {{"RateLimit-Limit", "100;w=60"}, {"RATELIMIT-REMAINING", "7"}},
       100,
       7,
       60,
       std::nullopt},
      {"first drafts list policies in the limit",
       {{"ratelimit-limit", "10, 10;w=1, 1000;w=3600"},
        {"ratelimit-remaining", "9"}},
       10,
       9,
       1,
       std::nullopt},
      {"older fields with a policy field",
       {{"ratelimit-limit", "100"},
        {"ratelimit-remaining", "40"},
        {"ratelimit-policy", "10;w=1, 100;w=3600"}},
       100,
       40,
       3600,
       std::nullopt},
      {"structured dictionary",
       {{"ratelimit", "limit=100, remaining=50, reset=30"},
        {"ratelimit-policy", "100;w=3600"}},
       100,
       50,
       3600,
       30},
      {"structured dictionary picks the matching policy",
       {{"ratelimit", "limit=1000, remaining=900, reset=50"},
        {"ratelimit-policy", "10;w=1, 1000;w=86400"}},
       1000,
       900,
       86400,
       50},
      {"structured dictionary without a policy",
       {{"ratelimit", "limit=100, remaining=50, reset=30"}},
       100,
       50,
       std::nullopt,
       30},
      {"newest form",
       {{"ratelimit-policy", "\"default\";q=100;w=3600"},
        {"ratelimit", "\"default\";r=50;t=30"}},
       100,
       50,
       3600,
       30},
      {"newest form takes the smallest remaining",
       {{"ratelimit-policy", "\"burst\";q=100;w=60, \"daily\";q=1000;w=86400"},
        {"ratelimit", "\"burst\";r=80;t=10, \"daily\";r=5;t=7200"}},
       1000,
       5,
       86400,
       7200},
      {"newest form split over two field lines",
       {{"ratelimit-policy", "\"burst\";q=100;w=60"},
        {"ratelimit-policy", "\"daily\";q=1000;w=86400"},
        {"ratelimit", "\"burst\";r=3"},
        {"ratelimit", "\"daily\";r=900"}},
       100,
       3,
       60,
       std::nullopt},
      {"newest form with token names and spaces",
       {{"ratelimit-policy", "default; q=100; w=3600"},
        {"ratelimit", "default;r=1"}},
       100,
       1,
       3600,
       std::nullopt},
      {"newest form skips byte quotas",
       {{"ratelimit-policy", "\"bytes\";q=1000000;qu=\"content-bytes\";w=60, "
                             "\"requests\";q=100;qu=\"requests\";w=3600"},
        {"ratelimit", "\"requests\";r=10"}},
       100,
       10,
       3600,
       std::nullopt},
      {"newest form with a partition key",
       {{"ratelimit-policy", "\"default\";q=100;w=3600;pk=:YWJj:"},
        {"ratelimit", "\"default\";r=20;t=5;pk=:YWJj:"}},
       100,
       20,
       3600,
       5},
      {"policy alone gives limit and window",
       {{"ratelimit-policy", "\"default\";q=60;w=60"}},
       60,
       std::nullopt,
       60,
       std::nullopt},
      {"newest remaining without a matching policy",
       {{"ratelimit-policy", "\"other\";q=60;w=60"},
        {"ratelimit", "\"default\";r=4"}},
       std::nullopt,
       4,
       std::nullopt,
       std::nullopt},
      {"remaining alone",
       {{"ratelimit-remaining", "12"}},
       std::nullopt,
       12,
       std::nullopt,
       std::nullopt},
  };

  for (const HeaderCase &c : cases) {
    INFO(c.label);
    std::optional<BudgetObservation> observation =
        parse_budget_headers(c.headers);
    REQUIRE(observation.has_value());
    CHECK(observation->limit == c.limit);
    CHECK(observation->remaining == c.remaining);
    CHECK(observation->window_s == c.window_s);
    CHECK(observation->reset_s == c.reset_s);
  }
}

TEST_CASE("budget headers without budget", "[scheduler][budget]") {
  const std::vector<std::pair<std::string, HeaderList>> cases = {
      {"no headers", {}},
      {"unrelated headers",
       {{"content-type", "application/json"}, {"x-ratelimit", "1"}}},
      {"empty values", {{"ratelimit-limit", ""}, {"ratelimit-remaining", ""}}},
      {"negative numbers",
       {{"ratelimit-limit", "-100"}, {"ratelimit-remaining", "-1"}}},
      {"zero limit", {{"ratelimit-limit", "0;w=60"}}},
      {"decimals",
       {{"ratelimit-limit", "100.5"}, {"ratelimit-remaining", "1.0"}}},
      {"sixteen digits",
       {{"ratelimit-limit", "1234567890123456"},
        {"ratelimit-remaining", "9999999999999999"}}},
      {"words", {{"ratelimit-limit", "lots"}, {"ratelimit-remaining", "some"}}},
      {"trailing junk",
       {{"ratelimit-limit", "100 requests"}, {"ratelimit-remaining", "5x"}}},
      {"unclosed string",
       {{"ratelimit-policy", "\"default;q=100;w=60"},
        {"ratelimit", "\"default;r=5"}}},
      {"bad escape", {{"ratelimit", "\"de\\fault\";r=5"}}},
      {"dictionary with strings",
       {{"ratelimit", "limit=\"100\", remaining=\"5\""}}},
      {"newest form without r", {{"ratelimit", "\"default\";t=30"}}},
      {"policy without q", {{"ratelimit-policy", "\"default\";w=60"}}},
      {"policy with zero q", {{"ratelimit-policy", "\"default\";q=0;w=60"}}},
      {"only punctuation", {{"ratelimit", ",,;;=="}, {"ratelimit-limit", ";"}}},
      {"binary bytes",
       {{"ratelimit-limit", std::string("\x00\xff\x01", 3)},
        {"ratelimit", std::string("\"\x01\";r=1")}}},
      {"parameter without key", {{"ratelimit-limit", "100;=5"}}},
      {"lone minus", {{"ratelimit-remaining", "-"}}},
      {"boolean", {{"ratelimit-remaining", "?1"}}},
  };

  for (const auto &[label, headers] : cases) {
    INFO(label);
    CHECK_FALSE(parse_budget_headers(headers).has_value());
  }
}

TEST_CASE("budget headers ignore bad parts", "[scheduler][budget]") {
  SECTION("bad window keeps the limit") {
    auto observation = parse_budget_headers(
        {{"ratelimit-limit", "100;w=0"}, {"ratelimit-remaining", "3;w=-5"}});
    REQUIRE(observation.has_value());
    CHECK(observation->limit == 100u);
    CHECK(observation->remaining == 3u);
    CHECK_FALSE(observation->window_s.has_value());
  }

  SECTION("reset of a Unix time is dropped") {
    auto observation = parse_budget_headers(
        {{"ratelimit-limit", "100"}, {"ratelimit-reset", "1796411144"}});
    REQUIRE(observation.has_value());
    CHECK_FALSE(observation->reset_s.has_value());
  }

  SECTION("malformed member is skipped") {
    auto observation = parse_budget_headers(
        {{"ratelimit-policy", "\"a\";q=oops, \"b\";q=50;w=10"},
         {"ratelimit", "\"a\";r=x, \"b\";r=7;t=2"}});
    REQUIRE(observation.has_value());
    CHECK(observation->limit == 50u);
    CHECK(observation->remaining == 7u);
    CHECK(observation->window_s == 10.0);
    CHECK(observation->reset_s == 2.0);
  }

  SECTION("comma inside a string does not split") {
    auto observation =
        parse_budget_headers({{"ratelimit-policy", "\"a,b\";q=9;w=10"},
                              {"ratelimit", "\"a,b\";r=1"}});
    REQUIRE(observation.has_value());
    CHECK(observation->limit == 9u);
    CHECK(observation->remaining == 1u);
  }

  SECTION("every prefix of a valid value is safe") {
    const std::string value =
        "\"burst\";q=100;w=60, \"daily\";q=1000;qu=\"requests\";w=86400";
    for (size_t n = 0; n <= value.size(); ++n) {
      INFO(value.substr(0, n));
      HeaderList headers = {{"ratelimit-policy", value.substr(0, n)},
                            {"ratelimit", value.substr(0, n)},
                            {"ratelimit-limit", value.substr(0, n)}};
      auto observation = parse_budget_headers(headers);
      if (observation && observation->limit) {
        CHECK(*observation->limit > 0);
      }
    }
  }
}

TEST_CASE("budget headers survive random input", "[scheduler][budget]") {
  // Random strings over the characters the grammar reacts to, with a
  // fixed seed so a failure repeats.
  const std::string alphabet = "0123456789-;,=\"\\:?*. \tqrtwlimaxyzD\x01\xff";
  const std::vector<std::string> names = {
      "ratelimit", "ratelimit-policy", "ratelimit-limit", "ratelimit-remaining",
      "ratelimit-reset"};
  std::mt19937 random(20261204);
  std::uniform_int_distribution<size_t> pick(0, alphabet.size() - 1);
  std::uniform_int_distribution<size_t> length(0, 40);
  std::uniform_int_distribution<size_t> name(0, names.size() - 1);
  for (int round = 0; round < 20000; ++round) {
    HeaderList headers;
    for (int field = 0; field < 3; ++field) {
      std::string value;
      for (size_t n = length(random); n > 0; --n) {
        value.push_back(alphabet[pick(random)]);
      }
      headers.emplace_back(names[name(random)], std::move(value));
    }
    auto observation = parse_budget_headers(headers);
    if (!observation) {
      continue;
    }
    INFO(headers[0].second << " | " << headers[1].second << " | "
                           << headers[2].second);
    CHECK((observation->limit || observation->remaining));
    if (observation->limit) {
      CHECK(*observation->limit > 0);
    }
    if (observation->window_s) {
      CHECK(*observation->window_s > 0);
    }
    if (observation->reset_s) {
      CHECK(*observation->reset_s >= 0);
    }
  }
}

TEST_CASE("retry-after forms", "[scheduler][budget]") {
  struct Case {
    std::string value;
    std::optional<double> seconds;
  };

  const std::vector<Case> cases = {
      {"120", 120},
      {"0", 0},
      {" 7 ", 7},
      {"000042", 42},
      {"Fri, 04 Dec 2026 19:06:44 GMT", 60},
      {"Friday, 04-Dec-26 19:07:44 GMT", 120},
      {"Fri Dec  4 19:05:54 2026", 10},
      {"Fri Dec 14 19:05:44 2026", 864000},
      // A date in the past means: now.
      {"Sun, 06 Nov 1994 08:49:37 GMT", 0},
      {"Sunday, 06-Nov-94 08:49:37 GMT", 0},
      // A leap year day.
      {"Mon, 29 Feb 2027 00:00:00 GMT", std::nullopt},
      {"Tue, 29 Feb 2028 00:00:00 GMT", std::nullopt}, // Past 366 days.
      {"", std::nullopt},
      {"-1", std::nullopt},
      {"1.5", std::nullopt},
      {"12s", std::nullopt},
      {"99999999999999999999", std::nullopt},
      {"31708801", std::nullopt}, // Past 366 days.
      {"Fri, 04 Dec 2026 19:06:44", std::nullopt},
      {"Fri, 4 Dec 2026 19:06:44 GMT", std::nullopt},
      {"Fri, 04 Dek 2026 19:06:44 GMT", std::nullopt},
      {"Fri, 31 Nov 2026 19:06:44 GMT", std::nullopt},
      {"Fri, 04 Dec 2026 24:00:00 GMT", std::nullopt},
      {"Fri, 04 Dec 2026 19:60:00 GMT", std::nullopt},
      {"Fri, 04 Dec 2026 19:06:44 UTC", std::nullopt},
      {"Fri, 04 Dec 2026 19:06:44 GMT trailing", std::nullopt},
      {"Fry, 04 Dec 2026 19:06:44 GMT", std::nullopt},
      {"Fri Dec 4 19:05:54 2026", std::nullopt},
      {"now", std::nullopt},
  };
  for (const Case &c : cases) {
    INFO("Retry-After: " << c.value);
    CHECK(parse_retry_after(c.value, Now) == c.seconds);
  }
}

TEST_CASE("retry-after two-digit year", "[scheduler][budget]") {
  // RFC 9110 reads a year more than 50 years ahead as the previous
  // century: in 2026, "77" is 1977, in the past.
  CHECK(parse_retry_after("Saturday, 01-Jan-77 00:00:00 GMT", Now) == 0.0);
  // "70" is 2070, only 44 years ahead, and so past the 366-day bound.
  CHECK_FALSE(
      parse_retry_after("Thursday, 01-Jan-70 00:00:00 GMT", Now).has_value());
  // "27" is 2027: one year and some days ahead, past the 366-day bound.
  CHECK_FALSE(
      parse_retry_after("Friday, 31-Dec-27 00:00:00 GMT", Now).has_value());
  // "26" is 2026.
  CHECK(parse_retry_after("Friday, 04-Dec-26 19:05:45 GMT", Now) == 1.0);
}

TEST_CASE("budget state round trips as JSON", "[scheduler][budget]") {
  BudgetState state;
  state.limit = 100;
  state.remaining = 76;
  state.window_s = 21600;
  state.source = BudgetState::Source::Headers;
  state.observed_at = Now - 0.125;
  state.reset_at = Now + 30.5;
  state.blocked_until = Now + 60;
  state.spends = {Now - 100.25, Now - 50, Now - 1.0 / 3};

  std::optional<BudgetState> copy = BudgetState::from_json(state.to_json());
  REQUIRE(copy.has_value());
  CHECK(copy->limit == state.limit);
  CHECK(copy->remaining == state.remaining);
  CHECK(copy->window_s == state.window_s);
  CHECK(copy->source == state.source);
  CHECK(copy->observed_at == state.observed_at);
  CHECK(copy->reset_at == state.reset_at);
  CHECK(copy->blocked_until == state.blocked_until);
  CHECK(copy->spends == state.spends);

  for (auto source : {BudgetState::Source::None, BudgetState::Source::Config}) {
    BudgetState other;
    other.source = source;
    auto parsed = BudgetState::from_json(other.to_json());
    REQUIRE(parsed.has_value());
    CHECK(parsed->source == source);
  }
}

TEST_CASE("budget state rejects bad JSON", "[scheduler][budget]") {
  const std::string good =
      R"({"version":1,"limit":100,"remaining":5,"window_s":60,)"
      R"("source":"headers","observed_at":1,"reset_at":0,)"
      R"("blocked_until":0,"spends":[1,2]})";
  REQUIRE(BudgetState::from_json(good).has_value());

  const std::vector<std::string> cases = {
      "",
      "null",
      "[]",
      "{",
      "not json",
      R"({"version":1})",
      // Wrong version.
      R"({"version":2,"limit":100,"remaining":5,"window_s":60,"source":"headers","observed_at":1,"reset_at":0,"blocked_until":0,"spends":[]})",
      // Remaining above limit.
      R"({"version":1,"limit":100,"remaining":500,"window_s":60,"source":"headers","observed_at":1,"reset_at":0,"blocked_until":0,"spends":[]})",
      // Negative limit.
      R"({"version":1,"limit":-1,"remaining":0,"window_s":60,"source":"headers","observed_at":1,"reset_at":0,"blocked_until":0,"spends":[]})",
      // Limit as a string.
      R"({"version":1,"limit":"100","remaining":5,"window_s":60,"source":"headers","observed_at":1,"reset_at":0,"blocked_until":0,"spends":[]})",
      // Fractional count.
      R"({"version":1,"limit":100.5,"remaining":5,"window_s":60,"source":"headers","observed_at":1,"reset_at":0,"blocked_until":0,"spends":[]})",
      // Negative time.
      R"({"version":1,"limit":100,"remaining":5,"window_s":-60,"source":"headers","observed_at":1,"reset_at":0,"blocked_until":0,"spends":[]})",
      // Unknown source.
      R"({"version":1,"limit":100,"remaining":5,"window_s":60,"source":"guess","observed_at":1,"reset_at":0,"blocked_until":0,"spends":[]})",
      // Spends not an array, or with a string in it.
      R"({"version":1,"limit":100,"remaining":5,"window_s":60,"source":"headers","observed_at":1,"reset_at":0,"blocked_until":0,"spends":5})",
      R"({"version":1,"limit":100,"remaining":5,"window_s":60,"source":"headers","observed_at":1,"reset_at":0,"blocked_until":0,"spends":["1"]})",
      R"({"version":1,"limit":100,"remaining":5,"window_s":60,"source":"headers","observed_at":1,"reset_at":0,"blocked_until":0,"spends":[-1]})",
      // Missing member.
      R"({"version":1,"limit":100,"remaining":5,"window_s":60,"source":"headers","reset_at":0,"blocked_until":0,"spends":[]})",
  };
  for (const std::string &text : cases) {
    INFO(text);
    CHECK_FALSE(BudgetState::from_json(text).has_value());
  }
}

TEST_CASE("budget state keeps newest spends", "[scheduler][budget]") {
  BudgetState state;
  for (size_t i = 0; i < MaxSpends + 10; ++i) {
    state.spends.push_front(static_cast<double>(MaxSpends + 10 - i));
  }
  auto parsed = BudgetState::from_json(state.to_json());
  REQUIRE(parsed.has_value());
  REQUIRE(parsed->spends.size() == MaxSpends);
  CHECK(parsed->spends.front() == 11.0);
  CHECK(parsed->spends.back() == static_cast<double>(MaxSpends + 10));
}

TEST_CASE("budget reset estimate", "[scheduler][budget]") {
  BudgetState state;
  state.window_s = 3600;

  SECTION("nothing known") { CHECK(state.expected_reset_at(Now) == 0.0); }

  SECTION("reset from headers wins") {
    state.reset_at = Now + 30;
    state.spends = {Now - 10};
    CHECK(state.expected_reset_at(Now) == Now + 30);
  }

  SECTION("oldest spend inside the window") {
    state.observed_at = Now - 5;
    state.spends = {Now - 4000, Now - 3000, Now - 10};
    CHECK(state.expected_reset_at(Now) == Now - 3000 + 3600);
  }

  SECTION("observation without spends") {
    state.observed_at = Now - 100;
    state.spends = {Now - 4000};
    CHECK(state.expected_reset_at(Now) == Now - 100 + 3600);
  }
}
