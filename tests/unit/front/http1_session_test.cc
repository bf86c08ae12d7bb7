#include "appliance/front/http1_session.h"

#include <regex>
#include <string>

#include <catch2/catch.hpp>

#include "tests/unit/front/test_support.h"

namespace gatecache::front {
namespace {

using test::Http1Client;
using test::HttpResponse;
using test::TestServer;

const std::string Http1Alpn = "\x08http/1.1";

std::string get(const std::string &target,
                const std::string &extra_headers = "") {
  return "GET " + target + " HTTP/1.1\r\nHost: localhost\r\n" + extra_headers +
         "\r\n";
}

TEST_CASE("h1 keep-alive serves sequential requests", "[front][h1]") {
  TestServer server;
  Http1Client client(server.port(), Http1Alpn);
  REQUIRE(client.tls().alpn() == "http/1.1");

  client.send(get("/small"));
  HttpResponse first = client.read_response();
  CHECK(first.status == 200);
  CHECK(first.body == "hello world");
  CHECK(first.headers["content-length"] == "11");
  CHECK(first.headers["server"] == "gatecache");
  CHECK(first.headers.count("date") == 1);
  CHECK(first.headers.count("connection") == 0);

  client.send(get("/bytes/5000"));
  HttpResponse second = client.read_response();
  CHECK(second.status == 200);
  CHECK(second.body == test::pattern(5000));
}

TEST_CASE("h1 pipelined requests answered in order", "[front][h1]") {
  TestServer server;
  Http1Client client(server.port(), Http1Alpn);

  client.send(get("/bytes/300000") + get("/small") + get("/echo?x=1") +
              get("/missing"));
  HttpResponse first = client.read_response();
  HttpResponse second = client.read_response();
  HttpResponse third = client.read_response();
  HttpResponse fourth = client.read_response();
  CHECK(first.body == test::pattern(300000));
  CHECK(second.body == "hello world");
  CHECK(third.body.find("query=x=1\n") != std::string::npos);
  CHECK(fourth.status == 404);
  CHECK(fourth.headers["content-length"] == "0");
}

TEST_CASE("h1 pipeline deeper than limit completes", "[front][h1]") {
  TestServer server;
  Http1Client client(server.port(), Http1Alpn);

  std::string requests;
  for (int i = 0; i < 40; ++i) {
    requests += get("/bytes/" + std::to_string(100 + i));
  }
  client.send(requests);
  for (int i = 0; i < 40; ++i) {
    HttpResponse response = client.read_response();
    REQUIRE(response.status == 200);
    CHECK(response.body == test::pattern(100 + i));
  }
}

TEST_CASE("h1 HEAD has length and no body", "[front][h1]") {
  TestServer server;
  Http1Client client(server.port(), Http1Alpn);

  client.send("HEAD /small HTTP/1.1\r\nHost: localhost\r\n\r\n" +
              get("/bytes/3"));
  HttpResponse head = client.read_response(true);
  CHECK(head.status == 200);
  CHECK(head.headers["content-length"] == "11");
  HttpResponse next = client.read_response();
  CHECK(next.status == 200);
  CHECK(next.body == test::pattern(3));
}

TEST_CASE("h1 unknown length uses chunked coding", "[front][h1]") {
  TestServer server;
  Http1Client client(server.port(), Http1Alpn);

  client.send(get("/unknown-length") + get("/small"));
  HttpResponse chunked = client.read_response();
  CHECK(chunked.headers["transfer-encoding"] == "chunked");
  CHECK(chunked.headers.count("content-length") == 0);
  CHECK(chunked.complete);
  CHECK(chunked.body == "alphabetagamma");
  HttpResponse next = client.read_response();
  CHECK(next.body == "hello world");
}

TEST_CASE("h1 HTTP/1.0 unknown length closes", "[front][h1]") {
  TestServer server;
  Http1Client client(server.port(), Http1Alpn);

  client.send("GET /unknown-length HTTP/1.0\r\n\r\n");
  HttpResponse response = client.read_response();
  CHECK(response.headers.count("transfer-encoding") == 0);
  CHECK(response.headers["connection"] == "close");
  CHECK(response.body == "alphabetagamma");
  CHECK(response.complete);
}

TEST_CASE("h1 body error closes connection short", "[front][h1]") {
  TestServer server;
  Http1Client client(server.port(), Http1Alpn);

  client.send(get("/error"));
  HttpResponse response = client.read_response();
  CHECK(response.status == 200);
  CHECK(response.headers["content-length"] == "100");
  CHECK(response.body == "partial-data");
  CHECK_FALSE(response.complete);
  CHECK(client.tls().end_reason() == "eof");

  auto lines = server.access_log("GET /error 200 12 ");
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].size() > 8);
  CHECK(lines[0].substr(lines[0].size() - 8) == " aborted");
}

TEST_CASE("h1 drops invalid response headers", "[front][h1]") {
  TestServer server;
  Http1Client client(server.port(), Http1Alpn);

  client.send(get("/bad-headers") + get("/bad-status") + get("/small"));
  HttpResponse response = client.read_response();
  CHECK(response.body == "ok");
  CHECK(response.headers["x-ok"] == "1");
  CHECK(response.headers.count("x-injected") == 0);
  CHECK(response.headers.count("set-cookie") == 0);
  CHECK(response.headers.count("x-upper") == 0);
  CHECK(response.headers["content-length"] == "2");
  CHECK(response.headers.count("connection") == 0);
  HttpResponse bad_status = client.read_response();
  CHECK(bad_status.status == 500);
  CHECK(bad_status.body.empty());
  CHECK(client.read_response().body == "hello world");
}

TEST_CASE("h1 oversize header gets 431", "[front][h1]") {
  TestServer server;
  Http1Client client(server.port(), Http1Alpn);

  client.send(get("/small", "X-Big: " + std::string(70 * 1024, 'a') + "\r\n"));
  HttpResponse response = client.read_response();
  CHECK(response.status == 431);
  CHECK(response.headers["connection"] == "close");
  CHECK(client.closed_by_server());
  CHECK(server.handler().handled == 0);
}

TEST_CASE("h1 too many header fields gets 431", "[front][h1]") {
  TestServer server;
  Http1Client client(server.port(), Http1Alpn);

  std::string fields;
  for (int i = 0; i < 200; ++i) {
    fields += "X-Field-" + std::to_string(i) + ": 1\r\n";
  }
  client.send(get("/small", fields));
  CHECK(client.read_response().status == 431);
}

TEST_CASE("h1 long target gets 414", "[front][h1]") {
  TestServer server;
  Http1Client client(server.port(), Http1Alpn);

  client.send(get("/" + std::string(9000, 'a')));
  CHECK(client.read_response().status == 414);
  CHECK(client.closed_by_server());
}

TEST_CASE("h1 missing host gets 400", "[front][h1]") {
  TestServer server;
  Http1Client client(server.port(), Http1Alpn);

  client.send("GET /small HTTP/1.1\r\n\r\n");
  CHECK(client.read_response().status == 400);
  CHECK(client.closed_by_server());
}

TEST_CASE("h1 malformed request gets 400", "[front][h1]") {
  TestServer server;
  Http1Client client(server.port(), Http1Alpn);

  client.send(get("/small") + "NOT HTTP AT ALL\r\n\r\n");
  CHECK(client.read_response().status == 200);
  CHECK(client.read_response().status == 400);
  CHECK(client.closed_by_server());
}

TEST_CASE("h1 connection close is honoured", "[front][h1]") {
  TestServer server;
  Http1Client client(server.port(), Http1Alpn);

  client.send(get("/small", "Connection: close\r\n") + get("/small"));
  HttpResponse response = client.read_response();
  CHECK(response.body == "hello world");
  CHECK(response.headers["connection"] == "close");
  CHECK(client.closed_by_server());
  CHECK(client.tls().end_reason() == "close_notify");
  CHECK(server.handler().handled == 1);
}

TEST_CASE("h1 HTTP/1.0 closes without keep-alive", "[front][h1]") {
  TestServer server;

  SECTION("without keep-alive") {
    Http1Client client(server.port(), Http1Alpn);
    client.send("GET /small HTTP/1.0\r\n\r\n");
    HttpResponse response = client.read_response();
    CHECK(response.body == "hello world");
    CHECK(response.headers["connection"] == "close");
    CHECK(client.closed_by_server());
  }
  SECTION("with keep-alive") {
    Http1Client client(server.port(), Http1Alpn);
    client.send("GET /small HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    HttpResponse first = client.read_response();
    CHECK(first.headers["connection"] == "keep-alive");
    client.send("GET /bytes/7 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    HttpResponse second = client.read_response();
    CHECK(second.body == test::pattern(7));
  }
}

TEST_CASE("h1 small request body is discarded", "[front][h1]") {
  TestServer server;
  Http1Client client(server.port(), Http1Alpn);

  client.send("POST /small HTTP/1.1\r\nHost: localhost\r\n"
              "Content-Length: 10\r\n\r\n0123456789" +
              get("/bytes/4"));
  CHECK(client.read_response().body == "hello world");
  HttpResponse next = client.read_response();
  CHECK(next.body == test::pattern(4));
}

TEST_CASE("h1 large request body closes connection", "[front][h1]") {
  TestServer server;
  Http1Client client(server.port(), Http1Alpn);

  client.send("POST /small HTTP/1.1\r\nHost: localhost\r\n"
              "Content-Length: 300000\r\n\r\n" +
              std::string(300000, 'x'));
  HttpResponse response = client.read_response();
  CHECK(response.body == "hello world");
  CHECK(response.headers["connection"] == "close");
  CHECK(client.closed_by_server());
}

TEST_CASE("h1 waiting body resumes after wake", "[front][h1]") {
  TestServer server;
  Http1Client client(server.port(), Http1Alpn);

  client.send(get("/gated"));
  std::string received;
  while (received.find("first-part|") == std::string::npos) {
    std::string more = client.tls().read_some();
    REQUIRE_FALSE(more.empty());
    received += more;
  }
  CHECK(received.find("second-part") == std::string::npos);

  server.loop().call([&] { server.handler().open_gate(); });
  while (received.find("second-part") == std::string::npos) {
    std::string more = client.tls().read_some();
    REQUIRE_FALSE(more.empty());
    received += more;
  }
  CHECK(received.find("content-length: 22\r\n") != std::string::npos);
}

TEST_CASE("h1 body woken inside next resumes", "[front][h1]") {
  TestServer server;
  Http1Client client(server.port(), Http1Alpn);

  client.send(get("/wake-inside"));
  CHECK(client.read_response().body == "woken");
}

TEST_CASE("h1 serves large file body", "[front][h1]") {
  test::TempDir dir;
  std::string path = dir.path() + "/blob";
  const size_t size = 8 * 1024 * 1024 + 123;
  test::write_pattern_file(path, size);
  TestServer server;
  server.handler().file_path = path;
  Http1Client client(server.port(), Http1Alpn);

  client.send(get("/file") + get("/small"));
  HttpResponse response = client.read_response();
  CHECK(response.headers["content-length"] == std::to_string(size));
  REQUIRE(response.body.size() == size);
  CHECK(response.body == test::pattern(size));
  CHECK(client.read_response().body == "hello world");
}

TEST_CASE("h1 late response is sent", "[front][h1]") {
  TestServer server;
  Http1Client client(server.port(), Http1Alpn);

  client.send(get("/late") + get("/small"));
  // Pipelined requests reach the handler before earlier ones get their
  // responses.
  CHECK(test::wait_until([&] { return server.handler().handled == 2; }));
  server.loop().call([&] { server.handler().respond_late(201, "later"); });
  HttpResponse first = client.read_response();
  CHECK(first.status == 201);
  CHECK(first.body == "later");
  CHECK(client.read_response().body == "hello world");
}

TEST_CASE("h1 respond after client left", "[front][h1]") {
  TestServer server;
  {
    Http1Client client(server.port(), Http1Alpn);
    client.send(get("/late"));
    REQUIRE(test::wait_until([&] { return server.handler().handled == 1; }));
  }
  auto lines = server.access_log("GET /late 499");
  CHECK(lines.size() == 1);
  CHECK(test::wait_until([&] { return server.handler().cancelled == 1; }));
  bool closed = false;
  server.loop().call([&] {
    closed = server.handler().late.at(0)->closed();
    server.handler().respond_late(200, "nobody reads this");
  });
  CHECK(closed);
}

TEST_CASE("h1 header fields reach handler", "[front][h1]") {
  TestServer server;
  Http1Client client(server.port(), Http1Alpn);

  client.send(get("/echo?a=b&c=d", "Accept: application/json  \r\n"
                                   "ACCEPT: text/plain\r\n"
                                   "Range: bytes=0-9\r\n"));
  HttpResponse response = client.read_response();
  CHECK(response.body == "method=GET\npath=/echo\nquery=a=b&c=d\n"
                         "accept=application/json, text/plain\n"
                         "range=bytes=0-9\nprotocol=http/1.1\n");
}

TEST_CASE("h1 absolute target is split", "[front][h1]") {
  TestServer server;
  Http1Client client(server.port(), Http1Alpn);

  client.send(get("https://localhost/echo?q=1"));
  HttpResponse response = client.read_response();
  CHECK(response.body.find("path=/echo\nquery=q=1\n") != std::string::npos);
}

TEST_CASE("h1 access log line format", "[front][h1]") {
  TestServer server;
  Http1Client client(server.port(), Http1Alpn);

  client.send(get("/small?tag=1") + get("/bytes/20"));
  client.read_response();
  client.read_response();
  auto lines = server.access_log("GET /bytes/20 ");
  REQUIRE(lines.size() == 1);
  auto first = server.access_log("GET /small?tag=1 ");
  REQUIRE(first.size() == 1);

  std::regex format(R"(c=(\d+) r=(\d+)\.1 127\.0\.0\.1:\d+ http/1\.1 GET )"
                    R"(/small\?tag=1 200 11 cache=none ns=- f=0 t=\d+\.\d)");
  std::smatch match;
  REQUIRE(std::regex_match(first[0], match, format));
  CHECK(match[1] == match[2]);
  CHECK(lines[0].find(" r=" + match[1].str() + ".2 ") != std::string::npos);
}

} // namespace
} // namespace gatecache::front
