#include "appliance/registry/route.h"

#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "appliance/config/config.h"
#include "appliance/front/exchange.h"

using gatecache::registry::Endpoint;
using gatecache::registry::route_request;
using gatecache::registry::RouteTable;

namespace {

const std::string sha256_hex =
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const std::string sha512_hex(128, 'a');
const std::string digest = "sha256:" + sha256_hex;

RouteTable make_table(bool with_default = true) {
  RouteTable table;
  table.add_upstream("docker.io", true);
  table.add_upstream("ghcr.io", false);
  table.add_upstream("127.0.0.1:5000", false);
  table.add_upstream("[::1]:5000", false);
  if (with_default) {
    table.set_default_upstream("docker.io");
  }
  return table;
}

const char *endpoint_name(Endpoint endpoint) {
  switch (endpoint) {
  case Endpoint::Base:
    return "Base";
  case Endpoint::Manifest:
    return "Manifest";
  case Endpoint::Blob:
    return "Blob";
  case Endpoint::TagsList:
    return "TagsList";
  }
  return "?";
}

struct ErrorCase {
  std::string method;
  std::string path;
  std::string query;
  int status;
  std::string code;
};

void check_errors(const RouteTable &table,
                  const std::vector<ErrorCase> &cases) {
  for (const ErrorCase &c : cases) {
    INFO(c.method << " " << c.path << " ?" << c.query);
    auto route = route_request(table, c.method, c.path, c.query);
    REQUIRE_FALSE(route.has_value());
    CHECK(route.error().status == c.status);
    CHECK(route.error().code == c.code);
    CHECK_FALSE(route.error().message.empty());
  }
}

} // namespace

TEST_CASE("route maps base path", "[registry][route]") {
  RouteTable table = make_table();
  for (std::string path : {"/v2/", "/v2"}) {
    for (std::string method : {"GET", "HEAD"}) {
      INFO(method << " " << path);
      auto route = route_request(table, method, path, "");
      REQUIRE(route.has_value());
      CHECK(std::string(endpoint_name(route->endpoint)) == "Base");
      CHECK(route->upstream == "docker.io");
      CHECK(route->repository.empty());
      CHECK(route->reference.empty());
    }
  }

  auto with_ns = route_request(table, "GET", "/v2/", "ns=ghcr.io");
  REQUIRE(with_ns.has_value());
  CHECK(with_ns->upstream == "ghcr.io");

  auto no_default = route_request(make_table(false), "GET", "/v2/", "");
  REQUIRE(no_default.has_value());
  CHECK(no_default->upstream.empty());
}

TEST_CASE("route parses valid requests", "[registry][route]") {
  struct Case {
    std::string path;
    std::string query;
    Endpoint endpoint;
    std::string upstream;
    std::string repository;
    std::string reference;
    bool by_digest;
  };

  const std::vector<Case> cases = {
      {"/v2/library/nginx/manifests/latest", "", Endpoint::Manifest,
       "docker.io", "library/nginx", "latest", false},
      {"/v2/library/nginx/manifests/" + digest, "", Endpoint::Manifest,
       "docker.io", "library/nginx", digest, true},
      {"/v2/library/nginx/manifests/sha512:" + sha512_hex, "",
       Endpoint::Manifest, "docker.io", "library/nginx", "sha512:" + sha512_hex,
       true},
      {"/v2/library/nginx/blobs/" + digest, "", Endpoint::Blob, "docker.io",
       "library/nginx", digest, true},
      {"/v2/library/nginx/tags/list", "", Endpoint::TagsList, "docker.io",
       "library/nginx", "", false},
      {"/v2/org/team/app/manifests/v1.2.3-rc.1_b", "ns=ghcr.io",
       Endpoint::Manifest, "ghcr.io", "org/team/app", "v1.2.3-rc.1_b", false},
      {"/v2/a0.b_c__d---e/manifests/_", "ns=ghcr.io", Endpoint::Manifest,
       "ghcr.io", "a0.b_c__d---e", "_", false},
      {"/v2/a/manifests/" + std::string(128, 'T'), "ns=ghcr.io",
       Endpoint::Manifest, "ghcr.io", "a", std::string(128, 'T'), false},
      // Components that look like endpoint words belong to the name.
      {"/v2/a/manifests/b/manifests/latest", "ns=ghcr.io", Endpoint::Manifest,
       "ghcr.io", "a/manifests/b", "latest", false},
      {"/v2/blobs/tags/list", "ns=ghcr.io", Endpoint::TagsList, "ghcr.io",
       "blobs", "", false},
      {"/v2/tags/blobs/blobs/" + digest, "ns=ghcr.io", Endpoint::Blob,
       "ghcr.io", "tags/blobs", digest, true},
      // A tag shaped like a digest with '-' is a tag (referrers tag schema).
      {"/v2/app/manifests/sha256-" + sha256_hex, "ns=ghcr.io",
       Endpoint::Manifest, "ghcr.io", "app", "sha256-" + sha256_hex, false},
  };

  RouteTable table = make_table();
  for (const Case &c : cases) {
    INFO(c.path << " ?" << c.query);
    auto route = route_request(table, "GET", c.path, c.query);
    REQUIRE(route.has_value());
    CHECK(std::string(endpoint_name(route->endpoint)) ==
          endpoint_name(c.endpoint));
    CHECK(route->upstream == c.upstream);
    CHECK(route->repository == c.repository);
    CHECK(route->reference == c.reference);
    CHECK(route->by_digest == c.by_digest);
  }
}

TEST_CASE("route adds library only for docker hub", "[registry][route]") {
  struct Case {
    std::string path;
    std::string query;
    std::string repository;
  };

  const std::vector<Case> cases = {
      {"/v2/nginx/manifests/latest", "", "library/nginx"},
      {"/v2/nginx/manifests/latest", "ns=docker.io", "library/nginx"},
      {"/v2/nginx/tags/list", "ns=docker.io", "library/nginx"},
      {"/v2/nginx/blobs/" + digest, "ns=docker.io", "library/nginx"},
      {"/v2/library/nginx/manifests/latest", "ns=docker.io", "library/nginx"},
      {"/v2/bitnami/nginx/manifests/latest", "ns=docker.io", "bitnami/nginx"},
      {"/v2/nginx/manifests/latest", "ns=ghcr.io", "nginx"},
      {"/v2/nginx/manifests/latest", "ns=127.0.0.1:5000", "nginx"},
  };

  RouteTable table = make_table();
  for (const Case &c : cases) {
    INFO(c.path << " ?" << c.query);
    auto route = route_request(table, "GET", c.path, c.query);
    REQUIRE(route.has_value());
    CHECK(route->repository == c.repository);
  }
}

TEST_CASE("route reads ns parameter", "[registry][route]") {
  struct Case {
    std::string query;
    std::string upstream;
  };

  const std::vector<Case> cases = {
      {"ns=ghcr.io", "ghcr.io"},
      {"ns=GHCR.io", "ghcr.io"},
      {"ns=127.0.0.1:5000", "127.0.0.1:5000"},
      {"ns=127.0.0.1%3A5000", "127.0.0.1:5000"},
      {"ns=127.0.0.1%3a5000", "127.0.0.1:5000"},
      {"ns=%5B%3A%3A1%5D%3A5000", "[::1]:5000"},
      {"ns=[0:0::1]:5000", "[::1]:5000"},
      {"ns=%67hcr.io", "ghcr.io"},
      {"foo=bar&ns=ghcr.io&x", "ghcr.io"},
      {"n=docker.io&ns=ghcr.io&nss=x", "ghcr.io"},
      {"&&ns=ghcr.io&", "ghcr.io"},
      {"", "docker.io"},
      {"other=1", "docker.io"},
  };

  RouteTable table = make_table();
  for (const Case &c : cases) {
    INFO("query: " << c.query);
    auto route =
        route_request(table, "GET", "/v2/app/manifests/latest", c.query);
    REQUIRE(route.has_value());
    CHECK(route->upstream == c.upstream);
  }
}

TEST_CASE("route denies unconfigured upstream", "[registry][route]") {
  RouteTable table = make_table();
  auto route =
      route_request(table, "GET", "/v2/app/manifests/latest", "ns=quay.io");
  REQUIRE_FALSE(route.has_value());
  CHECK(route.error().status == 403);
  CHECK(route.error().code == "DENIED");
  CHECK(route.error().message == "upstream 'quay.io' is not configured");

  auto port = route_request(table, "GET", "/v2/app/manifests/latest",
                            "ns=127.0.0.1%3A5001");
  REQUIRE_FALSE(port.has_value());
  CHECK(port.error().message == "upstream '127.0.0.1:5001' is not configured");
}

TEST_CASE("route requires ns without default", "[registry][route]") {
  RouteTable table = make_table(false);
  auto route = route_request(table, "GET", "/v2/app/manifests/latest", "");
  REQUIRE_FALSE(route.has_value());
  CHECK(route.error().status == 403);
  CHECK(route.error().code == "DENIED");

  auto with_ns =
      route_request(table, "GET", "/v2/app/manifests/latest", "ns=ghcr.io");
  REQUIRE(with_ns.has_value());
  CHECK(with_ns->upstream == "ghcr.io");
}

TEST_CASE("route rejects malformed ns", "[registry][route]") {
  const std::string path = "/v2/app/manifests/latest";
  check_errors(
      make_table(),
      {
          {"GET", path, "ns=", 400, "NAME_INVALID"},
          {"GET", path, "ns", 400, "NAME_INVALID"},
          {"GET", path, "ns=%zz", 400, "NAME_INVALID"},
          {"GET", path, "ns=ghcr.io%", 400, "NAME_INVALID"},
          {"GET", path, "ns=ghcr.io%4", 400, "NAME_INVALID"},
          {"GET", path, "ns=ghcr.io%2Fx", 400, "NAME_INVALID"},
          {"GET", path, "ns=ghcr.io%00", 400, "NAME_INVALID"},
          {"GET", path, "ns=ghcr+io", 400, "NAME_INVALID"},
          {"GET", path, "ns=https://ghcr.io", 400, "NAME_INVALID"},
          {"GET", path, "ns=ghcr.io:0", 400, "NAME_INVALID"},
          {"GET", path, "ns=*.io", 400, "NAME_INVALID"},
          {"GET", path, "ns=ghcr.io&ns=ghcr.io", 400, "NAME_INVALID"},
          {"GET", path, "ns=ghcr.io&ns=docker.io", 400, "NAME_INVALID"},
      });
}

TEST_CASE("route rejects path traversal", "[registry][route]") {
  check_errors(
      make_table(),
      {
          {"GET", "/v2/../x", "", 400, "NAME_INVALID"},
          {"GET", "/v2/../../etc/passwd", "", 400, "NAME_INVALID"},
          {"GET", "/v2/a/%2e%2e/manifests/x", "", 400, "NAME_INVALID"},
          {"GET", "/v2/a/%2E%2E/manifests/x", "", 400, "NAME_INVALID"},
          {"GET", "/v2/a%2Fb/manifests/x", "", 400, "NAME_INVALID"},
          {"GET", "/v2/a%2fb/manifests/x", "", 400, "NAME_INVALID"},
          {"GET", "/v2/nginx/manifests/lat%65st", "", 400, "NAME_INVALID"},
          {"GET", "/v2/%6eginx/manifests/latest", "", 400, "NAME_INVALID"},
          {"GET", "/v2/./a/manifests/x", "", 400, "NAME_INVALID"},
          {"GET", "/v2/a/./manifests/x", "", 400, "NAME_INVALID"},
          {"GET", "/v2/a/../b/manifests/x", "", 400, "NAME_INVALID"},
          {"GET", "/v2/a/manifests/..", "", 400, "NAME_INVALID"},
          {"GET", "/v2/a/manifests/.", "", 400, "NAME_INVALID"},
          {"GET", "/v2/a/blobs/..", "", 400, "NAME_INVALID"},
          {"GET", "/v2/..", "", 400, "NAME_INVALID"},
          {"GET", "/v2/.", "", 400, "NAME_INVALID"},
          {"GET", "/v2//a/manifests/x", "", 400, "NAME_INVALID"},
          {"GET", "/v2/a//b/manifests/x", "", 400, "NAME_INVALID"},
          {"GET", "/v2/a/manifests//x", "", 400, "NAME_INVALID"},
          {"GET", "/v2//", "", 400, "NAME_INVALID"},
          {"GET", "/v2/a/b/../../../manifests/x", "", 400, "NAME_INVALID"},
      });
}

TEST_CASE("route rejects invalid names", "[registry][route]") {
  const std::string ok = "/manifests/latest";
  check_errors(make_table(),
               {
                   {"GET", "/v2/Nginx" + ok, "", 400, "NAME_INVALID"},
                   {"GET", "/v2/library/NGINX" + ok, "", 400, "NAME_INVALID"},
                   {"GET", "/v2/a..b" + ok, "", 400, "NAME_INVALID"},
                   {"GET", "/v2/a___b" + ok, "", 400, "NAME_INVALID"},
                   {"GET", "/v2/a._b" + ok, "", 400, "NAME_INVALID"},
                   {"GET", "/v2/-a" + ok, "", 400, "NAME_INVALID"},
                   {"GET", "/v2/a-" + ok, "", 400, "NAME_INVALID"},
                   {"GET", "/v2/_a" + ok, "", 400, "NAME_INVALID"},
                   {"GET", "/v2/.a" + ok, "", 400, "NAME_INVALID"},
                   {"GET", "/v2/a./b" + ok, "", 400, "NAME_INVALID"},
                   {"GET", "/v2/a b" + ok, "", 400, "NAME_INVALID"},
                   {"GET", "/v2/a:b" + ok, "", 400, "NAME_INVALID"},
                   {"GET", "/v2/a@b" + ok, "", 400, "NAME_INVALID"},
                   {"GET", "/v2/caf\xc3\xa9" + ok, "", 400, "NAME_INVALID"},
                   {"GET", "/v2/manifests/latest", "", 400, "NAME_INVALID"},
                   {"GET", "/v2/tags/list", "", 400, "NAME_INVALID"},
                   {"GET", "/v2/blobs/" + digest, "", 400, "NAME_INVALID"},
               });
}

TEST_CASE("route limits name length", "[registry][route]") {
  RouteTable table = make_table();
  // 127 two-character components and one more character: 255 in all.
  std::string name_255;
  for (int i = 0; i < 127; ++i) {
    name_255 += "a/";
  }
  name_255 += "b";
  REQUIRE(name_255.size() == 255);

  auto longest =
      route_request(table, "GET", "/v2/" + name_255 + "/manifests/latest", "");
  REQUIRE(longest.has_value());
  CHECK(longest->repository == name_255);

  check_errors(table, {
                          {"GET", "/v2/" + name_255 + "b/manifests/latest", "",
                           400, "NAME_INVALID"},
                          {"GET", "/v2/" + std::string(300, 'a') + "/tags/list",
                           "", 400, "NAME_INVALID"},
                      });
}

TEST_CASE("route checks name after library prefix", "[registry][route]") {
  RouteTable table = make_table();
  std::string name(250, 'a');
  auto on_hub = route_request(table, "GET", "/v2/" + name + "/tags/list", "");
  REQUIRE_FALSE(on_hub.has_value());
  CHECK(on_hub.error().code == "NAME_INVALID");

  auto elsewhere =
      route_request(table, "GET", "/v2/" + name + "/tags/list", "ns=ghcr.io");
  REQUIRE(elsewhere.has_value());
  CHECK(elsewhere->repository == name);
}

TEST_CASE("route rejects invalid tags", "[registry][route]") {
  const std::string base = "/v2/app/manifests/";
  check_errors(
      make_table(),
      {
          {"GET", base, "", 400, "NAME_INVALID"},
          {"GET", base + ".hidden", "", 400, "NAME_INVALID"},
          {"GET", base + "-rc", "", 400, "NAME_INVALID"},
          {"GET", base + std::string(129, 'a'), "", 400, "NAME_INVALID"},
          {"GET", base + "a+b", "", 400, "NAME_INVALID"},
          {"GET", base + "a@b", "", 400, "NAME_INVALID"},
          {"GET", base + "a b", "", 400, "NAME_INVALID"},
      });
}

TEST_CASE("route rejects invalid digests", "[registry][route]") {
  const std::string manifests = "/v2/app/manifests/";
  const std::string blobs = "/v2/app/blobs/";
  std::string upper = sha256_hex;
  upper[0] = 'F';
  check_errors(
      make_table(),
      {
          {"GET", manifests + "sha256:abc", "", 400, "DIGEST_INVALID"},
          {"GET", manifests + "sha256:" + upper, "", 400, "DIGEST_INVALID"},
          {"GET", manifests + "sha256:" + sha256_hex + "0", "", 400,
           "DIGEST_INVALID"},
          {"GET", manifests + "sha512:" + sha256_hex, "", 400,
           "DIGEST_INVALID"},
          {"GET", manifests + "md5:d41d8cd98f00b204e9800998ecf8427e", "", 400,
           "DIGEST_INVALID"},
          {"GET", manifests + "SHA256:" + sha256_hex, "", 400,
           "DIGEST_INVALID"},
          {"GET", manifests + ":" + sha256_hex, "", 400, "DIGEST_INVALID"},
          {"GET", manifests + "sha256:", "", 400, "DIGEST_INVALID"},
          {"GET", manifests + "sha256::" + sha256_hex, "", 400,
           "DIGEST_INVALID"},
          {"GET", blobs + "latest", "", 400, "DIGEST_INVALID"},
          {"GET", blobs + "sha256-" + sha256_hex, "", 400, "DIGEST_INVALID"},
          {"GET", blobs + "sha256:" + upper, "", 400, "DIGEST_INVALID"},
          {"GET", blobs, "", 400, "DIGEST_INVALID"},
      });
}

TEST_CASE("route rejects push methods", "[registry][route]") {
  const std::string manifest = "/v2/app/manifests/latest";
  const std::string blob = "/v2/app/blobs/" + digest;
  check_errors(
      make_table(),
      {
          {"PUT", manifest, "", 405, "UNSUPPORTED"},
          {"DELETE", manifest, "", 405, "UNSUPPORTED"},
          {"DELETE", blob, "", 405, "UNSUPPORTED"},
          {"POST", "/v2/app/blobs/uploads/", "", 405, "UNSUPPORTED"},
          {"POST", "/v2/app/blobs/uploads/", "mount=" + digest, 405,
           "UNSUPPORTED"},
          {"PATCH", "/v2/app/blobs/uploads/1234", "", 405, "UNSUPPORTED"},
          {"PUT", "/v2/app/blobs/uploads/1234", "digest=" + digest, 405,
           "UNSUPPORTED"},
          {"OPTIONS", "/v2/", "", 405, "UNSUPPORTED"},
          {"get", manifest, "", 405, "UNSUPPORTED"},
          {"", manifest, "", 405, "UNSUPPORTED"},
      });
}

TEST_CASE("route rejects uploads and catalog", "[registry][route]") {
  check_errors(
      make_table(),
      {
          {"GET", "/v2/app/blobs/uploads/", "", 405, "UNSUPPORTED"},
          {"GET", "/v2/app/blobs/uploads/1234", "", 405, "UNSUPPORTED"},
          {"HEAD", "/v2/app/blobs/uploads", "", 405, "UNSUPPORTED"},
          {"GET", "/v2/org/app/blobs/uploads/", "", 405, "UNSUPPORTED"},
          {"GET", "/v2/_catalog", "", 405, "UNSUPPORTED"},
          {"GET", "/v2/_catalog", "n=100", 405, "UNSUPPORTED"},
      });
}

TEST_CASE("route rejects unknown paths", "[registry][route]") {
  check_errors(
      make_table(),
      {
          {"GET", "/", "", 404, "NAME_UNKNOWN"},
          {"GET", "", "", 404, "NAME_UNKNOWN"},
          {"GET", "/v1/", "", 404, "NAME_UNKNOWN"},
          {"GET", "/v2x", "", 404, "NAME_UNKNOWN"},
          {"GET", "/V2/", "", 404, "NAME_UNKNOWN"},
          {"GET", "/metrics", "", 404, "NAME_UNKNOWN"},
          {"GET", "/v2/app", "", 404, "NAME_UNKNOWN"},
          {"GET", "/v2/app/", "", 404, "NAME_UNKNOWN"},
          {"GET", "/v2/app/manifests", "", 404, "NAME_UNKNOWN"},
          {"GET", "/v2/app/tags", "", 404, "NAME_UNKNOWN"},
          {"GET", "/v2/app/tags/list/", "", 404, "NAME_UNKNOWN"},
          {"GET", "/v2/app/manifests/latest/", "", 404, "NAME_UNKNOWN"},
          {"GET", "/v2/app/referrers/" + digest, "", 404, "NAME_UNKNOWN"},
          {"GET", "/v2/_catalog/", "", 404, "NAME_UNKNOWN"},
      });
}

TEST_CASE("route rejects control characters", "[registry][route]") {
  check_errors(
      make_table(),
      {
          {"GET", std::string("/v2/app\0/manifests/latest", 25), "", 400,
           "NAME_INVALID"},
          {"GET", "/v2/app/manifests/latest\n", "", 400, "NAME_INVALID"},
          {"GET", "/v2/app/manifests/lat\x7f", "", 400, "NAME_INVALID"},
          {"GET", "/v2/\t", "", 400, "NAME_INVALID"},
          {"GET", "/v2/app/manifests/latest", "ns=ghcr.io\r\n", 400,
           "NAME_INVALID"},
          {"PUT", "/v2/app/manifests/latest\r", "", 400, "NAME_INVALID"},
          {"GET", "/v9\x01", "", 400, "NAME_INVALID"},
      });
}

TEST_CASE("route escapes echoed input", "[registry][route]") {
  auto route = route_request(make_table(), "GET", "/v2/app/manifests/latest",
                             "ns=a%1b%5B31m");
  REQUIRE_FALSE(route.has_value());
  CHECK(route.error().message.find('\x1b') == std::string::npos);
  CHECK(route.error().message.find("a\\x1b[31m") != std::string::npos);

  std::string long_name(1000, 'A');
  auto long_route =
      route_request(make_table(), "GET", "/v2/" + long_name + "/tags/list", "");
  REQUIRE_FALSE(long_route.has_value());
  CHECK(long_route.error().message.size() < 300);
}

TEST_CASE("route accepts front request", "[registry][route]") {
  gatecache::front::Request request;
  request.method = gatecache::front::Method::Head;
  request.method_name = "HEAD";
  request.path = "/v2/nginx/blobs/" + digest;
  request.query = "ns=docker.io";
  auto route = route_request(make_table(), request);
  REQUIRE(route.has_value());
  CHECK(std::string(endpoint_name(route->endpoint)) == "Blob");
  CHECK(route->repository == "library/nginx");
  CHECK(route->reference == digest);
}

TEST_CASE("route table reads config", "[registry][route]") {
  gatecache::config::Config config;
  config.upstreams["docker.io"] = {"docker.io", "https://mirror.example", "",
                                   true};
  config.upstreams["ghcr.io"] = {"ghcr.io", "https://ghcr.io", "", false};
  config.default_upstream = "ghcr.io";
  RouteTable table = RouteTable::from_config(config);

  CHECK(table.contains("docker.io"));
  CHECK(table.contains("ghcr.io"));
  CHECK_FALSE(table.contains("quay.io"));
  CHECK(table.is_docker_hub("docker.io"));
  CHECK_FALSE(table.is_docker_hub("ghcr.io"));
  CHECK(table.default_upstream() == "ghcr.io");

  auto route = route_request(table, "GET", "/v2/nginx/manifests/latest", "");
  REQUIRE(route.has_value());
  CHECK(route->upstream == "ghcr.io");
  CHECK(route->repository == "nginx");
}
