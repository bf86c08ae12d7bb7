#include "appliance/scheduler/scheduler.h"

#include <algorithm>
#include <cmath>

#include "common/log.h"

namespace gatecache::scheduler {

namespace {

constexpr double Infinity = std::numeric_limits<double>::infinity();

// Block after a 429 without Retry-After and without a reset estimate.
constexpr double DefaultThrottleSeconds = 60;

// Maximum block a 429 can cause. A longer Retry-After is taken as this,
// so a misread date cannot stop an upstream for weeks.
constexpr double MaxThrottleSeconds = 86400;

// Wait before another probe when the last one ended without an
// observation (a network error or a response without rate-limit headers).
constexpr double ProbeRetrySeconds = 5;

// Spends are kept for the stats of the last hour even with shorter
// windows.
constexpr double StatsPeriodSeconds = 3600;

// Calls of the change callback are at least this far apart.
constexpr double ChangeCallbackInterval = 1;

// Refusals are logged at most once per this many seconds. The next logged
// line counts the refusals not logged.
constexpr double RefusalLogInterval = 1;

size_t priority_index(front::Priority priority) {
  auto index = static_cast<size_t>(priority);
  return std::min<size_t>(index, 2);
}

// NOTE: deadlines follow the wall clock, so a clock step moves them too.
double default_clock() { return ev_time(); }

} // namespace

UpstreamScheduler::UpstreamScheduler(struct ev_loop *loop, std::string upstream,
                                     const config::BudgetConfig &budget,
                                     const config::SchedulerConfig &config,
                                     std::vector<unsigned> cluster_weights,
                                     std::optional<BudgetState> restored,
                                     Clock now)
    : loop_(loop), upstream_(std::move(upstream)), budget_config_(budget),
      config_(config), weights_(std::move(cluster_weights)),
      now_(now ? std::move(now) : Clock(default_clock)) {
  double start = now_();
  if (restored) {
    state_ = std::move(*restored);
    throttle_probe_needed_ = state_.blocked_until > start;
  }
  if (state_.source != BudgetState::Source::Headers) {
    apply_config_budget();
  } else if (state_.window_s <= 0) {
    state_.window_s = budget_config_.window_s;
  }
  prune_spends(start);
  refresh_remaining(start);
  if (budget_config_.limit > MaxSpends) {
    GC_LOG(Upstream, warn,
           "budget limit {} of upstream {} is above the {} spends tracked, "
           "so at most {} requests per window are granted until the "
           "upstream announces its budget",
           budget_config_.limit, upstream_, MaxSpends, MaxSpends);
  }

  ev_idle_init(&idle_, on_idle);
  idle_.data = this;
  // The highest priority lets the idle watcher run on every iteration,
  // also while other watchers are pending.
  ev_set_priority(&idle_, EV_MAXPRI);
  ev_prepare_init(&prepare_, on_prepare);
  prepare_.data = this;
  ev_prepare_start(loop_, &prepare_);
  // Neither the prepare watcher nor the timer keeps ev_run() going.
  ev_unref(loop_);
  ev_timer_init(&timer_, on_timer, 0., 0.);
  timer_.data = this;
}

UpstreamScheduler::~UpstreamScheduler() {
  flush_state();
  ev_ref(loop_);
  ev_prepare_stop(loop_, &prepare_);
  if (timer_active_) {
    ev_ref(loop_);
    ev_timer_stop(loop_, &timer_);
  }
  ev_idle_stop(loop_, &idle_);
}

// --- Public interface ---

UpstreamScheduler::Handle UpstreamScheduler::request(Ticket ticket,
                                                     DoneCallback done) {
  double now = now_();
  Handle handle = next_handle_++;
  size_t p = priority_index(ticket.priority);
  ticket.priority = static_cast<front::Priority>(p);

  PriorityQueue &queue = queues_[p];
  if (queue.last_finish.size() <= ticket.cluster) {
    queue.last_finish.resize(ticket.cluster + 1, 0);
  }
  Waiter waiter;
  waiter.queued_at = now;
  waiter.start_tag =
      std::max(queue.virtual_time, queue.last_finish[ticket.cluster]);
  waiter.finish_tag = waiter.start_tag + 1.0 / weight_of(ticket.cluster);
  queue.last_finish[ticket.cluster] = waiter.finish_tag;
  queue.order.emplace(waiter.finish_tag, handle);

  if (ticket.priority == front::Priority::Node) {
    waiter.deadline = now + config_.max_wait_s;
    deadlines_.emplace(waiter.deadline, handle);
  }
  waiter.ticket = std::move(ticket);
  waiter.done = std::move(done);
  waiting_.emplace(handle, std::move(waiter));
  schedule();
  return handle;
}

void UpstreamScheduler::cancel(Handle handle) {
  auto it = waiting_.find(handle);
  if (it == waiting_.end()) {
    release(handle);
    return;
  }
  const Waiter &waiter = it->second;
  PriorityQueue &queue = queues_[priority_index(waiter.ticket.priority)];
  queue.order.erase({waiter.finish_tag, handle});
  // Give the cluster its share back when nothing was queued behind it.
  double &last = queue.last_finish[waiter.ticket.cluster];
  if (last == waiter.finish_tag) {
    last = waiter.start_tag;
  }
  deadlines_.erase({waiter.deadline, handle});
  waiting_.erase(it);
}

void UpstreamScheduler::release(Handle handle) {
  if (granted_.count(handle) == 0) {
    return;
  }
  end_grant(handle);
  schedule();
}

bool UpstreamScheduler::available_now(front::Priority priority) const {
  double now = now_();
  size_t p = priority_index(priority);
  Verdict verdict = decide(static_cast<front::Priority>(p), now, nullptr);
  if (verdict == Verdict::Wait) {
    return false;
  }
  if (verdict == Verdict::Grant && !budget_known()) {
    return true; // Nothing queued waits for budget.
  }
  for (size_t q = 0; q <= p; ++q) {
    if (!queues_[q].order.empty()) {
      return false;
    }
  }
  return true;
}

void UpstreamScheduler::observe(const BudgetObservation &observation,
                                Handle from) {
  if (!observation.limit && !observation.remaining) {
    return;
  }
  double now = now_();
  uint64_t old_limit = state_.limit;
  double old_window = state_.window_s;
  bool first = state_.source != BudgetState::Source::Headers;

  uint64_t limit = state_.limit;
  if (observation.limit) {
    limit = *observation.limit;
  } else if (limit == 0) {
    // Without a limit, the remaining count is the best lower bound. It is
    // at least 1, so a remaining count of 0 still keeps requests waiting.
    limit =
        std::max({budget_config_.limit, *observation.remaining, uint64_t{1}});
  }
  if (observation.remaining) {
    uint64_t observed = std::min(*observation.remaining, limit);
    // Every grant is charged to `remaining` when it is made. Responses of
    // concurrent grants can arrive in another order than the upstream
    // counted them, so while other grants are in flight a larger count may
    // be stale and only a smaller one is taken. With nothing else in
    // flight (a free HEAD, or the probe after a reset) the count is taken
    // as it is.
    bool quiet = first || granted_.empty() || probe_ != 0 ||
                 throttle_probe_ != 0 ||
                 (granted_.size() == 1 && granted_.count(from) != 0);
    state_.remaining = quiet ? observed : std::min(state_.remaining, observed);
  } else if (first) {
    state_.remaining =
        limit -
        std::min<uint64_t>(limit, state_.spends_since(now - state_.window_s));
  } else {
    state_.remaining = std::min(state_.remaining, limit);
  }
  state_.limit = limit;
  if (observation.window_s) {
    state_.window_s = *observation.window_s;
  } else if (state_.window_s <= 0) {
    state_.window_s = budget_config_.window_s;
  }
  state_.reset_at = observation.reset_s ? now + *observation.reset_s : 0;
  state_.source = BudgetState::Source::Headers;
  state_.observed_at = now;

  probe_ = 0;

  if (first || old_limit != state_.limit || old_window != state_.window_s) {
    GC_LOG(Upstream, debug,
           "budget of upstream {} {}: limit={} remaining={} window={}s",
           upstream_, first ? "learned" : "changed", state_.limit,
           state_.remaining, state_.window_s);
  }
  mark_changed();
  schedule();
}

void UpstreamScheduler::observe_throttled(std::optional<double> retry_after_s) {
  double now = now_();
  double delay = DefaultThrottleSeconds;
  const char *delay_source = "default";
  if (retry_after_s && std::isfinite(*retry_after_s)) {
    delay = std::clamp(*retry_after_s, 0.0, MaxThrottleSeconds);
    delay_source = "Retry-After";
  } else {
    double expected = state_.expected_reset_at(now);
    if (expected > now) {
      delay = std::min(expected - now, MaxThrottleSeconds);
      delay_source = "expected reset";
    }
  }
  state_.blocked_until = now + delay;
  state_.remaining = 0;
  throttle_probe_needed_ = true;
  ++throttle_count_;

  GC_LOG(Upstream, warn,
         "upstream {} answered 429 Too Many Requests: counted requests wait "
         "{:.0f} s ({}), then one probe goes first",
         upstream_, delay, delay_source);
  mark_changed();
  schedule();
}

double UpstreamScheduler::freshness_stretch() const {
  double now = now_();
  double max_stretch = std::max(1.0, config_.max_stretch);
  if (now < state_.blocked_until || throttle_probe_needed_) {
    return max_stretch;
  }
  if (!budget_known()) {
    return 1;
  }
  auto available_count =
      static_cast<double>(std::max<int64_t>(0, available(now)));
  double low =
      config_.low_budget_fraction * static_cast<double>(effective_limit());
  auto floor = static_cast<double>(reserve());
  if (available_count >= low) {
    return 1;
  }
  if (available_count <= floor) {
    return max_stretch;
  }
  double scarcity = (low - available_count) / (low - floor);
  return 1 + (max_stretch - 1) * scarcity;
}

void UpstreamScheduler::set_weights(std::vector<unsigned> weights) {
  weights_ = std::move(weights);
}

void UpstreamScheduler::set_cluster_names(std::vector<std::string> names) {
  cluster_names_ = std::move(names);
}

void UpstreamScheduler::set_config(const config::BudgetConfig &budget,
                                   const config::SchedulerConfig &config) {
  budget_config_ = budget;
  config_ = config;
  double now = now_();
  if (state_.source != BudgetState::Source::Headers) {
    apply_config_budget();
    refresh_remaining(now);
  }
  rebuild_deadlines();
  mark_changed();
  schedule();
}

UpstreamScheduler::Status UpstreamScheduler::status() const {
  double now = now_();
  Status status;
  status.upstream = upstream_;
  status.limit = state_.limit;
  status.remaining = state_.remaining;
  status.window_s = state_.window_s;
  status.source = state_.source;
  status.observed_at = state_.observed_at;
  status.blocked_until = state_.blocked_until;
  if (budget_known()) {
    status.available =
        static_cast<uint64_t>(std::max<int64_t>(0, available(now)));
    status.reserve = reserve();
  }
  if (budget_known()) {
    status.reset_at = state_.expected_reset_at(now);
    status.reset_estimated = state_.reset_at <= 0 && status.reset_at > 0;
  }

  status.spent_last_hour = state_.spends_since(now - StatsPeriodSeconds);
  double period = StatsPeriodSeconds;
  if (state_.window_s > 0) {
    period = std::min(period, state_.window_s);
  }
  size_t recent = state_.spends_since(now - period);
  if (budget_known() && recent > 0) {
    double rate = static_cast<double>(recent) / period;
    status.exhaustion_at = now + static_cast<double>(status.available) / rate;
  }

  status.granted_total = granted_total_;
  status.refused_total = refused_total_;
  for (size_t p = 0; p < queues_.size(); ++p) {
    status.queued[p] = queues_[p].order.size();
  }
  status.in_flight = granted_.size();
  status.granted_per_cluster = granted_per_cluster_;
  status.refused_per_cluster = refused_per_cluster_;
  size_t clusters = std::max({weights_.size(), granted_per_cluster_.size(),
                              refused_per_cluster_.size()});
  status.granted_per_cluster.resize(clusters, 0);
  status.refused_per_cluster.resize(clusters, 0);
  status.freshness_stretch = freshness_stretch();
  return status;
}

void UpstreamScheduler::set_on_change(ChangeCallback on_change) {
  on_change_ = std::move(on_change);
}

void UpstreamScheduler::flush_state() {
  if (!changed_ || !on_change_) {
    return;
  }
  changed_ = false;
  last_change_call_ = now_();
  on_change_(state_);
}

// --- Loop integration ---

void UpstreamScheduler::on_idle(struct ev_loop *, ev_idle *watcher, int) {
  auto *self = static_cast<UpstreamScheduler *>(watcher->data);
  self->pending_ = false;
  std::weak_ptr<bool> alive = self->alive_;
  self->process();
  if (!alive.expired() && !self->pending_) {
    ev_idle_stop(self->loop_, &self->idle_);
  }
}

void UpstreamScheduler::on_prepare(struct ev_loop *, ev_prepare *watcher, int) {
  auto *self = static_cast<UpstreamScheduler *>(watcher->data);
  // The injected clock can pass a deadline before the timer, which runs on
  // the loop's own clock, fires.
  if (self->next_wakeup_ != Infinity && self->next_wakeup_ <= self->now_()) {
    self->schedule();
  }
}

void UpstreamScheduler::on_timer(struct ev_loop *, ev_timer *watcher, int) {
  auto *self = static_cast<UpstreamScheduler *>(watcher->data);
  // A fired one-shot timer is stopped, so it takes back the loop
  // reference given up when it was started.
  ev_ref(self->loop_);
  self->timer_active_ = false;
  self->schedule();
}

void UpstreamScheduler::schedule() {
  pending_ = true;
  ev_idle_start(loop_, &idle_);
}

void UpstreamScheduler::process() {
  std::weak_ptr<bool> alive = alive_;
  double now = now_();
  prune_spends(now);
  refresh_remaining(now);

  if (!grant_queued(now, alive) || !refuse_overdue(now, alive)) {
    return; // A callback destroyed the scheduler.
  }
  if (changed_ && on_change_ &&
      now >= last_change_call_ + ChangeCallbackInterval) {
    flush_state();
    if (alive.expired()) {
      return;
    }
  }
  arm_timer(now);
}

// Grants queued requests in priority order while the budget allows.
// Returns false when a callback destroyed the scheduler.
bool UpstreamScheduler::grant_queued(double now,
                                     const std::weak_ptr<bool> &alive) {
  for (size_t p = 0; p < queues_.size(); ++p) {
    while (!queues_[p].order.empty()) {
      std::string reason;
      Verdict verdict = decide(static_cast<front::Priority>(p), now, &reason);
      if (verdict == Verdict::Wait) {
        // Lower priorities need at least as much budget, so they wait
        // too.
        return true;
      }
      PriorityQueue &queue = queues_[p];
      auto [finish_tag, handle] = *queue.order.begin();
      queue.order.erase(queue.order.begin());
      queue.virtual_time = finish_tag;

      auto it = waiting_.find(handle);
      Waiter waiter = std::move(it->second);
      waiting_.erase(it);
      deadlines_.erase({waiter.deadline, handle});

      grant(handle, verdict, waiter.ticket.cluster, now);
      waiter.done(Decision{true, 0, std::move(reason)});
      if (alive.expired()) {
        return false;
      }
    }
  }
  return true;
}

// Refuses node requests that waited `max_wait_s`. Returns false when a
// callback destroyed the scheduler.
bool UpstreamScheduler::refuse_overdue(double now,
                                       const std::weak_ptr<bool> &alive) {
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    Handle handle = deadlines_.begin()->second;
    deadlines_.erase(deadlines_.begin());
    auto it = waiting_.find(handle);
    Waiter waiter = std::move(it->second);
    waiting_.erase(it);
    PriorityQueue &queue = queues_[priority_index(waiter.ticket.priority)];
    queue.order.erase({waiter.finish_tag, handle});

    std::string wait_reason;
    decide(waiter.ticket.priority, now, &wait_reason);
    Decision decision;
    decision.retry_after_s = std::max(1.0, expected_back_at(now) - now);
    decision.reason = fmt::format("no budget within max_wait {} s: {}",
                                  config_.max_wait_s, wait_reason);
    ++refused_total_;
    size_t cluster = waiter.ticket.cluster;
    if (refused_per_cluster_.size() <= cluster) {
      refused_per_cluster_.resize(cluster + 1, 0);
    }
    ++refused_per_cluster_[cluster];
    log_refusal(waiter.ticket, decision, now);

    waiter.done(decision);
    if (alive.expired()) {
      return false;
    }
  }
  return true;
}

// Sets the timer to the next moment something may change without an
// event: a node request's deadline, the end of a 429 block, the expected
// return of budget, or the next call of the change callback.
void UpstreamScheduler::arm_timer(double now) {
  double wakeup = Infinity;
  auto consider = [&](double time) {
    if (time > now && time < wakeup) {
      wakeup = time;
    }
  };
  if (!deadlines_.empty()) {
    consider(deadlines_.begin()->first);
  }
  bool queued = std::any_of(
      queues_.begin(), queues_.end(),
      [](const PriorityQueue &queue) { return !queue.order.empty(); });
  if (queued) {
    consider(state_.blocked_until);
    consider(state_.expected_reset_at(now));
    consider(next_probe_at_);
  }
  if (changed_ && on_change_) {
    consider(last_change_call_ + ChangeCallbackInterval);
  }

  next_wakeup_ = wakeup;
  if (timer_active_) {
    ev_ref(loop_);
    ev_timer_stop(loop_, &timer_);
    timer_active_ = false;
  }
  if (wakeup == Infinity) {
    return;
  }
  ev_timer_set(&timer_, wakeup - now, 0.);
  ev_timer_start(loop_, &timer_);
  ev_unref(loop_);
  timer_active_ = true;
}

// --- Budget rules ---

UpstreamScheduler::Verdict
UpstreamScheduler::decide(front::Priority priority, double now,
                          std::string *reason) const {
  auto say = [reason](std::string text) {
    if (reason != nullptr) {
      *reason = std::move(text);
    }
  };

  if (now < state_.blocked_until) {
    say(fmt::format("upstream {} answered 429, blocked for {:.0f} s", upstream_,
                    state_.blocked_until - now));
    return Verdict::Wait;
  }
  if (throttle_probe_needed_) {
    if (throttle_probe_ != 0) {
      say("waiting for the probe after a 429");
      return Verdict::Wait;
    }
    say("probe after a 429");
    return Verdict::ThrottleProbe;
  }
  if (!budget_known()) {
    say("no budget known");
    return Verdict::Grant;
  }
  unsigned max_in_flight = std::max(1u, config_.max_in_flight);
  if (granted_.size() >= max_in_flight) {
    say(fmt::format("{} requests in flight, the maximum", granted_.size()));
    return Verdict::Wait;
  }

  int64_t available_count = available(now);
  bool node = priority == front::Priority::Node;
  auto floor = node ? 0 : static_cast<int64_t>(reserve());
  if (available_count > floor) {
    say("budget available");
    return Verdict::Grant;
  }

  std::string spent =
      fmt::format("{} of {} requests available",
                  std::max<int64_t>(0, available_count), effective_limit());
  if (!node) {
    spent += fmt::format(" and {} kept for node pulls", reserve());
  }
  // A configured budget refills as spends leave the window. Only a budget
  // read from headers needs a probe to learn that it is back.
  if (state_.source != BudgetState::Source::Headers) {
    say(spent);
    return Verdict::Wait;
  }
  if (probe_ != 0) {
    say(spent + ", waiting for the probe's response");
    return Verdict::Wait;
  }
  double back_at = std::max(state_.expected_reset_at(now), next_probe_at_);
  if (now >= back_at) {
    say("probe after the expected reset");
    return Verdict::Probe;
  }
  say(fmt::format("{}, budget expected back in {:.0f} s", spent,
                  back_at - now));
  return Verdict::Wait;
}

void UpstreamScheduler::grant(Handle handle, Verdict kind, size_t cluster,
                              double now) {
  granted_.emplace(handle, Grant{cluster, kind, throttle_count_});
  if (kind == Verdict::Probe) {
    probe_ = handle;
    GC_LOG(Upstream, debug,
           "budget of upstream {} should be back: one probe request goes",
           upstream_);
  } else if (kind == Verdict::ThrottleProbe) {
    throttle_probe_ = handle;
    GC_LOG(Upstream, debug,
           "429 block of upstream {} ended: one probe request goes", upstream_);
  }
  record_spend(now);
  if (state_.source == BudgetState::Source::Headers && state_.remaining > 0) {
    --state_.remaining;
  }
  refresh_remaining(now);
  ++granted_total_;
  if (granted_per_cluster_.size() <= cluster) {
    granted_per_cluster_.resize(cluster + 1, 0);
  }
  ++granted_per_cluster_[cluster];
  mark_changed();
}

void UpstreamScheduler::end_grant(Handle handle) {
  auto it = granted_.find(handle);
  Grant grant = it->second;
  granted_.erase(it);
  if (handle == probe_) {
    // No observation arrived for the probe, so the budget is still
    // unknown. The next probe waits a little.
    probe_ = 0;
    next_probe_at_ = now_() + ProbeRetrySeconds;
  }
  if (handle == throttle_probe_) {
    throttle_probe_ = 0;
    if (grant.throttle_count == throttle_count_) {
      throttle_probe_needed_ = false;
    }
  }
}

void UpstreamScheduler::log_refusal(const Ticket &ticket,
                                    const Decision &decision, double now) {
  if (now < last_refusal_log_ + RefusalLogInterval) {
    ++unlogged_refusals_;
    return;
  }
  GC_LOG(Upstream, info,
         "refused {} request of cluster {} to upstream {} ({}): {}; retry "
         "after {:.0f} s{}",
         front::to_string(ticket.priority), cluster_label(ticket.cluster),
         upstream_, ticket.what, decision.reason, decision.retry_after_s,
         unlogged_refusals_ == 0 ? std::string()
                                 : fmt::format(" ({} more refusals not logged)",
                                               unlogged_refusals_));
  last_refusal_log_ = now;
  unlogged_refusals_ = 0;
}

uint64_t UpstreamScheduler::effective_limit() const {
  if (state_.source == BudgetState::Source::Config) {
    return std::min<uint64_t>(state_.limit, MaxSpends);
  }
  return state_.limit;
}

uint64_t UpstreamScheduler::reserve() const {
  double fraction = std::clamp(config_.reserve_fraction, 0.0, 1.0);
  return static_cast<uint64_t>(
      std::ceil(fraction * static_cast<double>(effective_limit())));
}

int64_t UpstreamScheduler::available(double now) const {
  if (state_.source == BudgetState::Source::Config) {
    size_t spent = state_.spends_since(now - state_.window_s);
    return static_cast<int64_t>(effective_limit()) -
           static_cast<int64_t>(spent);
  }
  return static_cast<int64_t>(state_.remaining);
}

// Returns when a waiting node request could be granted, for Retry-After.
double UpstreamScheduler::expected_back_at(double now) const {
  if (now < state_.blocked_until) {
    return state_.blocked_until;
  }
  if (!budget_known() || throttle_probe_needed_ || available(now) > 0) {
    return now; // Waiting on a probe or a free in-flight slot.
  }
  return std::max(state_.expected_reset_at(now), next_probe_at_);
}

unsigned UpstreamScheduler::weight_of(size_t cluster) const {
  if (cluster >= weights_.size() || weights_[cluster] == 0) {
    return 1;
  }
  return weights_[cluster];
}

std::string UpstreamScheduler::cluster_label(size_t cluster) const {
  if (cluster < cluster_names_.size()) {
    return cluster_names_[cluster];
  }
  return std::to_string(cluster);
}

// --- State upkeep ---

void UpstreamScheduler::apply_config_budget() {
  state_.limit = budget_config_.limit;
  state_.window_s = budget_config_.window_s;
  state_.source = budget_config_.limit > 0 ? BudgetState::Source::Config
                                           : BudgetState::Source::None;
  state_.reset_at = 0;
}

void UpstreamScheduler::prune_spends(double now) {
  double keep_after = now - std::max(state_.window_s, StatsPeriodSeconds);
  while (!state_.spends.empty() && state_.spends.front() <= keep_after) {
    state_.spends.pop_front();
  }
}

void UpstreamScheduler::refresh_remaining(double now) {
  if (state_.source != BudgetState::Source::Config) {
    return;
  }
  auto left = std::max<int64_t>(0, available(now));
  state_.remaining = static_cast<uint64_t>(left);
}

void UpstreamScheduler::record_spend(double now) {
  // The wall clock can step back, and the spends must stay sorted.
  auto at = std::upper_bound(state_.spends.begin(), state_.spends.end(), now);
  state_.spends.insert(at, now);
  if (state_.spends.size() > MaxSpends) {
    state_.spends.pop_front();
  }
}

void UpstreamScheduler::rebuild_deadlines() {
  deadlines_.clear();
  for (auto &[handle, waiter] : waiting_) {
    if (waiter.ticket.priority == front::Priority::Node) {
      waiter.deadline = waiter.queued_at + config_.max_wait_s;
      deadlines_.emplace(waiter.deadline, handle);
    }
  }
}

void UpstreamScheduler::mark_changed() { changed_ = true; }

} // namespace gatecache::scheduler
