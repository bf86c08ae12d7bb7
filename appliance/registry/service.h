// The pull-through registry: serves the OCI distribution pull API from the
// cache and fills the cache from the upstreams.
//
// Request path:
//  - A manifest by tag is revalidated with a HEAD, which is free on Docker
//    Hub. A changed or unknown digest is fetched by digest, so a tag moving
//    while the request runs never stores mismatched bytes. Upstream
//    unreachable, 5xx or 429: the stored tag is served stale and logged.
//  - Manifests and blobs by digest are served from the store once the
//    repository is known to hold them; content seen only in another
//    repository is confirmed with a HEAD first.
//  - A missing blob starts one `BlobFetch` per upstream, and every request
//    for that digest and upstream follows the same download.
//  - A manifest is stored only with a manifest media type that agrees with
//    its `mediaType` field, and keeps the type it was first stored with.
// Threading: one instance per loop; storage writes go to the `DiskWorker`.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <ev.h>

#include "appliance/config/config.h"
#include "appliance/front/exchange.h"
#include "appliance/registry/blob_fetch.h"
#include "appliance/registry/buffered_call.h"
#include "appliance/registry/disk_worker.h"
#include "appliance/registry/manifest_cache.h"
#include "appliance/registry/prewarmer.h"
#include "appliance/registry/route.h"
#include "appliance/registry/usage.h"
#include "appliance/upstream/client.h"
#include "cache/blob_store.h"
#include "cache/index.h"

namespace gatecache::registry {

struct ServiceLimits {
  // Largest manifest accepted from an upstream. The OCI distribution
  // specification recommends that registries accept at least 4 MiB.
  size_t max_manifest_bytes = 8 << 20;
  // Memory for verified manifests served without disk reads.
  size_t manifest_cache_bytes = 64 << 20;
  // Seconds between flushes of last-access times to the index.
  double access_flush_interval_s = 30;
};

// Digests served since their last access time was written to the index.
// Filled on the loop, drained by disk worker jobs before they evict.
class AccessLog {
public:
  // Records that `digest` was served at `unix_time` (seconds).
  void add(const std::string &digest, int64_t unix_time);
  // Writes the pending access times to `index`, each with the time it was
  // recorded at. Blocking: call off the loop.
  void flush(cache::Index &index);

private:
  // Bound on pending digests between two flushes.
  static constexpr size_t MaxPending = 100'000;
  std::mutex mutex_;
  std::unordered_map<std::string, int64_t> last_access_;
};

// Digests evicted by disk worker jobs, for the loop to drop from memory.
class EvictionLog {
public:
  void add(std::vector<std::string> digests);

  // True when `take()` has something; cheap enough for every request.
  bool pending() const { return pending_.load(std::memory_order_acquire); }

  std::vector<std::string> take();

private:
  std::atomic<bool> pending_{false};
  std::mutex mutex_;
  std::vector<std::string> digests_;
};

class RegistryService final : public front::RequestHandler {
public:
  RegistryService(struct ev_loop *loop,
                  std::shared_ptr<const config::Config> config,
                  std::shared_ptr<cache::BlobStore> store,
                  std::shared_ptr<cache::Index> index, upstream::Client &client,
                  DiskWorker &worker, Usage &usage, ServiceLimits limits = {});
  ~RegistryService() override;

  void handle(std::shared_ptr<front::Exchange> exchange) override;

  // Applies a reloaded configuration: upstreams and routes. Requests in
  // flight finish with the settings they started with.
  void reload(std::shared_ptr<const config::Config> config);

  // Records that another thread, such as the scrubber, removed `digest`
  // from the store, so the loop drops it from memory before the next
  // request. Thread-safe.
  void content_removed(const std::string &digest) { evictions_->add({digest}); }

  // Number of blob downloads running, for status and tests.
  size_t fetches_in_flight() const { return fetches_.size(); }

  // Content that eviction skips; prewarm fills it.
  const std::shared_ptr<PinSet> &pins() const { return pins_; }

private:
  using ExchangePtr = std::shared_ptr<front::Exchange>;

  // A counted upstream request granted by the scheduler. Releasing the
  // last reference frees its in-flight slot.
  struct Grant;
  using GrantPtr = std::shared_ptr<Grant>;
  using GrantedFn = std::function<void(GrantPtr)>;
  using RefusedFn = std::function<void(double retry_after_s)>;

  struct GrantWaiter {
    ExchangePtr exchange;
    GrantedFn granted;
    RefusedFn refused;
  };

  // Exchanges waiting for the budget of one upstream call, keyed like the
  // call itself, so that a burst for one manifest costs one request.
  struct PendingGrant {
    scheduler::UpstreamScheduler *scheduler = nullptr;
    uint64_t handle = 0;
    front::Priority priority = front::Priority::Prewarm;
    std::vector<GrantWaiter> waiters;
  };

  // Request attribution and counters.
  void begin_accounting(const ExchangePtr &exchange, size_t cluster,
                        const Route &route);

  // Budget (service_budget.cc).
  void when_budget_allows(const ExchangePtr &exchange,
                          const std::string &upstream, CountedKind kind,
                          const std::string &key, bool has_fallback,
                          GrantedFn granted, RefusedFn refused);
  void on_grant_decided(const std::string &key,
                        const scheduler::Decision &decision);
  void respond_no_budget(const ExchangePtr &exchange, const Route &route,
                         double retry_after_s, const std::string &what);
  bool serve_stale(const ExchangePtr &exchange, const Route &route,
                   const cache::TagRecord &stored, const std::string &reason);

  // Manifests.
  void serve_manifest_by_tag(ExchangePtr exchange, const Route &route);
  void serve_manifest_by_digest(ExchangePtr exchange, const Route &route);
  void on_tag_checked(ExchangePtr exchange, const Route &route,
                      std::optional<cache::TagRecord> stored,
                      const CallResult &result);
  void fetch_manifest(ExchangePtr exchange, const Route &route,
                      const std::string &reference, bool record_tag,
                      front::CacheResult outcome,
                      std::optional<cache::TagRecord> stale = std::nullopt);
  void revalidate_tag(ExchangePtr exchange, const Route &route,
                      std::optional<cache::TagRecord> stored);
  // Serves a stored manifest for a tag the upstream just confirmed, and
  // records the tag when it moved or is new.
  void serve_stored_for_tag(const ExchangePtr &exchange, const Route &route,
                            const std::optional<cache::TagRecord> &stored,
                            const ManifestEntry &entry);
  void on_manifest_fetched(ExchangePtr exchange, const Route &route,
                           const std::string &reference, bool record_tag,
                           front::CacheResult outcome,
                           const CallResult &result);
  // Sets `entry`'s type to the one its digest is already stored with, if
  // any. Returns true when the index has the digest with that type.
  bool keep_stored_media_type(const Route &route, ManifestEntry &entry);
  // Writes a verified manifest to the store and the index on the disk
  // worker, and records `tag` for it unless `tag` is empty.
  void store_manifest(const Route &route, const cache::Digest &digest,
                      std::shared_ptr<const ManifestEntry> entry,
                      const std::string &tag);
  void send_manifest(const ExchangePtr &exchange, const ManifestEntry &entry,
                     front::CacheResult outcome);
  std::shared_ptr<const ManifestEntry> load_manifest(const std::string &digest);

  // Blobs.
  void serve_blob(ExchangePtr exchange, const Route &route);
  // Serves the blob of `fetch` from the store once the download has been
  // verified and stored, or reports its failure.
  void serve_blob_when_stored(const ExchangePtr &exchange, const Route &route,
                              std::shared_ptr<BlobFetch> fetch);
  void send_stored_blob(const ExchangePtr &exchange,
                        const cache::Digest &digest,
                        const cache::ContentRecord &record,
                        front::CacheResult outcome);
  // Joins a download of the request's upstream, after confirming the
  // repository when the download is for another one.
  void join_running_fetch(ExchangePtr exchange, const Route &route,
                          std::shared_ptr<BlobFetch> fetch);
  void join_fetch(ExchangePtr exchange, const Route &route,
                  std::shared_ptr<BlobFetch> fetch, front::CacheResult outcome);
  void start_fetch(ExchangePtr exchange, const Route &route,
                   const cache::Digest &digest);
  void start_fetch_now(ExchangePtr exchange, const Route &route,
                       const cache::Digest &digest, GrantPtr grant);
  void head_blob_upstream(ExchangePtr exchange, const Route &route);
  // Responds to a HEAD of an uncached blob from the upstream's HEAD response,
  // with the headers, status and Range handling of a GET.
  void respond_blob_head(const ExchangePtr &exchange, const Route &route,
                         const upstream::ResponseHead &head);

  // Repository membership of content.
  bool repository_confirmed(const Route &route, const std::string &digest);
  void remember_repository(const Route &route, const std::string &digest,
                           bool persist);
  void confirm_upstream(ExchangePtr exchange, const Route &route,
                        const std::string &what,
                        std::function<void(ExchangePtr)> on_confirmed);

  void observe_responses();

  // Other endpoints and helpers.
  void serve_tags_list(ExchangePtr exchange, const Route &route);
  void respond_error(const ExchangePtr &exchange, const OciError &error,
                     front::HeaderList extra = {});
  void respond_upstream_failure(const ExchangePtr &exchange, const Route &route,
                                const CallResult &result,
                                const std::string &what);
  const upstream::Origin &origin_for(const std::string &upstream);
  void touch(const std::string &digest);
  void flush_access_times();
  static void on_flush_timer(struct ev_loop *loop, ev_timer *timer,
                             int revents);

  struct ev_loop *loop_;
  std::shared_ptr<const config::Config> config_;
  RouteTable routes_;
  std::shared_ptr<cache::BlobStore> store_;
  std::shared_ptr<cache::Index> index_;
  upstream::Client &client_;
  DiskWorker &worker_;
  Usage &usage_;
  ServiceLimits limits_;
  CallGroup calls_;
  ManifestCache manifests_;
  std::unordered_map<std::string, upstream::Origin> origins_;
  // Running blob downloads by upstream and digest.
  std::unordered_map<std::string, std::shared_ptr<BlobFetch>> fetches_;
  std::unordered_set<std::string> confirmed_;
  std::unordered_map<std::string, PendingGrant> pending_grants_;
  std::shared_ptr<AccessLog> access_log_;
  std::shared_ptr<EvictionLog> evictions_;
  std::shared_ptr<PinSet> pins_ = std::make_shared<PinSet>();
  ev_timer flush_timer_;
};

} // namespace gatecache::registry
