// The running configuration: plain structs filled by `load_config()`.
// Every field lists its YAML key, meaning, unit and default.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"

namespace gatecache::config {

struct ListenAddress {
  std::string host; // Literal IPv4 or IPv6 address, without brackets.
  uint16_t port = 0;
  std::string str() const; // "127.0.0.1:5443" or "[::1]:5443".
};

struct StorageConfig {
  // `storage.path`: state directory (index, blobs, CA). Default
  // /var/lib/gatecache.
  std::string path = "/var/lib/gatecache";
  // `storage.max_size`: bytes the blob store may use, as a number or with a
  // suffix (KiB, MiB, GiB, TiB, KB, MB, GB, TB). Default 50 GiB.
  uint64_t max_size_bytes = 50ULL << 30;
  // `storage.index_map_size`: LMDB map size. Default 1 GiB.
  uint64_t index_map_size_bytes = 1ULL << 30;
};

struct TlsConfig {
  // `tls.names`: DNS names and IP addresses for the server certificate's
  // subjectAltName. Default: localhost, 127.0.0.1, ::1.
  std::vector<std::string> names = {"localhost", "127.0.0.1", "::1"};
  // `tls.dir`: where the CA and server keys live. Default
  // `<storage.path>/tls`.
  std::string dir;
};

struct UpstreamConfig {
  // Map key: "docker.io", "ghcr.io", "127.0.0.1:5000", "[::1]:5000". Host
  // names are lower-cased and IPv6 addresses canonical, as
  // `parse_registry_host()` in values.h returns them.
  std::string name;
  // `url`: base URL, https only. Default `https://<name>`, and for
  // docker.io `https://registry-1.docker.io`.
  std::string url;
  // `ca_file`: extra PEM CA bundle for this upstream. Default: none.
  std::string ca_file;
  // True for Docker Hub, whose single-segment names get `library/`.
  bool docker_hub = false;
};

struct UpstreamClientConfig {
  double connect_timeout_s = 10; // `upstream_timeouts.connect`.
  double response_timeout_s = 30; // `upstream_timeouts.response`.
  double idle_timeout_s = 60;     // `upstream_timeouts.idle`.
};

struct LogConfig {
  std::string level = "info";       // `log.level`: debug, info, warn, error.
  std::string access_log = "stderr"; // `log.access_log`: stderr, off, path.
};

struct Config {
  std::string source_path; // The file this was read from.
  // `listen`: list of "address:port". Default ["127.0.0.1:5443",
  // "[::1]:5443"].
  std::vector<ListenAddress> listen;
  StorageConfig storage;
  TlsConfig tls;
  std::map<std::string, UpstreamConfig> upstreams; // `upstreams`.
  // `default_upstream`: used when a request has no `ns`. Default: the only
  // upstream when there is one, else none (then `ns` is required).
  std::string default_upstream;
  UpstreamClientConfig upstream_timeouts;
  LogConfig log;
};

// Reads and validates `path`. Errors name file:line:column and the key.
// Returns NotFound or Io when the file cannot be read, and Invalid for YAML
// syntax errors and bad values, with one line per error (at most 20) of
// the form "FILE:LINE:COLUMN: key 'a.b': what is wrong (value 'x';
// expected ...)". No exception escapes.
Result<std::shared_ptr<const Config>> load_config(const std::string &path);

} // namespace gatecache::config
