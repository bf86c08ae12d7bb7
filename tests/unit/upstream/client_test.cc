// End-to-end tests of the client against token_server.py: the Bearer token
// flow, redirects to a second origin, HTTP/1.1 framing and failures.
#include "appliance/upstream/client.h"

#include <cstdio>
#include <memory>
#include <string>

#include <arpa/inet.h>
#include <ev.h>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "test_support.h"

using namespace gatecache::upstream;
using namespace gatecache::upstream::testing;
using gatecache::ErrorCode;

namespace {

const char *const Scope = "repository:x:pull";

class TokenServerFixture {
public:
  TokenServerFixture() : loop_(ev_loop_new(EVFLAG_AUTO)) {
    pki_ = make_test_pki(dir_.path());
    if (!pki_) {
      return;
    }
    server_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{"/usr/bin/python3", GATECACHE_TOKEN_SERVER,
                                 "--cert", pki_->server_cert, "--key",
                                 pki_->server_key},
        dir_.path() + "/server.log", true);
    std::optional<std::string> line = server_->read_line(20);
    unsigned origin = 0;
    unsigned cdn = 0;
    if (line && std::sscanf(line->c_str(), "ports %u %u", &origin, &cdn) == 2) {
      origin_port_ = static_cast<uint16_t>(origin);
      cdn_port_ = static_cast<uint16_t>(cdn);
    }
  }

  ~TokenServerFixture() {
    server_.reset();
    ev_loop_destroy(loop_);
  }

  TokenServerFixture(const TokenServerFixture &) = delete;
  TokenServerFixture &operator=(const TokenServerFixture &) = delete;

  bool ready() const { return origin_port_ != 0; }

  Origin origin() const {
    return Origin{"https://127.0.0.1:" + std::to_string(origin_port_),
                  pki_->ca_cert};
  }

  ClientConfig config() const {
    ClientConfig config;
    config.connect_timeout_s = 10;
    config.response_timeout_s = 10;
    config.idle_timeout_s = 10;
    return config;
  }

  // Runs one request to completion and returns what the handler saw.
  std::unique_ptr<RecordingHandler> fetch(Client &client, Request request) {
    auto handler = std::make_unique<RecordingHandler>();
    client.start(origin(), std::move(request), handler.get());
    RecordingHandler *raw = handler.get();
    run_until(loop_, [raw] { return raw->finished(); });
    return handler;
  }

  std::unique_ptr<RecordingHandler> get(Client &client, std::string path,
                                        std::string scope = "") {
    Request request;
    request.path = std::move(path);
    request.scope = std::move(scope);
    return fetch(client, std::move(request));
  }

  nlohmann::json stats(Client &client) {
    auto handler = get(client, "/stats");
    return nlohmann::json::parse(handler->body, nullptr, false);
  }

  struct ev_loop *loop_;
  TempDir dir_;
  std::optional<TestPki> pki_;
  std::unique_ptr<ChildProcess> server_;
  uint16_t origin_port_ = 0;
  uint16_t cdn_port_ = 0;
};

} // namespace

TEST_CASE_METHOD(TokenServerFixture,
                 "client fetches token once for two requests",
                 "[upstream][client]") {
  REQUIRE(ready());
  Client client(loop_, config());
  auto first = get(client, "/v2/x/blobs/a", Scope);
  auto second = get(client, "/v2/x/blobs/b", Scope);

  REQUIRE(first->finished());
  CHECK_FALSE(first->error);
  REQUIRE(first->head);
  CHECK(first->head->status == 200);
  CHECK(first->body == "blob:a");
  CHECK(first->head->url == "https://127.0.0.1:" + std::to_string(cdn_port_) +
                                "/data/a?sig=s3cr3t");
  REQUIRE(second->finished());
  CHECK_FALSE(second->error);
  CHECK(second->body == "blob:b");

  auto counters = stats(client);
  CHECK(counters["token_requests"] == 1);
  CHECK(counters["cdn_requests"] == 2);
  CHECK(counters["cdn_authorization"] == 0);
}

TEST_CASE_METHOD(TokenServerFixture, "client shares concurrent token fetches",
                 "[upstream][client]") {
  REQUIRE(ready());
  Client client(loop_, config());
  RecordingHandler handlers[3];
  for (int i = 0; i < 3; ++i) {
    Request request;
    request.path = "/v2/x/blobs/c" + std::to_string(i);
    client.start(origin(), request, &handlers[i]);
  }
  run_until(loop_, [&] {
    return handlers[0].finished() && handlers[1].finished() &&
           handlers[2].finished();
  });
  for (int i = 0; i < 3; ++i) {
    CAPTURE(i);
    REQUIRE(handlers[i].finished());
    CHECK_FALSE(handlers[i].error);
    CHECK(handlers[i].body == "blob:c" + std::to_string(i));
  }
  auto counters = stats(client);
  CHECK(counters["token_requests"] == 1);
  CHECK(counters["cdn_authorization"] == 0);
}

TEST_CASE_METHOD(TokenServerFixture, "client passes basic challenge through",
                 "[upstream][client]") {
  REQUIRE(ready());
  Client client(loop_, config());
  auto handler = get(client, "/v2/basic");
  CHECK_FALSE(handler->error);
  REQUIRE(handler->head);
  CHECK(handler->head->status == 401);
  CHECK(handler->body == "basic only");
  CHECK(handler->head->header("www-authenticate") == R"(Basic realm="test")");
}

TEST_CASE_METHOD(TokenServerFixture,
                 "client passes redirect target 401 through",
                 "[upstream][client]") {
  REQUIRE(ready());
  Client client(loop_, config());
  auto handler = get(client, "/v2/x/blobs/cdn401", Scope);
  CHECK_FALSE(handler->error);
  REQUIRE(handler->head);
  CHECK(handler->head->status == 401);
  CHECK(handler->body == "cdn says no");
  auto counters = stats(client);
  CHECK(counters["token_requests"] == 1);
  CHECK(counters["cdn_authorization"] == 0);
}

TEST_CASE_METHOD(TokenServerFixture, "client follows relative redirect",
                 "[upstream][client]") {
  REQUIRE(ready());
  Client client(loop_, config());
  auto handler = get(client, "/v2/redirect/relative");
  CHECK_FALSE(handler->error);
  REQUIRE(handler->head);
  CHECK(handler->head->status == 200);
  CHECK(handler->body == "plain body");
  CHECK(handler->head->url == origin().base_url + "/v2/plain");
}

TEST_CASE_METHOD(TokenServerFixture, "client stops after five redirects",
                 "[upstream][client]") {
  REQUIRE(ready());
  Client client(loop_, config());
  auto handler = get(client, "/v2/redirect/loop");
  REQUIRE(handler->error);
  CHECK(handler->error->code == ErrorCode::UpstreamRejected);
  CHECK(handler->heads == 0);
}

TEST_CASE_METHOD(TokenServerFixture, "client reuses http1 connection",
                 "[upstream][client]") {
  REQUIRE(ready());
  Client client(loop_, config());
  auto first = get(client, "/v2/plain");
  Request head_request;
  head_request.method = "HEAD";
  head_request.path = "/v2/plain";
  auto head = fetch(client, head_request);
  auto third = get(client, "/v2/plain");

  CHECK_FALSE(first->error);
  REQUIRE(first->head);
  CHECK(first->head->protocol == "http/1.1");
  CHECK(first->body == "plain body");
  CHECK_FALSE(head->error);
  REQUIRE(head->head);
  CHECK(head->head->status == 200);
  CHECK(head->head->header("content-length") == "10");
  CHECK(head->body.empty());
  CHECK_FALSE(third->error);
  CHECK(third->body == "plain body");
  CHECK(stats(client)["plain_connections"] == 1);
}

TEST_CASE_METHOD(TokenServerFixture, "client reads chunked body",
                 "[upstream][client]") {
  REQUIRE(ready());
  Client client(loop_, config());
  auto handler = get(client, "/v2/chunked");
  CHECK_FALSE(handler->error);
  CHECK(handler->body == "chunk-one,chunk-two");
}

TEST_CASE_METHOD(TokenServerFixture, "client reports truncated body",
                 "[upstream][client]") {
  REQUIRE(ready());
  Client client(loop_, config());
  auto handler = get(client, "/v2/truncated");
  CHECK(handler->heads == 1);
  REQUIRE(handler->error);
  CHECK(handler->error->code == ErrorCode::Corrupt);
  CHECK_THAT(handler->error->message, Catch::Contains("/v2/truncated"));
}

TEST_CASE_METHOD(TokenServerFixture, "client times out waiting for head",
                 "[upstream][client]") {
  REQUIRE(ready());
  ClientConfig short_config = config();
  short_config.response_timeout_s = 0.3;
  Client client(loop_, short_config);
  auto handler = get(client, "/v2/stall");
  CHECK(handler->heads == 0);
  REQUIRE(handler->error);
  CHECK(handler->error->code == ErrorCode::Timeout);
  CHECK_THAT(handler->error->message, Catch::Contains("/v2/stall"));
}

TEST_CASE_METHOD(TokenServerFixture, "client times out idle body",
                 "[upstream][client]") {
  REQUIRE(ready());
  ClientConfig short_config = config();
  short_config.idle_timeout_s = 0.3;
  Client client(loop_, short_config);
  auto handler = get(client, "/v2/stall-body");
  CHECK(handler->heads == 1);
  CHECK(handler->body == "partial");
  REQUIRE(handler->error);
  CHECK(handler->error->code == ErrorCode::Timeout);
}

TEST_CASE_METHOD(TokenServerFixture, "client cancel stops callbacks",
                 "[upstream][client]") {
  REQUIRE(ready());
  Client client(loop_, config());
  RecordingHandler slow;
  Request request;
  request.path = "/v2/slow";
  uint64_t id = client.start(origin(), request, &slow);
  slow.on_first_data = [&client, id] { client.cancel(id); };

  RecordingHandler never;
  request.path = "/v2/plain";
  uint64_t never_id = client.start(origin(), request, &never);
  client.cancel(never_id);

  run_until(loop_, [&slow] { return slow.data_calls > 0; });
  // Another request runs to completion, so the loop has had every chance
  // to deliver stray callbacks to the cancelled handlers.
  auto after = get(client, "/v2/plain");
  CHECK_FALSE(after->error);
  CHECK(after->body == "plain body");
  CHECK(slow.heads == 1);
  CHECK(slow.data_calls == 1);
  CHECK(slow.completions == 0);
  CHECK(never.heads == 0);
  CHECK(never.data_calls == 0);
  CHECK(never.completions == 0);
}

TEST_CASE_METHOD(TokenServerFixture,
                 "client rejects unknown certificate authority",
                 "[upstream][client]") {
  REQUIRE(ready());
  Client client(loop_, config());
  RecordingHandler handler;
  Request request;
  request.path = "/v2/plain";
  Origin system_only{origin().base_url, ""};
  client.start(system_only, request, &handler);
  run_until(loop_, [&handler] { return handler.finished(); });
  REQUIRE(handler.error);
  CHECK(handler.error->code == ErrorCode::Unreachable);
  CHECK_THAT(handler.error->message,
             Catch::Contains("certificate verification failed"));
}

TEST_CASE("client times out stalled handshake", "[upstream][client]") {
  // A listening socket that never accepts: the kernel completes the TCP
  // handshake, and the TLS ClientHello never gets a reply.
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(addr);
  REQUIRE(bind(listener, reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) ==
          0);
  REQUIRE(listen(listener, 4) == 0);
  REQUIRE(getsockname(listener, reinterpret_cast<sockaddr *>(&addr), &length) ==
          0);

  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  {
    ClientConfig config;
    config.connect_timeout_s = 0.3;
    Client client(loop, config);
    RecordingHandler handler;
    Request request;
    request.path = "/v2/";
    client.start(
        Origin{"https://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)), ""},
        request, &handler);
    run_until(loop, [&handler] { return handler.finished(); });
    REQUIRE(handler.error);
    CHECK(handler.error->code == ErrorCode::Timeout);
    CHECK_THAT(handler.error->message, Catch::Contains("TLS handshake"));
    CHECK_THAT(handler.error->message, Catch::Contains("/v2/"));
  }

  ev_loop_destroy(loop);
  close(listener);
}

TEST_CASE("client rejects invalid request", "[upstream][client]") {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  {
    Client client(loop, ClientConfig{});
    RecordingHandler bad_method;
    Request request;
    request.method = "POST";
    request.path = "/v2/";
    client.start(Origin{"https://127.0.0.1:1", ""}, request, &bad_method);
    RecordingHandler bad_header;
    request.method = "GET";
    request.headers.emplace_back("accept", "a\r\nx-injected: 1");
    client.start(Origin{"https://127.0.0.1:1", ""}, request, &bad_header);
    RecordingHandler bad_url;
    client.start(Origin{"http://127.0.0.1:1", ""}, Request{}, &bad_url);
    run_until(loop, [&] {
      return bad_method.finished() && bad_header.finished() &&
             bad_url.finished();
    });
    for (RecordingHandler *handler : {&bad_method, &bad_header, &bad_url}) {
      REQUIRE(handler->error);
      CHECK(handler->error->code == ErrorCode::Invalid);
    }
  }

  ev_loop_destroy(loop);
}
