#include "appliance/front/listener.h"

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <string>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "tests/unit/front/test_support.h"

namespace gatecache::front {
namespace {

using test::Http1Client;
using test::Http2Client;
using test::HttpResponse;
using test::TestServer;

TEST_CASE("listener binds ephemeral loopback port", "[front][listener]") {
  test::LoopThread loop;
  test::TestHandler handler;
  SSL_CTX *ctx = test::make_server_ctx();
  loop.call([&] {
    auto v4 = Listener::open(loop.loop(), "127.0.0.1", 0, [ctx] { return ctx; },
                             &handler, {});
    REQUIRE(v4);
    CHECK((*v4)->port() != 0);
    auto v6 = Listener::open(loop.loop(), "[::1]", 0, [ctx] { return ctx; },
                             &handler, {});
    if (v6) {
      CHECK((*v6)->port() != 0);
    } else {
      WARN("no IPv6 loopback: " << v6.error().message);
    }
  });
  SSL_CTX_free(ctx);
}

TEST_CASE("listener rejects invalid address", "[front][listener]") {
  test::LoopThread loop;
  test::TestHandler handler;
  loop.call([&] {
    auto listener = Listener::open(loop.loop(), "localhost", 0,
                                   [] { return nullptr; }, &handler, {});
    REQUIRE_FALSE(listener);
    CHECK(listener.error().code == ErrorCode::Invalid);
  });
}

TEST_CASE("listener reports port in use", "[front][listener]") {
  // A socket without SO_REUSEPORT keeps the port to itself.
  int holder = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(holder, reinterpret_cast<sockaddr *>(&address),
                 sizeof(address)) == 0);
  REQUIRE(::listen(holder, 1) == 0);
  socklen_t size = sizeof(address);
  ::getsockname(holder, reinterpret_cast<sockaddr *>(&address), &size);

  test::LoopThread loop;
  test::TestHandler handler;
  loop.call([&] {
    auto listener =
        Listener::open(loop.loop(), "127.0.0.1", ntohs(address.sin_port),
                       [] { return nullptr; }, &handler, {});
    REQUIRE_FALSE(listener);
    CHECK(listener.error().code == ErrorCode::Io);
    CHECK(listener.error().message.find("bind") != std::string::npos);
  });
  ::close(holder);
}

TEST_CASE("second listener on same port fails", "[front][listener]") {
  test::LoopThread loop;
  test::TestHandler handler;
  loop.call([&] {
    auto first = Listener::open(loop.loop(), "127.0.0.1", 0,
                                [] { return nullptr; }, &handler, {});
    REQUIRE(first);
    uint16_t port = (*first)->port();
    auto second = Listener::open(loop.loop(), "127.0.0.1", port,
                                 [] { return nullptr; }, &handler, {});
    REQUIRE_FALSE(second);
    CHECK(second.error().code == ErrorCode::Io);
    const std::string &message = second.error().message;
    CHECK(message.find("bind") != std::string::npos);
    CHECK(message.find("in use") != std::string::npos);
    CHECK(message.find("127.0.0.1:" + std::to_string(port)) !=
          std::string::npos);
  });
}

TEST_CASE("listener picks protocol by ALPN", "[front][listener]") {
  TestServer server;

  SECTION("h2 preferred when offered") {
    Http2Client client(server.port());
    CHECK(client.alpn() == "h2");
  }
  SECTION("http/1.1 when offered alone") {
    Http1Client client(server.port(), "\x08http/1.1");
    CHECK(client.tls().alpn() == "http/1.1");
    client.send("GET /small HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK(client.read_response().body == "hello world");
  }
  SECTION("http/1.1 without ALPN") {
    Http1Client client(server.port());
    CHECK(client.tls().alpn().empty());
    client.send("GET /small HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK(client.read_response().body == "hello world");
  }
  SECTION("http/1.1 when only unknown protocols offered") {
    Http1Client client(server.port(), "\x06spdy/3");
    CHECK(client.tls().alpn().empty());
    client.send("GET /small HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK(client.read_response().body == "hello world");
  }
}

// With SSL_OP_ENABLE_KTLS the connection starts on a plain socket BIO and
// switches to buffered writes after the handshake when the kernel has no
// TLS. Either way the bytes must arrive intact.
TEST_CASE("listener serves kernel TLS contexts", "[front][listener]") {
  test::TempDir dir;
  std::string path = dir.path() + "/blob";
  const size_t size = 3 * 1024 * 1024 + 17;
  test::write_pattern_file(path, size);
  TestServer server({}, true);
  server.handler().file_path = path;

  Http1Client h1(server.port());
  h1.send("GET /file HTTP/1.1\r\nHost: a\r\n\r\n"
          "GET /small HTTP/1.1\r\nHost: a\r\n\r\n");
  HttpResponse file = h1.read_response();
  REQUIRE(file.body.size() == size);
  CHECK(file.body == test::pattern(size));
  CHECK(h1.read_response().body == "hello world");

  Http2Client h2(server.port());
  int32_t id = h2.submit("/file");
  REQUIRE(h2.run());
  CHECK(h2.streams[id].body == test::pattern(size));
}

TEST_CASE("listener closes failed handshake", "[front][listener]") {
  TestServer server;
  test::TlsClient plain(server.port(), "");
  REQUIRE(plain.connected());

  // A second connection that speaks plain HTTP instead of TLS.
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_port = htons(server.port());
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr *>(&address),
                    sizeof(address)) == 0);
  std::string request = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
  REQUIRE(::write(fd, request.data(), request.size()) ==
          static_cast<ssize_t>(request.size()));
  timeval timeout = {test::SafetyTimeoutS, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  char buffer[1024];
  ssize_t n;
  while ((n = ::read(fd, buffer, sizeof(buffer))) > 0) {
  }
  CHECK(n == 0);
  ::close(fd);
  CHECK(server.handler().handled == 0);
}

// The timeout tests set a limit of zero, so the timer fires on the next
// loop iteration and no test waits for time to pass.
TEST_CASE("connection handshake timeout closes", "[front][listener]") {
  FrontConfig config;
  config.handshake_timeout_s = 0;
  TestServer server(config);

  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_port = htons(server.port());
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr *>(&address),
                    sizeof(address)) == 0);
  timeval timeout = {test::SafetyTimeoutS, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  char byte;
  CHECK(::read(fd, &byte, 1) == 0);
  ::close(fd);
}

TEST_CASE("connection idle timeout closes gracefully", "[front][listener]") {
  FrontConfig config;
  config.idle_timeout_s = 0;
  TestServer server(config);
  Http1Client client(server.port());
  REQUIRE(client.tls().connected());
  CHECK(client.closed_by_server());
  CHECK(client.tls().end_reason() == "close_notify");
}

TEST_CASE("h1 partial head times out", "[front][listener]") {
  FrontConfig config;
  config.header_timeout_s = 0;
  TestServer server(config);
  Http1Client client(server.port());
  client.send("GET /small HTTP/1.1\r\nHost: a\r\n");
  CHECK(client.closed_by_server());
  CHECK(client.tls().end_reason() == "eof");
  CHECK(server.handler().handled == 0);
}

TEST_CASE("h2 idle timeout sends GOAWAY", "[front][listener]") {
  FrontConfig config;
  config.idle_timeout_s = 0;
  TestServer server(config);
  Http2Client client(server.port());
  REQUIRE(client.connected());
  CHECK(client.run_until([&] { return client.goaway; }));
}

// A connection past the cap waits in the listen backlog, so its TLS
// handshake cannot finish until the server accepts it. This is how long the
// test lets it try before it concludes that the server did not.
constexpr auto BacklogWait = std::chrono::milliseconds(500);

std::future<std::unique_ptr<Http1Client>> connect_later(uint16_t port) {
  return std::async(std::launch::async,
                    [port] { return std::make_unique<Http1Client>(port); });
}

// Sends GET /small on `client` and returns the response body.
std::string get_small(Http1Client &client) {
  client.send("GET /small HTTP/1.1\r\nHost: a\r\n\r\n");
  return client.read_response().body;
}

TEST_CASE("listener waits below max connections", "[front][listener]") {
  FrontConfig config;
  config.max_connections = 2;
  TestServer server(config);
  auto first = std::make_unique<Http1Client>(server.port());
  Http1Client second(server.port());
  REQUIRE(first->tls().connected());
  REQUIRE(second.tls().connected());

  auto pending = connect_later(server.port());
  CHECK(pending.wait_for(BacklogWait) == std::future_status::timeout);
  size_t open = 0;
  uint64_t reached = 0;
  server.loop().call([&] {
    open = server.listener().connection_count();
    reached = server.listener().connection_limit().times_reached();
  });
  CHECK(open == 2);
  CHECK(reached == 1);
  // The open connections keep being served while the third waits.
  CHECK(get_small(*first) == "hello world");
  CHECK(get_small(second) == "hello world");
  CHECK(pending.wait_for(std::chrono::seconds(0)) ==
        std::future_status::timeout);

  first.reset();
  std::unique_ptr<Http1Client> third = pending.get();
  REQUIRE(third->tls().connected());
  CHECK(get_small(*third) == "hello world");
  CHECK(get_small(second) == "hello world");
  server.loop().call([&] {
    open = server.listener().connection_count();
    reached = server.listener().connection_limit().times_reached();
  });
  CHECK(open == 2);
  CHECK(reached == 2);
}

TEST_CASE("listeners share one connection limit", "[front][listener]") {
  test::LoopThread loop;
  test::TestHandler handler;
  SSL_CTX *ctx = test::make_server_ctx();
  std::unique_ptr<ConnectionLimit> limit;
  std::unique_ptr<Listener> left;
  std::unique_ptr<Listener> right;
  loop.call([&] {
    limit = std::make_unique<ConnectionLimit>(loop.loop(), 2);
    for (auto *listener : {&left, &right}) {
      auto opened = Listener::open(
          loop.loop(), "127.0.0.1", 0, [ctx] { return ctx; }, &handler, {},
          limit.get());
      if (opened) {
        *listener = std::move(*opened);
      }
    }
  });
  REQUIRE(left);
  REQUIRE(right);

  Http1Client on_left(left->port());
  auto on_right = std::make_unique<Http1Client>(right->port());
  REQUIRE(on_left.tls().connected());
  REQUIRE(on_right->tls().connected());

  // Each listener has one connection, but together they are at the cap.
  auto pending = connect_later(left->port());
  CHECK(pending.wait_for(BacklogWait) == std::future_status::timeout);

  on_right.reset();
  std::unique_ptr<Http1Client> third = pending.get();
  REQUIRE(third->tls().connected());
  CHECK(get_small(*third) == "hello world");

  size_t open_before = 0;
  size_t open_after = 0;
  loop.call([&] {
    open_before = limit->open_connections();
    // Destroying a listener gives its connections back to the limit.
    left.reset();
    open_after = limit->open_connections();
    right.reset();
    limit.reset();
  });
  CHECK(open_before == 2);
  CHECK(open_after == 0);
  SSL_CTX_free(ctx);
}

TEST_CASE("listener connection ids are distinct", "[front][listener]") {
  TestServer server;
  Http1Client first(server.port());
  Http1Client second(server.port());
  first.send("GET /small?id=a HTTP/1.1\r\nHost: a\r\n\r\n");
  second.send("GET /small?id=b HTTP/1.1\r\nHost: a\r\n\r\n");
  first.read_response();
  second.read_response();
  auto a = server.access_log("/small?id=a ");
  auto b = server.access_log("/small?id=b ");
  REQUIRE(a.size() == 1);
  REQUIRE(b.size() == 1);
  CHECK(a[0].substr(0, a[0].find(' ')) != b[0].substr(0, b[0].find(' ')));
}

TEST_CASE("graceful shutdown finishes in-flight h1", "[front][listener]") {
  TestServer server;
  Http1Client idle(server.port());
  idle.send("GET /small HTTP/1.1\r\nHost: a\r\n\r\n");
  REQUIRE(idle.read_response().status == 200);

  Http1Client busy(server.port());
  busy.send("GET /gated HTTP/1.1\r\nHost: a\r\n\r\n");
  std::string received;
  while (received.find("first-part|") == std::string::npos) {
    std::string more = busy.tls().read_some();
    REQUIRE_FALSE(more.empty());
    received += more;
  }

  std::atomic<bool> done{false};
  server.loop().call([&] { server.listener().shutdown([&] { done = true; }); });
  CHECK(idle.closed_by_server());
  CHECK(idle.tls().end_reason() == "close_notify");
  CHECK_FALSE(done);

  server.loop().call([&] { server.handler().open_gate(); });
  for (;;) {
    std::string more = busy.tls().read_some();
    if (more.empty()) {
      break;
    }
    received += more;
  }
  CHECK(received.find("first-part|second-part") != std::string::npos);
  CHECK(busy.tls().end_reason() == "close_notify");
  CHECK(test::wait_until([&] { return done.load(); }));
  size_t remaining = 1;
  server.loop().call([&] { remaining = server.listener().connection_count(); });
  CHECK(remaining == 0);
}

TEST_CASE("graceful shutdown sends h2 GOAWAY", "[front][listener]") {
  TestServer server;
  Http2Client client(server.port());
  int32_t gated = client.submit("/gated");
  REQUIRE(client.run_until(
      [&] { return client.streams[gated].body == "first-part|"; }));

  std::atomic<bool> done{false};
  server.loop().call([&] { server.listener().shutdown([&] { done = true; }); });
  REQUIRE(client.run_until([&] { return client.goaway; }));
  CHECK_FALSE(client.streams[gated].closed);

  server.loop().call([&] { server.handler().open_gate(); });
  REQUIRE(client.run());
  CHECK(client.streams[gated].body == "first-part|second-part");
  CHECK(client.streams[gated].error_code == NGHTTP2_NO_ERROR);
  CHECK(test::wait_until([&] { return done.load(); }));
}

TEST_CASE("graceful shutdown without connections", "[front][listener]") {
  TestServer server;
  std::atomic<bool> done{false};
  server.loop().call([&] {
    server.listener().shutdown([&] { done = true; });
    // `on_done` never runs inside `shutdown()`.
    CHECK_FALSE(done);
  });
  CHECK(test::wait_until([&] { return done.load(); }));
}

TEST_CASE("graceful shutdown forces close after timeout", "[front][listener]") {
  FrontConfig config;
  config.graceful_timeout_s = 0;
  TestServer server(config);
  Http1Client busy(server.port());
  busy.send("GET /late HTTP/1.1\r\nHost: a\r\n\r\n");
  REQUIRE(test::wait_until([&] { return server.handler().handled == 1; }));

  std::atomic<bool> done{false};
  server.loop().call([&] { server.listener().shutdown([&] { done = true; }); });
  CHECK(test::wait_until([&] { return done.load(); }));
  CHECK(busy.closed_by_server());
  CHECK(server.access_log("GET /late 499 ").size() == 1);
}

} // namespace
} // namespace gatecache::front
