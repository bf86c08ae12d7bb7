// Key generation and certificate issuing for the internal CA.
//
// `issue_certificate` builds every certificate gatecache makes: the root CA,
// the server certificate and, later, client certificates for mutual TLS.
// Renewal, CA rotation and client issuing call it with another request.
#pragma once

#include <chrono>
#include <compare>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "tls/openssl_ptr.h"

namespace gatecache::tls {

// One subjectAltName entry.
struct SubjectAltName {
  // `Other` stands for any other type (URI, email), read from a
  // certificate only.
  enum class Kind { Dns, Ip, Other };

  Kind kind = Kind::Dns;
  // A DNS name in lower case, the 4 or 16 address bytes of an IP, or
  // "type <n>" for `Other` with the GENERAL_NAME type number.
  std::string value;

  auto operator<=>(const SubjectAltName &) const = default;
};

// Parses `name` as an IPv4 or IPv6 address (by `inet_pton`), or else as a DNS
// name: labels of letters, digits and inner hyphens, each 1 to 63 bytes,
// at most 253 bytes in all, one trailing dot allowed and dropped. Wildcards
// are not accepted. Errors: `Invalid`, naming `name`.
[[nodiscard]] Result<SubjectAltName>
parse_subject_alt_name(std::string_view name);

// Returns the DNS name, the IP address in the text form of `inet_ntop`, or
// the value of an `Other` entry.
std::string to_string(const SubjectAltName &name);

// Reads the subjectAltName entries of `certificate`, sorted and without
// duplicates. Returns an empty vector when it has none or they are
// malformed.
std::vector<SubjectAltName> read_subject_alt_names(X509 *certificate);

// Extension set of a certificate.
enum class CertificateProfile {
  // basicConstraints critical CA:TRUE pathlen:0, keyUsage critical
  // keyCertSign and cRLSign.
  RootCa,
  // basicConstraints critical CA:FALSE, keyUsage critical digitalSignature,
  // extendedKeyUsage serverAuth.
  Server,
  // As `Server` with extendedKeyUsage clientAuth.
  Client,
};

struct CertificateRequest {
  CertificateProfile profile = CertificateProfile::Server;
  // At most 64 characters. Empty for an empty subject, which RFC 5280
  // section 4.2.1.6 allows when `alt_names` is not empty.
  std::string common_name;
  // organizationalUnitName placed before the CN in the subject; empty for
  // none. At most 64 characters.
  std::string organizational_unit;
  // Sorted and without duplicates, as `read_subject_alt_names` returns.
  std::vector<SubjectAltName> alt_names;
  std::chrono::system_clock::time_point not_before;
  std::chrono::system_clock::time_point not_after;
};

// The key and certificate that sign. A null `certificate` means the request
// is self-signed by `key`, which must then be the subject key.
struct Signer {
  X509 *certificate = nullptr;
  EVP_PKEY *key = nullptr;
};

// Generates a new ECDSA P-256 key. Errors: `Internal`.
[[nodiscard]] Result<EvpPkeyPtr> generate_key();

// Builds and signs (ECDSA with SHA-256) a version 3 certificate for
// `subject_key` with a random 128-bit serial number, the extensions of
// `request.profile`, subjectKeyIdentifier, and for a certificate signed by
// another one, authorityKeyIdentifier. Precondition: `not_before` <
// `not_after`. Errors: `Invalid` for a request OpenSSL cannot encode,
// `Internal` for other library failures.
[[nodiscard]] Result<X509Ptr>
issue_certificate(const CertificateRequest &request, EVP_PKEY *subject_key,
                  const Signer &signer);

// Converts an ASN.1 time (UTCTime or GeneralizedTime) to a time point.
// Errors: `Invalid` for a malformed time.
[[nodiscard]] Result<std::chrono::system_clock::time_point>
to_time_point(const ASN1_TIME *time);

} // namespace gatecache::tls
