#include "tls/ca.h"

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <optional>
#include <system_error>

#include <openssl/rand.h>
#include <pwd.h>
#include <spdlog/fmt/fmt.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "tls/ca_files.h"
#include "tls/issuer.h"
#include "tls/openssl_ptr.h"
#include "tls/pem_file.h"

namespace gatecache::tls {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::system_clock;

// RFC 5280 appendix A limits a common name to 64 characters.
constexpr size_t MaxCommonNameLength = 64;
constexpr std::string_view CaNamePrefix = "gatecache CA ";

Result<void> check_key_matches(const KeyPair &pair, const fs::path &key_path,
                               const fs::path &cert_path) {
  if (X509_check_private_key(pair.certificate.get(), pair.key.get()) != 1) {
    take_openssl_errors();
    return fail(ErrorCode::Invalid, key_path.string() +
                                        " does not match the public key of " +
                                        cert_path.string());
  }
  return {};
}

// Precondition: the caller checked the permissions of `key_path`.
Result<KeyPair> read_pair(const fs::path &key_path, const fs::path &cert_path) {
  auto key = read_private_key(key_path);
  if (!key) {
    return tl::unexpected(key.error());
  }
  auto certificate = read_certificate(cert_path);
  if (!certificate) {
    return tl::unexpected(certificate.error());
  }
  return KeyPair{std::move(*key), std::move(*certificate)};
}

// Describes which CA file exists when only one does, and how to recover.
Error half_present_ca(const fs::path &present, const fs::path &missing) {
  return Error{
      ErrorCode::Invalid,
      fmt::format("{} exists but {} is missing, so the CA is incomplete. "
                  "Restore {} from a backup; or, to start a new CA that "
                  "every node must then trust again, remove {}",
                  present.string(), missing.string(), missing.string(),
                  present.string())};
}

// Returns true when the owner of `path`, whose status is `status`, also
// owns its directory.
bool owns_parent(const fs::path &path, const struct stat &status) {
  fs::path directory = path.parent_path();

  struct stat parent {};

  return ::stat(directory.empty() ? "." : directory.c_str(), &parent) == 0 &&
         parent.st_uid == status.st_uid;
}

// Returns the login name of `uid`, or the number when it has none.
std::string user_name(uid_t uid) {
  struct passwd entry {};

  struct passwd *found = nullptr;
  char buffer[1024];
  if (::getpwuid_r(uid, &entry, buffer, sizeof(buffer), &found) == 0 &&
      found != nullptr) {
    return found->pw_name;
  }
  return std::to_string(uid);
}

Result<std::vector<SubjectAltName>>
parse_names(const std::vector<std::string> &names) {
  if (names.empty()) {
    return fail(ErrorCode::Invalid,
                "the server certificate needs at least one name");
  }
  std::vector<SubjectAltName> parsed;
  parsed.reserve(names.size());
  for (const std::string &name : names) {
    auto alt_name = parse_subject_alt_name(name);
    if (!alt_name) {
      return tl::unexpected(alt_name.error());
    }
    parsed.push_back(std::move(*alt_name));
  }
  return parsed;
}

// Returns the CN for the first name, or an empty string when the name is too
// long for a CN. Clients match against subjectAltName only (RFC 6125
// section 6.4.4), so the CN is for people reading the certificate.
std::string server_common_name(const SubjectAltName &first) {
  std::string name = to_string(first);
  return name.size() <= MaxCommonNameLength ? name : std::string();
}

std::string read_common_name(X509 *certificate) {
  X509_NAME *subject = X509_get_subject_name(certificate);
  int index = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (index < 0) {
    return {};
  }
  ASN1_STRING *data =
      X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, index));
  unsigned char *utf8 = nullptr;
  int length = ASN1_STRING_to_UTF8(&utf8, data);
  if (length < 0) {
    return {};
  }
  std::string name(reinterpret_cast<char *>(utf8), static_cast<size_t>(length));
  OPENSSL_free(utf8);
  return name;
}

// Requested content of the server certificate.
struct ServerTarget {
  std::vector<SubjectAltName> alt_names; // Sorted, no duplicates.
  std::string common_name;
  double renew_when_remaining = 0;
};

// Returns why the existing certificate must be replaced, judged by its
// content alone.
std::optional<std::string> content_reason(const KeyPair &server,
                                          const KeyPair &ca,
                                          const ServerTarget &target,
                                          Clock::time_point now) {
  X509 *certificate = server.certificate.get();
  if (X509_check_private_key(certificate, server.key.get()) != 1) {
    take_openssl_errors();
    return "server.key does not match server.crt";
  }
  if (!is_issued_by(certificate, ca.certificate.get())) {
    return "server.crt is not signed by the current CA";
  }
  if (read_subject_alt_names(certificate) != target.alt_names) {
    return "the requested names changed";
  }
  if (read_common_name(certificate) != target.common_name) {
    return "the first requested name changed";
  }

  auto not_before = to_time_point(X509_get0_notBefore(certificate));
  auto not_after = to_time_point(X509_get0_notAfter(certificate));
  if (!not_before || !not_after) {
    return "server.crt has a malformed validity";
  }
  if (now < *not_before) {
    return "server.crt is not valid until " + format_time(*not_before);
  }
  if (target.renew_when_remaining >= 1.0) {
    return "a new certificate was requested";
  }
  // Certificates start `ClockSkewAllowance` before they are issued. Counting
  // the lifetime from the issue keeps a short lifetime from being due at
  // once.
  auto issued_at = std::min(*not_before + ClockSkewAllowance, *not_after);
  auto lifetime = std::chrono::duration<double>(*not_after - issued_at).count();
  auto remaining = std::chrono::duration<double>(*not_after - now).count();
  if (remaining < lifetime * target.renew_when_remaining) {
    return "server.crt expires at " + format_time(*not_after);
  }
  return std::nullopt;
}

// Returns why the server pair must be (re)issued, or no value when it is
// still right. Only a key file with too open permissions is an error,
// because every other defect is repaired by issuing again.
Result<std::optional<std::string>> reissue_reason(const TlsPaths &paths,
                                                  const KeyPair &ca,
                                                  const ServerTarget &target,
                                                  Clock::time_point now) {
  auto key_exists = file_exists(paths.server_key());
  if (!key_exists) {
    return tl::unexpected(key_exists.error());
  }
  auto cert_exists = file_exists(paths.server_cert());
  if (!cert_exists) {
    return tl::unexpected(cert_exists.error());
  }
  if (!*key_exists && !*cert_exists) {
    return "there is no server certificate";
  }
  if (*key_exists) {
    if (auto permissions = check_key_permissions(paths.server_key());
        !permissions) {
      return tl::unexpected(permissions.error());
    }
  }
  if (!*key_exists || !*cert_exists) {
    return "one of server.key and server.crt is missing";
  }

  auto server = read_pair(paths.server_key(), paths.server_cert());
  if (!server) {
    return server.error().message;
  }
  return content_reason(*server, ca, target, now);
}

Result<Clock::time_point> issue_server_pair(const TlsPaths &paths,
                                            const KeyPair &ca,
                                            const ServerTarget &target,
                                            std::chrono::seconds lifetime,
                                            Clock::time_point now) {
  auto ca_not_after = to_time_point(X509_get0_notAfter(ca.certificate.get()));
  if (!ca_not_after) {
    return tl::unexpected(ca_not_after.error());
  }
  if (*ca_not_after <= now) {
    return fail(ErrorCode::Invalid,
                fmt::format("the CA in {} expired at {}; rotate it with "
                            "`gatecache ca rotate begin` and `switch`, and "
                            "distribute the exported bundle to every node",
                            paths.dir.string(), format_time(*ca_not_after)));
  }

  auto key = generate_key();
  if (!key) {
    return tl::unexpected(key.error());
  }
  CertificateRequest request;
  request.profile = CertificateProfile::Server;
  request.common_name = target.common_name;
  request.alt_names = target.alt_names;
  request.not_before = now - ClockSkewAllowance;
  // A leaf that outlives its issuer fails verification after the issuer
  // expires, so it ends with the CA at the latest.
  request.not_after = std::min(now + lifetime, *ca_not_after);
  auto certificate = issue_certificate(
      request, key->get(), Signer{ca.certificate.get(), ca.key.get()});
  if (!certificate) {
    return tl::unexpected(certificate.error());
  }

  // The key goes first: a crash between the two renames leaves a key that
  // does not match the certificate, which the next call detects and
  // repairs, while the reverse order could not be distinguished from a valid
  // pair.
  if (auto written = write_private_key(paths.server_key(), key->get(),
                                       ExistingFile::Replace);
      !written) {
    return tl::unexpected(written.error());
  }
  if (auto written = write_certificate(paths.server_cert(), certificate->get(),
                                       ExistingFile::Replace);
      !written) {
    return tl::unexpected(written.error());
  }
  return request.not_after;
}

std::string format_name(const X509_NAME *name) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253) < 0) {
    take_openssl_errors();
    return {};
  }
  char *data = nullptr;
  long size = BIO_get_mem_data(bio.get(), &data);
  return size > 0 ? std::string(data, static_cast<size_t>(size))
                  : std::string();
}

Result<std::string> sha256_fingerprint(X509 *certificate) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (X509_digest(certificate, EVP_sha256(), digest, &size) != 1) {
    return fail(ErrorCode::Internal,
                "failed to hash the certificate: " + take_openssl_errors());
  }
  std::string text;
  for (unsigned int i = 0; i < size; ++i) {
    text += fmt::format("{}{:02X}", i == 0 ? "" : ":", digest[i]);
  }
  return text;
}

std::string serial_hex(X509 *certificate) {
  BignumPtr number(
      ASN1_INTEGER_to_BN(X509_get0_serialNumber(certificate), nullptr));
  char *hex = number ? BN_bn2hex(number.get()) : nullptr;
  if (hex == nullptr) {
    take_openssl_errors();
    return {};
  }
  std::string text(hex);
  OPENSSL_free(hex);
  return text;
}

} // namespace

std::string random_hex(size_t bytes) {
  unsigned char random[16] = {};
  bytes = std::min(bytes, sizeof(random));
  if (RAND_bytes(random, static_cast<int>(bytes)) != 1) {
    // The id only distinguishes CAs in a trust store, so a weak one is fine.
    uint64_t fallback = static_cast<uint64_t>(::getpid()) ^
                        static_cast<uint64_t>(std::time(nullptr));
    return fmt::format("{:016x}", fallback).substr(0, bytes * 2);
  }
  std::string text;
  for (size_t i = 0; i < bytes; ++i) {
    text += fmt::format("{:02x}", random[i]);
  }
  return text;
}

Result<bool> file_exists(const fs::path &path) {
  std::error_code error;
  fs::file_status status = fs::symlink_status(path, error);
  if (error && error != std::errc::no_such_file_or_directory) {
    return fail(ErrorCode::Io,
                "failed to stat " + path.string() + ": " + error.message());
  }
  return fs::exists(status);
}

std::string format_time(Clock::time_point when) {
  std::time_t seconds = Clock::to_time_t(when);
  std::tm parts{};
  gmtime_r(&seconds, &parts);
  char text[32];
  if (std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &parts) == 0) {
    return "invalid time";
  }
  return text;
}

// Returns "gatecache CA <host name>" so that an operator can tell the CAs
// of several gateways apart, or a random id when the host name is unusable.
std::string ca_common_name(std::string_view suffix) {
  char host[256] = {};
  std::string_view name;
  if (::gethostname(host, sizeof(host) - 1) == 0) {
    name = host;
  }
  bool printable = std::all_of(name.begin(), name.end(),
                               [](char c) { return c > ' ' && c < 0x7f; });
  std::string host_part =
      name.empty() || !printable ? random_hex(4) : std::string(name);
  std::string tail = suffix.empty() ? std::string() : " " + std::string(suffix);
  // The suffix distinguishes CAs of one gateway, so the host name is cut
  // first.
  size_t room = MaxCommonNameLength - CaNamePrefix.size() -
                std::min(tail.size(), MaxCommonNameLength / 2);
  return std::string(CaNamePrefix) + host_part.substr(0, room) +
         tail.substr(0, MaxCommonNameLength / 2);
}

Result<KeyPair> load_ca(const CaFiles &files) {
  if (auto permissions = check_key_permissions(files.key); !permissions) {
    return tl::unexpected(permissions.error());
  }
  auto ca = read_pair(files.key, files.cert);
  if (!ca) {
    return ca;
  }
  if (auto matches = check_key_matches(*ca, files.key, files.cert); !matches) {
    return tl::unexpected(matches.error());
  }
  if (X509_check_ca(ca->certificate.get()) == 0) {
    return fail(ErrorCode::Invalid,
                files.cert.string() + " is not a CA certificate");
  }
  return ca;
}

Result<void> create_ca(const CaFiles &files, const std::string &common_name,
                       Clock::time_point now) {
  fs::path directory = files.key.parent_path();
  std::error_code error;
  fs::create_directories(directory, error);
  if (error) {
    return fail(ErrorCode::Io, "failed to create " + directory.string() + ": " +
                                   error.message());
  }

  auto key = generate_key();
  if (!key) {
    return tl::unexpected(key.error());
  }
  CertificateRequest request;
  request.profile = CertificateProfile::RootCa;
  request.common_name = common_name;
  request.not_before = now - ClockSkewAllowance;
  request.not_after = now + CaLifetime;
  auto certificate =
      issue_certificate(request, key->get(), Signer{nullptr, key->get()});
  if (!certificate) {
    return tl::unexpected(certificate.error());
  }

  if (auto written =
          write_private_key(files.key, key->get(), ExistingFile::Keep);
      !written) {
    return written;
  }
  if (auto written =
          write_certificate(files.cert, certificate->get(), ExistingFile::Keep);
      !written) {
    // Nothing can trust a key without its certificate yet, so removing it
    // avoids leaving a half-present CA behind.
    ::unlink(files.key.c_str());
    return written;
  }
  GC_LOG(Tls, info, "Created CA \"{}\" valid until {} files={},{}",
         request.common_name, format_time(request.not_after),
         files.key.string(), files.cert.string());
  return {};
}

bool is_issued_by(X509 *certificate, X509 *ca) {
  EVP_PKEY *ca_key = X509_get0_pubkey(ca);
  bool issued = ca_key != nullptr &&
                X509_check_issued(ca, certificate) == X509_V_OK &&
                X509_verify(certificate, ca_key) == 1;
  take_openssl_errors();
  return issued;
}

Result<bool> ensure_ca(const TlsPaths &paths, Clock::time_point now) {
  auto key_exists = file_exists(paths.ca_key());
  if (!key_exists) {
    return tl::unexpected(key_exists.error());
  }
  auto cert_exists = file_exists(paths.ca_cert());
  if (!cert_exists) {
    return tl::unexpected(cert_exists.error());
  }

  if (*key_exists && *cert_exists) {
    auto ca = load_ca(paths.current_ca());
    if (!ca) {
      return tl::unexpected(ca.error());
    }
    return false;
  }
  if (*key_exists) {
    return tl::unexpected(half_present_ca(paths.ca_key(), paths.ca_cert()));
  }
  if (*cert_exists) {
    return tl::unexpected(half_present_ca(paths.ca_cert(), paths.ca_key()));
  }

  if (auto created = create_ca(paths.current_ca(), ca_common_name(), now);
      !created) {
    return tl::unexpected(created.error());
  }
  return true;
}

Result<bool> ensure_server_certificate(const TlsPaths &paths,
                                       const std::vector<std::string> &names,
                                       std::chrono::seconds lifetime,
                                       double renew_when_remaining,
                                       Clock::time_point now) {
  if (lifetime <= std::chrono::seconds::zero()) {
    return fail(ErrorCode::Invalid,
                "the server certificate lifetime must be positive");
  }
  if (!(renew_when_remaining >= 0.0 && renew_when_remaining <= 1.0)) {
    return fail(ErrorCode::Invalid,
                fmt::format("renew_when_remaining {} is outside [0, 1]",
                            renew_when_remaining));
  }
  auto parsed = parse_names(names);
  if (!parsed) {
    return tl::unexpected(parsed.error());
  }
  ServerTarget target;
  target.common_name = server_common_name(parsed->front());
  target.alt_names = std::move(*parsed);
  std::sort(target.alt_names.begin(), target.alt_names.end());
  target.alt_names.erase(
      std::unique(target.alt_names.begin(), target.alt_names.end()),
      target.alt_names.end());
  target.renew_when_remaining = renew_when_remaining;

  auto ca_key_exists = file_exists(paths.ca_key());
  auto ca_cert_exists = file_exists(paths.ca_cert());
  if (ca_key_exists && ca_cert_exists && !*ca_key_exists && !*ca_cert_exists) {
    return fail(ErrorCode::NotFound,
                "no CA in " + paths.dir.string() + "; create the CA first");
  }
  auto ca = load_ca(paths.current_ca());
  if (!ca) {
    return tl::unexpected(ca.error());
  }

  auto reason = reissue_reason(paths, *ca, target, now);
  if (!reason) {
    return tl::unexpected(reason.error());
  }
  if (!*reason) {
    return false;
  }

  auto not_after = issue_server_pair(paths, *ca, target, lifetime, now);
  if (!not_after) {
    return tl::unexpected(not_after.error());
  }
  GC_LOG(Tls, info,
         "Issued server certificate because {}, valid until {} names={}",
         **reason, format_time(*not_after), fmt::join(names, ","));
  return true;
}

Result<void> check_key_permissions(const fs::path &path) {
  struct stat status {};

  if (::stat(path.c_str(), &status) != 0) {
    int error = errno;
    return fail(error == ENOENT ? ErrorCode::NotFound : ErrorCode::Io,
                errno_message("stat", error) + " on " + path.string());
  }
  if (!S_ISREG(status.st_mode)) {
    return fail(ErrorCode::Invalid,
                "private key " + path.string() + " is not a regular file");
  }
  mode_t mode = status.st_mode & 07777;
  if ((mode & 077) != 0) {
    return fail(ErrorCode::Invalid,
                fmt::format("private key {} has mode {:04o}, which lets "
                            "group or others access it; run `chmod 600 {}`",
                            path.string(), mode, path.string()));
  }
  // A key owned by another user can be replaced by that user, and a key
  // that only root can read breaks the next reload of a daemon that does
  // not run as root. Root may use keys of the directory's owner, as
  // `gatecache ca` run by root does with those of a daemon's user.
  uid_t user = ::geteuid();
  if (status.st_uid != user && !(user == 0 && owns_parent(path, status))) {
    std::string name = user_name(user);
    return fail(ErrorCode::Invalid,
                fmt::format("private key {} is owned by {}, but gatecache "
                            "runs as {}; run `chown {} {}`",
                            path.string(), user_name(status.st_uid), name, name,
                            path.string()));
  }
  return {};
}

Result<void> check_private_keys(const TlsPaths &paths) {
  std::string problems;
  for (const fs::path &key : {paths.ca_key(), paths.ca_next_key(),
                              paths.ca_previous_key(), paths.server_key()}) {
    auto checked = check_key_permissions(key);
    if (checked || checked.error().code == ErrorCode::NotFound) {
      continue;
    }
    problems += (problems.empty() ? "" : "\n") + checked.error().message;
  }
  if (!problems.empty()) {
    return fail(ErrorCode::Invalid, problems);
  }
  return {};
}

Result<CertificateInfo> read_certificate_info(const fs::path &path) {
  auto certificate = read_certificate(path);
  if (!certificate) {
    return tl::unexpected(certificate.error());
  }
  X509 *x509 = certificate->get();

  CertificateInfo info;
  info.subject = format_name(X509_get_subject_name(x509));
  info.issuer = format_name(X509_get_issuer_name(x509));
  for (const SubjectAltName &name : read_subject_alt_names(x509)) {
    info.sans.push_back(to_string(name));
  }

  auto not_before = to_time_point(X509_get0_notBefore(x509));
  auto not_after = to_time_point(X509_get0_notAfter(x509));
  if (!not_before || !not_after) {
    return fail(ErrorCode::Invalid,
                "malformed validity in certificate " + path.string());
  }
  info.not_before = *not_before;
  info.not_after = *not_after;

  auto fingerprint = sha256_fingerprint(x509);
  if (!fingerprint) {
    return tl::unexpected(fingerprint.error());
  }
  info.sha256_fingerprint = std::move(*fingerprint);
  info.serial = serial_hex(x509);
  info.is_ca = X509_check_ca(x509) != 0;
  return info;
}

} // namespace gatecache::tls
