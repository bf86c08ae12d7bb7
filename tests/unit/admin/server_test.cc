#include "appliance/admin/server.h"

#include <string>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "tests/unit/admin/test_support.h"

namespace gatecache::admin {
namespace {

using test::EchoHandler;
using test::make_request;
using test::RawClient;
using test::RawResponse;
using test::ServerFixture;

nlohmann::json body_json(const RawResponse &response) {
  return nlohmann::json::parse(response.body, nullptr, false);
}

// Leaves a socket file with no listener behind, as a killed daemon does.
void make_stale_socket(const std::string &path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr *>(&address), sizeof(address)) ==
          0);
  ::close(fd);
}

TEST_CASE("admin server passes request fields", "[admin][server]") {
  EchoHandler handler;
  ServerFixture fixture(handler);

  RawClient unix_client(fixture.socket_path());
  REQUIRE(unix_client.connected());
  unix_client.send(make_request("POST", "/echo/x?a=1&b=%20", "hello"));
  RawResponse response = unix_client.read_response();
  REQUIRE(response.status == 200);
  CHECK(response.headers["content-type"] == "application/json");
  auto fields = body_json(response);
  CHECK(fields["method"] == "POST");
  CHECK(fields["path"] == "/echo/x");
  CHECK(fields["query"] == "a=1&b=%20");
  CHECK(fields["body"] == "hello");
  CHECK(fields["local_socket"] == true);
  CHECK(fields["peer"].get<std::string>().rfind("unix:pid=", 0) == 0);

  RawClient tcp_client(fixture.tcp_port());
  REQUIRE(tcp_client.connected());
  tcp_client.send(make_request("GET", "/echo"));
  response = tcp_client.read_response();
  REQUIRE(response.status == 200);
  fields = body_json(response);
  CHECK(fields["local_socket"] == false);
  CHECK(fields["peer"].get<std::string>().rfind("127.0.0.1:", 0) == 0);
}

TEST_CASE("admin server keeps connection alive", "[admin][server]") {
  EchoHandler handler;
  ServerFixture fixture(handler);
  RawClient client(fixture.socket_path());

  client.send(make_request("GET", "/first"));
  RawResponse first = client.read_response();
  client.send(make_request("GET", "/second"));
  RawResponse second = client.read_response();

  REQUIRE(first.status == 200);
  REQUIRE(second.status == 200);
  CHECK(body_json(first)["path"] == "/first");
  CHECK(body_json(second)["path"] == "/second");
  CHECK(first.headers.count("connection") == 0);
  CHECK(fixture.connection_count() == 1);
}

TEST_CASE("admin server orders pipelined responses", "[admin][server]") {
  EchoHandler handler;
  ServerFixture fixture(handler);
  RawClient client(fixture.socket_path());

  client.send(make_request("GET", "/one") + make_request("GET", "/two") +
              make_request("POST", "/three", "body"));
  RawResponse one = client.read_response();
  RawResponse two = client.read_response();
  RawResponse three = client.read_response();

  CHECK(body_json(one)["path"] == "/one");
  CHECK(body_json(two)["path"] == "/two");
  CHECK(body_json(three)["path"] == "/three");
  CHECK(body_json(three)["body"] == "body");
}

TEST_CASE("admin server serves until half close", "[admin][server]") {
  EchoHandler handler;
  ServerFixture fixture(handler);
  RawClient client(fixture.socket_path());

  client.send(make_request("GET", "/a") + make_request("GET", "/b"));
  client.finish_sending();

  CHECK(body_json(client.read_response())["path"] == "/a");
  CHECK(body_json(client.read_response())["path"] == "/b");
  CHECK(client.closed_by_server());
}

TEST_CASE("admin server closes after HTTP/1.0 request", "[admin][server]") {
  EchoHandler handler;
  ServerFixture fixture(handler);
  RawClient client(fixture.socket_path());

  client.send("GET /old HTTP/1.0\r\n\r\n");
  RawResponse response = client.read_response();

  REQUIRE(response.status == 200);
  CHECK(response.headers["connection"] == "close");
  CHECK(client.closed_by_server());
}

TEST_CASE("admin server honours Connection close", "[admin][server]") {
  EchoHandler handler;
  ServerFixture fixture(handler);
  RawClient client(fixture.socket_path());

  client.send(make_request("GET", "/last", "", "Connection: close\r\n"));
  RawResponse response = client.read_response();

  REQUIRE(response.status == 200);
  CHECK(response.headers["connection"] == "close");
  CHECK(client.closed_by_server());
}

TEST_CASE("admin server rejects POST on TCP", "[admin][server]") {
  EchoHandler handler;
  ServerFixture fixture(handler);
  RawClient client(fixture.tcp_port());

  client.send(make_request("POST", "/v1/prewarm", "{}"));
  RawResponse response = client.read_response();

  REQUIRE(response.status == 405);
  CHECK(response.headers["allow"] == "GET, HEAD");
  CHECK(body_json(response)["error"].get<std::string>().find("Unix socket") !=
        std::string::npos);
  CHECK(client.closed_by_server());
  CHECK(handler.handled == 0);
}

TEST_CASE("admin server rejects foreign Host on TCP", "[admin][server]") {
  EchoHandler handler;
  ServerFixture fixture(handler);

  SECTION("DNS name") {
    RawClient client(fixture.tcp_port());
    client.send("GET /v1/status HTTP/1.1\r\nHost: evil.example:8080\r\n\r\n");
    RawResponse response = client.read_response();
    REQUIRE(response.status == 403);
    CHECK(body_json(response)["error"].get<std::string>().find(
              "evil.example") != std::string::npos);
  }

  SECTION("loopback names") {
    for (const char *host : {"127.0.0.1:9100", "localhost", "[::1]:9100",
                             "LOCALHOST:1", "127.1.2.3"}) {
      RawClient client(fixture.tcp_port());
      client.send(std::string("GET /ok HTTP/1.1\r\nHost: ") + host +
                  "\r\n\r\n");
      INFO("Host: " << host);
      CHECK(client.read_response().status == 200);
    }
  }
}

TEST_CASE("admin server accepts HEAD without body", "[admin][server]") {
  EchoHandler handler;
  ServerFixture fixture(handler);
  RawClient client(fixture.tcp_port());

  client.send(make_request("HEAD", "/status") + make_request("GET", "/next"));
  RawResponse head = client.read_response(true);
  RawResponse next = client.read_response();

  REQUIRE(head.status == 200);
  CHECK(std::stoul(head.headers["content-length"]) > 0);
  CHECK(head.body.empty());
  REQUIRE(next.status == 200);
  CHECK(body_json(next)["path"] == "/next");
}

TEST_CASE("admin server limits request body", "[admin][server]") {
  EchoHandler handler;
  AdminLimits limits;
  limits.max_body_bytes = 1000;
  ServerFixture fixture(handler, limits);

  SECTION("body at limit") {
    RawClient client(fixture.socket_path());
    client.send(make_request("POST", "/fits", std::string(1000, 'x')));
    RawResponse response = client.read_response();
    REQUIRE(response.status == 200);
    CHECK(body_json(response)["body"].get<std::string>().size() == 1000);
  }

  SECTION("Content-Length over limit") {
    RawClient client(fixture.socket_path());
    client.send("POST /big HTTP/1.1\r\nHost: localhost\r\n"
                "Content-Length: 1001\r\n\r\n");
    RawResponse response = client.read_response();
    REQUIRE(response.status == 413);
    CHECK(response.headers["connection"] == "close");
    CHECK(client.closed_by_server());
    CHECK(handler.handled == 0);
  }

  SECTION("chunked body over limit") {
    RawClient client(fixture.socket_path());
    std::string chunk(600, 'y');
    client.send("POST /big HTTP/1.1\r\nHost: localhost\r\n"
                "Transfer-Encoding: chunked\r\n\r\n"
                "258\r\n" +
                chunk + "\r\n258\r\n" + chunk + "\r\n0\r\n\r\n");
    RawResponse response = client.read_response();
    REQUIRE(response.status == 413);
    CHECK(handler.handled == 0);
  }
}

TEST_CASE("admin server default body limit", "[admin][server]") {
  EchoHandler handler;
  ServerFixture fixture(handler);
  RawClient client(fixture.socket_path());

  client.send("POST /big HTTP/1.1\r\nHost: localhost\r\n"
              "Content-Length: 1048577\r\n\r\n");

  CHECK(client.read_response().status == 413);
}

TEST_CASE("admin server answers Expect 100-continue", "[admin][server]") {
  EchoHandler handler;
  ServerFixture fixture(handler);
  RawClient client(fixture.socket_path());

  client.send("POST /upload HTTP/1.1\r\nHost: localhost\r\n"
              "Content-Length: 4\r\nExpect: 100-continue\r\n\r\n");
  RawResponse interim = client.read_response();
  REQUIRE(interim.status == 100);
  client.send("data");
  RawResponse response = client.read_response();

  REQUIRE(response.status == 200);
  CHECK(body_json(response)["body"] == "data");
}

TEST_CASE("admin server limits request head", "[admin][server]") {
  EchoHandler handler;
  AdminLimits limits;
  ServerFixture fixture(handler, limits);
  RawClient client(fixture.socket_path());

  SECTION("long target") {
    client.send(
        make_request("GET", "/" + std::string(limits.max_target_bytes, 'a')));
    CHECK(client.read_response().status == 414);
  }

  SECTION("large header") {
    client.send(make_request(
        "GET", "/", "",
        "X-Big: " + std::string(limits.max_header_bytes, 'b') + "\r\n"));
    CHECK(client.read_response().status == 431);
  }

  SECTION("too many fields") {
    std::string fields;
    for (size_t i = 0; i <= limits.max_header_fields; ++i) {
      fields += "X-F" + std::to_string(i) + ": v\r\n";
    }
    client.send(make_request("GET", "/", "", fields));
    CHECK(client.read_response().status == 431);
  }

  CHECK(client.closed_by_server());
  CHECK(handler.handled == 0);
}

TEST_CASE("admin server rejects malformed request", "[admin][server]") {
  EchoHandler handler;
  ServerFixture fixture(handler);
  RawClient client(fixture.socket_path());

  SECTION("garbage") {
    client.send("NOT HTTP AT ALL\r\n\r\n");
    RawResponse response = client.read_response();
    REQUIRE(response.status == 400);
    CHECK(body_json(response)["error"].get<std::string>().find(
              "invalid HTTP/1.1 request") != std::string::npos);
  }

  SECTION("missing Host") {
    client.send("GET / HTTP/1.1\r\n\r\n");
    CHECK(client.read_response().status == 400);
  }

  SECTION("unsupported Expect") {
    client.send(make_request("GET", "/", "", "Expect: something\r\n"));
    CHECK(client.read_response().status == 417);
  }

  CHECK(client.closed_by_server());
}

TEST_CASE("admin server waits for late reply", "[admin][server]") {
  EchoHandler handler;
  ServerFixture fixture(handler);
  RawClient client(fixture.socket_path());

  client.send(make_request("GET", "/hold") + make_request("GET", "/after"));
  REQUIRE(test::wait_until([&] {
    size_t held = 0;
    fixture.loop().call([&] { held = handler.held.size(); });
    return held == 1;
  }));
  fixture.loop().call([&] {
    // The pipelined request waits behind the held one.
    CHECK(handler.handled == 1);
    AdminResponse response;
    response.status = 202;
    response.body = "{\"late\":true}";
    handler.held[0](response);
    // A second reply to the same request is ignored.
    handler.held[0](response);
  });

  RawResponse late = client.read_response();
  REQUIRE(late.status == 202);
  CHECK(late.body == "{\"late\":true}");
  CHECK(body_json(client.read_response())["path"] == "/after");
}

TEST_CASE("admin server ignores reply after close", "[admin][server]") {
  EchoHandler handler;
  ServerFixture fixture(handler);
  {
    RawClient client(fixture.socket_path());
    client.send(make_request("GET", "/hold"));
    REQUIRE(test::wait_until([&] {
      size_t held = 0;
      fixture.loop().call([&] { held = handler.held.size(); });
      return held == 1;
    }));
  }

  SECTION("client gone") {
    // The server notices the close when it writes the reply.
    fixture.loop().call([&] { handler.held[0](AdminResponse{}); });
    CHECK(test::wait_until([&] { return fixture.connection_count() == 0; }));
  }

  SECTION("server shut down") {
    fixture.loop().call([&] { fixture.server().shutdown(); });
    fixture.loop().call([&] { handler.held[0](AdminResponse{}); });
    CHECK(fixture.connection_count() == 0);
  }
}

TEST_CASE("admin server closes idle connection", "[admin][server]") {
  EchoHandler handler;
  AdminLimits limits;
  limits.idle_timeout_s = 0.1;
  limits.request_timeout_s = 0.1;
  ServerFixture fixture(handler, limits);

  SECTION("idle after response") {
    RawClient client(fixture.socket_path());
    client.send(make_request("GET", "/x"));
    REQUIRE(client.read_response().status == 200);
    CHECK(client.closed_by_server());
  }

  SECTION("request never finished") {
    RawClient client(fixture.socket_path());
    client.send("GET /slow HTTP/1.1\r\nHost: local");
    CHECK(client.closed_by_server());
  }

  CHECK(test::wait_until([&] { return fixture.connection_count() == 0; }));
}

TEST_CASE("admin server limits connections", "[admin][server]") {
  EchoHandler handler;
  AdminLimits limits;
  limits.max_connections = 2;
  ServerFixture fixture(handler, limits);

  RawClient first(fixture.socket_path());
  RawClient second(fixture.tcp_port());
  first.send(make_request("GET", "/1"));
  second.send(make_request("GET", "/2"));
  REQUIRE(first.read_response().status == 200);
  REQUIRE(second.read_response().status == 200);

  RawClient third(fixture.socket_path());
  RawResponse busy = third.read_response();
  REQUIRE(busy.status == 503);
  CHECK(body_json(busy)["error"].get<std::string>().find("too many") !=
        std::string::npos);
  CHECK(third.closed_by_server());
  CHECK(fixture.connection_count() == 2);
}

TEST_CASE("admin server sets socket mode", "[admin][server]") {
  EchoHandler handler;
  ServerFixture fixture(handler, {}, false);

  struct stat info = {};
  REQUIRE(::stat(fixture.socket_path().c_str(), &info) == 0);
  CHECK(S_ISSOCK(info.st_mode));
  CHECK((info.st_mode & 07777) == 0660);
  CHECK(info.st_uid == ::getuid());
}

TEST_CASE("admin server replaces stale socket", "[admin][server]") {
  test::TempDir dir;
  test::LoopThread loop;
  EchoHandler handler;
  config::AdminConfig config;
  config.socket = dir.path() + "/admin.sock";
  make_stale_socket(config.socket);

  loop.call([&] {
    auto server = AdminServer::open(loop.loop(), config, &handler);
    REQUIRE(server);
    CHECK((*server)->socket_path() == config.socket);
  });
}

TEST_CASE("admin server refuses socket in use", "[admin][server]") {
  EchoHandler handler;
  ServerFixture running(handler, {}, false);
  config::AdminConfig config;
  config.socket = running.socket_path();

  running.loop().call([&] {
    auto second = AdminServer::open(running.loop().loop(), config, &handler);
    REQUIRE_FALSE(second);
    CHECK(second.error().code == ErrorCode::Invalid);
    CHECK(second.error().message.find("another process is listening") !=
          std::string::npos);
  });
  // The running server still serves requests.
  RawClient client(running.socket_path());
  client.send(make_request("GET", "/still"));
  CHECK(client.read_response().status == 200);
}

TEST_CASE("admin server rejects bad socket path", "[admin][server]") {
  test::TempDir dir;
  test::LoopThread loop;
  EchoHandler handler;
  config::AdminConfig config;

  SECTION("regular file") {
    config.socket = dir.path() + "/file";
    FILE *file = std::fopen(config.socket.c_str(), "w");
    std::fclose(file);
    loop.call([&] {
      auto server = AdminServer::open(loop.loop(), config, &handler);
      REQUIRE_FALSE(server);
      CHECK(server.error().code == ErrorCode::Invalid);
      CHECK(server.error().message.find("is not a socket") !=
            std::string::npos);
    });
  }

  SECTION("too long") {
    config.socket = dir.path() + "/" + std::string(120, 's');
    loop.call([&] {
      auto server = AdminServer::open(loop.loop(), config, &handler);
      REQUIRE_FALSE(server);
      CHECK(server.error().code == ErrorCode::Invalid);
      CHECK(server.error().message.find("bytes long") != std::string::npos);
    });
  }

  SECTION("missing directory") {
    config.socket = dir.path() + "/missing/admin.sock";
    loop.call([&] {
      auto server = AdminServer::open(loop.loop(), config, &handler);
      REQUIRE_FALSE(server);
      CHECK(server.error().code == ErrorCode::Io);
      CHECK(server.error().message.find("create the directory") !=
            std::string::npos);
    });
  }
}

TEST_CASE("admin server rejects non-loopback listen", "[admin][server]") {
  test::LoopThread loop;
  EchoHandler handler;
  config::AdminConfig config;
  config::ListenAddress address;
  address.host = "0.0.0.0";
  address.port = 0;
  config.listen.push_back(address);

  loop.call([&] {
    auto server = AdminServer::open(loop.loop(), config, &handler);
    REQUIRE_FALSE(server);
    CHECK(server.error().code == ErrorCode::Invalid);
    CHECK(server.error().message.find("not a loopback address") !=
          std::string::npos);
  });
}

TEST_CASE("admin server listens on IPv6 loopback", "[admin][server]") {
  test::LoopThread loop;
  EchoHandler handler;
  config::AdminConfig config;
  config::ListenAddress address;
  address.host = "::1";
  address.port = 0;
  config.listen.push_back(address);

  loop.call([&] {
    auto server = AdminServer::open(loop.loop(), config, &handler);
    if (!server) {
      WARN("no IPv6 loopback: " << server.error().message);
      return;
    }
    CHECK((*server)->tcp_ports().at(0) != 0);
  });
}

TEST_CASE("admin server shutdown removes own socket", "[admin][server]") {
  EchoHandler handler;
  ServerFixture fixture(handler, {}, false);
  std::string path = fixture.socket_path();

  SECTION("own file") {
    fixture.loop().call([&] { fixture.server().shutdown(); });
    CHECK(::access(path.c_str(), F_OK) != 0);
  }

  SECTION("file replaced by another daemon") {
    REQUIRE(::unlink(path.c_str()) == 0);
    make_stale_socket(path);
    fixture.loop().call([&] { fixture.server().shutdown(); });
    CHECK(::access(path.c_str(), F_OK) == 0);
  }
}

} // namespace
} // namespace gatecache::admin
