// Service manager notifications (sd_notify(3)) for a Type=notify unit:
// readiness, reload, stop, status text and watchdog keep-alive pings.
#pragma once

#include <cstdint>
#include <string_view>

#include <ev.h>

namespace gatecache {

// Sends state changes to systemd over $NOTIFY_SOCKET and keeps its
// watchdog fed from the event loop.
//
// When $NOTIFY_SOCKET is unset (a foreground run, a test) every call does
// nothing. When systemd also set $WATCHDOG_USEC for this process (checked
// with sd_watchdog_enabled(3), which compares $WATCHDOG_PID with our pid),
// a libev timer sends WATCHDOG=1 every half of that interval. The timer
// runs on the loop, so a loop that stops turning stops the pings and
// systemd restarts the service. The timer does not keep `ev_run()` alive
// by itself.
//
// Use from the loop thread only. A send that fails is logged, and repeated
// failures are logged once until a send succeeds again.
class ServiceNotifier {
public:
  // Reads the environment and, when a watchdog is expected, starts the
  // ping timer on `loop`. The first ping goes out on the first iteration of
  // `ev_run()`.
  explicit ServiceNotifier(struct ev_loop *loop);
  ~ServiceNotifier();
  ServiceNotifier(const ServiceNotifier &) = delete;
  ServiceNotifier &operator=(const ServiceNotifier &) = delete;

  // True when $NOTIFY_SOCKET is set, so messages go somewhere.
  bool enabled() const { return enabled_; }

  // Seconds between watchdog pings, or 0 when no watchdog is expected.
  double watchdog_interval_s() const { return ping_interval_s_; }

  // Sends READY=1 with STATUS=`status`. Call it once the listeners accept
  // connections, and again after a reload finished.
  void ready(std::string_view status);

  // Sends RELOADING=1 with MONOTONIC_USEC=<CLOCK_MONOTONIC now>. systemd
  // 253 and later require the timestamp for Type=notify-reload, and older
  // versions ignore it. Follow with `ready()` when the reload is done.
  void reloading();

  // Sends STOPPING=1. Watchdog pings continue while responses drain.
  void stopping();

  // Sends STATUS=`text`, shown by `systemctl status`. Newlines become
  // spaces, because a newline would start a new assignment.
  void status(std::string_view text);

private:
  static void on_watchdog_timer(struct ev_loop *loop, ev_timer *watcher,
                                int revents) noexcept;
  void send(const char *message);

  struct ev_loop *loop_;
  ev_timer watchdog_timer_;
  bool enabled_ = false;
  bool watchdog_started_ = false;
  double ping_interval_s_ = 0;
  // Sends that failed since the last one that succeeded.
  uint64_t failures_ = 0;
};

} // namespace gatecache
