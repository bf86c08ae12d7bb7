#include "appliance/registry/range.h"

#include <cstdint>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

using gatecache::registry::content_range;
using gatecache::registry::parse_range;
using gatecache::registry::RangeKind;
using gatecache::registry::unsatisfied_content_range;

namespace {

const char *kind_name(RangeKind kind) {
  switch (kind) {
  case RangeKind::None:
    return "None";
  case RangeKind::Satisfiable:
    return "Satisfiable";
  case RangeKind::Unsatisfiable:
    return "Unsatisfiable";
  case RangeKind::Invalid:
    return "Invalid";
  }
  return "?";
}

// A header that selects bytes `first` to `last` of a `size`-byte body.
struct SatisfiableCase {
  std::string header;
  uint64_t size;
  uint64_t first;
  uint64_t last;
};

void check_satisfiable(const std::vector<SatisfiableCase> &cases) {
  for (const SatisfiableCase &c : cases) {
    INFO("header: '" << c.header << "', size " << c.size);
    auto range = parse_range(c.header, c.size);
    CHECK(kind_name(range.kind) == std::string("Satisfiable"));
    CHECK(range.first == c.first);
    CHECK(range.last == c.last);
  }
}

} // namespace

TEST_CASE("range parses satisfiable forms", "[registry][range]") {
  const std::vector<SatisfiableCase> cases = {
      {"bytes=0-499", 1000, 0, 499},
      {"bytes=500-999", 1000, 500, 999},
      {"bytes=0-0", 1000, 0, 0},
      {"bytes=999-999", 1000, 999, 999},
      {"bytes=500-", 1000, 500, 999},
      {"bytes=0-", 1, 0, 0},
      {"bytes=-500", 1000, 500, 999},
      {"bytes=-1", 1000, 999, 999},
      // A suffix longer than the body selects the whole body.
      {"bytes=-5000", 1000, 0, 999},
      // A last position beyond the body is clamped.
      {"bytes=900-5000", 1000, 900, 999},
      {"bytes=0-9223372036854775807", 1000, 0, 999},
      {"bytes=0009-0010", 1000, 9, 10},
      // Unit case and optional whitespace.
      {"Bytes=1-2", 10, 1, 2},
      {"BYTES=1-2", 10, 1, 2},
      {" \tbytes=1-2\t ", 10, 1, 2},
      {"bytes=1-2 ,", 10, 1, 2},
      {"bytes=, 1-2", 10, 1, 2},
      {"bytes=,,1-2,,", 10, 1, 2},
      {"bytes=9223372036854775806-", 9223372036854775807ULL,
       9223372036854775806ULL, 9223372036854775806ULL},
  };
  check_satisfiable(cases);
}

TEST_CASE("range classifies other headers", "[registry][range]") {
  struct Case {
    std::string header;
    uint64_t size;
    RangeKind kind;
  };

  const std::vector<Case> cases = {
      // No range, or a unit gatecache does not know.
      {"", 1000, RangeKind::None},
      {"   ", 1000, RangeKind::None},
      {"items=0-1", 1000, RangeKind::None},
      {"bytesx=0-1", 1000, RangeKind::None},
      // A suffix of an empty body has no Content-Range to describe it.
      {"bytes=-1", 0, RangeKind::None},
      // Valid syntax outside the body.
      {"bytes=1000-", 1000, RangeKind::Unsatisfiable},
      {"bytes=1000-2000", 1000, RangeKind::Unsatisfiable},
      {"bytes=-0", 1000, RangeKind::Unsatisfiable},
      {"bytes=0-", 0, RangeKind::Unsatisfiable},
      {"bytes=-0", 0, RangeKind::Unsatisfiable},
      {"bytes=0-0", 0, RangeKind::Unsatisfiable},
      // Malformed.
      {"bytes", 1000, RangeKind::Invalid},
      {"bytes=", 1000, RangeKind::Invalid},
      {"bytes= ", 1000, RangeKind::Invalid},
      {"bytes=,", 1000, RangeKind::Invalid},
      {"=0-1", 1000, RangeKind::Invalid},
      {"bytes =0-1", 1000, RangeKind::Invalid},
      {"bytes=0 -1", 1000, RangeKind::Invalid},
      {"bytes=0- 1", 1000, RangeKind::Invalid},
      {"bytes=-", 1000, RangeKind::Invalid},
      {"bytes=--1", 1000, RangeKind::Invalid},
      {"bytes=1", 1000, RangeKind::Invalid},
      {"bytes=a-b", 1000, RangeKind::Invalid},
      {"bytes=0x1-2", 1000, RangeKind::Invalid},
      {"bytes=+1-2", 1000, RangeKind::Invalid},
      {"bytes=1-+2", 1000, RangeKind::Invalid},
      {"bytes=-+2", 1000, RangeKind::Invalid},
      {"bytes=1-2-3", 1000, RangeKind::Invalid},
      {"bytes=5-4", 1000, RangeKind::Invalid},
      {"bytes=1.5-2", 1000, RangeKind::Invalid},
      {"bytes=0-1;x", 1000, RangeKind::Invalid},
      {"bytes=0-1=2", 1000, RangeKind::Invalid},
      {"by tes=0-1", 1000, RangeKind::Invalid},
      // A last position below the first, with numbers past 64 bits.
      {"bytes=99999999999999999999999999-1", 1000, RangeKind::Invalid},
      {"bytes=99999999999999999999-99999999999999999998", 1000,
       RangeKind::Invalid},
      {"bytes=0-99999999999999999999x", 1000, RangeKind::Invalid},
      // Several well-formed ranges are ignored, even when none of them
      // overlaps the body.
      {"bytes=0-1,2-3", 1000, RangeKind::None},
      {"bytes=0-1,5-6", 1000, RangeKind::None},
      {"bytes=0-1, -5", 1000, RangeKind::None},
      {"bytes=0-1 , 0-1", 1000, RangeKind::None},
      {"bytes=0-1,,2-3,", 1000, RangeKind::None},
      {"Bytes=0-, -1", 1000, RangeKind::None},
      {"bytes=2000-3000,4000-", 1000, RangeKind::None},
      {"bytes=-0,-0", 1000, RangeKind::None},
      {"bytes=0-1,2-3", 0, RangeKind::None},
      // A malformed element wins over several ranges.
      {"bytes=0-1,x", 1000, RangeKind::Invalid},
      {"bytes=0-1,5-4", 1000, RangeKind::Invalid},
      {"bytes=x,0-1", 1000, RangeKind::Invalid},
      {"bytes=0-1,2-3,-", 1000, RangeKind::Invalid},
  };
  for (const Case &c : cases) {
    INFO("header: '" << c.header << "', size " << c.size);
    auto range = parse_range(c.header, c.size);
    CHECK(std::string(kind_name(range.kind)) == kind_name(c.kind));
  }
}

TEST_CASE("range clamps last position to end", "[registry][range]") {
  const std::vector<SatisfiableCase> cases = {
      // Last position at the last byte, at the size and just past it.
      {"bytes=0-999", 1000, 0, 999},
      {"bytes=0-1000", 1000, 0, 999},
      {"bytes=0-1001", 1000, 0, 999},
      {"bytes=999-1000", 1000, 999, 999},
      {"bytes=0-1", 1, 0, 0},
      // Last positions at 2^63, at 2^64 - 1 and past 2^64, where uint64_t
      // overflows.
      {"bytes=0-9223372036854775808", 1000, 0, 999},
      {"bytes=0-18446744073709551615", 1000, 0, 999},
      {"bytes=0-18446744073709551616", 1000, 0, 999},
      {"bytes=0-99999999999999999999", 1000, 0, 999},
      {"bytes=500-99999999999999999999", 1000, 500, 999},
      {"bytes=0-99999999999999999999", 1, 0, 0},
      {"bytes=0-00000000000000000000000000005", 1000, 0, 5},
      // Suffix lengths past 64 bits select the whole body.
      {"bytes=-9223372036854775808", 1000, 0, 999},
      {"bytes=-99999999999999999999", 1000, 0, 999},
  };
  check_satisfiable(cases);
}

TEST_CASE("range rejects first position past end", "[registry][range]") {
  const std::vector<std::string> headers = {
      "bytes=1000-1000",
      "bytes=1000-99999999999999999999",
      "bytes=9223372036854775808-",
      "bytes=18446744073709551616-",
      "bytes=99999999999999999999-",
      "bytes=99999999999999999999-99999999999999999999",
  };
  for (const std::string &header : headers) {
    INFO("header: '" << header << "', size 1000");
    auto range = parse_range(header, 1000);
    CHECK(kind_name(range.kind) == std::string("Unsatisfiable"));
  }

  INFO("header: 'bytes=0-99999999999999999999', size 0");
  auto empty = parse_range("bytes=0-99999999999999999999", 0);
  CHECK(kind_name(empty.kind) == std::string("Unsatisfiable"));
}

TEST_CASE("range formats content range", "[registry][range]") {
  CHECK(content_range(0, 99, 1000) == "bytes 0-99/1000");
  CHECK(content_range(999, 999, 1000) == "bytes 999-999/1000");
  CHECK(unsatisfied_content_range(1000) == "bytes */1000");
  CHECK(unsatisfied_content_range(0) == "bytes */0");
}
