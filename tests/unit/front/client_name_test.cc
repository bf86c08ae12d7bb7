// Client certificates on the front: `Request::client_name`, and contexts
// swapped by the certificate manager under open connections.
#include <chrono>
#include <memory>
#include <string>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <catch2/catch.hpp>

#include "tests/unit/front/test_support.h"
#include "tls/ca.h"
#include "tls/certificate_manager.h"
#include "tls/client_certificate.h"
#include "tls/context.h"

namespace gatecache::front {
namespace {

using test::ClientCertificate;
using test::Http1Client;
using test::Http2Client;
using test::TestServer;
using Clock = std::chrono::system_clock;

// A CA, a server certificate for 127.0.0.1 and a client certificate whose
// common name is `client`, under a temporary directory.
class Authority {
public:
  explicit Authority(const std::string &client)
      : paths_{std::filesystem::path(temp_.path()) / "tls"} {
    REQUIRE(tls::ensure_ca(paths_));
    REQUIRE(tls::ensure_server_certificate(paths_, {"127.0.0.1"}));
    auto issued = tls::issue_client_certificate(
        paths_, client, std::filesystem::path(temp_.path()) / client);
    REQUIRE(issued);
    certificate_ = {issued->cert.string(), issued->key.string()};
  }

  const tls::TlsPaths &paths() const { return paths_; }

  const ClientCertificate &certificate() const { return certificate_; }

  // A provider of a fixed context with client-auth `mode`.
  SslCtxProvider provider(tls::ClientAuth mode) const {
    auto context = tls::make_server_context(paths_, {mode, nullptr});
    REQUIRE(context);
    std::shared_ptr<SSL_CTX> shared(context->release(), tls::SslCtxDeleter{});
    return [shared] { return shared.get(); };
  }

private:
  test::TempDir temp_;
  tls::TlsPaths paths_;
  ClientCertificate certificate_;
};

std::string client_name_over_h2(uint16_t port,
                                const ClientCertificate &certificate) {
  Http2Client client(port, certificate);
  if (!client.connected()) {
    return "no connection";
  }
  int32_t stream = client.submit("/client");
  if (!client.run() || client.streams[stream].status != 200) {
    return "no response";
  }
  return client.streams[stream].body;
}

std::string peer_serial(const SSL *ssl) {
  X509 *certificate = ssl != nullptr ? SSL_get0_peer_certificate(ssl) : nullptr;
  if (certificate == nullptr) {
    return {};
  }
  const ASN1_INTEGER *serial = X509_get0_serialNumber(certificate);
  return std::string(reinterpret_cast<const char *>(serial->data),
                     static_cast<size_t>(serial->length));
}

} // namespace

TEST_CASE("front sets client name from certificate", "[front][mtls]") {
  Authority authority("cluster-dev");
  TestServer server(authority.provider(tls::ClientAuth::Required));

  CHECK(client_name_over_h2(server.port(), authority.certificate()) ==
        "cluster-dev");

  Http1Client client(server.port(), "", authority.certificate());
  client.send("GET /client HTTP/1.1\r\nHost: x\r\n\r\n");
  auto response = client.read_response();
  CHECK(response.status == 200);
  CHECK(response.body == "cluster-dev");
}

TEST_CASE("front leaves client name empty without certificate",
          "[front][mtls]") {
  Authority authority("cluster-dev");
  SECTION("optional client auth") {
    TestServer server(authority.provider(tls::ClientAuth::Optional));
    CHECK(client_name_over_h2(server.port(), {}).empty());
  }
  SECTION("no client auth, certificate offered") {
    TestServer server(authority.provider(tls::ClientAuth::None));
    CHECK(client_name_over_h2(server.port(), authority.certificate()).empty());
  }
}

TEST_CASE("front rejects client of other ca", "[front][mtls]") {
  Authority authority("cluster-dev");
  Authority other("cluster-dev");
  TestServer server(authority.provider(tls::ClientAuth::Optional));

  CHECK(client_name_over_h2(server.port(), other.certificate()) ==
        "no response");
}

TEST_CASE("front keeps h2 connection across renewal", "[front][mtls]") {
  test::TempDir temp;
  test::LoopThread loop;
  test::TestHandler handler;
  Clock::time_point now = Clock::now() - std::chrono::minutes(50);
  tls::ServerCertificateSettings settings;
  settings.dir = std::filesystem::path(temp.path()) / "tls";
  settings.names = {"127.0.0.1"};
  settings.lifetime = std::chrono::hours(1);

  std::unique_ptr<tls::CertificateManager> manager;
  std::unique_ptr<Listener> listener;
  loop.call([&] {
    auto created = tls::CertificateManager::create(loop.loop(), settings,
                                                   [&now] { return now; });
    REQUIRE(created);
    manager = std::move(*created);
    auto provider = manager->provider(tls::ClientAuth::None);
    REQUIRE(provider);
    auto opened =
        Listener::open(loop.loop(), "127.0.0.1", 0, *provider, &handler, {});
    REQUIRE(opened);
    listener = std::move(*opened);
  });

  Http2Client before(listener->port());
  REQUIRE(before.connected());
  int32_t first = before.submit("/small");
  REQUIRE(before.run());
  CHECK(before.streams[first].body == "hello world");

  bool swapped = false;
  loop.call([&] {
    now = Clock::now();
    auto checked = manager->check(now);
    REQUIRE(checked);
    swapped = *checked;
  });
  CHECK(swapped);

  int32_t second = before.submit("/small");
  REQUIRE(before.run());
  CHECK(before.streams[second].body == "hello world");

  Http2Client after(listener->port());
  REQUIRE(after.connected());
  CHECK(peer_serial(after.tls().ssl()) != peer_serial(before.tls().ssl()));
  int32_t third = after.submit("/small");
  REQUIRE(after.run());
  CHECK(after.streams[third].body == "hello world");

  loop.call([&] {
    listener.reset();
    manager.reset();
  });
}

} // namespace gatecache::front
