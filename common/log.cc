#include "common/log.h"

#include <array>
#include <cstdlib>
#include <memory>
#include <mutex>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <unistd.h>

namespace gatecache::log {

namespace {

constexpr std::array<const char *, 8> ComponentNames = {
    "main",  "front", "upstream", "registry",
    "cache", "tls",   "config",   "access"};

std::array<std::shared_ptr<spdlog::logger>, ComponentNames.size()> loggers;
std::once_flag default_once;

// Under systemd (JOURNAL_STREAM set) the journal adds the time, and the
// `<N>` prefix carries the syslog priority; on a terminal a timestamp helps.
std::string diagnostic_pattern() {
  if (std::getenv("JOURNAL_STREAM") != nullptr) {
    return "<%l> %n: %v";
  }
  return "%Y-%m-%dT%H:%M:%S.%e %^%L%$ %n: %v";
}

void make_loggers(spdlog::sink_ptr access_sink) {
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  for (size_t i = 0; i < ComponentNames.size(); ++i) {
    bool access = i == static_cast<size_t>(Component::Access);
    auto logger = std::make_shared<spdlog::logger>(ComponentNames[i],
                                                   access ? access_sink : sink);
    if (access) {
      logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %v");
    } else {
      logger->set_pattern(diagnostic_pattern());
    }
    loggers[i] = std::move(logger);
  }
}

} // namespace

spdlog::logger &get(Component component) {
  std::call_once(default_once, [] {
    if (!loggers[0]) {
      make_loggers(std::make_shared<spdlog::sinks::stderr_sink_mt>());
    }
  });
  return *loggers[static_cast<size_t>(component)];
}

bool init(const std::string &level, const std::string &access_log,
          std::string &error) {
  auto parsed = spdlog::level::from_str(level);
  if (parsed == spdlog::level::off && level != "off") {
    error = "invalid log level '" + level +
            "': expected debug, info, warn or error";
    return false;
  }
  spdlog::sink_ptr access_sink;
  if (access_log == "stderr") {
    access_sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  } else if (access_log == "off") {
    access_sink = std::make_shared<spdlog::sinks::null_sink_mt>();
  } else {
    try {
      access_sink =
          std::make_shared<spdlog::sinks::basic_file_sink_mt>(access_log);
    } catch (const spdlog::spdlog_ex &e) {
      error = "cannot open access log '" + access_log + "': " + e.what();
      return false;
    }
  }
  std::call_once(default_once, [] {});
  make_loggers(access_sink);
  for (size_t i = 0; i < loggers.size(); ++i) {
    if (i == static_cast<size_t>(Component::Access)) {
      // One write per request costs more than serving a cached manifest,
      // so the access log is flushed by `flush_access_log()` instead.
      loggers[i]->flush_on(spdlog::level::off);
    } else {
      loggers[i]->set_level(parsed);
      loggers[i]->flush_on(spdlog::level::info);
    }
  }
  return true;
}

void flush_access_log() { get(Component::Access).flush(); }

} // namespace gatecache::log
