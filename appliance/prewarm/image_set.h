// Image sets: YAML files that list the images to keep in the cache, for
// example everything a Kubernetes node pulls at first boot.
//
// A set file:
//
//   name: kubernetes-1.31             # optional, defaults to the file stem
//   description: Images a kubeadm node pulls at first boot
//   platforms: [linux/amd64, linux/arm64]   # default for every image
//   images:
//     - registry.k8s.io/pause:3.10
//     - ref: registry.k8s.io/etcd:3.5.15-0
//       platforms: [linux/amd64]
//
// Every image needs at least one platform, from its own entry or from the
// set, so that a set never silently means "every platform of an index".
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/error.h"

namespace gatecache::prewarm {

// Maximum number of images in one set. It bounds the memory a set read
// from a file or the admin endpoint can take, far above the tens of
// images a node needs.
inline constexpr size_t MaxImagesPerSet = 10000;

// An image reference in the form gatecache serves it: the registry as an
// `upstreams` key, and the repository with "library/" added on Docker Hub.
struct ImageRef {
  // Registry host as `config::parse_registry_host()` normalises it
  // ("docker.io", "registry.k8s.io", "127.0.0.1:5000", "[::1]:5000").
  std::string registry;
  std::string repository; // "library/nginx", "kube-apiserver".
  std::string reference;  // A tag, or a digest "sha256:<hex>".
  bool by_digest = false; // True when `reference` is a digest.
  // Platforms to fetch from an image index: "os/arch" or
  // "os/arch/variant", lower case, as "linux/arm64/v8".
  std::vector<std::string> platforms;

  // Returns the full reference: "docker.io/library/nginx:latest" or
  // "ghcr.io/a/b@sha256:...".
  std::string str() const;
};

struct ImageSet {
  // Set name, shown in status and logs. Matches [A-Za-z0-9._-]+.
  std::string name;
  std::string description; // Empty when the file has none.
  // The file the set was read from, or the source name given to
  // `parse_image_set`.
  std::string source_path;
  std::vector<ImageRef> images;
};

// Parses an image reference as `docker pull` reads it. The first path
// component is a registry when it contains '.' or ':', starts with '[' or
// is "localhost"; otherwise the registry is docker.io. "index.docker.io"
// means docker.io, and single-component Docker Hub names get "library/".
// A missing tag means "latest". A tag followed by a digest
// ("nginx:1.27@sha256:...") is checked and dropped, because the digest
// alone selects the content. Repository names, tags and digests follow the
// OCI distribution grammar (sha256 and sha512 digests only). Examples:
//   "nginx"                 -> docker.io/library/nginx:latest
//   "ghcr.io/a/b:1"         -> ghcr.io/a/b:1
//   "a/b@sha256:<64 hex>"   -> docker.io/a/b@sha256:<64 hex>
//   "[::1]:5000/x:y"        -> [::1]:5000/x:y
// The result has no platforms. Returns Invalid with the reason.
[[nodiscard]] Result<ImageRef> parse_image_reference(std::string_view text);

// Checks a platform "os/arch" or "os/arch/variant": lower-case letters,
// digits and '_' in each part. "unknown/unknown", which marks attestation
// manifests in an index, is invalid.
[[nodiscard]] Result<void> check_platform(std::string_view text);

// Reads and validates the set file at `path` (at most 1 MiB). Returns
// NotFound or Io when the file cannot be read, and Invalid with one line
// "FILE:LINE:COLUMN: key 'a.b': what is wrong (value 'x'; expected ...)"
// per error, at most 20.
[[nodiscard]] Result<ImageSet> load_image_set(const std::string &path);

// Parses the set in `yaml`. `source_name` prefixes error messages, gives
// the default set name (its file stem) and becomes `source_path`.
[[nodiscard]] Result<ImageSet> parse_image_set(std::string_view yaml,
                                               std::string source_name);

// Returns the file of a set named on the command line or in
// `prewarm.sets`. An absolute path is used as it is. A relative path (one
// with '/' or ending in .yaml or .yml) is resolved against the working
// directory, so the daemon, whose working directory is "/", should pass
// only names and absolute paths, as the config loader enforces. Any other
// text is a set name and means "<images_dir>/<name>.yaml". Returns
// Invalid for a malformed name and NotFound, listing the sets in
// `images_dir`, when the file does not exist.
[[nodiscard]] Result<std::string>
resolve_set_path(const std::string &name_or_path,
                 const std::string &images_dir);

// Converts a set to JSON for the admin endpoint:
// {"name", "description", "source_path",
//  "images": [{"ref": "<ImageRef::str()>", "platforms": [...]}]}.
nlohmann::json to_json(const ImageSet &set);

// Reads JSON written by `to_json`, validating every value as
// `parse_image_set` does, because it comes from a client of the admin
// endpoint. Returns Invalid naming the first wrong field.
[[nodiscard]] Result<ImageSet> image_set_from_json(const nlohmann::json &json);

} // namespace gatecache::prewarm
