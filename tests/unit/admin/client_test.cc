#include "appliance/admin/client.h"

#include <string>

#include <catch2/catch.hpp>

#include "tests/unit/admin/test_support.h"

namespace gatecache::admin {
namespace {

using test::EchoHandler;
using test::ServerFixture;

TEST_CASE("admin client reports missing socket", "[admin][client]") {
  test::TempDir dir;
  std::string path = dir.path() + "/admin.sock";
  AdminClient client(path);

  auto response = client.get("/v1/status");

  REQUIRE_FALSE(response);
  CHECK(response.error().code == ErrorCode::Unreachable);
  CHECK(response.error().message ==
        "cannot connect to " + path +
            ": No such file or directory; is gatecache running? "
            "(systemctl status gatecache)");
}

TEST_CASE("admin client reports stopped daemon", "[admin][client]") {
  EchoHandler handler;
  test::TempDir dir;
  std::string path = dir.path() + "/admin.sock";
  {
    // A server that stopped removed its socket file, so the client finds
    // nothing to connect to.
    test::LoopThread loop;
    config::AdminConfig config;
    config.socket = path;
    loop.call([&] {
      auto server = AdminServer::open(loop.loop(), config, &handler);
      REQUIRE(server);
    });
  }
  AdminClient client(path);

  auto response = client.get("/v1/status");

  REQUIRE_FALSE(response);
  CHECK(response.error().message.find("is gatecache running?") !=
        std::string::npos);
}

TEST_CASE("admin client reuses connection", "[admin][client]") {
  EchoHandler handler;
  ServerFixture fixture(handler, {}, false);
  AdminClient client(fixture.socket_path());

  auto first = client.get_json("/one");
  auto second = client.get_json("/two");

  REQUIRE(first);
  REQUIRE(second);
  CHECK((*first)["peer"] == (*second)["peer"]);
  CHECK(fixture.connection_count() == 1);
}

TEST_CASE("admin client reconnects after idle close", "[admin][client]") {
  EchoHandler handler;
  AdminLimits limits;
  limits.idle_timeout_s = 0.05;
  ServerFixture fixture(handler, limits, false);
  AdminClient client(fixture.socket_path());

  REQUIRE(client.get_json("/one"));
  REQUIRE(test::wait_until([&] { return fixture.connection_count() == 0; }));
  auto again = client.get_json("/two");

  REQUIRE(again);
  CHECK((*again)["path"] == "/two");
}

TEST_CASE("admin client times out", "[admin][client]") {
  EchoHandler handler;
  ServerFixture fixture(handler, {}, false);
  AdminClient client(fixture.socket_path(), 0.2);

  auto response = client.get("/hold");

  REQUIRE_FALSE(response);
  CHECK(response.error().code == ErrorCode::Timeout);
  CHECK(response.error().message.find("no response from gatecache") !=
        std::string::npos);
}

TEST_CASE("admin client posts JSON", "[admin][client]") {
  EchoHandler handler;
  ServerFixture fixture(handler, {}, false);
  AdminClient client(fixture.socket_path());

  auto echoed = client.post_json("/v1/prewarm", {{"sets", {1, 2}}});

  REQUIRE(echoed);
  CHECK((*echoed)["method"] == "POST");
  CHECK(nlohmann::json::parse((*echoed)["body"].get<std::string>()) ==
        nlohmann::json{{"sets", {1, 2}}});
}

// Replies with a fixed status and body.
class FixedHandler final : public AdminHandler {
public:
  FixedHandler(int status, std::string body)
      : status_(status), body_(std::move(body)) {}

  void handle(const AdminRequest &,
              std::function<void(AdminResponse)> reply) override {
    AdminResponse response;
    response.status = status_;
    response.body = body_;
    reply(response);
  }

private:
  int status_;
  std::string body_;
};

TEST_CASE("admin client maps error status", "[admin][client]") {
  SECTION("400 with message") {
    FixedHandler handler(400, R"({"error":"invalid client 'x'"})");
    ServerFixture fixture(handler, {}, false);
    AdminClient client(fixture.socket_path());
    auto result = client.get_json("/v1/pulls?client=x");
    REQUIRE_FALSE(result);
    CHECK(result.error().code == ErrorCode::Invalid);
    CHECK(result.error().message ==
          "invalid client 'x' (HTTP 400 from GET /v1/pulls?client=x)");
  }

  SECTION("404") {
    FixedHandler handler(404, R"({"error":"prewarm job 3 not found"})");
    ServerFixture fixture(handler, {}, false);
    AdminClient client(fixture.socket_path());
    auto result = client.get_json("/v1/prewarm/3");
    REQUIRE_FALSE(result);
    CHECK(result.error().code == ErrorCode::NotFound);
  }

  SECTION("200 without JSON") {
    FixedHandler handler(200, "plain text");
    ServerFixture fixture(handler, {}, false);
    AdminClient client(fixture.socket_path());
    auto result = client.get_json("/v1/status");
    REQUIRE_FALSE(result);
    CHECK(result.error().code == ErrorCode::Invalid);
    CHECK(result.error().message.find("not valid JSON") != std::string::npos);
  }
}

TEST_CASE("query escape keeps unreserved", "[admin][client]") {
  CHECK(query_escape("10.0.0.5") == "10.0.0.5");
  CHECK(query_escape("fd00::5") == "fd00%3A%3A5");
  CHECK(query_escape("a b&c=d") == "a%20b%26c%3Dd");
  CHECK(query_escape("A-Z_a.z~0") == "A-Z_a.z~0");
}

} // namespace
} // namespace gatecache::admin
