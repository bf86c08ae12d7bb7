// Helpers of the CA functions shared inside `tls/`: loading and creating
// one CA's key pair, and small file and time utilities. Not for use outside
// `tls/`. Every function may block on disk or key generation.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <string_view>

#include "common/error.h"
#include "tls/ca.h"
#include "tls/openssl_ptr.h"

namespace gatecache::tls {

struct KeyPair {
  EvpPkeyPtr key;
  X509Ptr certificate;
};

// Returns whether `path` exists, without following a final symlink.
// Errors: `Io` when lstat() fails for a reason other than ENOENT.
[[nodiscard]] Result<bool> file_exists(const std::filesystem::path &path);

// Formats `when` as "2026-01-31T12:00:00Z".
std::string format_time(std::chrono::system_clock::time_point when);

// Returns `bytes` (at most 16) random bytes as lower-case hex.
std::string random_hex(size_t bytes);

// Returns "gatecache CA <host name>", followed by " <suffix>" when
// `suffix` is not empty, cut to the 64 characters a common name allows.
std::string ca_common_name(std::string_view suffix = {});

// Loads the CA in `files` after checking the key's permissions, and checks
// that the key matches and the certificate is a CA. Errors: `Invalid`.
[[nodiscard]] Result<KeyPair> load_ca(const CaFiles &files);

// Creates a root CA named `common_name` in `files`, valid for `CaLifetime`
// from `now`, without replacing an existing file. Errors: `Invalid` when a
// file exists, `Io` when one cannot be written.
[[nodiscard]] Result<void> create_ca(const CaFiles &files,
                                     const std::string &common_name,
                                     std::chrono::system_clock::time_point now);

// Returns true when the signature of `certificate` verifies with the public
// key of `ca` and `ca`'s subject is its issuer.
bool is_issued_by(X509 *certificate, X509 *ca);

} // namespace gatecache::tls
