// Fills the cache from image sets: for each image, the manifest by tag or
// digest, only the child manifests of the requested platforms (never
// attestations), then the config and layer blobs. Requests go through the
// registry service at prewarm priority, so they coalesce with node pulls,
// wait while the budget is at or below the reserve and never spend it.
//
// Content of a finished set is pinned against eviction; the pins are
// stored in the index under "pins/<set name>".
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include <ev.h>
#include <nlohmann/json.hpp>

#include "appliance/prewarm/image_set.h"
#include "appliance/registry/disk_worker.h"
#include "appliance/registry/internal_exchange.h"
#include "cache/index.h"
#include "common/error.h"

namespace gatecache::registry {

class RegistryService;
class Usage;

// Digests that eviction must skip. Read by disk worker threads.
class PinSet {
public:
  bool contains(const std::string &digest) const;
  // Replaces the pins of `set`.
  void assign(const std::string &set, std::vector<std::string> digests);

private:
  mutable std::mutex mutex_;
  std::map<std::string, std::vector<std::string>> by_set_;
  std::unordered_multiset<std::string> all_;
};

class Prewarmer {
public:
  Prewarmer(struct ev_loop *loop, RegistryService &service, Usage &usage,
            std::shared_ptr<cache::Index> index, DiskWorker &worker,
            std::shared_ptr<PinSet> pins);
  ~Prewarmer();

  // Loads the pins of earlier runs from the index. Blocking: call at start.
  void load_pins();

  // Starts a job over `sets`; returns its id.
  uint64_t start(std::vector<prewarm::ImageSet> sets, front::Priority priority);

  std::optional<nlohmann::json> job_json(uint64_t id) const;
  nlohmann::json jobs_json() const;

private:
  struct Job;
  struct ImageTask;

  void next_image(Job &job);
  void
  request(Job &job, ImageTask &task, const std::string &path, bool manifest,
          std::function<void(Job &, ImageTask &, const InternalResult &)> then);
  void on_manifest(Job &job, ImageTask &task, const std::string &reference,
                   const InternalResult &result);
  void fetch_blobs(Job &job, ImageTask &task);
  void image_done(Job &job, ImageTask &task, std::string error);
  void finish_job(Job &job);
  void retire(std::shared_ptr<InternalExchange> exchange);
  static void on_retire_timer(struct ev_loop *loop, ev_timer *timer,
                              int revents);

  struct ev_loop *loop_;
  RegistryService &service_;
  Usage &usage_;
  std::shared_ptr<cache::Index> index_;
  DiskWorker &worker_;
  std::shared_ptr<PinSet> pins_;
  std::map<uint64_t, std::unique_ptr<Job>> jobs_;
  uint64_t next_job_ = 1;
  // Finished exchanges are destroyed by a timer about a second later,
  // never inside their own callbacks.
  std::vector<std::shared_ptr<InternalExchange>> retired_;
  ev_timer retire_timer_;
};

} // namespace gatecache::registry
