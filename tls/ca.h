// The internal certificate authority and the server certificate it issues.
//
// gatecache keeps a root CA under its TLS directory and issues the server
// certificate of the front from it. Nodes trust `ca.crt` only, so the server
// certificate can be reissued at any time without touching them. Every
// function here blocks on disk and on key generation: call them at startup,
// from the command line, or from a thread that is not the event loop.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "common/error.h"

namespace gatecache::tls {

// The key and certificate files of one CA.
struct CaFiles {
  std::filesystem::path key;
  std::filesystem::path cert;
};

// Names of the files under the TLS directory. During a CA rotation the
// next CA (`ca-next.*`, after `begin`) or the previous one
// (`ca-previous.*`, after `switch`) sits beside the current CA.
struct TlsPaths {
  std::filesystem::path dir;

  std::filesystem::path ca_key() const { return dir / "ca.key"; }

  std::filesystem::path ca_cert() const { return dir / "ca.crt"; }

  std::filesystem::path ca_next_key() const { return dir / "ca-next.key"; }

  std::filesystem::path ca_next_cert() const { return dir / "ca-next.crt"; }

  std::filesystem::path ca_previous_key() const {
    return dir / "ca-previous.key";
  }

  std::filesystem::path ca_previous_cert() const {
    return dir / "ca-previous.crt";
  }

  std::filesystem::path server_key() const { return dir / "server.key"; }

  std::filesystem::path server_cert() const { return dir / "server.crt"; }

  // File that `DirectoryLock` locks.
  std::filesystem::path lock_file() const { return dir / ".lock"; }

  // Default parent directory of issued client certificates.
  std::filesystem::path clients_dir() const { return dir / "clients"; }

  CaFiles current_ca() const { return {ca_key(), ca_cert()}; }

  CaFiles next_ca() const { return {ca_next_key(), ca_next_cert()}; }

  CaFiles previous_ca() const {
    return {ca_previous_key(), ca_previous_cert()};
  }
};

// Validity of the root CA: ten years of 365.25 days.
constexpr std::chrono::seconds CaLifetime = std::chrono::hours(24 * 3653);

// Default validity of the server certificate: 90 days.
constexpr std::chrono::seconds DefaultServerLifetime =
    std::chrono::hours(24 * 90);

// How far before `now` every new certificate starts, so that nodes whose
// clock is a little behind the gateway's accept it.
constexpr std::chrono::seconds ClockSkewAllowance = std::chrono::hours(1);

// Creates the root CA in `paths.dir` when neither `ca.key` nor `ca.crt`
// exists: an ECDSA P-256 key (mode 0600) and a self-signed certificate
// (mode 0644) with CN "gatecache CA <host name>", CA:TRUE with pathlen 0,
// keyCertSign and cRLSign, valid for `CaLifetime` from `now`. Creates
// `paths.dir` when missing. Never replaces an existing file, even when
// another process creates the CA at the same time.
//
// Returns true when it created the CA and false when a valid one exists.
// Errors: `Invalid` when only one of the two files exists, when the key
// does not match the certificate, when the certificate is not a CA, or
// when the key's permissions are too open (see `check_key_permissions`).
// `Io` when a file cannot be written.
[[nodiscard]] Result<bool> ensure_ca(const TlsPaths &paths,
                                     std::chrono::system_clock::time_point now =
                                         std::chrono::system_clock::now());

// Issues `server.key` and `server.crt` (leaf only, signed by the CA) unless
// the existing pair is still right. It reissues when:
//   - either file is missing or unreadable, or the key does not match;
//   - the certificate is not signed by the current CA;
//   - its subjectAltName set differs from `names`, or its CN from
//     `names[0]`;
//   - it is not yet valid, or less than `renew_when_remaining` of its
//     lifetime remains at `now`. The lifetime counts from the issue, one
//     `ClockSkewAllowance` after the start of validity;
//   - `renew_when_remaining` is 1, which forces a new pair.
// Each of `names` is an IPv4 address, an IPv6 address or a DNS name, as
// `parse_subject_alt_name` accepts them. Case and order beyond the first
// name do not matter. The new certificate is valid from `now` minus
// `ClockSkewAllowance` for `lifetime`, cut at the CA's own expiry.
//
// Returns true when it issued a new pair. Errors: `Invalid` for an empty or
// malformed `names`, a `lifetime` of zero or less, `renew_when_remaining`
// outside [0, 1], an expired CA, or a key with too open permissions.
// `NotFound` when the CA does not exist. `Io` when a file cannot be
// written.
[[nodiscard]] Result<bool>
ensure_server_certificate(const TlsPaths &paths,
                          const std::vector<std::string> &names,
                          std::chrono::seconds lifetime = DefaultServerLifetime,
                          double renew_when_remaining = 1.0 / 3,
                          std::chrono::system_clock::time_point now =
                              std::chrono::system_clock::now());

// Checks that the private key file `path` is a regular file that neither
// group nor others can read, write or execute, owned by the effective user
// of this process. When that user is root, a key that the owner of its
// directory owns passes too. Errors: `NotFound` when it does not exist, `Io`
// when stat() fails otherwise, `Invalid` when the mode is too open (with the
// `chmod 600` command that fixes it) or another user owns it (with the
// `chown` command).
[[nodiscard]] Result<void>
check_key_permissions(const std::filesystem::path &path);

// Runs `check_key_permissions` on every private key under `paths.dir` that
// exists: the current, next and previous CA keys and the server key.
// Errors: as `check_key_permissions`, with one line per failing key.
[[nodiscard]] Result<void> check_private_keys(const TlsPaths &paths);

// Facts about a certificate file, for logs and the command line.
struct CertificateInfo {
  std::string subject; // RFC 2253 form, as "CN=gatecache CA gw1".
  std::string issuer;  // RFC 2253 form.
  // subjectAltName entries: DNS names, IP addresses in `inet_ntop` form,
  // and "type <n>" for entries of any other type. Sorted.
  std::vector<std::string> sans;
  std::chrono::system_clock::time_point not_before;
  std::chrono::system_clock::time_point not_after;
  // SHA-256 of the DER encoding as upper-case hex pairs joined by colons,
  // as `openssl x509 -fingerprint -sha256` prints it.
  std::string sha256_fingerprint;
  std::string serial; // Upper-case hex.
  bool is_ca = false; // basicConstraints CA:TRUE.
};

// Reads the first PEM certificate of `path`. Errors: `Invalid` when the
// file cannot be opened or parsed.
[[nodiscard]] Result<CertificateInfo>
read_certificate_info(const std::filesystem::path &path);

} // namespace gatecache::tls
