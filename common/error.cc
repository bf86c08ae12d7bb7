#include "common/error.h"

#include <cstring>

namespace gatecache {

const char *to_string(ErrorCode code) {
  switch (code) {
  case ErrorCode::Invalid:
    return "invalid";
  case ErrorCode::NotFound:
    return "not_found";
  case ErrorCode::Timeout:
    return "timeout";
  case ErrorCode::Unreachable:
    return "unreachable";
  case ErrorCode::UpstreamRejected:
    return "upstream_rejected";
  case ErrorCode::Unauthorized:
    return "unauthorized";
  case ErrorCode::RateLimited:
    return "rate_limited";
  case ErrorCode::Denied:
    return "denied";
  case ErrorCode::StorageFull:
    return "storage_full";
  case ErrorCode::Corrupt:
    return "corrupt";
  case ErrorCode::Io:
    return "io";
  case ErrorCode::Cancelled:
    return "cancelled";
  case ErrorCode::Internal:
    return "internal";
  }
  return "unknown";
}

std::string errno_message(const char *what, int errnum) {
  char buffer[256];
  // The GNU strerror_r returns a pointer that may or may not be `buffer`.
  const char *text = strerror_r(errnum, buffer, sizeof(buffer));
  return std::string(what) + ": " + text;
}

} // namespace gatecache
