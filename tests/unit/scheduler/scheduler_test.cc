#include "appliance/scheduler/scheduler.h"

#include <cmath>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ev.h>

#include <catch2/catch.hpp>

using gatecache::config::BudgetConfig;
using gatecache::config::SchedulerConfig;
using gatecache::front::Priority;
using gatecache::scheduler::BudgetObservation;
using gatecache::scheduler::BudgetState;
using gatecache::scheduler::Decision;
using gatecache::scheduler::Ticket;
using gatecache::scheduler::UpstreamScheduler;

namespace {

using Handle = UpstreamScheduler::Handle;

constexpr double Start = 1796411144;

// A real libev loop, a clock the test moves, and a record of every
// decision in the order the scheduler made them.
class Harness {
public:
  Harness() : loop_(ev_loop_new(EVFLAG_AUTO)) {}

  ~Harness() {
    scheduler.reset();
    ev_loop_destroy(loop_);
  }

  Harness(const Harness &) = delete;
  Harness &operator=(const Harness &) = delete;

  void start(BudgetConfig budget = {}, SchedulerConfig config = {},
             std::vector<unsigned> weights = {1},
             std::optional<BudgetState> restored = std::nullopt) {
    scheduler = std::make_unique<UpstreamScheduler>(
        loop_, "docker.io", budget, config, std::move(weights),
        std::move(restored), [this] { return now; });
  }

  Handle ask(Priority priority, size_t cluster = 0) {
    Ticket ticket{priority, cluster, "manifest test/image:tag"};
    size_t id = next_id_++;
    Handle handle =
        scheduler->request(ticket, [this, id](const Decision &decision) {
          decisions.emplace(id, decision);
          order.push_back(id);
        });
    handles_.emplace(id, handle);
    ids_.emplace(handle, id);
    return handle;
  }

  // Spends one request: requests it, runs the loop and releases the grant.
  void spend(Priority priority, size_t cluster = 0) {
    Handle handle = ask(priority, cluster);
    run();
    REQUIRE(granted(handle));
    scheduler->release(handle);
  }

  // Runs one loop iteration without blocking.
  void run() { ev_run(loop_, EVRUN_NOWAIT); }

  // Moves the clock and runs one loop iteration.
  void advance(double seconds) {
    now += seconds;
    run();
  }

  bool decided(Handle handle) const {
    return decisions.count(ids_.at(handle)) != 0;
  }

  bool granted(Handle handle) const {
    auto it = decisions.find(ids_.at(handle));
    return it != decisions.end() && it->second.granted;
  }

  bool refused(Handle handle) const {
    auto it = decisions.find(ids_.at(handle));
    return it != decisions.end() && !it->second.granted;
  }

  const Decision &decision(Handle handle) const {
    return decisions.at(ids_.at(handle));
  }

  Handle handle_of(size_t id) const { return handles_.at(id); }

  size_t granted_count() const {
    size_t count = 0;
    for (const auto &[id, d] : decisions) {
      count += d.granted ? 1 : 0;
    }
    return count;
  }

  double now = Start;
  std::unique_ptr<UpstreamScheduler> scheduler;
  std::map<size_t, Decision> decisions; // By request id.
  std::vector<size_t> order;            // Request ids in decision order.

private:
  struct ev_loop *loop_;
  size_t next_id_ = 0;
  std::map<size_t, Handle> handles_;
  std::map<Handle, size_t> ids_;
};

BudgetConfig configured(uint64_t limit, double window_s = 3600) {
  BudgetConfig budget;
  budget.limit = limit;
  budget.window_s = window_s;
  return budget;
}

SchedulerConfig scheduler_config(unsigned max_in_flight = 8,
                                 double max_wait_s = 20) {
  SchedulerConfig config;
  config.max_in_flight = max_in_flight;
  config.max_wait_s = max_wait_s;
  config.reserve_fraction = 0.2;
  config.low_budget_fraction = 0.5;
  config.max_stretch = 8;
  return config;
}

BudgetObservation headers(uint64_t limit, uint64_t remaining,
                          std::optional<double> window_s = 21600,
                          std::optional<double> reset_s = std::nullopt) {
  BudgetObservation observation;
  observation.limit = limit;
  observation.remaining = remaining;
  observation.window_s = window_s;
  observation.reset_s = reset_s;
  return observation;
}

} // namespace

TEST_CASE("scheduler decides only from the loop", "[scheduler]") {
  Harness h;
  h.start();
  Handle a = h.ask(Priority::Node);
  Handle b = h.ask(Priority::Prewarm);
  CHECK(a != 0);
  CHECK(b != a);
  CHECK(h.decisions.empty());
  h.run();
  CHECK(h.granted(a));
  CHECK(h.granted(b));
}

TEST_CASE("scheduler orders burst before granting", "[scheduler]") {
  Harness h;
  h.start(configured(100), scheduler_config(1));
  // Both arrive in one loop iteration, the prewarm request first.
  Handle prewarm = h.ask(Priority::Prewarm);
  Handle node = h.ask(Priority::Node);
  h.run();
  CHECK(h.granted(node));
  CHECK_FALSE(h.decided(prewarm));

  h.scheduler->release(node);
  h.run();
  CHECK(h.granted(prewarm));
}

TEST_CASE("scheduler grants unknown budget at once", "[scheduler]") {
  Harness h;
  h.start(BudgetConfig{}, scheduler_config(2));
  std::vector<Handle> handles;
  for (int i = 0; i < 20; ++i) {
    handles.push_back(h.ask(i % 2 == 0 ? Priority::Prewarm : Priority::Node));
  }
  CHECK(h.scheduler->available_now(Priority::Prewarm));
  h.run();
  // No in-flight cap while no budget is known.
  for (Handle handle : handles) {
    CHECK(h.granted(handle));
  }
  auto status = h.scheduler->status();
  CHECK(status.limit == 0);
  CHECK(status.in_flight == 20);
  CHECK(status.granted_total == 20);
  CHECK(h.scheduler->freshness_stretch() == 1.0);
}

TEST_CASE("scheduler caps requests in flight", "[scheduler]") {
  Harness h;
  h.start(configured(100), scheduler_config(2));
  Handle a = h.ask(Priority::Node);
  Handle b = h.ask(Priority::Node);
  Handle c = h.ask(Priority::Node);
  h.run();
  CHECK(h.granted(a));
  CHECK(h.granted(b));
  CHECK_FALSE(h.decided(c));
  CHECK(h.scheduler->status().in_flight == 2);
  CHECK_FALSE(h.scheduler->available_now(Priority::Node));

  h.scheduler->release(a);
  CHECK_FALSE(h.decided(c)); // Not from inside release().
  h.run();
  CHECK(h.granted(c));
  CHECK(h.scheduler->status().in_flight == 2);
}

TEST_CASE("scheduler keeps reserve for nodes", "[scheduler]") {
  Harness h;
  // Limit 10 and reserve 0.2: revalidation may spend down to 2.
  h.start(configured(10), scheduler_config(100));
  std::vector<Handle> revalidations;
  for (int i = 0; i < 10; ++i) {
    revalidations.push_back(h.ask(Priority::Revalidation));
  }
  h.run();
  for (int i = 0; i < 8; ++i) {
    CHECK(h.granted(revalidations[i]));
  }
  CHECK_FALSE(h.decided(revalidations[8]));
  CHECK_FALSE(h.decided(revalidations[9]));
  CHECK_FALSE(h.scheduler->available_now(Priority::Revalidation));
  CHECK_FALSE(h.scheduler->available_now(Priority::Prewarm));

  // A node may spend the reserve. It is granted ahead of the queued
  // revalidations.
  Handle node1 = h.ask(Priority::Node);
  Handle node2 = h.ask(Priority::Node);
  Handle node3 = h.ask(Priority::Node);
  h.run();
  CHECK(h.granted(node1));
  CHECK(h.granted(node2));
  CHECK_FALSE(h.decided(node3));
  CHECK(h.scheduler->status().available == 0);
  CHECK(h.scheduler->status().reserve == 2);
}

TEST_CASE("scheduler serves strict priority", "[scheduler]") {
  Harness h;
  h.start(BudgetConfig{}, scheduler_config(100));
  // The budget is read from headers: spent.
  h.scheduler->observe(headers(100, 0, 21600, 600));
  Handle prewarm = h.ask(Priority::Prewarm);
  Handle revalidation = h.ask(Priority::Revalidation);
  Handle node = h.ask(Priority::Node);
  Handle revalidation2 = h.ask(Priority::Revalidation);
  h.run();
  CHECK(h.decisions.empty());

  h.scheduler->observe(headers(100, 100));
  h.run();
  REQUIRE(h.order.size() == 4);
  CHECK(h.handle_of(h.order[0]) == node);
  CHECK(h.handle_of(h.order[1]) == revalidation);
  CHECK(h.handle_of(h.order[2]) == revalidation2);
  CHECK(h.handle_of(h.order[3]) == prewarm);
}

TEST_CASE("scheduler shares by cluster weight", "[scheduler]") {
  for (Priority priority : {Priority::Node, Priority::Revalidation}) {
    INFO("priority " << static_cast<int>(priority));
    Harness h;
    // Weights 3:1 for clusters 0 and 1, and in-flight room for every
    // grant.
    h.start(BudgetConfig{}, scheduler_config(1000, 3600), {3, 1});
    h.scheduler->observe(headers(1000, 0, 21600, 600));
    for (int i = 0; i < 200; ++i) {
      h.ask(priority, 0);
      h.ask(priority, 1);
    }
    h.run();
    REQUIRE(h.decisions.empty());

    // 40 requests' worth of budget returns; revalidation also keeps the
    // reserve of 200.
    uint64_t returned = priority == Priority::Node ? 40 : 240;
    h.scheduler->observe(headers(1000, returned));
    h.run();
    REQUIRE(h.granted_count() == 40);
    auto status = h.scheduler->status();
    REQUIRE(status.granted_per_cluster.size() == 2);
    double first = static_cast<double>(status.granted_per_cluster[0]);
    double second = static_cast<double>(status.granted_per_cluster[1]);
    CHECK(first + second == 40.0);
    CHECK(std::abs(first / second - 3.0) <= 0.3);
  }
}

TEST_CASE("scheduler gives idle cluster its share", "[scheduler]") {
  Harness h;
  h.start(BudgetConfig{}, scheduler_config(1000, 3600), {1, 1});
  h.scheduler->observe(headers(1000, 0, 21600, 600));
  // Cluster 0 queued a long backlog before cluster 1 asked once.
  for (int i = 0; i < 50; ++i) {
    h.ask(Priority::Node, 0);
  }
  h.scheduler->observe(headers(1000, 10));
  h.run();
  REQUIRE(h.granted_count() == 10);
  for (size_t id : h.order) {
    h.scheduler->release(h.handle_of(id));
  }

  Handle late = h.ask(Priority::Node, 1);
  h.scheduler->observe(headers(1000, 2));
  h.run();
  // The newcomer does not wait behind the 40 left of the backlog: it
  // shares the next round with it.
  CHECK(h.granted_count() == 12);
  CHECK(h.granted(late));
}

TEST_CASE("scheduler refuses node after max wait", "[scheduler]") {
  Harness h;
  // Two requests per hour, both spent now.
  h.start(configured(2, 3600), scheduler_config(8, 20));
  h.spend(Priority::Node);
  h.now += 1;
  h.spend(Priority::Node);

  h.now += 99;
  Handle waiting = h.ask(Priority::Node);
  Handle revalidation = h.ask(Priority::Revalidation);
  h.run();
  CHECK_FALSE(h.decided(waiting));

  h.advance(19.5);
  CHECK_FALSE(h.decided(waiting));
  h.advance(0.5);
  REQUIRE(h.refused(waiting));
  // The first spend leaves the window at Start + 3600.
  CHECK(h.decision(waiting).retry_after_s == Approx(Start + 3600 - h.now));
  CHECK_FALSE(h.decision(waiting).reason.empty());
  // Revalidation waits without limit.
  CHECK_FALSE(h.decided(revalidation));
  auto status = h.scheduler->status();
  REQUIRE(status.refused_per_cluster.size() == 1);
  CHECK(status.refused_per_cluster[0] == 1);
  CHECK(status.refused_total == 1);
}

TEST_CASE("scheduler refills configured budget", "[scheduler]") {
  Harness h;
  h.start(configured(2, 3600), scheduler_config(8, 20));
  h.spend(Priority::Node);
  h.now += 10;
  h.spend(Priority::Node);
  Handle revalidation = h.ask(Priority::Revalidation);
  h.run();
  CHECK_FALSE(h.decided(revalidation));

  // Reserve is ceil(0.2 * 2) = 1, so revalidation needs 2 available: both
  // spends must leave the window.
  h.advance(3590);
  CHECK_FALSE(h.decided(revalidation));
  h.advance(9);
  CHECK_FALSE(h.decided(revalidation));
  h.advance(1);
  CHECK(h.granted(revalidation));
}

TEST_CASE("scheduler probes at reset", "[scheduler]") {
  Harness h;
  h.start(BudgetConfig{}, scheduler_config(8, 60));
  h.scheduler->observe(headers(100, 0, 21600, 30));
  Handle first = h.ask(Priority::Node);
  Handle second = h.ask(Priority::Node);
  h.run();
  CHECK(h.decisions.empty());
  CHECK_FALSE(h.scheduler->available_now(Priority::Node));

  h.advance(29);
  CHECK(h.decisions.empty());
  h.advance(1);
  // One probe goes; the other waits for its response.
  CHECK(h.granted(first));
  CHECK_FALSE(h.decided(second));
  h.advance(5);
  CHECK_FALSE(h.decided(second));

  h.scheduler->observe(headers(100, 99), first);
  h.run();
  CHECK(h.granted(second));
}

TEST_CASE("scheduler probes after estimated reset", "[scheduler]") {
  Harness h;
  // Docker Hub sends no reset: the window is taken as rolling.
  h.start(BudgetConfig{}, scheduler_config(8, 20));
  h.scheduler->observe(headers(100, 1, 21600));
  Handle spend = h.ask(Priority::Node);
  h.run();
  REQUIRE(h.granted(spend));
  h.scheduler->observe(headers(100, 0, 21600), spend);
  h.scheduler->release(spend);
  h.run();

  auto status = h.scheduler->status();
  CHECK(status.reset_estimated);
  CHECK(status.reset_at == Approx(Start + 21600));

  h.now += 21599;
  Handle revalidation = h.ask(Priority::Revalidation);
  h.run();
  CHECK_FALSE(h.decided(revalidation));
  h.advance(1);
  CHECK(h.granted(revalidation));
}

TEST_CASE("scheduler retries probe without response", "[scheduler]") {
  Harness h;
  h.start(BudgetConfig{}, scheduler_config(8, 3600));
  h.scheduler->observe(headers(100, 0, 21600, 10));
  Handle probe = h.ask(Priority::Node);
  Handle next = h.ask(Priority::Node);
  h.advance(10);
  REQUIRE(h.granted(probe));
  // The probe failed before any response.
  h.scheduler->release(probe);
  h.advance(4);
  CHECK_FALSE(h.decided(next));
  h.advance(1);
  CHECK(h.granted(next));
}

TEST_CASE("scheduler honours 429 retry-after", "[scheduler]") {
  Harness h;
  h.start(configured(100), scheduler_config(8, 3600));
  Handle throttled = h.ask(Priority::Node);
  h.run();
  REQUIRE(h.granted(throttled));
  h.scheduler->observe_throttled(120.0);
  h.scheduler->release(throttled);

  Handle a = h.ask(Priority::Revalidation);
  Handle b = h.ask(Priority::Node);
  Handle c = h.ask(Priority::Node);
  h.run();
  CHECK(h.decisions.size() == 1);
  CHECK_FALSE(h.scheduler->available_now(Priority::Node));
  CHECK(h.scheduler->freshness_stretch() == 8.0);
  CHECK(h.scheduler->status().blocked_until == Start + 120);

  h.advance(119);
  CHECK_FALSE(h.decided(b));
  h.advance(1);
  // One probe, a node first.
  CHECK(h.granted(b));
  CHECK_FALSE(h.decided(c));
  CHECK_FALSE(h.decided(a));

  h.scheduler->release(b);
  h.run();
  CHECK(h.granted(c));
  CHECK(h.granted(a));
}

TEST_CASE("scheduler blocks again when probe throttled", "[scheduler]") {
  Harness h;
  h.start(configured(100), scheduler_config(8, 3600));
  h.scheduler->observe_throttled(10.0);
  Handle probe = h.ask(Priority::Node);
  Handle next = h.ask(Priority::Node);
  h.advance(10);
  REQUIRE(h.granted(probe));
  h.scheduler->observe_throttled(30.0);
  h.scheduler->release(probe);
  h.advance(29);
  CHECK_FALSE(h.decided(next));
  h.advance(1);
  CHECK(h.granted(next));
}

TEST_CASE("scheduler blocks 60 s without retry-after", "[scheduler]") {
  Harness h;
  h.start(BudgetConfig{}, scheduler_config(8, 3600));
  h.scheduler->observe_throttled(std::nullopt);
  CHECK(h.scheduler->status().blocked_until == Start + 60);

  Harness estimated;
  estimated.start(BudgetConfig{}, scheduler_config(8, 3600));
  estimated.scheduler->observe(headers(100, 0, 21600, 900));
  estimated.scheduler->observe_throttled(std::nullopt);
  CHECK(estimated.scheduler->status().blocked_until == Start + 900);
}

TEST_CASE("scheduler refusal during 429 block", "[scheduler]") {
  Harness h;
  h.start(configured(100), scheduler_config(8, 20));
  h.scheduler->observe_throttled(300.0);
  Handle node = h.ask(Priority::Node);
  h.advance(20);
  REQUIRE(h.refused(node));
  CHECK(h.decision(node).retry_after_s == Approx(280));
}

TEST_CASE("scheduler cancel drops queued request", "[scheduler]") {
  Harness h;
  h.start(configured(100), scheduler_config(1, 20));
  Handle running = h.ask(Priority::Node);
  Handle cancelled = h.ask(Priority::Node);
  Handle kept = h.ask(Priority::Node);
  h.run();
  REQUIRE(h.granted(running));
  h.scheduler->cancel(cancelled);
  CHECK(h.scheduler->status().queued[0] == 1);
  h.scheduler->release(running);
  h.advance(60);
  CHECK_FALSE(h.decided(cancelled));
  CHECK(h.granted(kept));

  // Cancelling before the first loop iteration also drops it, and
  // unknown handles are ignored.
  Handle early = h.ask(Priority::Prewarm);
  h.scheduler->cancel(early);
  h.scheduler->cancel(987654);
  h.scheduler->release(987654);
  h.run();
  CHECK_FALSE(h.decided(early));
}

TEST_CASE("scheduler cancel of grant releases it", "[scheduler]") {
  Harness h;
  h.start(configured(100), scheduler_config(1, 20));
  Handle a = h.ask(Priority::Node);
  Handle b = h.ask(Priority::Node);
  h.run();
  REQUIRE(h.granted(a));
  h.scheduler->cancel(a);
  h.run();
  CHECK(h.granted(b));
}

TEST_CASE("scheduler stretches freshness", "[scheduler]") {
  Harness h;
  h.start(BudgetConfig{}, scheduler_config(8, 20));
  CHECK(h.scheduler->freshness_stretch() == 1.0);

  // Limit 100: low budget below 50, reserve 20, max stretch 8.
  struct Case {
    uint64_t remaining;
    double stretch;
  };

  const std::vector<Case> cases = {
      {100, 1},
      {50, 1},
      {49, 1 + 7.0 / 30},
      {35, 4.5},
      {21, 1 + 7 * 29.0 / 30},
      {20, 8},
      {5, 8},
      {0, 8},
  };
  for (const Case &c : cases) {
    INFO("remaining " << c.remaining);
    h.scheduler->observe(headers(100, c.remaining));
    CHECK(h.scheduler->freshness_stretch() == Approx(c.stretch));
    CHECK(h.scheduler->status().freshness_stretch == Approx(c.stretch));
  }
}

TEST_CASE("scheduler counts grants not yet observed", "[scheduler]") {
  Harness h;
  h.start(BudgetConfig{}, scheduler_config(8, 20));
  h.scheduler->observe(headers(100, 50));
  Handle a = h.ask(Priority::Node);
  Handle b = h.ask(Priority::Node);
  h.run();
  REQUIRE(h.granted(a));
  REQUIRE(h.granted(b));
  CHECK(h.scheduler->status().available == 48);

  // The response of `a` counts `a`, while `b` is still in flight.
  h.scheduler->observe(headers(100, 49), a);
  CHECK(h.scheduler->status().available == 48);
  h.scheduler->release(a);
  h.scheduler->release(b);
  // An uncounted response (a HEAD) after both finished.
  h.scheduler->observe(headers(100, 48));
  CHECK(h.scheduler->status().available == 48);
}

TEST_CASE("scheduler ignores stale counts out of order", "[scheduler]") {
  Harness h;
  h.start(BudgetConfig{}, scheduler_config(8, 20));
  h.scheduler->observe(headers(100, 50));
  Handle a = h.ask(Priority::Node);
  Handle b = h.ask(Priority::Node);
  h.run();
  REQUIRE(h.granted(a));
  REQUIRE(h.granted(b));

  // The upstream counted `a` and then `b`, but `b`'s response arrives
  // first and `b` ends before `a`'s older count arrives.
  h.scheduler->observe(headers(100, 48));
  h.scheduler->release(b);
  h.scheduler->observe(headers(100, 49));
  CHECK(h.scheduler->status().available == 48);
  h.scheduler->release(a);
  CHECK(h.scheduler->status().available == 48);

  // With nothing in flight, a larger count is taken: the window refilled.
  h.scheduler->observe(headers(100, 60));
  CHECK(h.scheduler->status().available == 60);
}

TEST_CASE("scheduler takes a changed limit", "[scheduler]") {
  Harness h;
  h.start(configured(100, 21600), scheduler_config(8, 20));
  CHECK(h.scheduler->status().source == BudgetState::Source::Config);
  h.scheduler->observe(headers(200, 180, 21600));
  auto status = h.scheduler->status();
  CHECK(status.source == BudgetState::Source::Headers);
  CHECK(status.limit == 200);
  CHECK(status.remaining == 180);
  CHECK(status.reserve == 40);
  h.scheduler->observe(headers(40, 30, 3600));
  status = h.scheduler->status();
  CHECK(status.limit == 40);
  CHECK(status.window_s == 3600);
  CHECK(status.remaining == 30);
}

TEST_CASE("scheduler reports status", "[scheduler]") {
  Harness h;
  h.start(configured(100, 21600), scheduler_config(8, 20), {1, 1});
  h.scheduler->set_cluster_names({"dev", "prod"});
  for (int i = 0; i < 6; ++i) {
    h.spend(Priority::Node, 1);
    h.now += 600;
  }
  Handle queued = h.ask(Priority::Prewarm, 0);

  auto status = h.scheduler->status();
  CHECK(status.upstream == "docker.io");
  CHECK(status.limit == 100);
  CHECK(status.remaining == 94);
  CHECK(status.available == 94);
  CHECK(status.window_s == 21600);
  CHECK(status.source == BudgetState::Source::Config);

  CHECK(status.queued[2] == 1);
  CHECK(status.in_flight == 0);
  CHECK(status.granted_total == 6);
  REQUIRE(status.granted_per_cluster.size() == 2);
  CHECK(status.granted_per_cluster[0] == 0);
  CHECK(status.granted_per_cluster[1] == 6);

  // Spends at 0, 600, ..., 3000 s. The clock is at 3600 s, so the last
  // hour contains the five after the first.
  CHECK(status.spent_last_hour == 5);
  REQUIRE(status.exhaustion_at.has_value());
  CHECK(*status.exhaustion_at == Approx(h.now + 94 * 720.0));
  CHECK(status.reset_estimated);
  CHECK(status.reset_at == Approx(Start + 21600));

  h.run();
  CHECK(h.granted(queued));
}

TEST_CASE("scheduler status without spends", "[scheduler]") {
  Harness h;
  h.start(configured(100), scheduler_config());
  auto status = h.scheduler->status();
  CHECK_FALSE(status.exhaustion_at.has_value());
  CHECK(status.spent_last_hour == 0);
  CHECK(status.available == 100);
}

TEST_CASE("scheduler persists at most once per second", "[scheduler]") {
  Harness h;
  h.start(configured(100), scheduler_config());
  std::vector<std::string> saved;
  h.scheduler->set_on_change(
      [&saved](const BudgetState &state) { saved.push_back(state.to_json()); });

  h.spend(Priority::Node);
  REQUIRE(saved.size() == 1);

  h.spend(Priority::Node);
  h.spend(Priority::Node);
  h.advance(0.5);
  CHECK(saved.size() == 1);
  h.advance(0.5);
  REQUIRE(saved.size() == 2);
  auto state = BudgetState::from_json(saved.back());
  REQUIRE(state.has_value());
  CHECK(state->spends.size() == 3);
  CHECK(state->remaining == 97);

  // Nothing changed: no call.
  h.advance(5);
  CHECK(saved.size() == 2);

  // Shutdown flushes a pending change at once.
  h.scheduler->observe(headers(100, 50));
  h.scheduler->flush_state();
  CHECK(saved.size() == 3);
  h.scheduler->flush_state();
  CHECK(saved.size() == 3);
  h.scheduler->observe(headers(100, 40));
  h.scheduler.reset();
  CHECK(saved.size() == 4);
}

TEST_CASE("scheduler restores saved state", "[scheduler]") {
  BudgetState saved;
  saved.limit = 100;
  saved.remaining = 3;
  saved.window_s = 21600;
  saved.source = BudgetState::Source::Headers;
  saved.observed_at = Start - 60;
  saved.spends = {Start - 120, Start - 60};

  SECTION("budget from headers is kept over config") {
    Harness h;
    h.start(configured(500), scheduler_config(), {1}, saved);
    auto status = h.scheduler->status();
    CHECK(status.limit == 100);
    CHECK(status.remaining == 3);
    CHECK(status.source == BudgetState::Source::Headers);
    CHECK(status.spent_last_hour == 2);
    Handle revalidation = h.ask(Priority::Revalidation);
    h.run();
    CHECK_FALSE(h.decided(revalidation));
  }

  SECTION("configured budget follows the config") {
    saved.source = BudgetState::Source::Config;
    Harness h;
    h.start(configured(10, 3600), scheduler_config(), {1}, saved);
    auto status = h.scheduler->status();
    CHECK(status.limit == 10);
    CHECK(status.window_s == 3600);
    CHECK(status.remaining == 8);
  }

  SECTION("a 429 block survives a restart") {
    saved.blocked_until = Start + 30;
    Harness h;
    h.start(BudgetConfig{}, scheduler_config(8, 3600), {1}, saved);
    Handle node = h.ask(Priority::Node);
    h.advance(29);
    CHECK_FALSE(h.decided(node));
    h.advance(1);
    CHECK(h.granted(node));
  }
}

TEST_CASE("scheduler applies reloaded config", "[scheduler]") {
  Harness h;
  h.start(configured(2), scheduler_config(8, 20));
  h.spend(Priority::Node);
  h.spend(Priority::Node);
  Handle waiting = h.ask(Priority::Node);
  h.advance(10);
  CHECK_FALSE(h.decided(waiting));

  // A shorter max_wait moves the deadline of the waiting request.
  h.scheduler->set_config(configured(2), scheduler_config(8, 5));
  h.run();
  CHECK(h.refused(waiting));

  // A larger limit frees budget at once.
  Handle next = h.ask(Priority::Node);
  h.scheduler->set_config(configured(10), scheduler_config(8, 5));
  h.run();
  CHECK(h.granted(next));
}

TEST_CASE("scheduler survives destruction in callback", "[scheduler]") {
  Harness h;
  h.start(BudgetConfig{}, scheduler_config());
  int calls = 0;
  for (int i = 0; i < 3; ++i) {
    h.scheduler->request(Ticket{Priority::Node, 0, "x"},
                         [&h, &calls](const Decision &) {
                           ++calls;
                           h.scheduler.reset();
                         });
  }
  h.run();
  CHECK(calls == 1);
  CHECK(h.scheduler == nullptr);
  h.run();
}

TEST_CASE("scheduler takes requests from callbacks", "[scheduler]") {
  Harness h;
  h.start(configured(100), scheduler_config(1, 20));
  std::vector<std::string> events;
  Handle first = 0;
  first = h.scheduler->request(
      Ticket{Priority::Node, 0, "first"}, [&](const Decision &decision) {
        events.push_back(decision.granted ? "first granted" : "refused");
        h.scheduler->request(
            Ticket{Priority::Node, 0, "second"}, [&](const Decision &second) {
              events.push_back(second.granted ? "second granted" : "refused");
            });
        h.scheduler->release(first);
        events.push_back("first released");
      });
  h.run();
  h.run();
  CHECK(events == std::vector<std::string>{"first granted", "first released",
                                           "second granted"});
  CHECK(h.scheduler->status().in_flight == 1);
}
