// Client certificates for mutual TLS, issued by the internal CA.
//
// A cluster proves who it is with a certificate whose subject common name
// is its name, and whose extended key usage allows client authentication
// only, so it cannot serve as a server certificate. Blocks on disk and key
// generation; hold a `DirectoryLock` on the TLS directory around the call.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <string_view>

#include "common/error.h"
#include "tls/ca.h"

namespace gatecache::tls {

// organizationalUnitName of every client certificate, so that an operator
// reading one sees what it is for.
inline constexpr std::string_view ClientOrganizationalUnit = "gatecache client";

// Default validity of a client certificate: one year.
constexpr std::chrono::seconds DefaultClientLifetime =
    std::chrono::hours(24 * 365);

// Files written by `issue_client_certificate`.
struct ClientCertificateFiles {
  std::filesystem::path key;    // client.key, mode 0600.
  std::filesystem::path cert;   // client.crt, mode 0644.
  std::filesystem::path bundle; // ca.crt: the trust bundle, mode 0644.
  std::chrono::system_clock::time_point not_after;
};

// Checks a client name: 1 to 64 letters, digits, dots, hyphens and
// underscores, starting with a letter or digit, so that it fits a common
// name and a directory name. Errors: `Invalid`, naming `name`.
[[nodiscard]] Result<void> check_client_name(std::string_view name);

// Issues a new key and a certificate with CN `name`, OU
// `ClientOrganizationalUnit` and extended key usage clientAuth, signed by
// the current CA and valid from `now` minus `ClockSkewAllowance` for
// `lifetime`, cut at the CA's expiry. Writes them and the trust bundle to
// `out_dir` (created with mode 0700 when missing), replacing earlier
// files. Errors: `Invalid` for a bad name, a lifetime of zero or less, or
// an expired CA; `NotFound` when there is no CA; `Io` when a file cannot
// be written.
[[nodiscard]] Result<ClientCertificateFiles>
issue_client_certificate(const TlsPaths &paths, const std::string &name,
                         const std::filesystem::path &out_dir,
                         std::chrono::seconds lifetime = DefaultClientLifetime,
                         std::chrono::system_clock::time_point now =
                             std::chrono::system_clock::now());

} // namespace gatecache::tls
