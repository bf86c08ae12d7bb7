// Mutual TLS of the front's contexts: real handshakes over loopback TCP.
#include <string>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <catch2/catch.hpp>

#include "tests/unit/tls/loopback.h"
#include "tests/unit/tls/support.h"
#include "tls/ca.h"
#include "tls/client_certificate.h"
#include "tls/context.h"
#include "tls/issuer.h"
#include "tls/pem_file.h"

namespace gatecache::tls {
namespace {

namespace fs = std::filesystem;
using testing::LoopbackConnection;
using testing::make_test_client_context;
using testing::TempDir;

const std::vector<std::string> ServerNames = {"localhost", "127.0.0.1"};

using SslCtxHandle = std::unique_ptr<SSL_CTX, SslCtxDeleter>;

// A TLS directory with a CA, a server certificate and a client
// certificate for "dev".
class Authority {
public:
  explicit Authority(const std::string &client = "dev")
      : paths_{temp_.path() / "tls"} {
    REQUIRE(ensure_ca(paths_));
    REQUIRE(ensure_server_certificate(paths_, ServerNames));
    if (!client.empty()) {
      auto issued =
          issue_client_certificate(paths_, client, temp_.path() / client);
      REQUIRE(issued);
      client_ = *issued;
    }
  }

  const TlsPaths &paths() const { return paths_; }

  const ClientCertificateFiles &client() const { return client_; }

  SslCtxHandle server_context(ClientAuth mode,
                              const TicketKeys *keys = nullptr) const {
    auto context = make_server_context(paths_, {mode, keys});
    REQUIRE(context);
    return std::move(*context);
  }

  // A client trusting this CA, with the client certificate of `owner`
  // when it is not null.
  SslCtxHandle client_context(const Authority *owner = nullptr) const {
    if (owner == nullptr) {
      return SslCtxHandle(make_test_client_context(paths_.ca_cert()));
    }
    return SslCtxHandle(make_test_client_context(
        paths_.ca_cert(), owner->client().cert, owner->client().key));
  }

private:
  TempDir temp_;
  TlsPaths paths_;
  ClientCertificateFiles client_;
};

std::string peer_common_name(SSL *ssl) {
  X509 *certificate = SSL_get0_peer_certificate(ssl);
  if (certificate == nullptr) {
    return {};
  }
  char name[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(certificate), NID_commonName,
                            name, sizeof(name));
  return name;
}

// Returns the session of a finished connection, after reading the TLS 1.3
// tickets that arrive after the handshake.
SSL_SESSION *take_session(LoopbackConnection &connection) {
  REQUIRE(connection.round_trip("ticket"));
  SSL_SESSION *session = SSL_get1_session(connection.client_ssl());
  REQUIRE(session != nullptr);
  // OpenSSL does not resume a session whose connection ended without a
  // close_notify.
  SSL_shutdown(connection.client_ssl());
  return session;
}

} // namespace

TEST_CASE("required client auth accepts internal client", "[tls][mtls]") {
  Authority authority;
  auto server = authority.server_context(ClientAuth::Required);
  auto client = authority.client_context(&authority);

  LoopbackConnection connection(server.get(), client.get());
  REQUIRE(connection.handshake());
  CHECK(SSL_get_verify_result(connection.server_ssl()) == X509_V_OK);
  CHECK(peer_common_name(connection.server_ssl()) == "dev");
  CHECK(connection.round_trip("hello"));
}

TEST_CASE("client certificate carries client marks", "[tls][mtls]") {
  Authority authority;
  auto certificate = read_certificate(authority.client().cert);
  REQUIRE(certificate);
  X509 *x509 = certificate->get();

  char unit[128] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(x509),
                            NID_organizationalUnitName, unit, sizeof(unit));
  CHECK(std::string(unit) == ClientOrganizationalUnit);
  CHECK((X509_get_extended_key_usage(x509) & XKU_SSL_CLIENT) != 0);
  CHECK((X509_get_extended_key_usage(x509) & XKU_SSL_SERVER) == 0);
  CHECK(X509_check_ca(x509) == 0);
  CHECK(testing::mode_of(authority.client().key) == 0600);
  CHECK(testing::mode_of(authority.client().cert) == 0644);
  CHECK(testing::read_file(authority.client().bundle) ==
        testing::read_file(authority.paths().ca_cert()));
}

TEST_CASE("optional client auth accepts anonymous client", "[tls][mtls]") {
  Authority authority;
  auto server = authority.server_context(ClientAuth::Optional);
  auto client = authority.client_context();

  LoopbackConnection connection(server.get(), client.get());
  REQUIRE(connection.handshake());
  CHECK(SSL_get0_peer_certificate(connection.server_ssl()) == nullptr);
  CHECK(connection.round_trip("hello"));
}

TEST_CASE("optional client auth verifies sent certificate", "[tls][mtls]") {
  Authority authority;
  auto server = authority.server_context(ClientAuth::Optional);
  auto client = authority.client_context(&authority);

  LoopbackConnection connection(server.get(), client.get());
  REQUIRE(connection.handshake());
  CHECK(peer_common_name(connection.server_ssl()) == "dev");
}

TEST_CASE("client auth rejects certificate of other ca", "[tls][mtls]") {
  Authority authority;
  Authority other("intruder");
  // The client trusts the server, but its certificate comes from a CA the
  // server does not know.
  auto client = authority.client_context(&other);

  for (ClientAuth mode : {ClientAuth::Optional, ClientAuth::Required}) {
    INFO("mode " << to_string(mode));
    auto server = authority.server_context(mode);
    LoopbackConnection connection(server.get(), client.get());
    CHECK_FALSE(connection.handshake());
    CHECK(connection.server.failed);
    CHECK(connection.server.reason == SSL_R_CERTIFICATE_VERIFY_FAILED);
    CHECK(SSL_get_verify_result(connection.server_ssl()) ==
          X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
    CHECK_FALSE(connection.round_trip("hello"));
  }
}

TEST_CASE("required client auth rejects anonymous client", "[tls][mtls]") {
  Authority authority;
  auto server = authority.server_context(ClientAuth::Required);
  auto client = authority.client_context();

  LoopbackConnection connection(server.get(), client.get());
  CHECK_FALSE(connection.handshake());
  CHECK(connection.server.failed);
  CHECK(connection.server.reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE);
  CHECK_FALSE(connection.round_trip("hello"));
}

TEST_CASE("client auth rejects server certificate", "[tls][mtls]") {
  Authority authority;
  auto server = authority.server_context(ClientAuth::Required);
  // The server's own certificate has the serverAuth usage only.
  SslCtxHandle client(make_test_client_context(authority.paths().ca_cert(),
                                               authority.paths().server_cert(),
                                               authority.paths().server_key()));

  LoopbackConnection connection(server.get(), client.get());
  CHECK_FALSE(connection.handshake());
  CHECK(connection.server.failed);
  CHECK(SSL_get_verify_result(connection.server_ssl()) ==
        X509_V_ERR_INVALID_PURPOSE);
}

TEST_CASE("no client auth ignores client certificate", "[tls][mtls]") {
  Authority authority;
  auto server = authority.server_context(ClientAuth::None);
  auto client = authority.client_context(&authority);

  LoopbackConnection connection(server.get(), client.get());
  REQUIRE(connection.handshake());
  CHECK(SSL_get0_peer_certificate(connection.server_ssl()) == nullptr);
}

TEST_CASE("client auth lists trusted ca names", "[tls][mtls]") {
  Authority authority;
  auto server = authority.server_context(ClientAuth::Required);

  STACK_OF(X509_NAME) *names = SSL_CTX_get_client_CA_list(server.get());
  REQUIRE(names != nullptr);
  REQUIRE(sk_X509_NAME_num(names) == 1);
  auto ca = read_certificate(authority.paths().ca_cert());
  REQUIRE(ca);
  CHECK(X509_NAME_cmp(sk_X509_NAME_value(names, 0),
                      X509_get_subject_name(ca->get())) == 0);
}

TEST_CASE("shared ticket keys resume across contexts", "[tls][mtls]") {
  Authority authority;
  auto keys = TicketKeys::generate();
  REQUIRE(keys);
  auto first = authority.server_context(ClientAuth::None, &*keys);
  auto client = authority.client_context();
  LoopbackConnection original(first.get(), client.get());
  REQUIRE(original.handshake());
  SSL_SESSION *session = take_session(original);

  auto resume_on = [&](SSL_CTX *server) {
    LoopbackConnection resumed(server, client.get(), [session](SSL *ssl) {
      REQUIRE(set_client_host(ssl, "localhost"));
      REQUIRE(SSL_set_session(ssl, session) == 1);
    });
    REQUIRE(resumed.handshake());
    return SSL_session_reused(resumed.server_ssl()) == 1;
  };

  SECTION("same keys") {
    auto second = authority.server_context(ClientAuth::None, &*keys);
    CHECK(resume_on(second.get()));
  }
  SECTION("keys of its own") {
    auto second = authority.server_context(ClientAuth::None);
    CHECK_FALSE(resume_on(second.get()));
  }
  SECTION("another client auth mode") {
    auto second = authority.server_context(ClientAuth::Optional, &*keys);
    CHECK_FALSE(resume_on(second.get()));
  }
  SSL_SESSION_free(session);
}

TEST_CASE("client certificate rejects bad names", "[tls][mtls]") {
  TempDir temp;
  TlsPaths paths{temp.path() / "tls"};
  REQUIRE(ensure_ca(paths));

  for (const char *name :
       {"", ".hidden", "-dash", "a/b", "with space", "x\n", "../up",
        "a-name-that-is-far-too-long-for-a-common-name-"
        "because-it-exceeds-sixty-four"}) {
    INFO("name: " << name);
    auto issued = issue_client_certificate(paths, name, temp.path() / "out");
    REQUIRE_FALSE(issued);
    CHECK(issued.error().code == ErrorCode::Invalid);
  }
  CHECK(check_client_name("prod-eu.1_a"));
}

TEST_CASE("client certificate requires existing ca", "[tls][mtls]") {
  TempDir temp;
  TlsPaths paths{temp.path() / "tls"};

  auto issued = issue_client_certificate(paths, "dev", temp.path() / "out");
  REQUIRE_FALSE(issued);
  CHECK(issued.error().code == ErrorCode::NotFound);
  CHECK_THAT(issued.error().message, Catch::Contains("gatecache ca init"));
}

} // namespace gatecache::tls
