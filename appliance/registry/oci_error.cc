#include "appliance/registry/oci_error.h"

#include <utility>

#include <nlohmann/json.hpp>

namespace gatecache::registry {

OciError OciError::name_invalid(std::string message) {
  return {400, "NAME_INVALID", std::move(message)};
}

OciError OciError::name_unknown(std::string message) {
  return {404, "NAME_UNKNOWN", std::move(message)};
}

OciError OciError::manifest_unknown(std::string message) {
  return {404, "MANIFEST_UNKNOWN", std::move(message)};
}

OciError OciError::blob_unknown(std::string message) {
  return {404, "BLOB_UNKNOWN", std::move(message)};
}

OciError OciError::digest_invalid(std::string message) {
  return {400, "DIGEST_INVALID", std::move(message)};
}

OciError OciError::unsupported(std::string message) {
  return {405, "UNSUPPORTED", std::move(message)};
}

OciError OciError::too_many_requests(std::string message) {
  return {429, "TOOMANYREQUESTS", std::move(message)};
}

OciError OciError::denied(std::string message) {
  return {403, "DENIED", std::move(message)};
}

OciError OciError::unauthorized(std::string message) {
  return {401, "UNAUTHORIZED", std::move(message)};
}

OciError OciError::range_invalid(std::string message) {
  return {416, "RANGE_INVALID", std::move(message)};
}

OciError OciError::unavailable(std::string message) {
  return {503, "UNAVAILABLE", std::move(message)};
}

std::string oci_error_body(const OciError &error) {
  // ordered_json keeps the members in the order of the specification's
  // examples: code, message, detail.
  nlohmann::ordered_json entry;
  entry["code"] = error.code;
  entry["message"] = error.message;
  entry["detail"] = nullptr;

  nlohmann::ordered_json body;
  body["errors"] = nlohmann::ordered_json::array({std::move(entry)});
  // The replace handler never throws on invalid UTF-8, unlike the default.
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

} // namespace gatecache::registry
