// Tests of the client's HTTP/2 failure paths and stream limit against
// `H2TestServer`.
#include <memory>
#include <string>

#include <ev.h>

#include <catch2/catch.hpp>

#include "appliance/upstream/client.h"
#include "h2_test_server.h"
#include "test_support.h"

using namespace gatecache::upstream;
using namespace gatecache::upstream::testing;
using gatecache::ErrorCode;

namespace {

class H2Fixture {
public:
  explicit H2Fixture(uint32_t max_concurrent_streams = 100)
      : loop_(ev_loop_new(EVFLAG_AUTO)) {
    pki_ = make_test_pki(dir_.path());
    if (pki_) {
      server_ = std::make_unique<H2TestServer>(*pki_, max_concurrent_streams);
    }
  }

  ~H2Fixture() {
    server_.reset();
    ev_loop_destroy(loop_);
  }

  H2Fixture(const H2Fixture &) = delete;
  H2Fixture &operator=(const H2Fixture &) = delete;

  bool ready() const { return server_ != nullptr && server_->ready(); }

  Origin origin() const {
    return Origin{"https://127.0.0.1:" + std::to_string(server_->port()),
                  pki_->ca_cert};
  }

  std::unique_ptr<RecordingHandler> get(Client &client, std::string path) {
    auto handler = std::make_unique<RecordingHandler>();
    Request request;
    request.path = std::move(path);
    client.start(origin(), request, handler.get());
    RecordingHandler *raw = handler.get();
    run_until(loop_, [raw] { return raw->finished(); });
    return handler;
  }

  struct ev_loop *loop_;
  TempDir dir_;
  std::optional<TestPki> pki_;
  std::unique_ptr<H2TestServer> server_;
};

class LimitedH2Fixture : public H2Fixture {
public:
  LimitedH2Fixture() : H2Fixture(1) {}
};

} // namespace

TEST_CASE_METHOD(H2Fixture, "h2 client reports stream reset",
                 "[upstream][client][h2]") {
  REQUIRE(ready());
  Client client(loop_, ClientConfig{});
  auto handler = get(client, "/reset");
  REQUIRE(handler->error);
  CHECK(handler->error->code == ErrorCode::UpstreamRejected);
  CHECK_THAT(handler->error->message, Catch::Contains("stream reset"));
  CHECK_THAT(handler->error->message, Catch::Contains("/reset"));
}

TEST_CASE_METHOD(H2Fixture, "h2 client reports short body",
                 "[upstream][client][h2]") {
  REQUIRE(ready());
  Client client(loop_, ClientConfig{});
  auto handler = get(client, "/short");
  CHECK(handler->heads == 1);
  REQUIRE(handler->error);
  CHECK(handler->error->code == ErrorCode::UpstreamRejected);
  CHECK_THAT(handler->error->message, Catch::Contains("truncated"));
}

TEST_CASE_METHOD(LimitedH2Fixture, "h2 client queues beyond stream limit",
                 "[upstream][client][h2]") {
  REQUIRE(ready());
  Client client(loop_, ClientConfig{});
  // The first response brings the server's SETTINGS, so the limit is known
  // before the burst.
  auto warm_up = get(client, "/first");
  REQUIRE_FALSE(warm_up->error);

  constexpr int Burst = 4;
  RecordingHandler handlers[Burst];
  for (RecordingHandler &handler : handlers) {
    Request request;
    request.path = "/burst";
    client.start(origin(), request, &handler);
  }
  run_until(loop_, [&handlers] {
    for (const RecordingHandler &handler : handlers) {
      if (!handler.finished()) {
        return false;
      }
    }
    return true;
  });
  for (const RecordingHandler &handler : handlers) {
    REQUIRE(handler.finished());
    CHECK_FALSE(handler.error);
    CHECK(handler.body == "ok");
  }
  CHECK(server_->connections() == 1);
  CHECK(server_->max_open_streams() == 1);
}
