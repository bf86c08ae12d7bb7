#include "appliance/admin/api.h"

#include <string>

#include <catch2/catch.hpp>

#include "appliance/admin/client.h"
#include "tests/unit/admin/test_support.h"

namespace gatecache::admin {
namespace {

using test::FakeSource;
using test::make_request;
using test::RawClient;
using test::RawResponse;
using test::ServerFixture;

// A real server with `AdminApi` over a `FakeSource`.
struct ApiFixture {
  FakeSource source;
  AdminApi api{source};
  ServerFixture server{api};
  AdminClient client{server.socket_path()};
};

std::string error_of(const ClientResponse &response) {
  auto body = nlohmann::json::parse(response.body, nullptr, false);
  if (body.is_discarded() || !body.contains("error")) {
    return "";
  }
  return body["error"].get<std::string>();
}

TEST_CASE("admin api serves health", "[admin][api]") {
  ApiFixture fixture;

  auto health = fixture.client.get_json("/healthz");

  REQUIRE(health);
  CHECK((*health)["status"] == "ok");
}

TEST_CASE("admin api serves status unchanged", "[admin][api]") {
  ApiFixture fixture;

  auto status = fixture.client.get_json("/v1/status");

  REQUIRE(status);
  CHECK(*status == test::example_status());
}

TEST_CASE("admin api serves status on TCP", "[admin][api]") {
  ApiFixture fixture;
  RawClient client(fixture.server.tcp_port());

  client.send(make_request("GET", "/v1/status"));
  RawResponse response = client.read_response();

  REQUIRE(response.status == 200);
  CHECK(nlohmann::json::parse(response.body) == test::example_status());
}

TEST_CASE("admin api serves metrics", "[admin][api]") {
  ApiFixture fixture;

  auto response = fixture.client.get("/metrics");

  REQUIRE(response);
  CHECK(response->status == 200);
  CHECK(response->content_type == "text/plain; version=0.0.4; charset=utf-8");
  CHECK(response->body == fixture.source.metrics());
}

TEST_CASE("admin api passes pulls query", "[admin][api]") {
  ApiFixture fixture;

  SECTION("every parameter") {
    auto pulls =
        fixture.client.get_json("/v1/pulls?client=10.0.0.5&since=1765000000.5"
                                "&limit=20");
    REQUIRE(pulls);
    CHECK((*pulls)["pulls"].size() == 1);
    fixture.server.loop().call([&] {
      CHECK(fixture.source.pulls_client == "10.0.0.5");
      CHECK(fixture.source.pulls_since == 1765000000.5);
      CHECK(fixture.source.pulls_limit == 20);
    });
  }

  SECTION("defaults") {
    REQUIRE(fixture.client.get_json("/v1/pulls"));
    fixture.server.loop().call([&] {
      CHECK(fixture.source.pulls_client.empty());
      CHECK(fixture.source.pulls_since == 0);
      CHECK(fixture.source.pulls_limit == DefaultPullsLimit);
    });
  }

  SECTION("IPv6 client canonical") {
    REQUIRE(fixture.client.get_json("/v1/pulls?client=" +
                                    query_escape("fd00:0::0:5")));
    fixture.server.loop().call(
        [&] { CHECK(fixture.source.pulls_client == "fd00::5"); });
  }
}

TEST_CASE("admin api rejects bad pulls query", "[admin][api]") {
  ApiFixture fixture;

  struct Case {
    const char *query;
    const char *message;
  };

  const Case cases[] = {
      {"client=node-1", "invalid client 'node-1'"},
      {"client=10.0.0.300", "invalid client"},
      {"client=", "invalid client ''"},
      {"since=-5", "invalid since '-5'"},
      {"since=yesterday", "invalid since"},
      {"since=0x10", "invalid since"},
      {"since=nan", "invalid since"},
      {"limit=0", "invalid limit '0'"},
      {"limit=10001", "invalid limit"},
      {"limit=-1", "invalid limit"},
      {"limit=5&limit=6", "'limit' given twice"},
      {"clients=1.2.3.4", "unknown parameter 'clients'"},
      {"client=%zz", "invalid percent-encoding"},
  };
  for (const auto &bad : cases) {
    INFO("query " << bad.query);
    auto response = fixture.client.get(std::string("/v1/pulls?") + bad.query);
    REQUIRE(response);
    CHECK(response->status == 400);
    CHECK(error_of(*response).find(bad.message) != std::string::npos);
  }
}

TEST_CASE("admin api starts prewarm job", "[admin][api]") {
  ApiFixture fixture;
  nlohmann::json set = {{"name", "kubernetes-1.31"},
                        {"images", {{{"ref", "registry.k8s.io/pause:3.10"}}}}};

  auto response = fixture.client.post("/v1/prewarm",
                                      nlohmann::json{{"sets", {set}}}.dump());

  REQUIRE(response);
  CHECK(response->status == 202);
  auto body = nlohmann::json::parse(response->body);
  CHECK(body["id"] == 1);
  CHECK(body["location"] == "/v1/prewarm/1");
  fixture.server.loop().call([&] {
    REQUIRE(fixture.source.started.size() == 1);
    CHECK(fixture.source.started[0] == nlohmann::json::array({set}));
  });
}

TEST_CASE("admin api rejects bad prewarm body", "[admin][api]") {
  ApiFixture fixture;

  struct Case {
    const char *body;
    const char *message;
  };

  const Case cases[] = {
      {"{not json", "not valid JSON"},
      {"[]", "no \"sets\" member"},
      {"{\"set\":[]}", "no \"sets\" member"},
      {"{\"sets\":[],\"x\":1}", "unknown member \"x\""},
      {"{\"sets\":[]}", "non-empty array"},
      {"{\"sets\":{}}", "non-empty array"},
      {"{\"sets\":[{}, 3]}", "\"sets\"[1] is not an image set"},
  };
  for (const auto &bad : cases) {
    INFO("body " << bad.body);
    auto response = fixture.client.post("/v1/prewarm", bad.body);
    REQUIRE(response);
    CHECK(response->status == 400);
    CHECK(error_of(*response).find(bad.message) != std::string::npos);
  }
  fixture.server.loop().call([&] { CHECK(fixture.source.started.empty()); });
}

TEST_CASE("admin api maps prewarm start error", "[admin][api]") {
  ApiFixture fixture;
  fixture.server.loop().call([&] {
    fixture.source.start_error =
        Error{ErrorCode::Invalid, "set 'x': image 'bad ref' is invalid"};
  });

  auto response =
      fixture.client.post("/v1/prewarm", R"({"sets":[{"name":"x"}]})");

  REQUIRE(response);
  CHECK(response->status == 400);
  CHECK(error_of(*response) == "set 'x': image 'bad ref' is invalid");
}

TEST_CASE("admin api serves prewarm job", "[admin][api]") {
  ApiFixture fixture;
  nlohmann::json job = {{"id", 7}, {"state", "running"}, {"images", {}}};
  fixture.server.loop().call([&] { fixture.source.jobs[7] = job; });

  auto found = fixture.client.get_json("/v1/prewarm/7");
  auto missing = fixture.client.get("/v1/prewarm/8");
  auto malformed = fixture.client.get("/v1/prewarm/7x");

  REQUIRE(found);
  CHECK(*found == job);
  REQUIRE(missing);
  CHECK(missing->status == 404);
  CHECK(error_of(*missing) == "prewarm job 8 not found");
  REQUIRE(malformed);
  CHECK(malformed->status == 400);
}

TEST_CASE("admin api answers unknown path", "[admin][api]") {
  ApiFixture fixture;

  auto response = fixture.client.get("/v2/");

  REQUIRE(response);
  CHECK(response->status == 404);
  CHECK(error_of(*response).find("/v2/") != std::string::npos);
}

TEST_CASE("admin api rejects wrong method", "[admin][api]") {
  ApiFixture fixture;
  RawClient client(fixture.server.socket_path());

  client.send(make_request("POST", "/v1/status", "{}"));
  RawResponse post_status = client.read_response();
  client.send(make_request("GET", "/v1/prewarm"));
  RawResponse get_prewarm = client.read_response();
  client.send(make_request("DELETE", "/v1/prewarm/1"));
  RawResponse delete_job = client.read_response();

  CHECK(post_status.status == 405);
  CHECK(post_status.headers["allow"] == "GET, HEAD");
  CHECK(get_prewarm.status == 405);
  CHECK(get_prewarm.headers["allow"] == "POST");
  CHECK(delete_job.status == 405);
}

TEST_CASE("admin api starts scrub", "[admin][api]") {
  ApiFixture fixture;

  auto response = fixture.client.post("/v1/scrub", "");

  REQUIRE(response);
  CHECK(response->status == 202);
  fixture.server.loop().call(
      [&] { CHECK(fixture.source.scrubs_started == 1); });
}

TEST_CASE("admin api rejects scrub by GET", "[admin][api]") {
  ApiFixture fixture;

  auto response = fixture.client.get("/v1/scrub");

  REQUIRE(response);
  CHECK(response->status == 405);
  fixture.server.loop().call(
      [&] { CHECK(fixture.source.scrubs_started == 0); });
}

TEST_CASE("admin api rejects prewarm on TCP", "[admin][api]") {
  ApiFixture fixture;
  RawClient client(fixture.server.tcp_port());

  client.send(make_request("POST", "/v1/prewarm", R"({"sets":[{}]})"));

  CHECK(client.read_response().status == 405);
  fixture.server.loop().call([&] { CHECK(fixture.source.started.empty()); });
}

TEST_CASE("admin api turns exception into 500", "[admin][api]") {
  ApiFixture fixture;
  fixture.server.loop().call([&] { fixture.source.throw_in_status = true; });

  auto response = fixture.client.get("/v1/status");

  REQUIRE(response);
  CHECK(response->status == 500);
  CHECK(error_of(*response).find("status table unavailable") !=
        std::string::npos);
}

TEST_CASE("pulls query parser accepts encoded values", "[admin][api]") {
  auto query = parse_pulls_query("client=%3A%3A1&since=1765000000&limit=5&");

  REQUIRE(query);
  CHECK(query->client == "::1");
  CHECK(query->since == 1765000000);
  CHECK(query->limit == 5);
}

} // namespace
} // namespace gatecache::admin
