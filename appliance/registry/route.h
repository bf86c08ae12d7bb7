// Maps a request of the OCI distribution pull API to an endpoint, an
// upstream, a repository and a reference, or to the OCI error to send.
//
// Paths (OCI distribution specification, "Pulling"):
//   /v2/ and /v2                          Base (API version check)
//   /v2/<name>/manifests/<reference>      Manifest, by tag or digest
//   /v2/<name>/blobs/<digest>             Blob
//   /v2/<name>/tags/list                  TagsList
// The upstream comes from the `ns` query parameter, which containerd adds
// when it uses a mirror ("?ns=docker.io"), or from `default_upstream`.
//
// Errors, checked in this order:
//   - A control character in the path or query: 400 NAME_INVALID.
//   - '%' in the path: 400 NAME_INVALID. No valid name, tag or digest
//     needs percent-encoding, and decoding would let "%2e%2e" or "%2F"
//     slip past the checks below.
//   - A path outside /v2: 404 NAME_UNKNOWN.
//   - A method other than GET and HEAD: 405 UNSUPPORTED, because gatecache
//     is a read-only mirror.
//   - An empty, "." or ".." path segment: 400 NAME_INVALID.
//   - /v2/_catalog and blob uploads: 405 UNSUPPORTED. A catalog of a
//     pull-through cache would list only what happens to be cached.
//   - Any other path under /v2, including the referrers API: 404
//     NAME_UNKNOWN, the OCI code closest to "no such endpoint". Clients
//     fall back to the referrers tag schema when the referrers API
//     returns 404.
//   - A bad repository name or tag: 400 NAME_INVALID. A bad digest: 400
//     DIGEST_INVALID.
//   - A malformed `ns`: 400 NAME_INVALID. An `ns` that names no configured
//     upstream, or no `ns` and no default upstream: 403 DENIED.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <string_view>

#include <tl/expected.hpp>

#include "appliance/config/config.h"
#include "appliance/front/exchange.h"
#include "appliance/registry/grammar.h"
#include "appliance/registry/oci_error.h"

namespace gatecache::registry {

enum class Endpoint { Base, Manifest, Blob, TagsList };

struct Route {
  Endpoint endpoint = Endpoint::Base;
  // Upstream key as in `Config::upstreams` ("docker.io"). For Base, empty
  // when the request has no `ns` and no default upstream is configured.
  std::string upstream;
  // Repository, with "library/" added to single-segment Docker Hub names.
  // Empty for Base.
  std::string repository;
  // Tag or digest for Manifest, digest for Blob, empty otherwise.
  std::string reference;
  // True when `reference` is a digest ("sha256:<64 hex>").
  bool by_digest = false;
};

// The upstreams a request may name, and the default one.
class RouteTable {
public:
  RouteTable() = default;

  static RouteTable from_config(const config::Config &config);

  // Adds an upstream. Precondition: `name` is normalised as
  // `config::parse_registry_host()` returns it.
  void add_upstream(std::string name, bool docker_hub);

  // Sets the upstream of requests without `ns`; empty for none.
  void set_default_upstream(std::string name);

  bool contains(std::string_view name) const;
  bool is_docker_hub(std::string_view name) const;

  const std::string &default_upstream() const { return default_upstream_; }

private:
  // Upstream name to "is Docker Hub".
  std::map<std::string, bool, std::less<>> upstreams_;
  std::string default_upstream_;
};

// Routes a request. `method` is the request method as received ("GET");
// `path` is the raw path with percent-encoding intact, and `query` the raw
// query without '?'. Returns the OCI error to send when the request cannot
// be served; the header comment lists which error each case gets.
[[nodiscard]] tl::expected<Route, OciError>
route_request(const RouteTable &table, std::string_view method,
              std::string_view path, std::string_view query);

// Routes `request` with its method name, path and query.
[[nodiscard]] tl::expected<Route, OciError>
route_request(const RouteTable &table, const front::Request &request);

} // namespace gatecache::registry
