// The part of RegistryService that spends upstream budgets: waiting for a
// grant, serving stale copies and refusing with 429 when no budget comes.
#include <algorithm>
#include <cmath>
#include <utility>

#include "appliance/registry/service.h"
#include "common/log.h"

namespace gatecache::registry {

struct RegistryService::Grant {
  Grant(scheduler::UpstreamScheduler *scheduler_in, uint64_t handle_in)
      : scheduler(scheduler_in), handle(handle_in) {}

  ~Grant() {
    if (scheduler != nullptr) {
      scheduler->release(handle);
    }
  }

  Grant(const Grant &) = delete;
  Grant &operator=(const Grant &) = delete;

  scheduler::UpstreamScheduler *scheduler;
  uint64_t handle;
};

void RegistryService::when_budget_allows(const ExchangePtr &exchange,
                                         const std::string &upstream,
                                         CountedKind kind,
                                         const std::string &key,
                                         bool has_fallback, GrantedFn granted,
                                         RefusedFn refused) {
  auto *budget = usage_.scheduler(upstream);
  // Joining a running call costs nothing, and neither does a request the
  // upstream does not count.
  if (budget == nullptr || !usage_.counted(upstream, kind) ||
      calls_.running(key)) {
    granted(nullptr);
    return;
  }
  front::Priority priority = exchange->request().priority;
  auto pending = pending_grants_.find(key);
  if (pending == pending_grants_.end()) {
    if (has_fallback && !budget->available_now(priority)) {
      // A stored copy now beats a fresh one after a wait.
      refused(0);
      return;
    }
    PendingGrant entry;
    entry.scheduler = budget;
    entry.priority = priority;
    entry.waiters.push_back({exchange, std::move(granted), std::move(refused)});
    pending = pending_grants_.emplace(key, std::move(entry)).first;
  } else {
    pending->second.waiters.push_back(
        {exchange, std::move(granted), std::move(refused)});
    if (static_cast<int>(priority) >=
        static_cast<int>(pending->second.priority)) {
      return;
    }
    // A waiting node joined a prewarm or revalidation: ask again at the
    // node's priority.
    budget->cancel(pending->second.handle);
    pending->second.priority = priority;
  }
  scheduler::Ticket ticket;
  ticket.priority = priority;
  ticket.cluster = exchange->cluster;
  ticket.what = key.substr(key.find('\n') + 1);
  std::replace(ticket.what.begin(), ticket.what.end(), '\n', ' ');
  pending->second.handle = budget->request(
      std::move(ticket), [this, key](const scheduler::Decision &decision) {
        on_grant_decided(key, decision);
      });
}

void RegistryService::on_grant_decided(const std::string &key,
                                       const scheduler::Decision &decision) {
  auto found = pending_grants_.find(key);
  if (found == pending_grants_.end()) {
    return;
  }
  PendingGrant pending = std::move(found->second);
  pending_grants_.erase(found);
  if (!decision.granted) {
    for (auto &waiter : pending.waiters) {
      waiter.refused(decision.retry_after_s);
    }
    return;
  }
  auto grant = std::make_shared<Grant>(pending.scheduler, pending.handle);
  // The budget goes to the first waiter still connected; the others join
  // its call.
  bool charged = false;
  for (auto &waiter : pending.waiters) {
    if (!charged && !waiter.exchange->closed()) {
      charged = true;
      const auto &request = waiter.exchange->request();
      ++usage_.cluster(waiter.exchange->cluster).counted;
      ++usage_.upstream(waiter.exchange->upstream_name).counted;
      GC_LOG(Upstream, debug, "budget granted upstream={} cluster={} for={} {}",
             waiter.exchange->upstream_name,
             usage_.cluster_name(waiter.exchange->cluster),
             front::to_string(request.priority), key.substr(0, key.find('\n')));
    }
    waiter.granted(grant);
  }
}

void RegistryService::respond_no_budget(const ExchangePtr &exchange,
                                        const Route &route,
                                        double retry_after_s,
                                        const std::string &what) {
  auto seconds = static_cast<int64_t>(std::ceil(std::max(1.0, retry_after_s)));
  ++usage_.cluster(exchange->cluster).refused;
  GC_LOG(Registry, info,
         "no budget for {} upstream={} repo={} ref={} peer={} cluster={}; "
         "429 with Retry-After {} s",
         what, route.upstream, route.repository, route.reference,
         exchange->request().peer, usage_.cluster_name(exchange->cluster),
         seconds);
  respond_error(exchange,
                OciError::too_many_requests(
                    "the pull budget of " + route.upstream +
                    " is spent and no cached copy exists; retry later"),
                {{"retry-after", std::to_string(seconds)}});
}

bool RegistryService::serve_stale(const ExchangePtr &exchange,
                                  const Route &route,
                                  const cache::TagRecord &stored,
                                  const std::string &reason) {
  auto entry = load_manifest(stored.digest);
  if (!entry) {
    return false;
  }
  ++usage_.upstream(route.upstream).stale_served;
  GC_LOG(Registry, warn,
         "serving stale tag upstream={} repo={} tag={} digest={}: {}",
         route.upstream, route.repository, route.reference, stored.digest,
         reason);
  send_manifest(exchange, *entry, front::CacheResult::Stale);
  return true;
}

} // namespace gatecache::registry
