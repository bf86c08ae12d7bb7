// Reading and crash-safe writing of the PEM files under the TLS directory.
//
// These helpers are internal to `tls/`. Every function may block on disk, so
// call them at startup, from the command line, or off the event loop.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include <sys/types.h>

#include "common/error.h"
#include "tls/openssl_ptr.h"

namespace gatecache::tls {

// Behaviour of `write_file_atomic` when the destination already exists.
enum class ExistingFile {
  Replace, // Swap the new content in atomically.
  Keep,    // Fail and leave the existing file untouched.
};

// Writes `data` to `path` so that a reader, or the file system after a
// crash, has the old file or the whole new one and never a part. The data
// goes to a temporary file in the same directory (created with O_EXCL and
// `mode`, whatever the umask), is fsynced and renamed over `path`, and then
// the directory is fsynced. When root writes into a directory that another
// user or group owns, the file gets that owner and group.
// Errors: `Io` for a failing system call; `Invalid` when `existing` is
// `Keep` and `path` exists.
[[nodiscard]] Result<void> write_file_atomic(const std::filesystem::path &path,
                                             std::string_view data, mode_t mode,
                                             ExistingFile existing);

// Writes `key` as an unencrypted PKCS#8 PEM file with mode 0600. The PEM
// text only passes through OpenSSL's secure heap, which is wiped on free.
[[nodiscard]] Result<void> write_private_key(const std::filesystem::path &path,
                                             EVP_PKEY *key,
                                             ExistingFile existing);

// Writes `certificate` as a PEM file with mode 0644, because clients and
// provisioning tools read certificates.
[[nodiscard]] Result<void> write_certificate(const std::filesystem::path &path,
                                             X509 *certificate,
                                             ExistingFile existing);

// Reads a PEM private key. Errors: `Invalid` when the file cannot be opened
// or parsed, with OpenSSL's reason in the message.
[[nodiscard]] Result<EvpPkeyPtr>
read_private_key(const std::filesystem::path &path);

// Reads the first PEM certificate of `path`. Errors as `read_private_key`.
[[nodiscard]] Result<X509Ptr>
read_certificate(const std::filesystem::path &path);

// Returns the queued OpenSSL errors of this thread as one line and clears
// the queue, or "no OpenSSL error queued" when it is empty.
std::string take_openssl_errors();

} // namespace gatecache::tls
