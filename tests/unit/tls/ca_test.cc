#include "tls/ca.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "tests/unit/tls/support.h"
#include "tls/issuer.h"
#include "tls/openssl_ptr.h"
#include "tls/pem_file.h"

namespace gatecache::tls {
namespace {

namespace fs = std::filesystem;
using std::chrono::hours;
using testing::mode_of;
using testing::read_file;
using testing::TempDir;
using Clock = std::chrono::system_clock;

constexpr hours Day(24);

const std::vector<std::string> ServerNames = {"gatecache.lan", "localhost",
                                              "192.0.2.10", "2001:db8::1"};

TlsPaths make_paths(const TempDir &temp) {
  return TlsPaths{temp.path() / "tls"};
}

X509Ptr load(const fs::path &path) {
  auto certificate = read_certificate(path);
  return certificate ? std::move(*certificate) : X509Ptr();
}

bool extension_is_critical(X509 *certificate, int nid) {
  int index = X509_get_ext_by_NID(certificate, nid, -1);
  return index >= 0 &&
         X509_EXTENSION_get_critical(X509_get_ext(certificate, index)) == 1;
}

// Verifies `leaf` against `ca_file` alone for TLS server use by `host`.
int verify_server(const fs::path &leaf, const fs::path &ca_file,
                  const std::string &host) {
  X509Ptr certificate = load(leaf);
  X509StorePtr store(X509_STORE_new());
  X509StoreCtxPtr context(X509_STORE_CTX_new());
  if (!certificate || !store || !context ||
      X509_STORE_load_file(store.get(), ca_file.c_str()) != 1 ||
      X509_STORE_CTX_init(context.get(), store.get(), certificate.get(),
                          nullptr) != 1) {
    return -1;
  }
  X509_STORE_CTX_set_purpose(context.get(), X509_PURPOSE_SSL_SERVER);
  X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(context.get());
  X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size());
  if (X509_verify_cert(context.get()) != 1) {
    return X509_STORE_CTX_get_error(context.get());
  }
  return X509_V_OK;
}

std::vector<std::string> sorted(std::vector<std::string> values) {
  std::sort(values.begin(), values.end());
  return values;
}

void replace_key(const fs::path &path) {
  auto key = generate_key();
  REQUIRE(key);
  REQUIRE(write_private_key(path, key->get(), ExistingFile::Replace));
}

} // namespace

TEST_CASE("ensure ca creates key and certificate", "[tls][ca]") {
  TempDir temp;
  TlsPaths paths = make_paths(temp);

  auto created = ensure_ca(paths);
  REQUIRE(created);
  CHECK(*created);
  CHECK(mode_of(paths.ca_key()) == 0600);
  CHECK(mode_of(paths.ca_cert()) == 0644);

  auto info = read_certificate_info(paths.ca_cert());
  REQUIRE(info);
  CHECK(info->is_ca);
  CHECK(info->subject.rfind("CN=gatecache CA ", 0) == 0);
  CHECK(info->issuer == info->subject);
  CHECK(info->sans.empty());
  CHECK(info->not_after - info->not_before >= Day * 3650);
  CHECK(info->serial.size() >= 30);
  CHECK(info->sha256_fingerprint.size() == 32 * 3 - 1);
}

TEST_CASE("ensure ca sets ca extensions", "[tls][ca]") {
  TempDir temp;
  TlsPaths paths = make_paths(temp);
  REQUIRE(ensure_ca(paths));

  X509Ptr certificate = load(paths.ca_cert());
  REQUIRE(certificate);
  CHECK(X509_check_ca(certificate.get()) == 1);
  CHECK(X509_get_pathlen(certificate.get()) == 0);
  CHECK(extension_is_critical(certificate.get(), NID_basic_constraints));
  CHECK(extension_is_critical(certificate.get(), NID_key_usage));
  CHECK(X509_get_key_usage(certificate.get()) ==
        (KU_KEY_CERT_SIGN | KU_CRL_SIGN));
  CHECK(X509_get0_subject_key_id(certificate.get()) != nullptr);
  CHECK(EVP_PKEY_get_bits(X509_get0_pubkey(certificate.get())) == 256);
  CHECK(X509_self_signed(certificate.get(), 1) == 1);
}

TEST_CASE("ensure ca keeps existing ca", "[tls][ca]") {
  TempDir temp;
  TlsPaths paths = make_paths(temp);
  REQUIRE(ensure_ca(paths));
  std::string key = read_file(paths.ca_key());
  std::string certificate = read_file(paths.ca_cert());

  auto created = ensure_ca(paths);
  REQUIRE(created);
  CHECK_FALSE(*created);
  CHECK(read_file(paths.ca_key()) == key);
  CHECK(read_file(paths.ca_cert()) == certificate);
}

TEST_CASE("ensure ca rejects half-present ca", "[tls][ca]") {
  TempDir temp;
  TlsPaths paths = make_paths(temp);
  REQUIRE(ensure_ca(paths));

  SECTION("key without certificate") {
    std::string key = read_file(paths.ca_key());
    fs::remove(paths.ca_cert());

    auto created = ensure_ca(paths);
    REQUIRE_FALSE(created);
    CHECK(created.error().code == ErrorCode::Invalid);
    CHECK_THAT(created.error().message, Catch::Contains("ca.crt is missing"));
    CHECK(read_file(paths.ca_key()) == key);
    CHECK_FALSE(fs::exists(paths.ca_cert()));
  }
  SECTION("certificate without key") {
    std::string certificate = read_file(paths.ca_cert());
    fs::remove(paths.ca_key());

    auto created = ensure_ca(paths);
    REQUIRE_FALSE(created);
    CHECK(created.error().code == ErrorCode::Invalid);
    CHECK_THAT(created.error().message, Catch::Contains("ca.key is missing"));
    CHECK(read_file(paths.ca_cert()) == certificate);
    CHECK_FALSE(fs::exists(paths.ca_key()));
  }
}

TEST_CASE("ensure ca rejects mismatched key", "[tls][ca]") {
  TempDir temp;
  TlsPaths paths = make_paths(temp);
  REQUIRE(ensure_ca(paths));
  replace_key(paths.ca_key());

  auto created = ensure_ca(paths);
  REQUIRE_FALSE(created);
  CHECK(created.error().code == ErrorCode::Invalid);
  CHECK_THAT(created.error().message, Catch::Contains("does not match"));
}

TEST_CASE("ensure ca rejects group-readable key", "[tls][ca]") {
  TempDir temp;
  TlsPaths paths = make_paths(temp);
  REQUIRE(ensure_ca(paths));
  REQUIRE(::chmod(paths.ca_key().c_str(), 0640) == 0);

  auto created = ensure_ca(paths);
  REQUIRE_FALSE(created);
  CHECK(created.error().code == ErrorCode::Invalid);
  CHECK_THAT(created.error().message,
             Catch::Contains("chmod 600 " + paths.ca_key().string()));
}

TEST_CASE("key permissions reject others access", "[tls][ca]") {
  TempDir temp;
  fs::path key = temp.path() / "some.key";
  replace_key(key);

  CHECK(check_key_permissions(key));
  for (mode_t mode : {0640, 0604, 0620, 0602, 0610, 0644}) {
    REQUIRE(::chmod(key.c_str(), mode) == 0);
    auto checked = check_key_permissions(key);
    REQUIRE_FALSE(checked);
    CHECK(checked.error().code == ErrorCode::Invalid);
    CHECK_THAT(checked.error().message,
               Catch::Contains("chmod 600 " + key.string()));
  }
  REQUIRE(::chmod(key.c_str(), 0400) == 0);
  CHECK(check_key_permissions(key));
}

TEST_CASE("key permissions report missing file", "[tls][ca]") {
  TempDir temp;
  auto checked = check_key_permissions(temp.path() / "absent.key");
  REQUIRE_FALSE(checked);
  CHECK(checked.error().code == ErrorCode::NotFound);
}

TEST_CASE("server certificate carries requested names", "[tls][ca]") {
  TempDir temp;
  TlsPaths paths = make_paths(temp);
  REQUIRE(ensure_ca(paths));

  auto issued = ensure_server_certificate(paths, ServerNames);
  REQUIRE(issued);
  CHECK(*issued);
  CHECK(mode_of(paths.server_key()) == 0600);

  auto info = read_certificate_info(paths.server_cert());
  REQUIRE(info);
  auto ca_info = read_certificate_info(paths.ca_cert());
  REQUIRE(ca_info);
  CHECK(sorted(info->sans) == sorted(ServerNames));
  CHECK(info->subject == "CN=gatecache.lan");
  CHECK(info->issuer == ca_info->subject);
  CHECK_FALSE(info->is_ca);
}

TEST_CASE("server certificate sets leaf extensions", "[tls][ca]") {
  TempDir temp;
  TlsPaths paths = make_paths(temp);
  REQUIRE(ensure_ca(paths));
  REQUIRE(ensure_server_certificate(paths, ServerNames));

  X509Ptr certificate = load(paths.server_cert());
  X509Ptr ca = load(paths.ca_cert());
  REQUIRE(certificate);
  REQUIRE(ca);
  CHECK(X509_check_ca(certificate.get()) == 0);
  CHECK(X509_get_key_usage(certificate.get()) == KU_DIGITAL_SIGNATURE);
  CHECK(extension_is_critical(certificate.get(), NID_key_usage));
  CHECK(X509_get_extended_key_usage(certificate.get()) == XKU_SSL_SERVER);
  CHECK_FALSE(extension_is_critical(certificate.get(), NID_subject_alt_name));
  const ASN1_OCTET_STRING *authority_key_id =
      X509_get0_authority_key_id(certificate.get());
  REQUIRE(authority_key_id != nullptr);
  CHECK(ASN1_OCTET_STRING_cmp(authority_key_id,
                              X509_get0_subject_key_id(ca.get())) == 0);
  CHECK(read_file(paths.server_cert()).find("BEGIN CERTIFICATE") ==
        read_file(paths.server_cert()).rfind("BEGIN CERTIFICATE"));
}

TEST_CASE("server certificate verifies against ca", "[tls][ca]") {
  TempDir temp;
  TlsPaths paths = make_paths(temp);
  REQUIRE(ensure_ca(paths));
  REQUIRE(ensure_server_certificate(paths, ServerNames));

  CHECK(verify_server(paths.server_cert(), paths.ca_cert(), "gatecache.lan") ==
        X509_V_OK);
  CHECK(verify_server(paths.server_cert(), paths.ca_cert(), "LOCALHOST") ==
        X509_V_OK);
  CHECK(verify_server(paths.server_cert(), paths.ca_cert(), "other.lan") ==
        X509_V_ERR_HOSTNAME_MISMATCH);

  X509Ptr certificate = load(paths.server_cert());
  REQUIRE(certificate);
  CHECK(X509_check_ip_asc(certificate.get(), "192.0.2.10", 0) == 1);
  CHECK(X509_check_ip_asc(certificate.get(), "2001:db8:0::1", 0) == 1);
  CHECK(X509_check_ip_asc(certificate.get(), "192.0.2.11", 0) == 0);
}

TEST_CASE("server certificate kept when unchanged", "[tls][ca]") {
  TempDir temp;
  TlsPaths paths = make_paths(temp);
  REQUIRE(ensure_ca(paths));
  REQUIRE(ensure_server_certificate(paths, ServerNames));
  std::string key = read_file(paths.server_key());
  std::string certificate = read_file(paths.server_cert());

  SECTION("same names") {
    auto issued = ensure_server_certificate(paths, ServerNames);
    REQUIRE(issued);
    CHECK_FALSE(*issued);
  }
  SECTION("same names in another order and case") {
    auto issued = ensure_server_certificate(
        paths, {"gatecache.lan", "2001:DB8:0::1", "192.0.2.10", "LocalHost.",
                "localhost"});
    REQUIRE(issued);
    CHECK_FALSE(*issued);
  }
  CHECK(read_file(paths.server_key()) == key);
  CHECK(read_file(paths.server_cert()) == certificate);
}

TEST_CASE("server certificate reissued when names change", "[tls][ca]") {
  TempDir temp;
  TlsPaths paths = make_paths(temp);
  REQUIRE(ensure_ca(paths));
  REQUIRE(ensure_server_certificate(paths, ServerNames));
  std::string key = read_file(paths.server_key());

  std::vector<std::string> names;
  SECTION("a name added") {
    names = ServerNames;
    names.push_back("mirror.lan");
  }
  SECTION("a name removed") { names = {"gatecache.lan", "192.0.2.10"}; }
  SECTION("another first name") {
    names = {"localhost", "gatecache.lan", "192.0.2.10", "2001:db8::1"};
  }

  auto issued = ensure_server_certificate(paths, names);
  REQUIRE(issued);
  CHECK(*issued);
  CHECK(read_file(paths.server_key()) != key);
  auto info = read_certificate_info(paths.server_cert());
  REQUIRE(info);
  CHECK(sorted(info->sans) == sorted(names));
  CHECK(info->subject == "CN=" + names.front());
}

TEST_CASE("server certificate renewed near expiry", "[tls][ca]") {
  TempDir temp;
  TlsPaths paths = make_paths(temp);
  Clock::time_point start = Clock::now();
  REQUIRE(ensure_ca(paths, start));
  REQUIRE(
      ensure_server_certificate(paths, ServerNames, Day * 90, 1.0 / 3, start));

  auto early = ensure_server_certificate(paths, ServerNames, Day * 90, 1.0 / 3,
                                         start + Day * 59);
  REQUIRE(early);
  CHECK_FALSE(*early);

  auto late = ensure_server_certificate(paths, ServerNames, Day * 90, 1.0 / 3,
                                        start + Day * 61);
  REQUIRE(late);
  CHECK(*late);
  auto info = read_certificate_info(paths.server_cert());
  REQUIRE(info);
  CHECK(info->not_after > start + Day * 150);
}

TEST_CASE("server certificate short lifetime not due", "[tls][ca]") {
  TempDir temp;
  TlsPaths paths = make_paths(temp);
  Clock::time_point start = Clock::now();
  REQUIRE(ensure_ca(paths, start));
  constexpr std::chrono::seconds Lifetime(60);
  REQUIRE(ensure_server_certificate(paths, ServerNames, Lifetime, 0.5, start));

  // The hour of clock skew allowance before the issue does not count.
  auto early = ensure_server_certificate(paths, ServerNames, Lifetime, 0.5,
                                         start + std::chrono::seconds(20));
  REQUIRE(early);
  CHECK_FALSE(*early);
  auto late = ensure_server_certificate(paths, ServerNames, Lifetime, 0.5,
                                        start + std::chrono::seconds(40));
  REQUIRE(late);
  CHECK(*late);
}

TEST_CASE("server certificate reissued on request", "[tls][ca]") {
  TempDir temp;
  TlsPaths paths = make_paths(temp);
  Clock::time_point start = Clock::now();
  REQUIRE(ensure_ca(paths, start));
  REQUIRE(
      ensure_server_certificate(paths, ServerNames, Day * 90, 1.0 / 3, start));
  std::string first = read_file(paths.server_cert());

  auto forced =
      ensure_server_certificate(paths, ServerNames, Day * 90, 1.0, start);
  REQUIRE(forced);
  CHECK(*forced);
  CHECK(read_file(paths.server_cert()) != first);
}

TEST_CASE("server certificate reissued when expired", "[tls][ca]") {
  TempDir temp;
  TlsPaths paths = make_paths(temp);
  Clock::time_point start = Clock::now();
  REQUIRE(ensure_ca(paths, start));
  REQUIRE(ensure_server_certificate(paths, ServerNames, Day * 90, 0.0, start));

  auto kept = ensure_server_certificate(paths, ServerNames, Day * 90, 0.0,
                                        start + Day * 89);
  REQUIRE(kept);
  CHECK_FALSE(*kept);
  auto issued = ensure_server_certificate(paths, ServerNames, Day * 90, 0.0,
                                          start + Day * 91);
  REQUIRE(issued);
  CHECK(*issued);
}

TEST_CASE("server certificate reissued after ca change", "[tls][ca]") {
  TempDir temp;
  TlsPaths paths = make_paths(temp);
  REQUIRE(ensure_ca(paths));
  REQUIRE(ensure_server_certificate(paths, ServerNames));
  fs::remove(paths.ca_key());
  fs::remove(paths.ca_cert());
  REQUIRE(ensure_ca(paths));

  auto issued = ensure_server_certificate(paths, ServerNames);
  REQUIRE(issued);
  CHECK(*issued);
  CHECK(verify_server(paths.server_cert(), paths.ca_cert(), "localhost") ==
        X509_V_OK);
}

TEST_CASE("server certificate repairs broken pair", "[tls][ca]") {
  TempDir temp;
  TlsPaths paths = make_paths(temp);
  REQUIRE(ensure_ca(paths));
  REQUIRE(ensure_server_certificate(paths, ServerNames));

  SECTION("key does not match") { replace_key(paths.server_key()); }
  SECTION("certificate missing") { fs::remove(paths.server_cert()); }
  SECTION("key missing") { fs::remove(paths.server_key()); }
  SECTION("certificate garbled") {
    REQUIRE(write_file_atomic(paths.server_cert(), "not a certificate", 0644,
                              ExistingFile::Replace));
  }

  auto issued = ensure_server_certificate(paths, ServerNames);
  REQUIRE(issued);
  CHECK(*issued);
  CHECK(verify_server(paths.server_cert(), paths.ca_cert(), "localhost") ==
        X509_V_OK);
  auto again = ensure_server_certificate(paths, ServerNames);
  REQUIRE(again);
  CHECK_FALSE(*again);
}

TEST_CASE("server certificate rejects group-readable key", "[tls][ca]") {
  TempDir temp;
  TlsPaths paths = make_paths(temp);
  REQUIRE(ensure_ca(paths));
  REQUIRE(ensure_server_certificate(paths, ServerNames));
  REQUIRE(::chmod(paths.server_key().c_str(), 0640) == 0);

  auto issued = ensure_server_certificate(paths, ServerNames);
  REQUIRE_FALSE(issued);
  CHECK(issued.error().code == ErrorCode::Invalid);
  CHECK_THAT(issued.error().message,
             Catch::Contains("chmod 600 " + paths.server_key().string()));
}

TEST_CASE("server certificate requires existing ca", "[tls][ca]") {
  TempDir temp;
  TlsPaths paths = make_paths(temp);

  auto issued = ensure_server_certificate(paths, ServerNames);
  REQUIRE_FALSE(issued);
  CHECK(issued.error().code == ErrorCode::NotFound);
}

TEST_CASE("server certificate rejects invalid arguments", "[tls][ca]") {
  TempDir temp;
  TlsPaths paths = make_paths(temp);
  REQUIRE(ensure_ca(paths));

  auto check_invalid = [&](const Result<bool> &issued) {
    REQUIRE_FALSE(issued);
    CHECK(issued.error().code == ErrorCode::Invalid);
  };
  check_invalid(ensure_server_certificate(paths, {}));
  check_invalid(ensure_server_certificate(paths, {"localhost", "bad name"}));
  check_invalid(ensure_server_certificate(paths, {"10.0.0.256"}));
  check_invalid(ensure_server_certificate(paths, {"localhost"}, Day * 0));
  check_invalid(ensure_server_certificate(paths, {"localhost"}, Day, 1.5));
  CHECK_FALSE(fs::exists(paths.server_cert()));
}

TEST_CASE("server certificate ends with ca", "[tls][ca]") {
  TempDir temp;
  TlsPaths paths = make_paths(temp);
  Clock::time_point now = Clock::now();
  REQUIRE(ensure_ca(paths, now - CaLifetime + Day * 10));

  REQUIRE(
      ensure_server_certificate(paths, ServerNames, Day * 90, 1.0 / 3, now));
  auto info = read_certificate_info(paths.server_cert());
  auto ca_info = read_certificate_info(paths.ca_cert());
  REQUIRE(info);
  REQUIRE(ca_info);
  CHECK(info->not_after == ca_info->not_after);
}

TEST_CASE("server certificate rejects expired ca", "[tls][ca]") {
  TempDir temp;
  TlsPaths paths = make_paths(temp);
  Clock::time_point now = Clock::now();
  REQUIRE(ensure_ca(paths, now - CaLifetime - Day));

  auto issued =
      ensure_server_certificate(paths, ServerNames, Day * 90, 1.0 / 3, now);
  REQUIRE_FALSE(issued);
  CHECK(issued.error().code == ErrorCode::Invalid);
  CHECK_THAT(issued.error().message, Catch::Contains("expired"));
}

TEST_CASE("server certificate omits long common name", "[tls][ca]") {
  TempDir temp;
  TlsPaths paths = make_paths(temp);
  REQUIRE(ensure_ca(paths));
  std::string long_name = std::string(60, 'a') + ".gatecache.lan";

  REQUIRE(ensure_server_certificate(paths, {long_name, "localhost"}));
  auto info = read_certificate_info(paths.server_cert());
  REQUIRE(info);
  CHECK(info->subject.empty());
  X509Ptr certificate = load(paths.server_cert());
  REQUIRE(certificate);
  CHECK(extension_is_critical(certificate.get(), NID_subject_alt_name));
  auto again = ensure_server_certificate(paths, {long_name, "localhost"});
  REQUIRE(again);
  CHECK_FALSE(*again);
}

TEST_CASE("files written by root take directory owner", "[tls][ca]") {
  if (::geteuid() != 0) {
    WARN("only root can write files for another user; skipped");
    return;
  }
  TempDir temp;
  fs::path directory = temp.path() / "owned";
  fs::create_directories(directory);
  REQUIRE(::chown(directory.c_str(), 65534, 65534) == 0);

  REQUIRE(write_file_atomic(directory / "file.pem", "text", 0644,
                            ExistingFile::Keep));

  struct stat status {};

  REQUIRE(::stat((directory / "file.pem").c_str(), &status) == 0);
  CHECK(status.st_uid == 65534);
  CHECK(status.st_gid == 65534);
}

TEST_CASE("private key check lists every bad key", "[tls][ca]") {
  TempDir temp;
  TlsPaths paths = make_paths(temp);
  REQUIRE(ensure_ca(paths));
  REQUIRE(ensure_server_certificate(paths, ServerNames));
  CHECK(check_private_keys(paths));

  REQUIRE(::chmod(paths.ca_key().c_str(), 0640) == 0);
  REQUIRE(::chmod(paths.server_key().c_str(), 0604) == 0);
  auto checked = check_private_keys(paths);
  REQUIRE_FALSE(checked);
  CHECK(checked.error().code == ErrorCode::Invalid);
  CHECK_THAT(checked.error().message,
             Catch::Contains("chmod 600 " + paths.ca_key().string()));
  CHECK_THAT(checked.error().message,
             Catch::Contains("chmod 600 " + paths.server_key().string()));
}

TEST_CASE("root accepts keys of directory owner", "[tls][ca]") {
  if (::geteuid() != 0) {
    WARN("only root can give files to other users; skipped");
    return;
  }
  TempDir temp;
  fs::path directory = temp.path() / "daemon";
  fs::create_directories(directory);
  REQUIRE(::chown(directory.c_str(), 65534, 65534) == 0);
  fs::path key = directory / "server.key";
  replace_key(key);

  // Written by root into a directory of user 65534, so owned by 65534.
  CHECK(check_key_permissions(key));
  REQUIRE(::chown(key.c_str(), 65533, 65534) == 0);
  auto checked = check_key_permissions(key);
  REQUIRE_FALSE(checked);
  CHECK_THAT(checked.error().message, Catch::Contains("chown"));
}

} // namespace gatecache::tls
