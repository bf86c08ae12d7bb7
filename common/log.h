// Logging through spdlog, one logger per component.
//
// Diagnostic lines go to stderr with an `sd-daemon(3)` priority prefix when
// running under systemd, and with a timestamp on a terminal. The access log
// is a separate logger with one line per request.
#pragma once

#include <string>

#include <spdlog/spdlog.h>

namespace gatecache::log {

enum class Component {
  Main,
  Front,
  Upstream,
  Registry,
  Cache,
  Tls,
  Config,
  Access,
};

// Returns the logger of `component`. Valid after `init()`, and before it a
// default stderr logger is created on first use.
spdlog::logger &get(Component component);

// Sets the level of every diagnostic logger ("debug", "info", "warn",
// "error") and where the access log goes: "stderr", "off" or a file path.
// Returns false with a message in `error` when a value is invalid.
bool init(const std::string &level, const std::string &access_log,
          std::string &error);

// Writes buffered access log lines. The daemon calls it whenever its loop
// goes idle and at exit, because access lines are not flushed one by one.
void flush_access_log();

// Level names for `GC_LOG`, kept apart from spdlog's own names so the
// macro argument never collides with a namespace.
namespace severity_level {
inline constexpr auto trace = spdlog::level::trace;
inline constexpr auto debug = spdlog::level::debug;
inline constexpr auto info = spdlog::level::info;
inline constexpr auto warn = spdlog::level::warn;
inline constexpr auto err = spdlog::level::err;
inline constexpr auto error = spdlog::level::err;
inline constexpr auto critical = spdlog::level::critical;
} // namespace severity_level

} // namespace gatecache::log

// Logs through the logger of `component` at `severity` (trace, debug,
// info, warn, err, critical; `error` is accepted as a synonym of `err`).
#define GC_LOG(component, severity, ...)                                      \
  ::gatecache::log::get(::gatecache::log::Component::component)              \
      .log(::gatecache::log::severity_level::severity, __VA_ARGS__)
