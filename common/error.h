// Error values shared by every part of gatecache.
#pragma once

#include <string>
#include <utility>

#include <tl/expected.hpp>

namespace gatecache {

// Broad class of a failure. The code decides behaviour (the front maps it to
// an OCI error code and an HTTP status); the message is for logs.
enum class ErrorCode {
  Invalid,          // Malformed input: a name, a digest, a header, a config.
  NotFound,         // The thing does not exist (here or upstream).
  Timeout,          // A connect, read or idle deadline passed.
  Unreachable,      // DNS, connect or TLS failure towards an upstream.
  UpstreamRejected, // The upstream returned an unexpected status.
  Unauthorized,     // The upstream refused our credentials or token.
  RateLimited,      // 429 from an upstream, or the budget is spent.
  Denied,           // Policy: unknown upstream, client not allowed.
  StorageFull,      // The disk or the LMDB map is full.
  Corrupt,          // Content does not match its digest or size.
  Io,               // A system call on local storage failed.
  Cancelled,        // Every interested party went away.
  Internal,         // A bug or a library failure with no better class.
};

// Returns a stable lower-case name for `code`, for logs and metrics.
const char *to_string(ErrorCode code);

struct Error {
  ErrorCode code = ErrorCode::Internal;
  std::string message;
};

template <typename T> using Result = tl::expected<T, Error>;

// Builds the error alternative of a `Result`:
// `return fail(ErrorCode::Invalid, "bad digest " + s);`
inline tl::unexpected<Error> fail(ErrorCode code, std::string message) {
  return tl::unexpected<Error>(Error{code, std::move(message)});
}

// Returns `strerror(errnum)` with the call that failed, as "open: No such
// file or directory".
std::string errno_message(const char *what, int errnum);

} // namespace gatecache
