#include "appliance/front/http2_session.h"

#include <cstdio>
#include <regex>
#include <string>

#include <catch2/catch.hpp>

#include "tests/unit/front/test_support.h"

namespace gatecache::front {
namespace {

using test::Http2Client;
using test::TestServer;

TEST_CASE("h2 serves concurrent streams", "[front][h2]") {
  TestServer server;
  Http2Client client(server.port());
  REQUIRE(client.alpn() == "h2");

  int32_t big_a = client.submit("/bytes/200000");
  int32_t big_b = client.submit("/bytes/300001");
  int32_t small = client.submit("/small");
  int32_t echo =
      client.submit("/echo?x=y", "GET", {{"accept", "a/b"}, {"accept", "c/d"}});
  int32_t missing = client.submit("/missing");
  REQUIRE(client.run());

  CHECK(client.max_concurrent_streams == 256);
  CHECK(client.streams[big_a].status == 200);
  CHECK(client.streams[big_a].body == test::pattern(200000));
  CHECK(client.streams[big_a].headers["content-length"] == "200000");
  CHECK(client.streams[big_b].body == test::pattern(300001));
  CHECK(client.streams[small].body == "hello world");
  CHECK(client.streams[small].headers["server"] == "gatecache");
  CHECK(client.streams[small].headers.count("date") == 1);
  CHECK(client.streams[echo].body ==
        "method=GET\npath=/echo\nquery=x=y\naccept=a/b, c/d\nrange=\n"
        "protocol=h2\n");
  CHECK(client.streams[missing].status == 404);
  CHECK(client.streams[missing].body.empty());
}

TEST_CASE("h2 small stream overtakes waiting stream", "[front][h2]") {
  TestServer server;
  Http2Client client(server.port());

  int32_t gated = client.submit("/gated");
  int32_t small = client.submit("/small");
  REQUIRE(client.run_until([&] {
    return client.streams[small].closed &&
           client.streams[gated].body == "first-part|";
  }));
  CHECK_FALSE(client.streams[gated].closed);

  server.loop().call([&] { server.handler().open_gate(); });
  REQUIRE(client.run());
  CHECK(client.streams[gated].body == "first-part|second-part");
  CHECK(client.streams[gated].error_code == NGHTTP2_NO_ERROR);
}

TEST_CASE("h2 body woken inside next resumes", "[front][h2]") {
  TestServer server;
  Http2Client client(server.port());

  int32_t id = client.submit("/wake-inside");
  REQUIRE(client.run());
  CHECK(client.streams[id].body == "woken");
}

TEST_CASE("h2 body error resets stream", "[front][h2]") {
  TestServer server;
  Http2Client client(server.port());

  int32_t failing = client.submit("/error");
  int32_t small = client.submit("/small");
  REQUIRE(client.run());
  CHECK(client.streams[failing].status == 200);
  CHECK(client.streams[failing].body == "partial-data");
  CHECK(client.streams[failing].error_code == NGHTTP2_INTERNAL_ERROR);
  CHECK(client.streams[small].body == "hello world");

  auto lines = server.access_log("h2 GET /error 200 12 ");
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].substr(lines[0].size() - 8) == " aborted");
}

TEST_CASE("h2 HEAD has length and no body", "[front][h2]") {
  TestServer server;
  Http2Client client(server.port());

  int32_t head = client.submit("/small", "HEAD");
  REQUIRE(client.run());
  CHECK(client.streams[head].status == 200);
  CHECK(client.streams[head].headers["content-length"] == "11");
  CHECK(client.streams[head].body.empty());
}

TEST_CASE("h2 drops invalid response headers", "[front][h2]") {
  TestServer server;
  Http2Client client(server.port());

  int32_t id = client.submit("/bad-headers");
  int32_t bad_status = client.submit("/bad-status");
  REQUIRE(client.run());
  auto &headers = client.streams[id].headers;
  CHECK(client.streams[id].body == "ok");
  CHECK(headers["x-ok"] == "1");
  CHECK(headers.count("x-injected") == 0);
  CHECK(headers.count("x-upper") == 0);
  CHECK(headers["content-length"] == "2");
  CHECK(headers.count("connection") == 0);
  CHECK(client.streams[bad_status].status == 500);
  CHECK(client.streams[bad_status].body.empty());
}

TEST_CASE("h2 unknown length ends stream", "[front][h2]") {
  TestServer server;
  Http2Client client(server.port());

  int32_t id = client.submit("/unknown-length");
  REQUIRE(client.run());
  CHECK(client.streams[id].headers.count("content-length") == 0);
  CHECK(client.streams[id].body == "alphabetagamma");
  CHECK(client.streams[id].error_code == NGHTTP2_NO_ERROR);
}

TEST_CASE("h2 oversize header gets 431", "[front][h2]") {
  FrontConfig config;
  config.max_header_bytes = 16 * 1024;
  TestServer server(config);
  Http2Client client(server.port());

  // nghttp2 clients send header blocks of at most 64 KiB, so the limit
  // under test is lowered.
  int32_t id =
      client.submit("/small", "GET", {{"x-big", std::string(20 * 1024, 'a')}});
  int32_t next = client.submit("/small");
  REQUIRE(client.run());
  CHECK(client.streams[id].status == 431);
  CHECK(client.streams[next].status == 200);
  CHECK(server.handler().handled == 1);
}

TEST_CASE("h2 small request body is dropped", "[front][h2]") {
  TestServer server;
  Http2Client client(server.port());

  int32_t id = client.submit("/small", "POST", {}, 1000);
  REQUIRE(client.run());
  CHECK(client.streams[id].body == "hello world");
  CHECK(client.streams[id].error_code == NGHTTP2_NO_ERROR);
}

TEST_CASE("h2 large request body resets stream", "[front][h2]") {
  TestServer server;
  Http2Client client(server.port());

  int32_t late = client.submit("/late", "POST", {}, 1 << 20);
  int32_t small = client.submit("/small", "POST", {}, 1 << 20);
  REQUIRE(client.run());
  CHECK(client.streams[late].error_code == NGHTTP2_CANCEL);
  CHECK(client.streams[small].body == "hello world");
  CHECK(client.streams[small].error_code == NGHTTP2_NO_ERROR);
  CHECK(test::wait_until([&] { return server.handler().cancelled == 1; }));
}

TEST_CASE("h2 serves large file body", "[front][h2]") {
  test::TempDir dir;
  std::string path = dir.path() + "/blob";
  const size_t size = 8 * 1024 * 1024 + 4321;
  test::write_pattern_file(path, size);
  TestServer server;
  server.handler().file_path = path;
  Http2Client client(server.port());

  int32_t first = client.submit("/file");
  int32_t second = client.submit("/file");
  REQUIRE(client.run());
  CHECK(client.streams[first].headers["content-length"] ==
        std::to_string(size));
  REQUIRE(client.streams[first].body.size() == size);
  CHECK(client.streams[first].body == test::pattern(size));
  CHECK(client.streams[second].body == client.streams[first].body);
}

TEST_CASE("h2 client reset cancels exchange", "[front][h2]") {
  TestServer server;
  Http2Client client(server.port());

  int32_t id = client.submit("/late");
  // The server sends nothing when it takes the request, so waiting in the
  // client's read loop could block past the moment it was handled.
  REQUIRE(client.send());
  REQUIRE(test::wait_until([&] { return server.handler().handled == 1; }));
  client.cancel(id);
  int32_t probe = client.submit("/small");
  REQUIRE(client.run_until([&] { return client.streams[probe].closed; }));

  REQUIRE(test::wait_until([&] { return server.handler().cancelled == 1; }));
  auto lines = server.access_log("h2 GET /late 499 0 ");
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].find(" r=") != std::string::npos);
  server.loop().call(
      [&] { server.handler().respond_late(200, "nobody reads this"); });
  int32_t after = client.submit("/small");
  REQUIRE(client.run_until([&] { return client.streams[after].closed; }));
  CHECK(client.streams[after].body == "hello world");
}

TEST_CASE("h2 access log line format", "[front][h2]") {
  TestServer server;
  Http2Client client(server.port());

  client.submit("/small?tag=2");
  REQUIRE(client.run());
  auto lines = server.access_log("GET /small?tag=2 ");
  REQUIRE(lines.size() == 1);
  std::regex format(R"(c=(\d+) r=(\d+)\.1 127\.0\.0\.1:\d+ h2 GET )"
                    R"(/small\?tag=2 200 11 cache=none ns=- f=0 t=\d+\.\d)");
  std::smatch match;
  REQUIRE(std::regex_match(lines[0], match, format));
  CHECK(match[1] == match[2]);
}

TEST_CASE("h2 nghttp client fetches bodies", "[front][h2]") {
  if (std::system("command -v nghttp >/dev/null 2>&1") != 0) {
    WARN("nghttp is not installed; skipped");
    return;
  }
  TestServer server;
  std::string base = "https://127.0.0.1:" + std::to_string(server.port());
  std::string command = "nghttp -n -s " + base + "/small " + base +
                        "/bytes/100000 " + base + "/unknown-length 2>&1";
  FILE *pipe = popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string output;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof(buffer), pipe)) {
    output.append(buffer, n);
  }
  int status = pclose(pipe);
  INFO(output);
  CHECK(status == 0);
  CHECK(server.access_log(" h2 GET ", 3).size() == 3);
}

} // namespace
} // namespace gatecache::front
