#include "appliance/notify.h"

#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

#include <systemd/sd-daemon.h>

#include "common/log.h"

namespace gatecache {

namespace {

std::string status_line(std::string_view text) {
  std::string line = "STATUS=";
  line.append(text);
  for (size_t i = 7; i < line.size(); ++i) {
    if (line[i] == '\n') {
      line[i] = ' ';
    }
  }
  return line;
}

uint64_t monotonic_usec() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<uint64_t>(now.tv_sec) * 1000000 +
         static_cast<uint64_t>(now.tv_nsec) / 1000;
}

} // namespace

ServiceNotifier::ServiceNotifier(struct ev_loop *loop) : loop_(loop) {
  ev_timer_init(&watchdog_timer_, on_watchdog_timer, 0., 0.);
  watchdog_timer_.data = this;

  const char *notify_socket = std::getenv("NOTIFY_SOCKET");
  enabled_ = notify_socket != nullptr && notify_socket[0] != '\0';
  if (!enabled_) {
    return;
  }

  uint64_t timeout_usec = 0;
  int watchdog = sd_watchdog_enabled(0, &timeout_usec);
  if (watchdog < 0) {
    const char *usec = std::getenv("WATCHDOG_USEC");
    const char *pid = std::getenv("WATCHDOG_PID");
    GC_LOG(Main, warn,
           "ignoring the systemd watchdog because WATCHDOG_USEC='{}' or "
           "WATCHDOG_PID='{}' is invalid: {}",
           usec ? usec : "", pid ? pid : "", std::strerror(-watchdog));
    return;
  }
  if (watchdog == 0 || timeout_usec == 0) {
    GC_LOG(Main, debug, "systemd notifications on, no watchdog requested");
    return;
  }

  // sd_watchdog_enabled(3) recommends a ping every half of the timeout.
  ping_interval_s_ = static_cast<double>(timeout_usec) / 2e6;
  ev_timer_set(&watchdog_timer_, 0., ping_interval_s_);
  ev_timer_start(loop_, &watchdog_timer_);
  // The timer must not keep ev_run() going once everything else stopped.
  ev_unref(loop_);
  watchdog_started_ = true;
  GC_LOG(Main, info,
         "systemd watchdog timeout {:.3f} s, pinging every {:.3f} s",
         static_cast<double>(timeout_usec) / 1e6, ping_interval_s_);
}

ServiceNotifier::~ServiceNotifier() {
  if (watchdog_started_) {
    // libev requires the reference back before stopping an unref'd watcher.
    ev_ref(loop_);
    ev_timer_stop(loop_, &watchdog_timer_);
  }
}

void ServiceNotifier::ready(std::string_view status) {
  if (!enabled_) {
    return;
  }
  send(("READY=1\n" + status_line(status)).c_str());
}

void ServiceNotifier::reloading() {
  if (!enabled_) {
    return;
  }
  std::string message =
      "RELOADING=1\nMONOTONIC_USEC=" + std::to_string(monotonic_usec());
  send(message.c_str());
}

void ServiceNotifier::stopping() {
  if (!enabled_) {
    return;
  }
  send("STOPPING=1");
}

void ServiceNotifier::status(std::string_view text) {
  if (!enabled_) {
    return;
  }
  send(status_line(text).c_str());
}

void ServiceNotifier::on_watchdog_timer(struct ev_loop *, ev_timer *watcher,
                                        int) noexcept {
  static_cast<ServiceNotifier *>(watcher->data)->send("WATCHDOG=1");
}

void ServiceNotifier::send(const char *message) {
  // unset_environment is 0 because every later call reads NOTIFY_SOCKET
  // again.
  int sent = sd_notify(0, message);
  if (sent > 0) {
    if (failures_ > 0) {
      GC_LOG(Main, info, "systemd notifications work again after {} failures",
             failures_);
      failures_ = 0;
    }
    return;
  }
  ++failures_;
  if (failures_ > 1) {
    return;
  }
  // Only the first failure in a row is logged, so a watchdog ping that
  // fails every few seconds logs once. The first line names the message.
  std::string first_line(message, std::strcspn(message, "\n"));
  if (sent == 0) {
    GC_LOG(Main, warn,
           "systemd notification {} not sent: NOTIFY_SOCKET is unset",
           first_line);
  } else {
    const char *notify_socket = std::getenv("NOTIFY_SOCKET");
    GC_LOG(Main, warn,
           "sending systemd notification {} to NOTIFY_SOCKET={} failed: {}",
           first_line, notify_socket ? notify_socket : "",
           std::strerror(-sent));
  }
}

} // namespace gatecache
