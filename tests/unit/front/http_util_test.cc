#include "appliance/front/http_util.h"

#include <regex>
#include <string>

#include <catch2/catch.hpp>

#include "appliance/front/exchange.h"

namespace gatecache::front {
namespace {

Response make_response(int status, int64_t body_length,
                       int64_t head_length = -1) {
  Response response;
  response.status = status;
  response.head_length = head_length;
  if (body_length >= 0) {
    response.body = std::make_unique<MemoryBody>(std::string(body_length, 'x'));
  }
  return response;
}

TEST_CASE("http date has IMF-fixdate form", "[front][http_util]") {
  std::string date(http_date());
  std::regex format(
      R"((Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d )"
      R"((Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} )"
      R"(\d\d:\d\d:\d\d GMT)");
  CHECK(std::regex_match(date, format));
  CHECK(date.size() == HttpDateLength);
}

TEST_CASE("body plan follows RFC 9110", "[front][http_util]") {
  struct Case {
    Method method;
    int status;
    int64_t body;
    int64_t head_length;
    bool send_body;
    int64_t content_length;
  };

  const Case cases[] = {
      {Method::Get, 200, 10, -1, true, 10},
      {Method::Get, 200, -1, -1, false, 0},
      {Method::Get, 200, 0, -1, false, 0},
      {Method::Get, 204, 10, -1, false, -1},
      {Method::Get, 304, 10, -1, false, -1},
      {Method::Get, 304, 10, 42, false, 42},
      {Method::Head, 200, 10, 42, false, 42},
      {Method::Head, 200, 10, -1, false, 10},
      {Method::Head, 200, -1, -1, false, 0},
      {Method::Other, 405, 5, -1, true, 5},
  };
  for (const Case &c : cases) {
    Response response = make_response(c.status, c.body, c.head_length);
    BodyPlan plan = plan_body(c.method, response);
    INFO("status " << c.status << " body " << c.body << " head_length "
                   << c.head_length);
    CHECK(plan.send_body == c.send_body);
    CHECK(plan.content_length == c.content_length);
  }
}

TEST_CASE("header checks reject injection", "[front][http_util]") {
  CHECK(is_valid_header_name("docker-content-digest"));
  CHECK_FALSE(is_valid_header_name("Content-Type"));
  CHECK_FALSE(is_valid_header_name("bad name"));
  CHECK_FALSE(is_valid_header_name(""));
  CHECK(is_valid_header_value("sha256:abc\tdef"));
  CHECK_FALSE(is_valid_header_value("a\r\nset-cookie: x"));
  CHECK_FALSE(is_valid_header_value(std::string("a\0b", 3)));
  CHECK(is_reserved_header("content-length"));
  CHECK(is_reserved_header("transfer-encoding"));
  CHECK_FALSE(is_reserved_header("content-type"));
}

TEST_CASE("log text escapes control bytes", "[front][http_util]") {
  CHECK(fmt::format("{}", LogText{"/v2/a b\n\\"}) == "/v2/a\\x20b\\x0a\\x5c");
  CHECK(fmt::format("{}", LogText{""}) == "-");
  CHECK(fmt::format("{}", LogText{"", false}).empty());
}

TEST_CASE("cache result names match log", "[front][http_util]") {
  CHECK(std::string(to_string(CacheResult::None)) == "none");
  CHECK(std::string(to_string(CacheResult::Hit)) == "hit");
  CHECK(std::string(to_string(CacheResult::Miss)) == "miss");
  CHECK(std::string(to_string(CacheResult::Stale)) == "stale");
  CHECK(std::string(to_string(CacheResult::Revalidated)) == "revalidated");
  CHECK(std::string(to_string(CacheResult::Joined)) == "joined");
}

} // namespace
} // namespace gatecache::front
