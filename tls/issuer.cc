#include "tls/issuer.h"

#include <algorithm>
#include <cctype>
#include <ctime>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ec.h>
#include <openssl/rand.h>

#include "tls/pem_file.h"

namespace gatecache::tls {
namespace {

using Clock = std::chrono::system_clock;

// RFC 1035 section 2.3.4 limits a label to 63 octets and a name to 255 on
// the wire, which is 253 characters in text without the trailing dot.
constexpr size_t MaxDnsNameLength = 253;
constexpr size_t MaxLabelLength = 63;

// Serial numbers carry 128 random bits, more than the 64 that CA/Browser
// Forum rules ask for, and within the 20 octets RFC 5280 allows.
constexpr size_t SerialBytes = 16;

bool is_label_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-';
}

bool is_valid_label(std::string_view label) {
  if (label.empty() || label.size() > MaxLabelLength) {
    return false;
  }
  if (label.front() == '-' || label.back() == '-') {
    return false;
  }
  return std::all_of(label.begin(), label.end(), is_label_char);
}

bool is_all_digits(std::string_view label) {
  return std::all_of(label.begin(), label.end(), [](char c) {
    return std::isdigit(static_cast<unsigned char>(c)) != 0;
  });
}

// Checks the preferred name syntax of RFC 1123 section 2.1. A numeric last
// label is rejected as well, because no top-level domain is numeric and such
// a name is most often a mistyped IPv4 address.
bool is_valid_dns_name(std::string_view name) {
  if (name.empty() || name.size() > MaxDnsNameLength) {
    return false;
  }
  std::string_view last_label;
  while (!name.empty()) {
    size_t dot = name.find('.');
    std::string_view label = name.substr(0, dot);
    if (!is_valid_label(label)) {
      return false;
    }
    last_label = label;
    name = dot == std::string_view::npos ? std::string_view()
                                         : name.substr(dot + 1);
    if (dot != std::string_view::npos && name.empty()) {
      return false;
    }
  }
  return !is_all_digits(last_label);
}

std::string to_lower(std::string_view text) {
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](char c) {
    return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  });
  return lower;
}

std::string asn1_string_bytes(const ASN1_STRING *text) {
  return std::string(
      reinterpret_cast<const char *>(ASN1_STRING_get0_data(text)),
      static_cast<size_t>(ASN1_STRING_length(text)));
}

Result<void> set_random_serial(X509 *certificate) {
  unsigned char bytes[SerialBytes];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
    return fail(ErrorCode::Internal, "RAND_bytes: " + take_openssl_errors());
  }
  // RFC 5280 section 4.1.2.2 requires a positive serial, so never zero.
  if (std::all_of(std::begin(bytes), std::end(bytes),
                  [](unsigned char b) { return b == 0; })) {
    bytes[SerialBytes - 1] = 1;
  }
  BignumPtr number(BN_bin2bn(bytes, sizeof(bytes), nullptr));
  if (!number ||
      !BN_to_ASN1_INTEGER(number.get(), X509_get_serialNumber(certificate))) {
    return fail(ErrorCode::Internal,
                "failed to set serial number: " + take_openssl_errors());
  }
  return {};
}

Result<void> set_time(ASN1_TIME *field, Clock::time_point when) {
  // ASN1_TIME_set picks UTCTime before 2050 and GeneralizedTime from then
  // on, as RFC 5280 section 4.1.2.5 requires.
  if (ASN1_TIME_set(field, Clock::to_time_t(when)) == nullptr) {
    return fail(ErrorCode::Invalid, "failed to encode certificate validity: " +
                                        take_openssl_errors());
  }
  return {};
}

Result<void> set_names(X509 *certificate, const CertificateRequest &request,
                       const Signer &signer) {
  X509_NAME *subject = X509_get_subject_name(certificate);
  const auto *unit = reinterpret_cast<const unsigned char *>(
      request.organizational_unit.data());
  if (!request.organizational_unit.empty() &&
      !X509_NAME_add_entry_by_NID(
          subject, NID_organizationalUnitName, MBSTRING_UTF8, unit,
          static_cast<int>(request.organizational_unit.size()), -1, 0)) {
    return fail(ErrorCode::Invalid, "invalid organizational unit \"" +
                                        request.organizational_unit +
                                        "\": " + take_openssl_errors());
  }
  const auto *common_name =
      reinterpret_cast<const unsigned char *>(request.common_name.data());
  if (!request.common_name.empty() &&
      !X509_NAME_add_entry_by_NID(
          subject, NID_commonName, MBSTRING_UTF8, common_name,
          static_cast<int>(request.common_name.size()), -1, 0)) {
    return fail(ErrorCode::Invalid, "invalid common name \"" +
                                        request.common_name +
                                        "\": " + take_openssl_errors());
  }

  X509_NAME *issuer = signer.certificate != nullptr
                          ? X509_get_subject_name(signer.certificate)
                          : subject;
  if (!X509_set_issuer_name(certificate, issuer)) {
    return fail(ErrorCode::Internal,
                "X509_set_issuer_name: " + take_openssl_errors());
  }
  return {};
}

// Adds one extension written in the `openssl x509 -extfile` syntax.
Result<void> add_extension(X509 *certificate, X509V3_CTX *context, int nid,
                           const char *value) {
  X509ExtensionPtr extension(
      X509V3_EXT_nconf_nid(nullptr, context, nid, const_cast<char *>(value)));
  if (!extension || !X509_add_ext(certificate, extension.get(), -1)) {
    return fail(ErrorCode::Internal, std::string("failed to add extension ") +
                                         OBJ_nid2sn(nid) + " = " + value +
                                         ": " + take_openssl_errors());
  }
  return {};
}

Result<void> push_general_name(GENERAL_NAMES *names,
                               const SubjectAltName &name) {
  GENERAL_NAME *entry = GENERAL_NAME_new();
  ASN1_STRING *value = ASN1_STRING_type_new(
      name.kind == SubjectAltName::Kind::Dns ? V_ASN1_IA5STRING
                                             : V_ASN1_OCTET_STRING);
  if (entry == nullptr || value == nullptr ||
      !ASN1_STRING_set(value, name.value.data(),
                       static_cast<int>(name.value.size()))) {
    GENERAL_NAME_free(entry);
    ASN1_STRING_free(value);
    return fail(ErrorCode::Internal,
                "failed to encode subjectAltName: " + take_openssl_errors());
  }
  GENERAL_NAME_set0_value(
      entry, name.kind == SubjectAltName::Kind::Dns ? GEN_DNS : GEN_IPADD,
      value);
  if (!sk_GENERAL_NAME_push(names, entry)) {
    GENERAL_NAME_free(entry);
    return fail(ErrorCode::Internal,
                "failed to encode subjectAltName: " + take_openssl_errors());
  }
  return {};
}

// Builds subjectAltName from parsed values instead of the text syntax, so
// that no name can inject another entry through a comma.
Result<void> add_subject_alt_names(X509 *certificate,
                                   const std::vector<SubjectAltName> &names) {
  if (names.empty()) {
    return {};
  }
  GeneralNamesPtr general_names(sk_GENERAL_NAME_new_null());
  if (!general_names) {
    return fail(ErrorCode::Internal,
                "sk_GENERAL_NAME_new_null: " + take_openssl_errors());
  }
  for (const SubjectAltName &name : names) {
    if (auto pushed = push_general_name(general_names.get(), name); !pushed) {
      return pushed;
    }
  }
  // RFC 5280 section 4.2.1.6: critical when the subject is empty.
  int critical =
      X509_NAME_entry_count(X509_get_subject_name(certificate)) == 0 ? 1 : 0;
  if (X509_add1_ext_i2d(certificate, NID_subject_alt_name, general_names.get(),
                        critical, X509V3_ADD_DEFAULT) != 1) {
    return fail(ErrorCode::Internal,
                "failed to add subjectAltName: " + take_openssl_errors());
  }
  return {};
}

struct ProfileExtensions {
  const char *basic_constraints;
  const char *key_usage;
  const char *extended_key_usage; // Null for none.
};

ProfileExtensions extensions_of(CertificateProfile profile) {
  switch (profile) {
  case CertificateProfile::RootCa:
    // pathlen 0: this CA signs leaves only, never another CA.
    return {"critical,CA:TRUE,pathlen:0", "critical,keyCertSign,cRLSign",
            nullptr};
  case CertificateProfile::Server:
    // ECDHE key exchange with an ECDSA key needs digitalSignature only.
    return {"critical,CA:FALSE", "critical,digitalSignature", "serverAuth"};
  case CertificateProfile::Client:
    return {"critical,CA:FALSE", "critical,digitalSignature", "clientAuth"};
  }
  return {"critical,CA:FALSE", "critical,digitalSignature", nullptr};
}

Result<void> add_extensions(X509 *certificate,
                            const CertificateRequest &request,
                            const Signer &signer) {
  X509V3_CTX context;
  X509V3_set_ctx(&context,
                 signer.certificate != nullptr ? signer.certificate
                                               : certificate,
                 certificate, nullptr, nullptr, 0);

  ProfileExtensions profile = extensions_of(request.profile);
  Result<void> added = add_extension(
      certificate, &context, NID_basic_constraints, profile.basic_constraints);
  if (added) {
    added =
        add_extension(certificate, &context, NID_key_usage, profile.key_usage);
  }
  if (added && profile.extended_key_usage != nullptr) {
    added = add_extension(certificate, &context, NID_ext_key_usage,
                          profile.extended_key_usage);
  }
  if (added) {
    added = add_extension(certificate, &context, NID_subject_key_identifier,
                          "hash");
  }
  // RFC 5280 section 4.2.1.1 lets a self-signed certificate omit it.
  if (added && signer.certificate != nullptr) {
    added = add_extension(certificate, &context, NID_authority_key_identifier,
                          "keyid:always");
  }
  if (added) {
    added = add_subject_alt_names(certificate, request.alt_names);
  }
  return added;
}

Result<void> check_request(const CertificateRequest &request,
                           EVP_PKEY *subject_key, const Signer &signer) {
  if (subject_key == nullptr || signer.key == nullptr) {
    return fail(ErrorCode::Invalid, "certificate request without a key");
  }
  if (request.common_name.empty() && request.alt_names.empty()) {
    return fail(ErrorCode::Invalid,
                "certificate request without a common name or an alt name");
  }
  if (request.not_before >= request.not_after) {
    return fail(ErrorCode::Invalid,
                "certificate validity ends before it starts");
  }
  if (signer.certificate == nullptr &&
      EVP_PKEY_eq(signer.key, subject_key) != 1) {
    return fail(ErrorCode::Invalid,
                "a self-signed certificate must be signed by its own key");
  }
  return {};
}

} // namespace

Result<SubjectAltName> parse_subject_alt_name(std::string_view name) {
  if (name.size() > MaxDnsNameLength + 1) {
    return fail(ErrorCode::Invalid, "invalid certificate name \"" +
                                        std::string(name.substr(0, 64)) +
                                        "...\": longer than 253 bytes");
  }
  std::string text(name);

  unsigned char address[sizeof(in6_addr)];
  if (inet_pton(AF_INET, text.c_str(), address) == 1) {
    return SubjectAltName{SubjectAltName::Kind::Ip,
                          std::string(reinterpret_cast<char *>(address), 4)};
  }
  if (inet_pton(AF_INET6, text.c_str(), address) == 1) {
    return SubjectAltName{SubjectAltName::Kind::Ip,
                          std::string(reinterpret_cast<char *>(address), 16)};
  }

  if (!text.empty() && text.back() == '.') {
    text.pop_back();
  }
  if (!is_valid_dns_name(text)) {
    return fail(ErrorCode::Invalid,
                "invalid certificate name \"" + std::string(name) +
                    "\": expected an IPv4 or IPv6 address or a DNS name of "
                    "letters, digits, hyphens and dots");
  }
  return SubjectAltName{SubjectAltName::Kind::Dns, to_lower(text)};
}

std::string to_string(const SubjectAltName &name) {
  if (name.kind != SubjectAltName::Kind::Ip) {
    return name.value;
  }
  char text[INET6_ADDRSTRLEN];
  int family = name.value.size() == 4 ? AF_INET : AF_INET6;
  if ((name.value.size() != 4 && name.value.size() != 16) ||
      inet_ntop(family, name.value.data(), text, sizeof(text)) == nullptr) {
    return "invalid IP address";
  }
  return text;
}

std::vector<SubjectAltName> read_subject_alt_names(X509 *certificate) {
  std::vector<SubjectAltName> names;
  GeneralNamesPtr general_names(static_cast<GENERAL_NAMES *>(
      X509_get_ext_d2i(certificate, NID_subject_alt_name, nullptr, nullptr)));
  if (!general_names) {
    return names;
  }

  int count = sk_GENERAL_NAME_num(general_names.get());
  for (int i = 0; i < count; ++i) {
    const GENERAL_NAME *entry = sk_GENERAL_NAME_value(general_names.get(), i);
    if (entry->type == GEN_DNS) {
      names.push_back({SubjectAltName::Kind::Dns,
                       to_lower(asn1_string_bytes(entry->d.dNSName))});
    } else if (entry->type == GEN_IPADD) {
      names.push_back(
          {SubjectAltName::Kind::Ip, asn1_string_bytes(entry->d.iPAddress)});
    } else {
      names.push_back(
          {SubjectAltName::Kind::Other, "type " + std::to_string(entry->type)});
    }
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

Result<EvpPkeyPtr> generate_key() {
  EvpPkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) {
    return fail(ErrorCode::Internal,
                "failed to generate a P-256 key: " + take_openssl_errors());
  }
  return key;
}

Result<X509Ptr> issue_certificate(const CertificateRequest &request,
                                  EVP_PKEY *subject_key, const Signer &signer) {
  if (auto checked = check_request(request, subject_key, signer); !checked) {
    return tl::unexpected(checked.error());
  }
  X509Ptr certificate(X509_new());
  if (!certificate || !X509_set_version(certificate.get(), X509_VERSION_3) ||
      !X509_set_pubkey(certificate.get(), subject_key)) {
    return fail(ErrorCode::Internal,
                "failed to start a certificate: " + take_openssl_errors());
  }

  Result<void> built = set_random_serial(certificate.get());
  if (built) {
    built =
        set_time(X509_getm_notBefore(certificate.get()), request.not_before);
  }
  if (built) {
    built = set_time(X509_getm_notAfter(certificate.get()), request.not_after);
  }
  if (built) {
    built = set_names(certificate.get(), request, signer);
  }
  if (built) {
    built = add_extensions(certificate.get(), request, signer);
  }
  if (!built) {
    return tl::unexpected(built.error());
  }

  if (X509_sign(certificate.get(), signer.key, EVP_sha256()) <= 0) {
    return fail(ErrorCode::Internal,
                "failed to sign the certificate: " + take_openssl_errors());
  }
  return certificate;
}

Result<Clock::time_point> to_time_point(const ASN1_TIME *time) {
  std::tm parts{};
  if (time == nullptr || ASN1_TIME_to_tm(time, &parts) != 1) {
    return fail(ErrorCode::Invalid, "malformed certificate time");
  }
  return Clock::from_time_t(timegm(&parts));
}

} // namespace gatecache::tls
