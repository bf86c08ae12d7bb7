// Error responses of the OCI distribution API: an HTTP status and a JSON
// body with a registered code, as in
// `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"...","detail":null}]}`.
#pragma once

#include <string>
#include <string_view>

namespace gatecache::registry {

// Content-Type of `oci_error_body()`.
inline constexpr std::string_view OciErrorContentType =
    "application/json; charset=utf-8";

// One error of the OCI distribution API. An aggregate, so callers may also
// write `OciError{404, "MANIFEST_UNKNOWN", "..."}`; the factories below
// pair each code with the status gatecache sends for it.
struct OciError {
  int status = 500;
  std::string code;    // Registered code, as "NAME_INVALID".
  std::string message; // For people. May echo client input, escaped later.

  // 400: malformed repository name, tag or request path.
  static OciError name_invalid(std::string message);
  // 404: unknown repository or path.
  static OciError name_unknown(std::string message);
  // 404: no such manifest, here or upstream.
  static OciError manifest_unknown(std::string message);
  // 404: no such blob, here or upstream.
  static OciError blob_unknown(std::string message);
  // 400: malformed or unsupported digest.
  static OciError digest_invalid(std::string message);
  // 405: push, delete, uploads and the catalog. Send `Allow: GET, HEAD`.
  static OciError unsupported(std::string message);
  // 429: the upstream's rate limit or gatecache's budget is spent. Send
  // `Retry-After` when the wait is known.
  static OciError too_many_requests(std::string message);
  // 403: the request names an upstream that is not configured.
  static OciError denied(std::string message);
  // 401: authentication required. Send `WWW-Authenticate`.
  static OciError unauthorized(std::string message);
  // 416: bad, multiple or unsatisfiable Range. Send
  // `Content-Range: bytes */<size>` when the size is known.
  static OciError range_invalid(std::string message);
  // 503: the upstream failed and no cached copy exists. UNAVAILABLE is not
  // in the OCI list of codes. The CNCF distribution registry registers it
  // with status 503 (registry/api/errcode/register.go).
  static OciError unavailable(std::string message);
};

// Returns the JSON body for `error`. Invalid UTF-8 in the message is
// replaced with U+FFFD, so hostile input cannot make the body invalid.
std::string oci_error_body(const OciError &error);

} // namespace gatecache::registry
