#include "appliance/front/connection_limit.h"

#include <algorithm>
#include <cassert>

#include "appliance/front/listener.h"
#include "common/log.h"

namespace gatecache::front {

namespace {

// The "cap reached" warning is logged at most once per this period. Under
// a flood the cap is reached again each time a connection closes, so the
// warning carries the count of the times in between.
constexpr double ReachedWarnPeriodS = 60;

} // namespace

ConnectionLimit::ConnectionLimit(struct ev_loop *loop, size_t max_connections)
    : loop_(loop), max_connections_(std::max<size_t>(max_connections, 1)) {}

ConnectionLimit::~ConnectionLimit() { assert(listeners_.empty()); }

void ConnectionLimit::add_listener(Listener *listener) {
  listeners_.push_back(listener);
}

void ConnectionLimit::remove_listener(Listener *listener) {
  std::erase(listeners_, listener);
}

void ConnectionLimit::connection_opened() {
  ++open_connections_;
  if (open_connections_ != max_connections_) {
    return;
  }
  ++times_reached_;
  warn_reached();
  for (Listener *listener : listeners_) {
    listener->pause_for_limit();
  }
}

void ConnectionLimit::connections_closed(size_t count) {
  assert(count <= open_connections_);
  bool was_reached = reached();
  open_connections_ -= std::min(count, open_connections_);
  if (!was_reached || reached()) {
    return;
  }
  GC_LOG(Front, debug, "open connections fell below {}, accepting again",
         max_connections_);
  for (Listener *listener : listeners_) {
    listener->resume_after_limit();
  }
}

void ConnectionLimit::warn_reached() {
  ++reached_since_warning_;
  double now = ev_now(loop_);
  if (now - warned_at_ < ReachedWarnPeriodS) {
    return;
  }
  GC_LOG(Front, warn,
         "{} open client connections reached front.max_connections, so new "
         "connections wait in the listen backlog until one closes "
         "times_reached_since_last_warning={}",
         max_connections_, reached_since_warning_);
  warned_at_ = now;
  reached_since_warning_ = 0;
}

} // namespace gatecache::front
