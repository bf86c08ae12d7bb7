#include "appliance/upstream/token_cache.h"

#include <string>

#include <catch2/catch.hpp>

using gatecache::ErrorCode;
using gatecache::upstream::parse_token_response;
using gatecache::upstream::TokenCache;
using gatecache::upstream::TokenGrant;
using gatecache::upstream::TokenKey;

namespace {

const TokenKey NginxKey{"https://auth.example/token", "registry.example",
                        "repository:library/nginx:pull"};
const TokenKey AlpineKey{"https://auth.example/token", "registry.example",
                         "repository:library/alpine:pull"};

// 2024-01-02T03:04:05Z in seconds since the epoch.
constexpr double IssuedAtUnix = 1704164645;

} // namespace

TEST_CASE("token response parser reads fields", "[upstream][token]") {
  auto grant = parse_token_response(R"({"token":"abc","expires_in":300})", 0);
  REQUIRE(grant);
  CHECK(grant->token == "abc");
  CHECK(grant->lifetime_s == 300);

  auto access = parse_token_response(R"({"access_token":"xyz"})", 0);
  REQUIRE(access);
  CHECK(access->token == "xyz");
  CHECK(access->lifetime_s == 60);
}

TEST_CASE("token response parser applies issued_at", "[upstream][token]") {
  const std::string body =
      R"({"token":"t","expires_in":300,"issued_at":"2024-01-02T03:04:05Z"})";
  auto aged = parse_token_response(body, IssuedAtUnix + 100);
  REQUIRE(aged);
  CHECK(aged->lifetime_s == 200);

  auto skewed = parse_token_response(body, IssuedAtUnix - 100);
  REQUIRE(skewed);
  CHECK(skewed->lifetime_s == 300);

  auto offset = parse_token_response(
      R"({"token":"t","expires_in":300,"issued_at":"2024-01-02T05:04:05.5+02:00"})",
      IssuedAtUnix + 50);
  REQUIRE(offset);
  CHECK(offset->lifetime_s == 250);
}

TEST_CASE("token response parser rejects bad bodies", "[upstream][token]") {
  auto not_json = parse_token_response("<html>", 0);
  REQUIRE_FALSE(not_json);
  CHECK(not_json.error().code == ErrorCode::Invalid);

  auto no_token = parse_token_response(R"({"expires_in":60})", 0);
  REQUIRE_FALSE(no_token);
  CHECK(no_token.error().code == ErrorCode::Unauthorized);

  auto empty_token = parse_token_response(R"({"token":""})", 0);
  REQUIRE_FALSE(empty_token);
  CHECK(empty_token.error().code == ErrorCode::Unauthorized);
}

TEST_CASE("token cache expires before the token", "[upstream][token]") {
  TokenCache cache;
  cache.insert(NginxKey, TokenGrant{"abc", 300}, 1000);
  CHECK(cache.find(NginxKey, 1000) == "abc");
  CHECK(cache.find(NginxKey, 1289) == "abc");
  CHECK_FALSE(cache.find(NginxKey, 1290));
  CHECK_FALSE(cache.find(AlpineKey, 1000));
}

TEST_CASE("token cache halves margin for short tokens", "[upstream][token]") {
  TokenCache cache;
  cache.insert(NginxKey, TokenGrant{"abc", 8}, 1000);
  CHECK(cache.find(NginxKey, 1003.9) == "abc");
  CHECK_FALSE(cache.find(NginxKey, 1004));
}

TEST_CASE("token cache erases only a matching token", "[upstream][token]") {
  TokenCache cache;
  cache.insert(NginxKey, TokenGrant{"new", 300}, 1000);
  cache.erase(NginxKey, "old");
  CHECK(cache.find(NginxKey, 1000) == "new");
  cache.erase(NginxKey, "new");
  CHECK_FALSE(cache.find(NginxKey, 1000));
}

TEST_CASE("token cache evicts when full", "[upstream][token]") {
  TokenCache cache(2);
  cache.insert(NginxKey, TokenGrant{"n", 100}, 1000);
  cache.insert(AlpineKey, TokenGrant{"a", 300}, 1000);
  TokenKey third{"https://auth.example/token", "registry.example",
                 "repository:library/busybox:pull"};
  cache.insert(third, TokenGrant{"b", 300}, 1000);
  CHECK(cache.size() == 2);
  CHECK_FALSE(cache.find(NginxKey, 1000));
  CHECK(cache.find(AlpineKey, 1000) == "a");
  CHECK(cache.find(third, 1000) == "b");
}
