#include "appliance/registry/oci_error.h"

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <catch2/catch.hpp>

using gatecache::registry::oci_error_body;
using gatecache::registry::OciError;

TEST_CASE("oci error factories pair code and status", "[registry]") {
  struct Case {
    OciError error;
    int status;
    std::string code;
  };

  const std::vector<Case> cases = {
      {OciError::name_invalid("m"), 400, "NAME_INVALID"},
      {OciError::name_unknown("m"), 404, "NAME_UNKNOWN"},
      {OciError::manifest_unknown("m"), 404, "MANIFEST_UNKNOWN"},
      {OciError::blob_unknown("m"), 404, "BLOB_UNKNOWN"},
      {OciError::digest_invalid("m"), 400, "DIGEST_INVALID"},
      {OciError::unsupported("m"), 405, "UNSUPPORTED"},
      {OciError::too_many_requests("m"), 429, "TOOMANYREQUESTS"},
      {OciError::denied("m"), 403, "DENIED"},
      {OciError::unauthorized("m"), 401, "UNAUTHORIZED"},
      {OciError::range_invalid("m"), 416, "RANGE_INVALID"},
      {OciError::unavailable("m"), 503, "UNAVAILABLE"},
  };
  for (const Case &c : cases) {
    INFO("code: " << c.code);
    CHECK(c.error.status == c.status);
    CHECK(c.error.code == c.code);
    CHECK(c.error.message == "m");
  }
}

TEST_CASE("oci error body has spec layout", "[registry]") {
  OciError error = OciError::manifest_unknown("manifest unknown");
  CHECK(oci_error_body(error) ==
        R"({"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown",)"
        R"("detail":null}]})");
}

TEST_CASE("oci error body escapes message", "[registry]") {
  OciError error = OciError::name_invalid("a\"b\\c\n\x01</script>");
  std::string body = oci_error_body(error);
  CHECK(body == R"({"errors":[{"code":"NAME_INVALID","message":)"
                R"("a\"b\\c\n\u0001</script>","detail":null}]})");
  auto parsed = nlohmann::json::parse(body, nullptr, false);
  REQUIRE_FALSE(parsed.is_discarded());
  CHECK(parsed["errors"][0]["message"] == error.message);
}

TEST_CASE("oci error body replaces invalid utf8", "[registry]") {
  OciError error = OciError::name_invalid("bad \xff\xfe byte");
  std::string body = oci_error_body(error);
  auto parsed = nlohmann::json::parse(body, nullptr, false);
  REQUIRE_FALSE(parsed.is_discarded());
  CHECK(parsed["errors"][0]["message"] == "bad \xef\xbf\xbd\xef\xbf\xbd byte");
}
