// Upstream usage accounting: cluster attribution, one scheduler per
// upstream for counted requests, per-cluster counters and the recent pulls
// that the admin endpoint reports.
//
// Budgets are stored in the index's state database under
// "budget/<upstream>" as the scheduler's JSON, so a restart keeps what the
// upstream announced and what was spent.
//
// Threading: one instance per loop, used on that loop only; index writes go
// to the disk worker.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ev.h>
#include <nlohmann/json.hpp>

#include "appliance/config/config.h"
#include "appliance/front/exchange.h"
#include "appliance/registry/disk_worker.h"
#include "appliance/scheduler/budget.h"
#include "appliance/scheduler/clusters.h"
#include "appliance/scheduler/scheduler.h"
#include "cache/index.h"

namespace gatecache::registry {

// Upstream requests that an upstream may count against its budget.
enum class CountedKind { ManifestGet, ManifestHead, BlobGet };

struct ClusterCounters {
  uint64_t requests = 0; // Manifest and blob requests.
  uint64_t counted = 0;  // Counted upstream requests started for it.
  uint64_t hits = 0;     // Served from the store with no upstream request.
  uint64_t revalidated = 0;
  uint64_t misses = 0;
  uint64_t stale = 0;
  uint64_t refused = 0; // 429 sent: no budget and no stored copy.
};

struct UpstreamCounters {
  uint64_t stale_served = 0;
  uint64_t throttled = 0; // 429 responses from the upstream.
  uint64_t counted = 0;
};

// One manifest or blob request, for `gatecache pulls`.
struct PullRecord {
  uint64_t sequence = 0;
  double time = 0;    // Unix seconds.
  std::string client; // Address without port.
  size_t cluster = 0;
  std::string upstream;
  std::string repository;
  std::string reference;
  bool manifest = true;
  int status = 0; // 0 until the response ends.
  front::CacheResult cache = front::CacheResult::None;
};

class Usage {
public:
  Usage(struct ev_loop *loop, std::shared_ptr<const config::Config> config,
        std::shared_ptr<cache::Index> index, DiskWorker &worker);
  ~Usage();

  // The cluster of a client, or nullopt when clusters are configured and
  // the client is in none of them.
  std::optional<size_t> classify(const front::Request &request) const {
    return clusters_.classify(request.peer, request.client_name);
  }

  // True when `upstream` counts requests of `kind`.
  bool counted(const std::string &upstream, CountedKind kind) const;

  // The scheduler of `upstream`; null for an unknown name.
  scheduler::UpstreamScheduler *scheduler(const std::string &upstream);

  // Seconds a tag of `upstream` is served without asking, stretched when
  // the budget runs low.
  double freshness_window(const std::string &upstream, const std::string &tag);

  // Feeds a registry response head to the upstream's budget.
  void observe(const std::string &upstream, int status,
               const front::HeaderList &headers);

  ClusterCounters &cluster(size_t index) { return cluster_counters_.at(index); }

  void count_denied() { ++denied_; }

  const std::string &cluster_name(size_t index) const {
    return clusters_.names().at(index);
  }

  UpstreamCounters &upstream(const std::string &name) {
    return upstream_counters_[name];
  }

  // Records the start of a pull; returns its sequence for `finish_pull`.
  uint64_t start_pull(const front::Request &request, size_t cluster,
                      const std::string &upstream,
                      const std::string &repository,
                      const std::string &reference, bool manifest);
  void finish_pull(uint64_t sequence, int status, front::CacheResult cache);

  // Admin views. `pulls` filters by client address when it is non-empty.
  nlohmann::json status_json();
  nlohmann::json pulls_json(const std::string &client, double since,
                            size_t limit) const;
  std::string metrics_text();

  // Writes every budget to the index now (shutdown). Blocking.
  void persist_all();

  // Applies a reloaded configuration: clusters (counters kept by name),
  // budgets and scheduler settings. Budgets of upstreams that are gone
  // stay until exit, since requests may still wait on them.
  void reload(std::shared_ptr<const config::Config> config);

private:
  static constexpr size_t MaxPullRecords = 10'000;

  void persist(const std::string &upstream,
               const scheduler::BudgetState &state);
  void add_scheduler(const std::string &name,
                     const config::UpstreamConfig &upstream);

  struct ev_loop *loop_;
  std::shared_ptr<const config::Config> config_;
  std::shared_ptr<cache::Index> index_;
  DiskWorker &worker_;
  scheduler::ClusterMap clusters_;
  std::vector<ClusterCounters> cluster_counters_;
  std::map<std::string, UpstreamCounters> upstream_counters_;
  std::map<std::string, std::unique_ptr<scheduler::UpstreamScheduler>>
      schedulers_;
  std::deque<PullRecord> pulls_;
  uint64_t next_pull_ = 1;
  uint64_t denied_ = 0; // 403s to clients in no cluster.
  double started_at_ = 0;
};

} // namespace gatecache::registry
