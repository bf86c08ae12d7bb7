#include "tls/context.h"

#include <functional>
#include <string>
#include <string_view>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>

#include "tests/unit/tls/support.h"
#include "tls/ca.h"
#include "tls/openssl_ptr.h"

namespace gatecache::tls {
namespace {

using testing::TempDir;

// Bounds the handshake loop. A TLS 1.3 handshake over a BIO pair takes a
// handful of rounds, so this only stops a broken test.
constexpr int MaxRounds = 64;

// One side of an in-memory TLS connection.
struct Side {
  SSL *ssl = nullptr;
  bool done = false;
  bool failed = false;
  int reason = 0; // OpenSSL reason code of the failure.
};

void step(Side &side) {
  if (side.done || side.failed) {
    return;
  }
  int result = SSL_do_handshake(side.ssl);
  if (result == 1) {
    side.done = true;
    return;
  }
  int error = SSL_get_error(side.ssl, result);
  if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE) {
    side.failed = true;
    side.reason = ERR_GET_REASON(ERR_peek_last_error());
    ERR_clear_error();
  }
}

void verify_localhost(SSL *ssl) { REQUIRE(set_client_host(ssl, "localhost")); }

// Server and CA files in a temporary directory, and both contexts.
class Fixture {
public:
  Fixture() : paths_{temp_.path() / "tls"} {
    REQUIRE(ensure_ca(paths_));
    REQUIRE(
        ensure_server_certificate(paths_, {"localhost", "127.0.0.1", "::1"}));
    auto server = make_server_context(paths_);
    REQUIRE(server);
    server_context = std::move(*server);
    auto client = make_client_context(paths_.ca_cert().string());
    REQUIRE(client);
    client_context = std::move(*client);
  }

  const TlsPaths &paths() const { return paths_; }

  // Runs a handshake between new client and server SSL objects over a BIO
  // pair until both sides finish or fail.
  bool handshake() {
    client.reset(SSL_new(client_context.get()));
    server.reset(SSL_new(server_context.get()));
    REQUIRE(client);
    REQUIRE(server);

    BIO *client_bio = nullptr;
    BIO *server_bio = nullptr;
    REQUIRE(BIO_new_bio_pair(&client_bio, 0, &server_bio, 0) == 1);
    SSL_set_bio(client.get(), client_bio, client_bio);
    SSL_set_bio(server.get(), server_bio, server_bio);
    SSL_set_connect_state(client.get());
    SSL_set_accept_state(server.get());
    configure_client(client.get());

    client_side = Side{client.get()};
    server_side = Side{server.get()};
    for (int round = 0; round < MaxRounds; ++round) {
      step(client_side);
      step(server_side);
      bool client_stopped = client_side.done || client_side.failed;
      bool server_stopped = server_side.done || server_side.failed;
      if (client_stopped && server_stopped) {
        break;
      }
    }
    return client_side.done && server_side.done;
  }

  std::string selected_alpn() const {
    const unsigned char *data = nullptr;
    unsigned int length = 0;
    SSL_get0_alpn_selected(client.get(), &data, &length);
    return std::string(reinterpret_cast<const char *>(data), length);
  }

  std::string cipher() const {
    return SSL_CIPHER_get_name(SSL_get_current_cipher(server.get()));
  }

  SslCtxPtr server_context;
  SslCtxPtr client_context;
  std::function<void(SSL *)> configure_client = verify_localhost;
  SslPtr client;
  SslPtr server;
  Side client_side;
  Side server_side;

private:
  TempDir temp_;
  TlsPaths paths_;
};

void offer_alpn(SSL *ssl, std::string_view wire) {
  REQUIRE(SSL_set_alpn_protos(
              ssl, reinterpret_cast<const unsigned char *>(wire.data()),
              static_cast<unsigned int>(wire.size())) == 0);
}

} // namespace

TEST_CASE("server context negotiates h2 over tls 1.3", "[tls][context]") {
  Fixture fixture;

  REQUIRE(fixture.handshake());
  CHECK(fixture.selected_alpn() == "h2");
  CHECK(negotiated_protocol(fixture.server.get()) ==
        ApplicationProtocol::Http2);
  CHECK(SSL_version(fixture.server.get()) == TLS1_3_VERSION);
  CHECK(fixture.cipher() == "TLS_AES_128_GCM_SHA256");
  CHECK(SSL_get_verify_result(fixture.client.get()) == X509_V_OK);
  CHECK(std::string_view(SSL_get_servername(
            fixture.server.get(), TLSEXT_NAMETYPE_host_name)) == "localhost");
}

TEST_CASE("server context prefers h2 over client order", "[tls][context]") {
  Fixture fixture;
  fixture.configure_client = [](SSL *ssl) {
    REQUIRE(set_client_host(ssl, "localhost"));
    offer_alpn(ssl, std::string_view("\x08http/1.1\x02h2", 12));
  };

  REQUIRE(fixture.handshake());
  CHECK(fixture.selected_alpn() == "h2");
}

TEST_CASE("server context falls back to http/1.1", "[tls][context]") {
  Fixture fixture;
  fixture.configure_client = [](SSL *ssl) {
    REQUIRE(set_client_host(ssl, "localhost"));
    offer_alpn(ssl, std::string_view("\x06spdy/3\x08http/1.1", 16));
  };

  REQUIRE(fixture.handshake());
  CHECK(fixture.selected_alpn() == "http/1.1");
  CHECK(negotiated_protocol(fixture.server.get()) ==
        ApplicationProtocol::Http11);
}

TEST_CASE("server context accepts client without alpn", "[tls][context]") {
  Fixture fixture;
  fixture.configure_client = [](SSL *ssl) {
    REQUIRE(set_client_host(ssl, "localhost"));
    REQUIRE(SSL_set_alpn_protos(ssl, nullptr, 0) == 0);
  };

  REQUIRE(fixture.handshake());
  CHECK(fixture.selected_alpn().empty());
  CHECK(negotiated_protocol(fixture.server.get()) ==
        ApplicationProtocol::Http11);
}

TEST_CASE("server context rejects unknown alpn", "[tls][context]") {
  Fixture fixture;
  fixture.configure_client = [](SSL *ssl) {
    REQUIRE(set_client_host(ssl, "localhost"));
    offer_alpn(ssl, std::string_view("\x06spdy/3", 7));
  };

  CHECK_FALSE(fixture.handshake());
  CHECK(fixture.server_side.failed);
  CHECK(fixture.client_side.failed);
  CHECK(fixture.client_side.reason ==
        SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL);
}

TEST_CASE("server context uses ecdsa gcm on tls 1.2", "[tls][context]") {
  Fixture fixture;
  fixture.configure_client = [](SSL *ssl) {
    REQUIRE(set_client_host(ssl, "localhost"));
    REQUIRE(SSL_set_max_proto_version(ssl, TLS1_2_VERSION) == 1);
  };

  REQUIRE(fixture.handshake());
  CHECK(SSL_version(fixture.server.get()) == TLS1_2_VERSION);
  CHECK(fixture.cipher() == "ECDHE-ECDSA-AES128-GCM-SHA256");
  CHECK(fixture.selected_alpn() == "h2");
}

TEST_CASE("server context rejects tls 1.1", "[tls][context]") {
  Fixture fixture;
  fixture.configure_client = [](SSL *ssl) {
    REQUIRE(set_client_host(ssl, "localhost"));
    SSL_set_security_level(ssl, 0);
    REQUIRE(SSL_set_cipher_list(ssl, "DEFAULT:@SECLEVEL=0") == 1);
    REQUIRE(SSL_set_min_proto_version(ssl, TLS1_VERSION) == 1);
    REQUIRE(SSL_set_max_proto_version(ssl, TLS1_1_VERSION) == 1);
  };

  CHECK_FALSE(fixture.handshake());
  CHECK(fixture.server_side.failed);
}

TEST_CASE("server context honours client chacha preference", "[tls][context]") {
  Fixture fixture;
  fixture.configure_client = [](SSL *ssl) {
    REQUIRE(set_client_host(ssl, "localhost"));
    REQUIRE(SSL_set_ciphersuites(ssl, "TLS_CHACHA20_POLY1305_SHA256:"
                                      "TLS_AES_128_GCM_SHA256") == 1);
  };

  REQUIRE(fixture.handshake());
  CHECK(fixture.cipher() == "TLS_CHACHA20_POLY1305_SHA256");
}

TEST_CASE("server context sets modes and options", "[tls][context]") {
  Fixture fixture;
  SSL_CTX *context = fixture.server_context.get();

  uint64_t options = SSL_CTX_get_options(context);
  CHECK((options & SSL_OP_ENABLE_KTLS) != 0);
  CHECK((options & SSL_OP_NO_RENEGOTIATION) != 0);
  CHECK((options & SSL_OP_CIPHER_SERVER_PREFERENCE) != 0);
  CHECK((options & SSL_OP_NO_TICKET) == 0);
  long mode = SSL_CTX_get_mode(context);
  CHECK((mode & SSL_MODE_ENABLE_PARTIAL_WRITE) != 0);
  CHECK((mode & SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER) != 0);
  CHECK(SSL_CTX_get_min_proto_version(context) == TLS1_2_VERSION);
  CHECK(SSL_CTX_get_max_proto_version(context) == TLS1_3_VERSION);
}

TEST_CASE("server context resumes with session ticket", "[tls][context]") {
  Fixture fixture;
  REQUIRE(fixture.handshake());

  // TLS 1.3 tickets arrive after the handshake, so read them first.
  char byte = 0;
  CHECK(SSL_read(fixture.client.get(), &byte, 1) <= 0);
  SSL_SESSION *session = SSL_get1_session(fixture.client.get());
  REQUIRE(session != nullptr);
  CHECK(SSL_SESSION_has_ticket(session) == 1);
  // OpenSSL marks the session of a connection freed without a close_notify
  // as not resumable.
  CHECK(SSL_shutdown(fixture.client.get()) >= 0);
  fixture.configure_client = [session](SSL *ssl) {
    REQUIRE(set_client_host(ssl, "localhost"));
    REQUIRE(SSL_set_session(ssl, session) == 1);
  };

  bool resumed_handshake = fixture.handshake();
  SSL_SESSION_free(session);
  REQUIRE(resumed_handshake);
  CHECK(SSL_session_reused(fixture.server.get()) == 1);
}

TEST_CASE("server context rejects group-readable key", "[tls][context]") {
  Fixture fixture;
  REQUIRE(::chmod(fixture.paths().server_key().c_str(), 0640) == 0);

  auto context = make_server_context(fixture.paths());
  REQUIRE_FALSE(context);
  CHECK(context.error().code == ErrorCode::Invalid);
  CHECK_THAT(context.error().message, Catch::Contains("chmod 600"));
}

TEST_CASE("client host verifies ip addresses", "[tls][context]") {
  Fixture fixture;

  SECTION("ipv4 in the certificate") {
    fixture.configure_client = [](SSL *ssl) {
      REQUIRE(set_client_host(ssl, "127.0.0.1"));
    };
    REQUIRE(fixture.handshake());
    CHECK(SSL_get_servername(fixture.server.get(), TLSEXT_NAMETYPE_host_name) ==
          nullptr);
  }
  SECTION("bracketed ipv6 in the certificate") {
    fixture.configure_client = [](SSL *ssl) {
      REQUIRE(set_client_host(ssl, "[::1]"));
    };
    REQUIRE(fixture.handshake());
  }
  SECTION("address not in the certificate") {
    fixture.configure_client = [](SSL *ssl) {
      REQUIRE(set_client_host(ssl, "192.0.2.99"));
    };
    CHECK_FALSE(fixture.handshake());
    CHECK(SSL_get_verify_result(fixture.client.get()) ==
          X509_V_ERR_IP_ADDRESS_MISMATCH);
  }
}

TEST_CASE("client host rejects other host name", "[tls][context]") {
  Fixture fixture;
  fixture.configure_client = [](SSL *ssl) {
    REQUIRE(set_client_host(ssl, "mirror.example.lan"));
  };

  CHECK_FALSE(fixture.handshake());
  CHECK(SSL_get_verify_result(fixture.client.get()) ==
        X509_V_ERR_HOSTNAME_MISMATCH);
}

TEST_CASE("client host rejects malformed names", "[tls][context]") {
  Fixture fixture;
  SslPtr ssl(SSL_new(fixture.client_context.get()));
  REQUIRE(ssl);

  for (const char *host : {"", ".", "host name", "host:443", "a/b"}) {
    INFO("host: " << host);
    auto set = set_client_host(ssl.get(), host);
    REQUIRE_FALSE(set);
    CHECK(set.error().code == ErrorCode::Invalid);
  }
}

TEST_CASE("client context rejects unknown ca", "[tls][context]") {
  Fixture fixture;
  auto client = make_client_context("");
  REQUIRE(client);
  fixture.client_context = std::move(*client);

  CHECK_FALSE(fixture.handshake());
  CHECK(SSL_get_verify_result(fixture.client.get()) != X509_V_OK);
}

TEST_CASE("client context rejects missing ca file", "[tls][context]") {
  TempDir temp;
  auto client = make_client_context((temp.path() / "absent.crt").string());
  REQUIRE_FALSE(client);
  CHECK(client.error().code == ErrorCode::Invalid);
}

} // namespace gatecache::tls
