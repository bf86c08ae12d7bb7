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
  // `listen` entries may be maps {address, client_certificates}: with
  // client_certificates "required", clients must present a certificate
  // from the internal CA; "optional" verifies one when sent. Default
  // "none".
  enum class ClientAuth {
    None,
    Optional,
    Required
  } client_auth = ClientAuth::None;
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
  // `storage.scrub_interval`: time from the end of one re-hash of every
  // stored file to the start of the next; 0 turns scrubbing off. Default 7
  // days.
  double scrub_interval_s = 7 * 86400.0;
  // `storage.scrub_rate`: bytes per second a scrub may read. Default 32 MiB.
  uint64_t scrub_rate_bytes = 32ULL << 20;
};

struct TlsConfig {
  // `tls.server_lifetime`: validity of issued server certificates, 60 s to
  // 825 days. Default 90 days.
  double server_lifetime_s = 90.0 * 86400;
  // `tls.renew_before`: share of the lifetime left at which the server
  // certificate is renewed, greater than 0 and less than 1. Default 1/3.
  double renew_fraction = 1.0 / 3;
  // `tls.names`: DNS names and IP addresses for the server certificate's
  // subjectAltName. Default: localhost, 127.0.0.1, ::1.
  std::vector<std::string> names = {"localhost", "127.0.0.1", "::1"};
  // `tls.dir`: where the CA and server keys live. Default
  // `<storage.path>/tls`.
  std::string dir;
};

// A tag pattern and how long a tag matching it is served without asking
// the upstream.
struct FreshnessRule {
  // `tags`: glob over the tag (`*` any run, `?` one character), for
  // example "latest", "v*", "*-alpine".
  std::string pattern;
  // `window`: a duration such as 30s, 10m, 6h, at most 30 days. 0 means
  // every request revalidates the tag upstream.
  double window_s = 600;
};

// Kinds of upstream request that spend the upstream's budget.
struct CountedRequests {
  bool manifest_get = true; // Docker Hub counts these.
  bool manifest_head = false;
  bool blob_get = false;
};

// `upstreams.<name>.budget`: the budget assumed when the upstream sends no
// rate-limit headers, and which requests it counts.
struct BudgetConfig {
  // `limit`: requests per window; 0 means no budget unless the upstream
  // announces one.
  uint64_t limit = 0;
  double window_s = 21600; // `window`. Default 6h.
  // `counted`: list of manifest_get, manifest_head, blob_get. Default
  // [manifest_get].
  CountedRequests counted;
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
  // `freshness`: list of {tags, window}; the first matching rule applies.
  // A tag no rule matches uses `default_freshness_s`. Default: none.
  std::vector<FreshnessRule> freshness;
  // `default_freshness`: window of the tags no rule matches, as
  // `FreshnessRule::window_s`. Default 10m.
  double default_freshness_s = 600;
  BudgetConfig budget;
};

// An IPv4 or IPv6 network. IPv4 peers seen as IPv4-mapped IPv6 addresses
// (::ffff:a.b.c.d) match IPv4 networks.
struct Cidr {
  std::string address; // Canonical network address, host bits zero.
  unsigned prefix_length = 0;
  bool ipv6 = false;
  std::string str() const; // "10.1.0.0/16".
};

// `clusters.<name>`: a set of clients that shares budget and statistics.
struct ClusterConfig {
  std::string name; // Map key: [a-z0-9][a-z0-9_-]{0,62}.
  // `sources`: CIDRs or single addresses (taken as /32 or /128).
  std::vector<Cidr> sources;
  // `client_names`: subject common names of client certificates from the
  // internal CA that identify this cluster. Default: [<name>].
  std::vector<std::string> client_names;
  // `weight`: share of the budget under scarcity, 1-1000. Default 1.
  unsigned weight = 1;
};

// `scheduler`: how counted upstream requests are released.
struct SchedulerConfig {
  // `reserve`: share of an upstream's limit kept for nodes waiting on a
  // pull; revalidation and prewarm never spend it. Default 0.2.
  double reserve_fraction = 0.2;
  // `max_wait`: how long a node's request may wait for budget before it
  // gets 429 TOOMANYREQUESTS. Default 20s.
  double max_wait_s = 20;
  // `max_in_flight`: counted requests running at once per upstream.
  unsigned max_in_flight = 8;
  // `low_budget`: share of the limit below which freshness windows
  // stretch, up to `max_stretch` times when nothing but the reserve is
  // left. Defaults 0.5 and 8.
  double low_budget_fraction = 0.5;
  double max_stretch = 8;
};

// `prewarm`: image sets kept in the cache in the background.
struct PrewarmConfig {
  // `sets`: names of files in `images_dir` (without .yaml) or absolute
  // paths. Default: none.
  std::vector<std::string> sets;
  // `images_dir`: where named sets live. Default
  // /usr/share/gatecache/images.
  std::string images_dir = "/usr/share/gatecache/images";
  // `interval`: how often sets are refreshed, 1 minute to 7 days.
  // Default 6h.
  double interval_s = 21600;
};

// `admin`: the local control endpoint used by `gatecache status`,
// `gatecache prewarm` and metrics scrapers. Plain HTTP/1.1.
struct AdminConfig {
  // `socket`: Unix socket path. Default <storage.path>/admin.sock. Empty
  // string turns the socket off.
  std::string socket;
  // `listen`: list of "address:port" for /metrics and the read-only
  // endpoints; loopback addresses only. Default: none.
  std::vector<ListenAddress> listen;
};

struct UpstreamClientConfig {
  double connect_timeout_s = 10;  // `upstream_timeouts.connect`.
  double response_timeout_s = 30; // `upstream_timeouts.response`.
  double idle_timeout_s = 60;     // `upstream_timeouts.idle`.
};

// `front`: limits of the TLS listeners that serve the nodes. The defaults
// are those of `front::FrontConfig`.
struct FrontLimitsConfig {
  // `max_connections`: open client connections of all listeners, those in
  // the TLS handshake included, at which accepting pauses until one
  // closes. 1 to 2^32-1. Default 10000.
  uint64_t max_connections = 10000;
  // `handshake_timeout`: time from accept to the end of the TLS handshake.
  // Default 10s.
  double handshake_timeout_s = 10;
  // `idle_timeout`: time without I/O after which a connection with no
  // request in flight closes, and a client that stopped reading a
  // response loses it. Default 2m.
  double idle_timeout_s = 120;
  // `header_timeout`: time from the first byte of an HTTP/1.1 request head
  // to its end. Default 30s.
  double header_timeout_s = 30;
  // `graceful_timeout`: time a stop lets responses in flight finish before
  // it closes their connections. Default 30s.
  double graceful_timeout_s = 30;
  // `max_concurrent_streams`: HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS, 1 to
  // 2^31-1. Default 256.
  uint32_t max_concurrent_streams = 256;
  // `max_header_bytes`: largest request head, in the size syntax of
  // `storage.max_size`, 4 KiB to 1 MiB. Larger requests get 431. Default
  // 64 KiB.
  uint64_t max_header_bytes = 64 * 1024;
};

struct LogConfig {
  std::string level = "info";        // `log.level`: debug, info, warn, error.
  std::string access_log = "stderr"; // `log.access_log`: stderr, off, path.
};

struct Config {
  std::string source_path; // The file this was read from.
  // `listen`: list of "address:port", or of maps {address,
  // client_certificates}. Default ["127.0.0.1:5443", "[::1]:5443"].
  std::vector<ListenAddress> listen;
  StorageConfig storage;
  TlsConfig tls;
  std::map<std::string, UpstreamConfig> upstreams; // `upstreams`.
  // `default_upstream`: used when a request has no `ns`. Default: the only
  // upstream when there is one, else none (then `ns` is required).
  std::string default_upstream;
  UpstreamClientConfig upstream_timeouts;
  FrontLimitsConfig front;
  LogConfig log;
  // `clusters`: map from name to cluster. Empty: every client belongs to
  // one cluster named "default". Non-empty: a client in no cluster gets
  // 403 DENIED.
  std::vector<ClusterConfig> clusters;
  SchedulerConfig scheduler;
  PrewarmConfig prewarm;
  AdminConfig admin;
};

// Reads and validates `path`. Errors name file:line:column and the key.
// Returns NotFound or Io when the file cannot be read, and Invalid for YAML
// syntax errors and bad values, with one line per error (at most 20) of
// the form "FILE:LINE:COLUMN: key 'a.b': what is wrong (value 'x';
// expected ...)". No exception escapes.
Result<std::shared_ptr<const Config>> load_config(const std::string &path);

} // namespace gatecache::config
