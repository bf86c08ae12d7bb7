// Releases counted requests to one upstream within its rate-limit budget.
//
// Every cluster behind the gateway shares the gateway's public address, and
// so one budget per upstream: Docker Hub, for one, limits manifest GETs per
// client address. Before a counted request, the caller calls `request()`.
// The scheduler keeps a reserve for nodes waiting on a pull, serves
// strictly by priority (node, revalidation, prewarm) and shares by cluster
// weight within a priority. It honours 429 Retry-After, and after
// `max_wait_s` it refuses a node's request with the time to come back
// instead of keeping it waiting.
//
// Threading: one scheduler per upstream and loop. Every method runs on the
// loop thread. Request callbacks run from the loop, never from inside the
// method that caused them.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <ev.h>

#include "appliance/config/config.h"
#include "appliance/front/exchange.h"
#include "appliance/scheduler/budget.h"

namespace gatecache::scheduler {

// A counted upstream request waiting for budget.
struct Ticket {
  front::Priority priority = front::Priority::Node;
  size_t cluster = 0; // Index into the cluster weights.
  std::string what;   // For logs, such as "manifest library/busybox:1.36".
};

struct Decision {
  bool granted = false;
  // When refused: seconds until budget is expected back, at least 1.
  double retry_after_s = 0;
  std::string reason; // For logs.
};

class UpstreamScheduler {
public:
  using Handle = uint64_t;               // 0 is never a valid handle.
  using Clock = std::function<double()>; // Unix seconds.
  using DoneCallback = std::function<void(const Decision &)>;
  using ChangeCallback = std::function<void(const BudgetState &)>;

  // The budget and counters of one upstream, as `gatecache status` shows
  // them.
  struct Status {
    std::string upstream;
    uint64_t limit = 0; // 0: no known budget.
    uint64_t remaining = 0;
    // `remaining` minus grants the upstream has not reported yet, and for
    // a configured budget the spends inside the window already counted.
    uint64_t available = 0;
    uint64_t reserve = 0; // Kept for node pulls.
    double window_s = 0;
    BudgetState::Source source = BudgetState::Source::None;
    double observed_at = 0;
    // When budget is expected back, 0 unknown; `reset_estimated` is true
    // when the upstream sent no reset time and this is an estimate.
    double reset_at = 0;
    bool reset_estimated = false;
    double blocked_until = 0;
    // When `available` runs out at the spend rate of the last hour (or of
    // the window when shorter). Nullopt without spends or known budget.
    std::optional<double> exhaustion_at;
    uint64_t spent_last_hour = 0;
    uint64_t granted_total = 0;
    uint64_t refused_total = 0;
    std::array<size_t, 3> queued{}; // Indexed by `front::Priority`.
    size_t in_flight = 0;
    std::vector<uint64_t> granted_per_cluster;
    std::vector<uint64_t> refused_per_cluster;
    double freshness_stretch = 1;
  };

  // `cluster_weights` has one entry per cluster (index = cluster); a
  // missing or zero weight counts as 1. `restored` is the state last
  // passed to the change callback, or nullopt on first start. A restored
  // budget learned from headers is kept; otherwise `budget` applies.
  // `now` defaults to the wall clock.
  UpstreamScheduler(struct ev_loop *loop, std::string upstream,
                    const config::BudgetConfig &budget,
                    const config::SchedulerConfig &config,
                    std::vector<unsigned> cluster_weights,
                    std::optional<BudgetState> restored, Clock now = {});

  // Calls `flush_state()`. Queued requests are dropped without a call to
  // their callbacks.
  ~UpstreamScheduler();

  UpstreamScheduler(const UpstreamScheduler &) = delete;
  UpstreamScheduler &operator=(const UpstreamScheduler &) = delete;

  // Requests budget for one counted request. `done` runs once from the
  // loop, unless the request is cancelled or the scheduler destroyed
  // first. Requests made in one loop iteration are all queued before any
  // is decided. Granted: the budget is charged and an in-flight slot is
  // held until `release()`. Refused (only node requests, after
  // `max_wait_s`): `retry_after_s` gives the seconds until budget is
  // expected back. `done` may call any method of the scheduler and may
  // destroy it.
  Handle request(Ticket ticket, DoneCallback done);

  // Drops a queued request, and its callback is not called afterwards. On
  // a granted request it acts as `release()`. Unknown handles are ignored.
  void cancel(Handle handle);

  // Ends a granted request, whatever its outcome. Call `observe()` with the
  // response's headers before, so the budget is read from the response
  // that spent it. Unknown handles are ignored.
  void release(Handle handle);

  // Returns true when a request of `priority` made now would be granted
  // without waiting, so the caller can serve a stale copy instead.
  bool available_now(front::Priority priority) const;

  // Takes the budget from an upstream response (see
  // `parse_budget_headers()`); call it for every response that has one,
  // also uncounted ones. `from` is the granted request whose response
  // this is, or 0; the other grants in flight are taken as not yet
  // counted by the upstream.
  void observe(const BudgetObservation &observation, Handle from = 0);

  // Records a 429 response. Nothing is granted before the Retry-After
  // delay (`retry_after_s`) or, without one, before the expected reset
  // (60 s when unknown) has passed. Then one request goes first as a
  // probe, and the rest wait until it is released.
  void observe_throttled(std::optional<double> retry_after_s);

  // Returns the factor, from 1 to `max_stretch`, by which freshness
  // windows grow while the budget is low. It is 1 while at least
  // `low_budget_fraction` of the limit is available or no budget is
  // known. It grows linearly as the available budget falls to the
  // reserve, and is `max_stretch` at or below the reserve and while a 429
  // blocks requests.
  double freshness_stretch() const;

  // Replaces the cluster weights for requests queued from now on.
  void set_weights(std::vector<unsigned> weights);

  // Sets the names used in logs instead of cluster indexes.
  void set_cluster_names(std::vector<std::string> names);

  // Applies a reloaded config. A budget learned from headers stays;
  // deadlines of queued node requests move with `max_wait_s`.
  void set_config(const config::BudgetConfig &budget,
                  const config::SchedulerConfig &config);

  Status status() const;

  const BudgetState &state() const { return state_; }

  // Sets the persistence hook. It runs from the loop at most once per
  // second with the latest state, and from `flush_state()`.
  void set_on_change(ChangeCallback on_change);

  // Calls the change callback now when the state changed since its last
  // call. The daemon calls it on shutdown.
  void flush_state();

private:
  enum class Verdict { Grant, Probe, ThrottleProbe, Wait };

  struct Waiter {
    Ticket ticket;
    DoneCallback done;
    double queued_at = 0;
    double deadline = 0; // Node requests only.
    double start_tag = 0;
    double finish_tag = 0;
  };

  struct Grant {
    size_t cluster = 0;
    Verdict kind = Verdict::Grant;
    uint64_t throttle_count = 0; // `throttle_count_` when granted.
  };

  // Weighted fair queueing within one priority: a request of cluster c
  // gets start = max(virtual time, last finish of c) and finish = start +
  // 1 / weight(c), and the smallest finish tag is served first. The
  // virtual time is the finish tag last served.
  struct PriorityQueue {
    std::set<std::pair<double, Handle>> order; // (finish tag, handle).
    double virtual_time = 0;
    std::vector<double> last_finish; // Indexed by cluster.
  };

  // libev callbacks.
  static void on_idle(struct ev_loop *loop, ev_idle *watcher, int events);
  static void on_prepare(struct ev_loop *loop, ev_prepare *watcher, int events);
  static void on_timer(struct ev_loop *loop, ev_timer *watcher, int events);

  // Runs `process()` on a coming loop iteration.
  void schedule();
  void process();
  bool grant_queued(double now, const std::weak_ptr<bool> &alive);
  bool refuse_overdue(double now, const std::weak_ptr<bool> &alive);
  void arm_timer(double now);

  Verdict decide(front::Priority priority, double now,
                 std::string *reason) const;
  void grant(Handle handle, Verdict kind, size_t cluster, double now);
  void end_grant(Handle handle);
  void log_refusal(const Ticket &ticket, const Decision &decision, double now);

  bool budget_known() const { return state_.limit > 0; }

  uint64_t effective_limit() const;
  uint64_t reserve() const;
  int64_t available(double now) const;
  double expected_back_at(double now) const;
  unsigned weight_of(size_t cluster) const;
  std::string cluster_label(size_t cluster) const;

  void apply_config_budget();
  void prune_spends(double now);
  void refresh_remaining(double now);
  void record_spend(double now);
  void rebuild_deadlines();
  void mark_changed();

  struct ev_loop *loop_;
  std::string upstream_;
  config::BudgetConfig budget_config_;
  config::SchedulerConfig config_;
  std::vector<unsigned> weights_;
  std::vector<std::string> cluster_names_;
  Clock now_;

  BudgetState state_;
  // The probe sent once the budget should be back, until an observation
  // arrives or it is released; 0 for none.
  Handle probe_ = 0;
  // Earliest time for the next probe after one ended without an
  // observation.
  double next_probe_at_ = 0;
  // Set by a 429 until a probe finishes without a newer 429.
  bool throttle_probe_needed_ = false;
  Handle throttle_probe_ = 0;
  uint64_t throttle_count_ = 0;

  Handle next_handle_ = 1;
  std::unordered_map<Handle, Waiter> waiting_;
  std::unordered_map<Handle, Grant> granted_;
  std::array<PriorityQueue, 3> queues_;
  std::set<std::pair<double, Handle>> deadlines_; // Node requests.

  uint64_t granted_total_ = 0;
  uint64_t refused_total_ = 0;
  std::vector<uint64_t> granted_per_cluster_;
  std::vector<uint64_t> refused_per_cluster_;
  double last_refusal_log_ = 0;
  uint64_t unlogged_refusals_ = 0;

  ChangeCallback on_change_;
  bool changed_ = false;
  double last_change_call_ = -std::numeric_limits<double>::infinity();

  ev_idle idle_{};
  ev_prepare prepare_{};
  ev_timer timer_{};
  bool timer_active_ = false;
  bool pending_ = false;
  double next_wakeup_ = std::numeric_limits<double>::infinity();
  // Expires with the scheduler, so a loop over callbacks can tell that
  // one of them destroyed it.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

} // namespace gatecache::scheduler
