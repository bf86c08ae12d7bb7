#include "tls/issuer.h"

#include <chrono>
#include <string>

#include <catch2/catch.hpp>

namespace gatecache::tls {
namespace {

using Clock = std::chrono::system_clock;
using std::chrono::hours;

CertificateRequest request_for(CertificateProfile profile,
                               std::string common_name) {
  CertificateRequest request;
  request.profile = profile;
  request.common_name = std::move(common_name);
  request.not_before = Clock::now() - hours(1);
  request.not_after = Clock::now() + hours(24);
  return request;
}

} // namespace

TEST_CASE("subject alt name parses addresses", "[tls][issuer]") {
  auto v4 = parse_subject_alt_name("192.0.2.1");
  REQUIRE(v4);
  CHECK(v4->kind == SubjectAltName::Kind::Ip);
  CHECK(v4->value == std::string("\xc0\x00\x02\x01", 4));
  CHECK(to_string(*v4) == "192.0.2.1");

  auto v6 = parse_subject_alt_name("2001:DB8:0:0::1");
  REQUIRE(v6);
  CHECK(v6->kind == SubjectAltName::Kind::Ip);
  CHECK(v6->value.size() == 16);
  CHECK(to_string(*v6) == "2001:db8::1");
}

TEST_CASE("subject alt name normalizes dns names", "[tls][issuer]") {
  auto name = parse_subject_alt_name("Mirror-1.Example.LAN.");
  REQUIRE(name);
  CHECK(name->kind == SubjectAltName::Kind::Dns);
  CHECK(name->value == "mirror-1.example.lan");

  auto longest_label = parse_subject_alt_name(std::string(63, 'a') + ".lan");
  CHECK(longest_label);
}

TEST_CASE("subject alt name rejects malformed names", "[tls][issuer]") {
  const char *invalid[] = {"",       ".",        "a..b",        ".lan",
                           "-a.lan", "a-.lan",   "a_b.lan",     "*.lan",
                           "a b",    "host:443", "[::1]",       "1.2.3.256",
                           "10.1",   "a.lan..",  "192.0.2.1/24"};
  for (const char *name : invalid) {
    INFO("name: " << name);
    auto parsed = parse_subject_alt_name(name);
    REQUIRE_FALSE(parsed);
    CHECK(parsed.error().code == ErrorCode::Invalid);
  }
  CHECK_FALSE(parse_subject_alt_name(std::string(64, 'a') + ".lan"));
  CHECK_FALSE(parse_subject_alt_name(std::string("a\0b", 3)));

  std::string too_long;
  while (too_long.size() < 254) {
    too_long += "abcdefghi.";
  }
  too_long += "lan";
  CHECK_FALSE(parse_subject_alt_name(too_long));
}

TEST_CASE("issue certificate builds client profile", "[tls][issuer]") {
  auto ca_key = generate_key();
  REQUIRE(ca_key);
  auto ca = issue_certificate(
      request_for(CertificateProfile::RootCa, "gatecache CA test"),
      ca_key->get(), Signer{nullptr, ca_key->get()});
  REQUIRE(ca);
  auto node_key = generate_key();
  REQUIRE(node_key);

  auto request = request_for(CertificateProfile::Client, "node-1");
  auto client = issue_certificate(request, node_key->get(),
                                  Signer{ca->get(), ca_key->get()});
  REQUIRE(client);
  CHECK(X509_get_extended_key_usage(client->get()) == XKU_SSL_CLIENT);
  CHECK(X509_check_issued(ca->get(), client->get()) == X509_V_OK);
  CHECK(X509_verify(client->get(), ca_key->get()) == 1);
}

TEST_CASE("issue certificate rejects bad requests", "[tls][issuer]") {
  auto key = generate_key();
  auto other_key = generate_key();
  REQUIRE(key);
  REQUIRE(other_key);

  auto request = request_for(CertificateProfile::RootCa, "gatecache CA test");
  SECTION("self-signed by another key") {
    CHECK_FALSE(issue_certificate(request, key->get(),
                                  Signer{nullptr, other_key->get()}));
  }
  SECTION("validity ends before it starts") {
    std::swap(request.not_before, request.not_after);
    CHECK_FALSE(
        issue_certificate(request, key->get(), Signer{nullptr, key->get()}));
  }
  SECTION("common name too long") {
    request.common_name = std::string(65, 'a');
    CHECK_FALSE(
        issue_certificate(request, key->get(), Signer{nullptr, key->get()}));
  }
  SECTION("no name at all") {
    request.common_name.clear();
    CHECK_FALSE(
        issue_certificate(request, key->get(), Signer{nullptr, key->get()}));
  }
}

TEST_CASE("issue certificate uses random serials", "[tls][issuer]") {
  auto key = generate_key();
  REQUIRE(key);
  auto request = request_for(CertificateProfile::RootCa, "gatecache CA test");

  auto first =
      issue_certificate(request, key->get(), Signer{nullptr, key->get()});
  auto second =
      issue_certificate(request, key->get(), Signer{nullptr, key->get()});
  REQUIRE(first);
  REQUIRE(second);
  CHECK(ASN1_INTEGER_cmp(X509_get0_serialNumber(first->get()),
                         X509_get0_serialNumber(second->get())) != 0);
}

} // namespace gatecache::tls
