#include "tls/certificate_manager.h"

#include <chrono>
#include <string>
#include <vector>

#include <ev.h>
#include <openssl/ssl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "tests/unit/tls/loopback.h"
#include "tests/unit/tls/support.h"
#include "tls/ca.h"
#include "tls/issuer.h"
#include "tls/pem_file.h"

namespace gatecache::tls {
namespace {

namespace fs = std::filesystem;
using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;
using testing::LoopbackConnection;
using testing::TempDir;
using Clock = std::chrono::system_clock;

using SslCtxHandle = std::unique_ptr<SSL_CTX, SslCtxDeleter>;

// A manager on its own loop, whose clock returns `now`. The first server
// certificate is issued 50 minutes in the past with a one-hour lifetime,
// so it is valid now and due for renewal: less than a third of its life,
// which counts from one `ClockSkewAllowance` before issue, remains.
class Fixture {
public:
  Fixture() : loop_(ev_loop_new(EVFLAG_AUTO)) {
    settings.dir = temp_.path() / "tls";
    settings.names = {"localhost", "127.0.0.1"};
    settings.lifetime = hours(1);
  }

  ~Fixture() {
    manager.reset();
    ev_loop_destroy(loop_);
  }

  Result<std::unique_ptr<CertificateManager>> try_create() {
    return CertificateManager::create(loop_, settings, [this] { return now; });
  }

  // Creates the manager with a certificate issued 50 minutes ago and
  // contexts for `modes`, then sets the clock to the present.
  void create_due(std::vector<ClientAuth> modes = {ClientAuth::None}) {
    now = Clock::now() - minutes(50);
    auto created = try_create();
    REQUIRE(created);
    manager = std::move(*created);
    // Requesting a provider checks the files too, so it happens in the past.
    for (ClientAuth mode : modes) {
      REQUIRE(manager->provider(mode));
    }
    now = Clock::now();
  }

  SSL_CTX *context(ClientAuth mode = ClientAuth::None) {
    auto provider = manager->provider(mode);
    REQUIRE(provider);
    return (*provider)();
  }

  SslCtxHandle client_context() {
    return SslCtxHandle(testing::make_test_client_context(paths().ca_cert()));
  }

  TlsPaths paths() const { return TlsPaths{settings.dir}; }

  // Runs the loop until no check is running.
  void run_loop() { ev_run(loop_, 0); }

  ServerCertificateSettings settings;
  Clock::time_point now = Clock::now();
  std::unique_ptr<CertificateManager> manager;

private:
  TempDir temp_;
  struct ev_loop *loop_;
};

} // namespace

TEST_CASE("manager creates ca and server certificate", "[tls][manager]") {
  Fixture fixture;
  auto created = fixture.try_create();
  REQUIRE(created);
  fixture.manager = std::move(*created);

  CHECK(fs::exists(fixture.paths().ca_cert()));
  CHECK(fs::exists(fixture.paths().server_cert()));
  // DNS names sort before IP addresses.
  CHECK(fixture.manager->server_certificate().sans ==
        std::vector<std::string>{"localhost", "127.0.0.1"});
  CHECK(fixture.manager->context(ClientAuth::None) == nullptr);

  SSL_CTX *context = fixture.context();
  REQUIRE(context != nullptr);
  auto client = fixture.client_context();
  LoopbackConnection connection(context, client.get());
  REQUIRE(connection.handshake());
  CHECK(connection.server_serial() ==
        fixture.manager->server_certificate().serial);
}

TEST_CASE("manager keeps contexts while certificate fresh", "[tls][manager]") {
  Fixture fixture;
  auto created = fixture.try_create();
  REQUIRE(created);
  fixture.manager = std::move(*created);
  SSL_CTX *context = fixture.context();
  std::string serial = fixture.manager->server_certificate().serial;

  auto checked = fixture.manager->check(fixture.now + minutes(10));
  REQUIRE(checked);
  CHECK_FALSE(*checked);
  CHECK(fixture.context() == context);
  CHECK(fixture.manager->server_certificate().serial == serial);
}

TEST_CASE("manager renewal keeps open connections", "[tls][manager]") {
  Fixture fixture;
  fixture.create_due();
  SSL_CTX *old_context = fixture.context();
  std::string old_serial = fixture.manager->server_certificate().serial;
  auto client = fixture.client_context();
  LoopbackConnection before(old_context, client.get());
  REQUIRE(before.handshake());
  REQUIRE(before.round_trip("before renewal"));
  CHECK(before.server_serial() == old_serial);

  auto checked = fixture.manager->check(fixture.now);
  REQUIRE(checked);
  CHECK(*checked);

  SSL_CTX *new_context = fixture.context();
  CHECK(new_context != old_context);
  CHECK(fixture.manager->server_certificate().serial != old_serial);
  // The connection holds a reference to the old context.
  CHECK(before.round_trip("after renewal"));

  LoopbackConnection after(new_context, client.get());
  REQUIRE(after.handshake());
  CHECK(after.server_serial() == fixture.manager->server_certificate().serial);
  CHECK(after.server_serial() != old_serial);
  CHECK(after.round_trip("new connection"));
}

TEST_CASE("manager renewal keeps sessions resumable", "[tls][manager]") {
  Fixture fixture;
  fixture.create_due();
  auto client = fixture.client_context();
  LoopbackConnection before(fixture.context(), client.get());
  REQUIRE(before.handshake());
  // TLS 1.3 tickets arrive after the handshake, with the first read.
  REQUIRE(before.round_trip("ticket"));
  SSL_SESSION *session = SSL_get1_session(before.client_ssl());
  REQUIRE(session != nullptr);
  SSL_shutdown(before.client_ssl());

  auto checked = fixture.manager->check(fixture.now);
  REQUIRE(checked);
  REQUIRE(*checked);

  LoopbackConnection after(fixture.context(), client.get(),
                           [session](SSL *ssl) {
                             REQUIRE(set_client_host(ssl, "localhost"));
                             REQUIRE(SSL_set_session(ssl, session) == 1);
                           });
  bool handshake = after.handshake();
  SSL_SESSION_free(session);
  REQUIRE(handshake);
  CHECK(SSL_session_reused(after.server_ssl()) == 1);
}

TEST_CASE("manager swaps every client auth mode", "[tls][manager]") {
  Fixture fixture;
  fixture.create_due({ClientAuth::None, ClientAuth::Required});
  SSL_CTX *none = fixture.context(ClientAuth::None);
  SSL_CTX *required = fixture.context(ClientAuth::Required);
  REQUIRE(none != required);
  CHECK((SSL_CTX_get_verify_mode(required) & SSL_VERIFY_FAIL_IF_NO_PEER_CERT) !=
        0);
  CHECK(SSL_CTX_get_verify_mode(none) == SSL_VERIFY_NONE);

  auto checked = fixture.manager->check(fixture.now);
  REQUIRE(checked);
  REQUIRE(*checked);
  CHECK(fixture.manager->context(ClientAuth::None) != none);
  CHECK(fixture.manager->context(ClientAuth::Required) != required);
  CHECK(fixture.manager->context(ClientAuth::Optional) == nullptr);
}

TEST_CASE("manager renews in background", "[tls][manager]") {
  Fixture fixture;
  fixture.create_due();
  SSL_CTX *old_context = fixture.context();

  std::vector<bool> results;
  fixture.manager->check_in_background(
      [&](bool swapped) { results.push_back(swapped); });
  // Requested while the first runs, so it runs after it and finds nothing
  // to change.
  fixture.manager->check_in_background(
      [&](bool swapped) { results.push_back(swapped); });
  fixture.run_loop();

  CHECK(results == std::vector<bool>{true, false});
  CHECK(fixture.context() != old_context);
}

TEST_CASE("manager reload reissues for new names", "[tls][manager]") {
  Fixture fixture;
  auto created = fixture.try_create();
  REQUIRE(created);
  fixture.manager = std::move(*created);
  SSL_CTX *old_context = fixture.context();

  ServerCertificateSettings settings = fixture.settings;
  settings.names = {"mirror.example.lan", "localhost"};
  fixture.manager->reload(settings);
  fixture.run_loop();

  CHECK(fixture.context() != old_context);
  CHECK(fixture.manager->server_certificate().sans ==
        std::vector<std::string>{"localhost", "mirror.example.lan"});
  auto client = fixture.client_context();
  LoopbackConnection connection(fixture.context(), client.get(), [](SSL *ssl) {
    REQUIRE(set_client_host(ssl, "mirror.example.lan"));
  });
  CHECK(connection.handshake());
}

TEST_CASE("manager keeps serving after failed check", "[tls][manager]") {
  Fixture fixture;
  fixture.create_due();
  SSL_CTX *context = fixture.context();
  REQUIRE(::chmod(fixture.paths().server_key().c_str(), 0644) == 0);

  auto checked = fixture.manager->check(fixture.now);
  REQUIRE_FALSE(checked);
  CHECK_THAT(
      checked.error().message,
      Catch::Contains("chmod 600 " + fixture.paths().server_key().string()));
  CHECK(fixture.context() == context);

  std::vector<bool> results;
  fixture.manager->check_in_background(
      [&](bool swapped) { results.push_back(swapped); });
  fixture.run_loop();
  CHECK(results == std::vector<bool>{false});
  CHECK(fixture.context() == context);
}

TEST_CASE("manager rejects readable private keys", "[tls][manager]") {
  Fixture fixture;
  {
    auto created = fixture.try_create();
    REQUIRE(created);
  }
  TlsPaths paths = fixture.paths();
  auto key = generate_key();
  REQUIRE(key);
  REQUIRE(
      write_private_key(paths.ca_next_key(), key->get(), ExistingFile::Keep));

  for (const fs::path &path :
       {paths.ca_key(), paths.ca_next_key(), paths.server_key()}) {
    INFO("key " << path);
    REQUIRE(::chmod(path.c_str(), 0640) == 0);
    auto created = fixture.try_create();
    REQUIRE_FALSE(created);
    CHECK(created.error().code == ErrorCode::Invalid);
    CHECK_THAT(created.error().message,
               Catch::Contains("chmod 600 " + path.string()));
    REQUIRE(::chmod(path.c_str(), 0600) == 0);
  }
}

TEST_CASE("manager rejects key of other owner", "[tls][manager]") {
  if (::geteuid() != 0) {
    WARN("only root can give a file to another user; skipped");
    return;
  }
  Fixture fixture;
  {
    auto created = fixture.try_create();
    REQUIRE(created);
  }
  fs::path key = fixture.paths().server_key();
  REQUIRE(::chown(key.c_str(), 65534, 65534) == 0);

  auto created = fixture.try_create();
  REQUIRE_FALSE(created);
  CHECK(created.error().code == ErrorCode::Invalid);
  CHECK_THAT(created.error().message, Catch::Contains("chown "));
  CHECK_THAT(created.error().message, Catch::Contains(key.string()));
}

TEST_CASE("manager rejects interrupted rotation switch", "[tls][manager]") {
  Fixture fixture;
  {
    auto created = fixture.try_create();
    REQUIRE(created);
  }
  TlsPaths paths = fixture.paths();
  auto ca = read_certificate(paths.ca_cert());
  REQUIRE(ca);
  REQUIRE(
      write_certificate(paths.ca_next_cert(), ca->get(), ExistingFile::Keep));
  REQUIRE(write_certificate(paths.ca_previous_cert(), ca->get(),
                            ExistingFile::Keep));

  auto created = fixture.try_create();
  REQUIRE_FALSE(created);
  CHECK(created.error().code == ErrorCode::Invalid);
  CHECK_THAT(created.error().message,
             Catch::Contains("gatecache ca rotate switch"));
}

TEST_CASE("check interval follows lifetime", "[tls][manager]") {
  CHECK(check_interval(hours(24 * 90)) == hours(1));
  CHECK(check_interval(hours(5)) == minutes(30));
  CHECK(check_interval(seconds(100)) == seconds(10));
  CHECK(check_interval(seconds(5)) == seconds(1));
}

} // namespace gatecache::tls
