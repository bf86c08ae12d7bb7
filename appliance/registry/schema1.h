// Docker image manifest schema 1 ("signed" manifests, media type
// application/vnd.docker.distribution.manifest.v1+prettyjws).
//
// Registries name a signed schema 1 manifest by the sha256 of its JWS
// payload: the body without the `signatures` block. The payload is the
// first `formatLength` bytes of the body followed by the base64url-decoded
// `formatTail`, both taken from a signature's protected header.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace gatecache::registry {

inline constexpr std::string_view Schema1SignedMediaType =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";

// Returns the JWS payload of a signed schema 1 manifest, or nullopt when
// `body` is not one (not JSON, no signature, malformed protected header).
std::optional<std::string> schema1_payload(std::string_view body);

} // namespace gatecache::registry
