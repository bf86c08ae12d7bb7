#include "appliance/upstream/auth_challenge.h"

#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

using gatecache::ErrorCode;
using gatecache::upstream::find_bearer_challenge;
using gatecache::upstream::parse_challenges;

namespace {

using Params = std::vector<std::pair<std::string, std::string>>;

struct Expected {
  std::string scheme;
  std::string token68;
  Params params;
};

} // namespace

TEST_CASE("challenge parser reads valid values", "[upstream][auth]") {
  struct Case {
    std::string value;
    std::vector<Expected> challenges;
  };

  const std::vector<Case> cases = {
      {R"(Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull")",
       {{"bearer",
         "",
         {{"realm", "https://auth.docker.io/token"},
          {"service", "registry.docker.io"},
          {"scope", "repository:library/nginx:pull"}}}}},
      {R"(Bearer realm="https://r/token", scope="repository:a:pull repository:b:pull")",
       {{"bearer",
         "",
         {{"realm", "https://r/token"},
          {"scope", "repository:a:pull repository:b:pull"}}}}},
      {R"(Basic realm="Registry Realm")",
       {{"basic", "", {{"realm", "Registry Realm"}}}}},
      {R"(Basic realm="x", Bearer realm="https://r/t", service="s")",
       {{"basic", "", {{"realm", "x"}}},
        {"bearer", "", {{"realm", "https://r/t"}, {"service", "s"}}}}},
      {R"(Bearer realm="a \"quoted\" \\ value",error="invalid_token")",
       {{"bearer",
         "",
         {{"realm", R"(a "quoted" \ value)"}, {"error", "invalid_token"}}}}},
      {R"(Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple")",
       {{"newauth",
         "",
         {{"realm", "apps"}, {"type", "1"}, {"title", R"(Login to "apps")"}}},
        {"basic", "", {{"realm", "simple"}}}}},
      {"Basic dXNlcjpwYXNz==", {{"basic", "dXNlcjpwYXNz==", {}}}},
      {"Basic dXNlcjpwYXNz==, Bearer realm=r",
       {{"basic", "dXNlcjpwYXNz==", {}}, {"bearer", "", {{"realm", "r"}}}}},
      {R"(BEARER REALM="https://x")",
       {{"bearer", "", {{"realm", "https://x"}}}}},
      {R"(Bearer realm="https://x", scope="a,b")",
       {{"bearer", "", {{"realm", "https://x"}, {"scope", "a,b"}}}}},
      {"Bearer  realm = \"x\" ,, service=s ,",
       {{"bearer", "", {{"realm", "x"}, {"service", "s"}}}}},
      {"Negotiate", {{"negotiate", "", {}}}},
      {"Negotiate, Basic realm=x",
       {{"negotiate", "", {}}, {"basic", "", {{"realm", "x"}}}}},
      {"", {}},
  };
  for (const Case &c : cases) {
    CAPTURE(c.value);
    auto parsed = parse_challenges(c.value);
    REQUIRE(parsed);
    REQUIRE(parsed->size() == c.challenges.size());
    for (size_t i = 0; i < c.challenges.size(); ++i) {
      CAPTURE(i);
      CHECK((*parsed)[i].scheme == c.challenges[i].scheme);
      CHECK((*parsed)[i].token68 == c.challenges[i].token68);
      CHECK((*parsed)[i].params == c.challenges[i].params);
    }
  }
}

TEST_CASE("challenge parser rejects malformed values", "[upstream][auth]") {
  const char *cases[] = {
      R"(Bearer realm="unterminated)",
      R"(Bearer realm=,service="x")",
      R"("quoted" realm=x)",
      R"(Bearer realm="x" junk)",
      R"(Bearer=realm)",
      R"(Bearer realm="x", service=@)",
  };
  for (const char *value : cases) {
    CAPTURE(value);
    auto parsed = parse_challenges(value);
    REQUIRE_FALSE(parsed);
    CHECK(parsed.error().code == ErrorCode::Invalid);
  }
}

TEST_CASE("bearer challenge lookup needs a realm", "[upstream][auth]") {
  auto basic_only = parse_challenges(R"(Basic realm="Registry Realm")");
  REQUIRE(basic_only);
  CHECK_FALSE(find_bearer_challenge(*basic_only));

  auto no_realm = parse_challenges(R"(Bearer service="s")");
  REQUIRE(no_realm);
  CHECK_FALSE(find_bearer_challenge(*no_realm));

  auto mixed = parse_challenges(
      R"(Basic realm="x", Bearer realm="https://r/token",service="svc",scope="repository:a:pull")");
  REQUIRE(mixed);
  auto bearer = find_bearer_challenge(*mixed);
  REQUIRE(bearer);
  CHECK(bearer->realm == "https://r/token");
  CHECK(bearer->service == "svc");
  CHECK(bearer->scope == "repository:a:pull");
}
