// End-to-end tests of the client against Debian's docker-registry (the
// distribution registry), which serves HTTP/2 over TLS.
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <ev.h>
#include <nlohmann/json.hpp>

#include <catch2/catch.hpp>

#include "appliance/upstream/client.h"
#include "test_support.h"

using namespace gatecache::upstream;
using namespace gatecache::upstream::testing;

namespace {

const char *const OciManifest = "application/vnd.oci.image.manifest.v1+json";

class RegistryFixture {
public:
  RegistryFixture() : loop_(ev_loop_new(EVFLAG_AUTO)) {
    pki_ = make_test_pki(dir_.path());
    if (!pki_) {
      return;
    }
    port_ = find_free_port();
    std::string config = dir_.path() + "/config.yml";
    std::ofstream(config) << "version: 0.1\n"
                             "log:\n"
                             "  level: warn\n"
                             "storage:\n"
                             "  filesystem:\n"
                             "    rootdirectory: "
                          << dir_.path()
                          << "/data\n"
                             "http:\n"
                             "  addr: 127.0.0.1:"
                          << port_
                          << "\n"
                             "  tls:\n"
                             "    certificate: "
                          << pki_->server_cert
                          << "\n"
                             "    key: "
                          << pki_->server_key << "\n";
    registry_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{"/usr/bin/docker-registry", "serve", config},
        dir_.path() + "/registry.log", false);
    started_ = wait_for_port(port_, 20);
  }

  ~RegistryFixture() {
    registry_.reset();
    ev_loop_destroy(loop_);
  }

  RegistryFixture(const RegistryFixture &) = delete;
  RegistryFixture &operator=(const RegistryFixture &) = delete;

  bool ready() const { return started_; }

  Origin origin(const std::string &host = "127.0.0.1") const {
    return Origin{"https://" + host + ":" + std::to_string(port_),
                  pki_->ca_cert};
  }

  // Pushes an empty OCI image made by umoci as test/tiny:v1 with skopeo.
  bool push_tiny_image() {
    std::string log = dir_.path() + "/push.log";
    std::string layout = dir_.path() + "/oci";
    std::string certs = dir_.path() + "/certs";
    std::filesystem::create_directories(certs);
    std::filesystem::copy_file(pki_->ca_cert, certs + "/ca.crt");
    return run_command({"/usr/bin/umoci", "init", "--layout", layout}, log) &&
           run_command({"/usr/bin/umoci", "new", "--image", layout + ":tiny"},
                       log) &&
           run_command({"/usr/bin/skopeo", "--insecure-policy", "copy",
                        "--dest-cert-dir", certs, "oci:" + layout + ":tiny",
                        "docker://127.0.0.1:" + std::to_string(port_) +
                            "/test/tiny:v1"},
                       log);
  }

  std::unique_ptr<RecordingHandler> fetch(Client &client, Request request,
                                          const Origin &target) {
    auto handler = std::make_unique<RecordingHandler>();
    client.start(target, std::move(request), handler.get());
    RecordingHandler *raw = handler.get();
    run_until(loop_, [raw] { return raw->finished(); });
    return handler;
  }

  std::unique_ptr<RecordingHandler> fetch(Client &client, Request request) {
    return fetch(client, std::move(request), origin());
  }

  struct ev_loop *loop_;
  TempDir dir_;
  std::optional<TestPki> pki_;
  uint16_t port_ = 0;
  std::unique_ptr<ChildProcess> registry_;
  bool started_ = false;
};

Request make_request(std::string method, std::string path) {
  Request request;
  request.method = std::move(method);
  request.path = std::move(path);
  return request;
}

} // namespace

TEST_CASE_METHOD(RegistryFixture, "registry client reads api root over h2",
                 "[upstream][registry]") {
  REQUIRE(ready());
  Client client(loop_, ClientConfig{});
  auto handler = fetch(client, make_request("GET", "/v2/"));
  CHECK_FALSE(handler->error);
  REQUIRE(handler->head);
  CHECK(handler->head->status == 200);
  CHECK(handler->head->protocol == "h2");
  CHECK(handler->head->header("docker-distribution-api-version") ==
        "registry/2.0");
}

TEST_CASE_METHOD(RegistryFixture, "registry client resolves localhost name",
                 "[upstream][registry]") {
  REQUIRE(ready());
  Client client(loop_, ClientConfig{});
  auto handler =
      fetch(client, make_request("GET", "/v2/"), origin("localhost"));
  CHECK_FALSE(handler->error);
  REQUIRE(handler->head);
  CHECK(handler->head->status == 200);
}

TEST_CASE_METHOD(RegistryFixture,
                 "registry client gets 404 for missing manifest",
                 "[upstream][registry]") {
  REQUIRE(ready());
  Client client(loop_, ClientConfig{});
  auto head =
      fetch(client, make_request("HEAD", "/v2/test/missing/manifests/latest"));
  CHECK_FALSE(head->error);
  REQUIRE(head->head);
  CHECK(head->head->status == 404);
  CHECK(head->body.empty());

  auto get =
      fetch(client, make_request("GET", "/v2/test/missing/manifests/latest"));
  CHECK_FALSE(get->error);
  REQUIRE(get->head);
  CHECK(get->head->status == 404);
  CHECK_THAT(get->body, Catch::Contains("UNKNOWN"));
}

TEST_CASE_METHOD(RegistryFixture,
                 "registry client pulls pushed manifest and blob",
                 "[upstream][registry]") {
  REQUIRE(ready());
  REQUIRE(push_tiny_image());
  Client client(loop_, ClientConfig{});
  Request manifest_request = make_request("GET", "/v2/test/tiny/manifests/v1");
  manifest_request.headers.emplace_back("accept", OciManifest);
  auto manifest = fetch(client, manifest_request);
  CHECK_FALSE(manifest->error);
  REQUIRE(manifest->head);
  REQUIRE(manifest->head->status == 200);
  CHECK(manifest->head->header("docker-content-digest") ==
        "sha256:" + sha256_hex(manifest->body));
  auto json = nlohmann::json::parse(manifest->body, nullptr, false);
  REQUIRE(json.is_object());
  std::string digest = json["config"]["digest"].get<std::string>();

  // Several blob requests at once share the HTTP/2 connection.
  constexpr int Parallel = 8;
  RecordingHandler blobs[Parallel];
  for (RecordingHandler &blob : blobs) {
    client.start(origin(), make_request("GET", "/v2/test/tiny/blobs/" + digest),
                 &blob);
  }
  run_until(loop_, [&blobs] {
    for (const RecordingHandler &blob : blobs) {
      if (!blob.finished()) {
        return false;
      }
    }
    return true;
  });
  for (const RecordingHandler &blob : blobs) {
    REQUIRE(blob.finished());
    CHECK_FALSE(blob.error);
    REQUIRE(blob.head);
    CHECK(blob.head->status == 200);
    CHECK(blob.head->protocol == "h2");
    CHECK("sha256:" + sha256_hex(blob.body) == digest);
  }
}
