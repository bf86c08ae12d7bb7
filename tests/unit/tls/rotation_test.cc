#include "tls/rotation.h"

#include <chrono>
#include <string>
#include <vector>

#include <ev.h>
#include <openssl/ssl.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "tests/unit/tls/loopback.h"
#include "tests/unit/tls/support.h"
#include "tls/ca.h"
#include "tls/certificate_manager.h"
#include "tls/client_certificate.h"
#include "tls/context.h"
#include "tls/pem_file.h"

namespace gatecache::tls {
namespace {

namespace fs = std::filesystem;
using testing::LoopbackConnection;
using testing::read_file;
using testing::TempDir;

const std::vector<std::string> ServerNames = {"localhost", "127.0.0.1"};
constexpr std::chrono::seconds Lifetime = std::chrono::hours(24 * 30);

using SslCtxHandle = std::unique_ptr<SSL_CTX, SslCtxDeleter>;

std::string fingerprint(const fs::path &path) {
  auto info = read_certificate_info(path);
  REQUIRE(info);
  return info->sha256_fingerprint;
}

std::vector<CaRole> roles(const TlsPaths &paths) {
  auto bundle = read_trust_bundle(paths);
  REQUIRE(bundle);
  std::vector<CaRole> found;
  for (const TrustedCa &ca : *bundle) {
    found.push_back(ca.role);
  }
  return found;
}

RotationPhase phase_of(const TlsPaths &paths) {
  auto phase = read_rotation_phase(paths);
  REQUIRE(phase);
  return *phase;
}

bool issued_by(const fs::path &leaf, const fs::path &ca) {
  auto certificate = read_certificate(leaf);
  auto authority = read_certificate(ca);
  REQUIRE(certificate);
  REQUIRE(authority);
  X509_STORE *store = X509_STORE_new();
  X509_STORE_CTX *context = X509_STORE_CTX_new();
  X509_STORE_add_cert(store, authority->get());
  X509_STORE_CTX_init(context, store, certificate->get(), nullptr);
  bool verified = X509_verify_cert(context) == 1;
  X509_STORE_CTX_free(context);
  X509_STORE_free(store);
  return verified;
}

// A TLS directory with a CA, a server certificate and the client
// certificate "old-client" issued before any rotation.
class Fixture {
public:
  Fixture() : paths_{temp_.path() / "tls"} {
    REQUIRE(ensure_ca(paths_));
    REQUIRE(ensure_server_certificate(paths_, ServerNames, Lifetime));
    REQUIRE(issue_client_certificate(paths_, "old-client",
                                     paths_.clients_dir() / "old-client"));
  }

  const TlsPaths &paths() const { return paths_; }

  fs::path old_client_dir() const {
    return paths_.clients_dir() / "old-client";
  }

  // Writes the trust bundle to a file and returns its path.
  fs::path export_bundle() const {
    auto bundle = read_trust_bundle(paths_);
    REQUIRE(bundle);
    auto pem = trust_bundle_pem(*bundle);
    REQUIRE(pem);
    fs::path path = temp_.path() / "bundle.crt";
    REQUIRE(write_file_atomic(path, *pem, 0644, ExistingFile::Replace));
    return path;
  }

  // Connects a client that trusts the exported bundle and presents the
  // certificate in `client_dir` to a context requiring client
  // certificates. Returns whether the server accepted it.
  bool server_accepts(const fs::path &client_dir) const {
    auto server = make_server_context(paths_, {ClientAuth::Required, nullptr});
    REQUIRE(server);
    SslCtxHandle client(testing::make_test_client_context(
        export_bundle(), client_dir / "client.crt", client_dir / "client.key"));
    LoopbackConnection connection(server->get(), client.get());
    bool done = connection.handshake();
    INFO("client verify " << SSL_get_verify_result(connection.client_ssl()));
    CHECK(connection.client.done);
    return done && connection.round_trip("hello");
  }

private:
  TempDir temp_;
  TlsPaths paths_;
};

} // namespace

TEST_CASE("rotation begin adds next ca to bundle", "[tls][rotation]") {
  Fixture fixture;
  const TlsPaths &paths = fixture.paths();
  CHECK(phase_of(paths) == RotationPhase::Idle);
  std::string current = fingerprint(paths.ca_cert());

  auto next = begin_rotation(paths);
  REQUIRE(next);
  CHECK(phase_of(paths) == RotationPhase::Begun);
  CHECK(next->is_ca);
  CHECK(next->sha256_fingerprint == fingerprint(paths.ca_next_cert()));
  auto current_info = read_certificate_info(paths.ca_cert());
  REQUIRE(current_info);
  CHECK(next->subject != current_info->subject);
  CHECK(fingerprint(paths.ca_cert()) == current);
  CHECK(testing::mode_of(paths.ca_next_key()) == 0600);

  CHECK(roles(paths) == std::vector<CaRole>{CaRole::Current, CaRole::Next});
  auto bundle = read_trust_bundle(paths);
  REQUIRE(bundle);
  auto pem = trust_bundle_pem(*bundle);
  REQUIRE(pem);
  CHECK(*pem == read_file(paths.ca_cert()) + read_file(paths.ca_next_cert()));
  // The server certificate stays with the current CA until the switch.
  CHECK(issued_by(paths.server_cert(), paths.ca_cert()));
  CHECK(fixture.server_accepts(fixture.old_client_dir()));
}

TEST_CASE("rotation switch issues server from next ca", "[tls][rotation]") {
  Fixture fixture;
  const TlsPaths &paths = fixture.paths();
  std::string old_ca = fingerprint(paths.ca_cert());
  REQUIRE(begin_rotation(paths));
  std::string next_ca = fingerprint(paths.ca_next_cert());
  std::string old_server = fingerprint(paths.server_cert());

  auto server = switch_rotation(paths, ServerNames, Lifetime);
  REQUIRE(server);
  CHECK(phase_of(paths) == RotationPhase::Switched);
  CHECK(fingerprint(paths.ca_cert()) == next_ca);
  CHECK(fingerprint(paths.ca_previous_cert()) == old_ca);
  CHECK_FALSE(fs::exists(paths.ca_next_cert()));
  CHECK_FALSE(fs::exists(paths.ca_next_key()));
  CHECK(ensure_ca(paths));
  CHECK(server->sha256_fingerprint == fingerprint(paths.server_cert()));
  CHECK(server->sha256_fingerprint != old_server);
  CHECK(issued_by(paths.server_cert(), paths.ca_cert()));
  CHECK_FALSE(issued_by(paths.server_cert(), paths.ca_previous_cert()));
  CHECK(roles(paths) == std::vector<CaRole>{CaRole::Current, CaRole::Previous});

  // Clients of both CAs are accepted until the finish.
  CHECK(fixture.server_accepts(fixture.old_client_dir()));
  fs::path new_client = paths.clients_dir() / "new-client";
  REQUIRE(issue_client_certificate(paths, "new-client", new_client));
  CHECK(fixture.server_accepts(new_client));
}

TEST_CASE("rotation finish drops previous ca", "[tls][rotation]") {
  Fixture fixture;
  const TlsPaths &paths = fixture.paths();
  REQUIRE(begin_rotation(paths));
  REQUIRE(switch_rotation(paths, ServerNames, Lifetime));
  fs::path new_client = paths.clients_dir() / "new-client";
  REQUIRE(issue_client_certificate(paths, "new-client", new_client));

  auto stale = finish_rotation(paths);
  REQUIRE(stale);
  CHECK(*stale ==
        std::vector<fs::path>{fixture.old_client_dir() / "client.crt"});
  CHECK(phase_of(paths) == RotationPhase::Idle);
  CHECK_FALSE(fs::exists(paths.ca_previous_cert()));
  CHECK_FALSE(fs::exists(paths.ca_previous_key()));
  CHECK(roles(paths) == std::vector<CaRole>{CaRole::Current});

  CHECK_FALSE(fixture.server_accepts(fixture.old_client_dir()));
  CHECK(fixture.server_accepts(new_client));
}

TEST_CASE("rotation steps reject wrong order", "[tls][rotation]") {
  Fixture fixture;
  const TlsPaths &paths = fixture.paths();
  auto check_rejected = [](const Error &error, const std::string &next) {
    CHECK(error.code == ErrorCode::Invalid);
    CHECK_THAT(error.message, Catch::Contains("`" + next + "`"));
  };

  SECTION("idle") {
    auto switched = switch_rotation(paths, ServerNames, Lifetime);
    REQUIRE_FALSE(switched);
    check_rejected(switched.error(), "gatecache ca rotate begin");
    auto finished = finish_rotation(paths);
    REQUIRE_FALSE(finished);
    check_rejected(finished.error(), "gatecache ca rotate begin");
  }
  SECTION("begun") {
    REQUIRE(begin_rotation(paths));
    auto begun = begin_rotation(paths);
    REQUIRE_FALSE(begun);
    check_rejected(begun.error(), "gatecache ca rotate switch");
    auto finished = finish_rotation(paths);
    REQUIRE_FALSE(finished);
    check_rejected(finished.error(), "gatecache ca rotate switch");
    CHECK(phase_of(paths) == RotationPhase::Begun);
  }
  SECTION("switched") {
    REQUIRE(begin_rotation(paths));
    REQUIRE(switch_rotation(paths, ServerNames, Lifetime));
    auto begun = begin_rotation(paths);
    REQUIRE_FALSE(begun);
    check_rejected(begun.error(), "gatecache ca rotate finish");
    auto switched = switch_rotation(paths, ServerNames, Lifetime);
    REQUIRE_FALSE(switched);
    check_rejected(switched.error(), "gatecache ca rotate finish");
    CHECK(phase_of(paths) == RotationPhase::Switched);
  }
}

TEST_CASE("rotation switch resumes after interruption", "[tls][rotation]") {
  Fixture fixture;
  const TlsPaths &paths = fixture.paths();
  std::string old_ca = fingerprint(paths.ca_cert());
  REQUIRE(begin_rotation(paths));
  std::string next_ca = fingerprint(paths.ca_next_cert());
  // A crash after the links and the first rename: ca.crt is new, ca.key
  // still old.
  REQUIRE(::link(paths.ca_key().c_str(), paths.ca_previous_key().c_str()) == 0);
  REQUIRE(::link(paths.ca_cert().c_str(), paths.ca_previous_cert().c_str()) ==
          0);
  REQUIRE(::rename(paths.ca_next_cert().c_str(), paths.ca_cert().c_str()) == 0);
  REQUIRE(phase_of(paths) == RotationPhase::Switching);

  auto begun = begin_rotation(paths);
  REQUIRE_FALSE(begun);
  CHECK_THAT(begun.error().message, Catch::Contains("rotate switch"));
  auto finished = finish_rotation(paths);
  REQUIRE_FALSE(finished);
  CHECK_THAT(finished.error().message, Catch::Contains("rotate switch"));

  REQUIRE(switch_rotation(paths, ServerNames, Lifetime));
  CHECK(phase_of(paths) == RotationPhase::Switched);
  CHECK(ensure_ca(paths));
  CHECK(fingerprint(paths.ca_cert()) == next_ca);
  CHECK(fingerprint(paths.ca_previous_cert()) == old_ca);
  CHECK(issued_by(paths.server_cert(), paths.ca_cert()));
}

TEST_CASE("rotation begin replaces unfinished next key", "[tls][rotation]") {
  Fixture fixture;
  const TlsPaths &paths = fixture.paths();
  auto key = read_private_key(paths.ca_key());
  REQUIRE(key);
  REQUIRE(
      write_private_key(paths.ca_next_key(), key->get(), ExistingFile::Keep));
  REQUIRE(phase_of(paths) == RotationPhase::Begun);

  REQUIRE(begin_rotation(paths));
  CHECK(phase_of(paths) == RotationPhase::Begun);
  CHECK(read_file(paths.ca_next_key()) != read_file(paths.ca_key()));
}

TEST_CASE("rotation switch rejects bad names first", "[tls][rotation]") {
  Fixture fixture;
  const TlsPaths &paths = fixture.paths();
  REQUIRE(begin_rotation(paths));

  auto switched = switch_rotation(paths, {"not a name"}, Lifetime);
  REQUIRE_FALSE(switched);
  CHECK(switched.error().code == ErrorCode::Invalid);
  CHECK(phase_of(paths) == RotationPhase::Begun);
}

TEST_CASE("rotation finish requires server of current ca", "[tls][rotation]") {
  Fixture fixture;
  const TlsPaths &paths = fixture.paths();
  std::string old_key = read_file(paths.server_key());
  std::string old_cert = read_file(paths.server_cert());
  REQUIRE(begin_rotation(paths));
  REQUIRE(switch_rotation(paths, ServerNames, Lifetime));
  REQUIRE(write_file_atomic(paths.server_key(), old_key, 0600,
                            ExistingFile::Replace));
  REQUIRE(write_file_atomic(paths.server_cert(), old_cert, 0644,
                            ExistingFile::Replace));

  auto finished = finish_rotation(paths);
  REQUIRE_FALSE(finished);
  CHECK(finished.error().code == ErrorCode::Invalid);
  CHECK_THAT(finished.error().message,
             Catch::Contains("gatecache ca issue-server"));
  CHECK(phase_of(paths) == RotationPhase::Switched);
}

TEST_CASE("manager follows rotation steps", "[tls][rotation]") {
  Fixture fixture;
  const TlsPaths &paths = fixture.paths();
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  ServerCertificateSettings settings{paths.dir, ServerNames, Lifetime, 1.0 / 3};
  auto created = CertificateManager::create(loop, settings);
  REQUIRE(created);
  auto manager = std::move(*created);
  REQUIRE(manager->provider(ClientAuth::Required));
  auto store_size = [&] {
    X509_STORE *store =
        SSL_CTX_get_cert_store(manager->context(ClientAuth::Required));
    STACK_OF(X509_OBJECT) *objects = X509_STORE_get0_objects(store);
    return sk_X509_OBJECT_num(objects);
  };
  CHECK(store_size() == 1);
  std::string first_serial = manager->server_certificate().serial;

  REQUIRE(begin_rotation(paths));
  auto checked = manager->check(std::chrono::system_clock::now());
  REQUIRE(checked);
  CHECK(*checked);
  CHECK(store_size() == 2);
  CHECK(manager->server_certificate().serial == first_serial);

  REQUIRE(switch_rotation(paths, ServerNames, Lifetime));
  checked = manager->check(std::chrono::system_clock::now());
  REQUIRE(checked);
  CHECK(*checked);
  CHECK(store_size() == 2);
  CHECK(manager->server_certificate().serial != first_serial);

  REQUIRE(finish_rotation(paths));
  checked = manager->check(std::chrono::system_clock::now());
  REQUIRE(checked);
  CHECK(*checked);
  CHECK(store_size() == 1);

  manager.reset();
  ev_loop_destroy(loop);
}

} // namespace gatecache::tls
