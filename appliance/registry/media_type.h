// Media types of registry responses: Accept negotiation (RFC 9110 section
// 12.5.1) and the check of a manifest's type before it is stored.
//
// Media types compare by their essence (the WHATWG MIME Sniffing
// standard's term): type and subtype, lower-cased, without parameters.
// `application/JSON; charset=utf-8` and `application/json` are the same type.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace gatecache::registry {

inline constexpr std::string_view OciManifestMediaType =
    "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view OciIndexMediaType =
    "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view DockerManifestMediaType =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view DockerManifestListMediaType =
    "application/vnd.docker.distribution.manifest.list.v2+json";
// Unsigned schema 1. The signed variant is `Schema1SignedMediaType`.
inline constexpr std::string_view DockerSchema1MediaType =
    "application/vnd.docker.distribution.manifest.v1+json";

// Content-Type of a blob whose upstream sent none. Registries serve blobs
// as application/octet-stream.
inline constexpr std::string_view DefaultBlobMediaType =
    "application/octet-stream";

// Returns the lower-cased `type/subtype` of a Content-Type or media range,
// with parameters and surrounding whitespace removed.
std::string media_type_essence(std::string_view media_type);

// True when `a` and `b` name the same media type, ignoring parameters and
// the case of type and subtype.
bool same_media_type(std::string_view a, std::string_view b);

// One media range of an Accept header.
struct AcceptRange {
  std::string media_range; // Essence: `type/subtype`, `type/*` or `*/*`.
  // Weight from the `q` parameter, in thousandths: 0 to 1000. Zero means
  // "not acceptable".
  int quality = 1000;
};

// Parses an Accept header value. Empty items are skipped. A `q` value that
// is not a valid qvalue counts as 1, so a malformed weight does not hide a
// type the client lists.
std::vector<AcceptRange> parse_accept(std::string_view accept);

// True when a client whose Accept lists `accepted` may receive
// `media_type`. No Accept header allows every type. Otherwise the most
// specific matching range decides (exact type, then `type/*`, then
// `*/*`), and a type that no range matches, or whose range has `q=0`, is
// not acceptable.
bool acceptable(const std::vector<AcceptRange> &accepted,
                std::string_view media_type);

// True for the manifest media types gatecache stores: OCI image manifest
// and index, Docker schema 2 manifest and manifest list, and Docker
// schema 1, signed or not. `essence` must come from `media_type_essence`.
bool is_manifest_media_type(std::string_view essence);

// Checks a manifest from an upstream before it is stored, and returns the
// essence of its type. `Invalid` when `content_type` is not a manifest
// media type, when `body` is not a JSON object, or when the body's
// `mediaType` field differs from `content_type`.
Result<std::string> check_manifest_media_type(std::string_view content_type,
                                              std::string_view body);

} // namespace gatecache::registry
