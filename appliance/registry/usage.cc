#include "appliance/registry/usage.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <utility>

#include "appliance/scheduler/freshness.h"
#include "common/log.h"

namespace gatecache::registry {

namespace {

double wall_clock() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

// TODO: key budgets by credential too once upstreams can carry
// credentials; every request is anonymous today, so one budget per
// upstream is exact.
std::string budget_key(const std::string &upstream) {
  return "budget/" + upstream;
}

// "10.0.0.5:41000" -> "10.0.0.5", "[::1]:41000" -> "::1".
std::string address_of(const std::string &peer) {
  if (!peer.empty() && peer.front() == '[') {
    size_t close = peer.find(']');
    return close == std::string::npos ? peer : peer.substr(1, close - 1);
  }
  size_t colon = peer.rfind(':');
  return colon == std::string::npos ? peer : peer.substr(0, colon);
}

nlohmann::json time_or_null(double unix_time) {
  return unix_time > 0 ? nlohmann::json(unix_time) : nlohmann::json(nullptr);
}

std::vector<unsigned> weights_of(const scheduler::ClusterMap &clusters) {
  return clusters.weights();
}

// Escapes a Prometheus label value.
std::string label(const std::string &value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

} // namespace

Usage::Usage(struct ev_loop *loop, std::shared_ptr<const config::Config> config,
             std::shared_ptr<cache::Index> index, DiskWorker &worker)
    : loop_(loop), config_(std::move(config)), index_(std::move(index)),
      worker_(worker), clusters_(config_->clusters),
      cluster_counters_(clusters_.size()), started_at_(wall_clock()) {
  for (const auto &[name, upstream] : config_->upstreams) {
    add_scheduler(name, upstream);
  }
}

void Usage::add_scheduler(const std::string &name,
                          const config::UpstreamConfig &upstream) {
  {
    std::optional<scheduler::BudgetState> restored;
    auto stored = index_->get_state(budget_key(name));
    if (!stored) {
      GC_LOG(Upstream, warn, "reading the budget of {} failed: {}", name,
             stored.error().message);
    } else if (*stored) {
      restored = scheduler::BudgetState::from_json(**stored);
      if (!restored) {
        GC_LOG(Upstream, warn, "ignoring an unreadable stored budget of {}",
               name);
      }
    }
    auto scheduler = std::make_unique<scheduler::UpstreamScheduler>(
        loop_, name, upstream.budget, config_->scheduler, weights_of(clusters_),
        restored);
    scheduler->set_cluster_names(clusters_.names());
    scheduler->set_on_change([this, name](const scheduler::BudgetState &state) {
      persist(name, state);
    });
    schedulers_.emplace(name, std::move(scheduler));
    upstream_counters_[name];
  }
}

Usage::~Usage() = default;

void Usage::reload(std::shared_ptr<const config::Config> config) {
  config_ = std::move(config);
  std::map<std::string, ClusterCounters> by_name;
  for (size_t i = 0; i < cluster_counters_.size(); ++i) {
    by_name[clusters_.names().at(i)] = cluster_counters_[i];
  }
  clusters_ = scheduler::ClusterMap(config_->clusters);
  cluster_counters_.assign(clusters_.size(), ClusterCounters{});
  for (size_t i = 0; i < clusters_.size(); ++i) {
    auto found = by_name.find(clusters_.names()[i]);
    if (found != by_name.end()) {
      cluster_counters_[i] = found->second;
    }
  }
  for (const auto &[name, upstream] : config_->upstreams) {
    auto found = schedulers_.find(name);
    if (found == schedulers_.end()) {
      add_scheduler(name, upstream);
      continue;
    }
    found->second->set_config(upstream.budget, config_->scheduler);
    found->second->set_weights(clusters_.weights());
    found->second->set_cluster_names(clusters_.names());
  }
}

bool Usage::counted(const std::string &upstream, CountedKind kind) const {
  auto it = config_->upstreams.find(upstream);
  if (it == config_->upstreams.end()) {
    return false;
  }
  const auto &counted = it->second.budget.counted;
  switch (kind) {
  case CountedKind::ManifestGet:
    return counted.manifest_get;
  case CountedKind::ManifestHead:
    return counted.manifest_head;
  case CountedKind::BlobGet:
    return counted.blob_get;
  }
  return false;
}

scheduler::UpstreamScheduler *Usage::scheduler(const std::string &upstream) {
  auto it = schedulers_.find(upstream);
  return it == schedulers_.end() ? nullptr : it->second.get();
}

double Usage::freshness_window(const std::string &upstream,
                               const std::string &tag) {
  auto it = config_->upstreams.find(upstream);
  if (it == config_->upstreams.end()) {
    return 0;
  }
  auto *budget = scheduler(upstream);
  double stretch = budget ? budget->freshness_stretch() : 1.0;
  return scheduler::freshness_window(it->second, tag, stretch);
}

void Usage::observe(const std::string &upstream, int status,
                    const front::HeaderList &headers) {
  auto *budget = scheduler(upstream);
  if (budget == nullptr) {
    return;
  }
  if (auto observation = scheduler::parse_budget_headers(headers)) {
    budget->observe(*observation);
  }
  if (status == 429) {
    ++upstream_counters_[upstream].throttled;
    std::optional<double> retry_after;
    for (const auto &[name, value] : headers) {
      if (name == "retry-after") {
        retry_after = scheduler::parse_retry_after(value, wall_clock());
        break;
      }
    }
    budget->observe_throttled(retry_after);
  }
}

uint64_t Usage::start_pull(const front::Request &request, size_t cluster,
                           const std::string &upstream,
                           const std::string &repository,
                           const std::string &reference, bool manifest) {
  if (pulls_.size() >= MaxPullRecords) {
    pulls_.pop_front();
  }
  PullRecord record;
  record.sequence = next_pull_++;
  record.time = ev_now(loop_);
  record.client = address_of(request.peer);
  record.cluster = cluster;
  record.upstream = upstream;
  record.repository = repository;
  record.reference = reference;
  record.manifest = manifest;
  pulls_.push_back(std::move(record));
  return pulls_.back().sequence;
}

void Usage::finish_pull(uint64_t sequence, int status,
                        front::CacheResult cache) {
  if (pulls_.empty() || sequence < pulls_.front().sequence) {
    return;
  }
  size_t offset = sequence - pulls_.front().sequence;
  if (offset >= pulls_.size()) {
    return;
  }
  PullRecord &record = pulls_[offset];
  record.status = status;
  record.cache = cache;
}

nlohmann::json Usage::pulls_json(const std::string &client, double since,
                                 size_t limit) const {
  nlohmann::json pulls = nlohmann::json::array();
  const auto &names = clusters_.names();
  // Newest first, so a limit keeps the most recent pulls.
  for (auto it = pulls_.rbegin(); it != pulls_.rend(); ++it) {
    if (it->time < since) {
      break;
    }
    if (!client.empty() && it->client != client) {
      continue;
    }
    if (pulls.size() >= limit) {
      break;
    }
    pulls.push_back({{"time", it->time},
                     {"client", it->client},
                     {"cluster", names.at(it->cluster)},
                     {"ns", it->upstream},
                     {"repository", it->repository},
                     {"reference", it->reference},
                     {"kind", it->manifest ? "manifest" : "blob"},
                     {"status", it->status},
                     {"cache", front::to_string(it->cache)}});
  }
  // Oldest first, as the admin API reports them.
  std::reverse(pulls.begin(), pulls.end());
  return {{"pulls", std::move(pulls)}};
}

nlohmann::json Usage::status_json() {
  double now = wall_clock();
  nlohmann::json upstreams = nlohmann::json::array();
  for (const auto &[name, budget] : schedulers_) {
    if (!config_->upstreams.contains(name)) {
      continue; // Removed by a reload.
    }
    auto status = budget->status();
    const auto &counters = upstream_counters_[name];
    nlohmann::json entry = {
        {"name", name},
        {"limit", status.limit > 0 ? nlohmann::json(status.limit)
                                   : nlohmann::json(nullptr)},
        {"remaining", status.limit > 0 ? nlohmann::json(status.remaining)
                                       : nlohmann::json(nullptr)},
        {"window_s", status.window_s > 0 ? nlohmann::json(status.window_s)
                                         : nlohmann::json(nullptr)},
        {"source", scheduler::to_string(status.source)},
        {"reset_at", time_or_null(status.reset_at)},
        {"blocked_until",
         time_or_null(status.blocked_until > now ? status.blocked_until : 0)},
        {"exhaust_at", status.exhaustion_at
                           ? nlohmann::json(*status.exhaustion_at)
                           : nlohmann::json(nullptr)},
        {"spent_last_hour", status.spent_last_hour},
        {"granted", status.granted_total},
        {"queued",
         {{"node", status.queued[0]},
          {"revalidation", status.queued[1]},
          {"prewarm", status.queued[2]}}},
        {"in_flight", status.in_flight},
        {"stale_served", counters.stale_served},
        {"throttled", counters.throttled}};
    upstreams.push_back(std::move(entry));
  }
  nlohmann::json clusters = nlohmann::json::array();
  const auto &names = clusters_.names();
  const auto &weights = clusters_.weights();
  for (size_t i = 0; i < cluster_counters_.size(); ++i) {
    const auto &c = cluster_counters_[i];
    clusters.push_back({{"name", names.at(i)},
                        {"weight", weights.at(i)},
                        {"requests", c.requests},
                        {"counted", c.counted},
                        {"hits", c.hits},
                        {"revalidated", c.revalidated},
                        {"misses", c.misses},
                        {"stale", c.stale},
                        {"refused", c.refused}});
  }
  return {
      {"version", GATECACHE_VERSION},      {"now", now},
      {"started_at", started_at_},         {"denied", denied_},
      {"upstreams", std::move(upstreams)}, {"clusters", std::move(clusters)}};
}

std::string Usage::metrics_text() {
  std::string out;
  auto counter = [&out](const char *name, const char *help) {
    out += "# HELP ";
    out += name;
    out += ' ';
    out += help;
    out += "\n# TYPE ";
    out += name;
    out += " counter\n";
  };
  auto gauge = [&out](const char *name, const char *help) {
    out += "# HELP ";
    out += name;
    out += ' ';
    out += help;
    out += "\n# TYPE ";
    out += name;
    out += " gauge\n";
  };
  auto sample = [&out](const std::string &name, const std::string &labels,
                       double value) {
    out += name;
    out += '{';
    out += labels;
    out += "} ";
    if (std::floor(value) == value && std::fabs(value) < 1e15) {
      out += std::to_string(static_cast<int64_t>(value));
    } else {
      out += std::to_string(value);
    }
    out += '\n';
  };

  struct ClusterMetric {
    const char *name;
    const char *help;
    uint64_t ClusterCounters::*field;
  };

  const ClusterMetric cluster_metrics[] = {
      {"gatecache_requests_total", "Manifest and blob requests by cluster.",
       &ClusterCounters::requests},
      {"gatecache_counted_requests_total",
       "Upstream requests started that count against a budget.",
       &ClusterCounters::counted},
      {"gatecache_hits_total", "Requests served with no upstream request.",
       &ClusterCounters::hits},
      {"gatecache_revalidated_total",
       "Requests served after an upstream check found the stored copy "
       "current.",
       &ClusterCounters::revalidated},
      {"gatecache_misses_total", "Requests that fetched from an upstream.",
       &ClusterCounters::misses},
      {"gatecache_stale_total",
       "Requests served a stored copy the upstream could not confirm.",
       &ClusterCounters::stale},
      {"gatecache_refused_total",
       "Requests answered 429 for want of budget and a stored copy.",
       &ClusterCounters::refused},
  };
  const auto &names = clusters_.names();
  for (const auto &metric : cluster_metrics) {
    counter(metric.name, metric.help);
    for (size_t i = 0; i < cluster_counters_.size(); ++i) {
      sample(metric.name, "cluster=\"" + label(names.at(i)) + "\"",
             static_cast<double>(cluster_counters_[i].*metric.field));
    }
  }

  counter("gatecache_denied_total", "Requests from clients in no cluster.");
  out += "gatecache_denied_total " + std::to_string(denied_) + "\n";

  std::vector<std::pair<std::string, scheduler::UpstreamScheduler::Status>>
      statuses;
  for (const auto &[name, budget] : schedulers_) {
    statuses.emplace_back(name, budget->status());
  }
  auto per_upstream = [&](const char *name, const char *help, bool is_gauge,
                          auto value_of) {
    if (is_gauge) {
      gauge(name, help);
    } else {
      counter(name, help);
    }
    for (const auto &[upstream, status] : statuses) {
      auto value = value_of(upstream, status);
      if (value) {
        sample(name, "upstream=\"" + label(upstream) + "\"", *value);
      }
    }
  };
  using Status = scheduler::UpstreamScheduler::Status;
  per_upstream("gatecache_budget_limit",
               "Requests the upstream allows per window, when known.", true,
               [](const std::string &, const Status &s) {
                 return s.limit > 0 ? std::optional<double>(s.limit)
                                    : std::nullopt;
               });
  per_upstream("gatecache_budget_remaining",
               "Requests left in the upstream's window, when known.", true,
               [](const std::string &, const Status &s) {
                 return s.limit > 0 ? std::optional<double>(s.remaining)
                                    : std::nullopt;
               });
  per_upstream(
      "gatecache_budget_queued", "Counted requests waiting for budget.", true,
      [](const std::string &, const Status &s) {
        return std::optional<double>(s.queued[0] + s.queued[1] + s.queued[2]);
      });
  per_upstream("gatecache_upstream_counted_total",
               "Counted requests granted to the upstream.", false,
               [](const std::string &, const Status &s) {
                 return std::optional<double>(s.granted_total);
               });
  per_upstream("gatecache_upstream_stale_served_total",
               "Stored copies served because the upstream could not be "
               "asked.",
               false, [this](const std::string &upstream, const Status &) {
                 return std::optional<double>(
                     upstream_counters_[upstream].stale_served);
               });
  per_upstream(
      "gatecache_upstream_throttled_total", "429 responses from the upstream.",
      false, [this](const std::string &upstream, const Status &) {
        return std::optional<double>(upstream_counters_[upstream].throttled);
      });
  return out;
}

void Usage::persist(const std::string &upstream,
                    const scheduler::BudgetState &state) {
  auto index = index_;
  std::string key = budget_key(upstream);
  std::string value = state.to_json();
  worker_.post(
      [index, key, value] {
        if (auto stored = index->put_state(key, value); !stored) {
          GC_LOG(Upstream, warn, "storing the budget {} failed: {}", key,
                 stored.error().message);
        }
      },
      nullptr);
}

void Usage::persist_all() {
  for (const auto &[name, budget] : schedulers_) {
    auto state = budget->state();
    if (auto stored = index_->put_state(budget_key(name), state.to_json());
        !stored) {
      GC_LOG(Upstream, warn, "storing the budget of {} failed: {}", name,
             stored.error().message);
    }
  }
}

} // namespace gatecache::registry
