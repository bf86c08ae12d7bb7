#include "appliance/daemon_status.h"

#include <algorithm>
#include <utility>

#include "common/log.h"

namespace gatecache {

namespace {

// Appends one Prometheus metric without labels.
void append_metric(std::string &out, const char *name, const char *type,
                   const char *help, uint64_t value) {
  out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " +
         type + "\n" + name + " " + std::to_string(value) + "\n";
}

} // namespace

nlohmann::json DaemonStatus::status() {
  auto status = usage_.status_json();
  status["prewarm"] = prewarmer_.jobs_json();
  auto scrub = scrubber_.stats();
  double interval = config_->storage.scrub_interval_s;
  status["scrub"] = {
      {"passes", scrub.passes},
      {"files", scrub.files},
      {"bytes", scrub.bytes},
      {"damaged", scrub.damaged},
      {"last_pass_end", scrub.last_pass_end},
      {"running", scrub.running},
      {"next_pass_at",
       interval > 0 && scrub.last_pass_end > 0
           ? nlohmann::json(static_cast<double>(scrub.last_pass_end) + interval)
           : nlohmann::json(nullptr)}};
  return status;
}

nlohmann::json DaemonStatus::pulls(const std::string &client_ip, double since,
                                   size_t limit) {
  return usage_.pulls_json(client_ip, since, limit);
}

std::string DaemonStatus::metrics() {
  std::string out = usage_.metrics_text();
  out += "# HELP gatecache_front_connections Open client connections, those "
         "in the TLS handshake included.\n"
         "# TYPE gatecache_front_connections gauge\n"
         "gatecache_front_connections " +
         std::to_string(connections_.open_connections()) + "\n";
  out += "# HELP gatecache_front_max_connections Open client connections at "
         "which accepting pauses (front.max_connections).\n"
         "# TYPE gatecache_front_max_connections gauge\n"
         "gatecache_front_max_connections " +
         std::to_string(connections_.max_connections()) + "\n";
  out += "# HELP gatecache_front_connection_limit_reached_total Times the "
         "open client connections reached front.max_connections.\n"
         "# TYPE gatecache_front_connection_limit_reached_total counter\n"
         "gatecache_front_connection_limit_reached_total " +
         std::to_string(connections_.times_reached()) + "\n";
  auto scrub = scrubber_.stats();
  append_metric(out, "gatecache_scrub_passes_total", "counter",
                "Finished passes of the scrubber over the store.",
                scrub.passes);
  append_metric(out, "gatecache_scrub_bytes_total", "counter",
                "Bytes of stored content hashed again by the scrubber.",
                scrub.bytes);
  append_metric(out, "gatecache_scrub_damaged_total", "counter",
                "Stored files found damaged by the scrubber and removed.",
                scrub.damaged);
  append_metric(
      out, "gatecache_scrub_last_pass_end_seconds", "gauge",
      "Unix time at which the last scrub pass ended.",
      static_cast<uint64_t>(std::max<int64_t>(scrub.last_pass_end, 0)));
  return out;
}

Result<uint64_t> DaemonStatus::start_prewarm(const nlohmann::json &sets) {
  if (!sets.is_array() || sets.empty()) {
    return fail(ErrorCode::Invalid, "\"sets\" must be a non-empty array");
  }
  std::vector<prewarm::ImageSet> parsed;
  for (const auto &item : sets) {
    auto set = prewarm::image_set_from_json(item);
    if (!set) {
      return tl::unexpected(set.error());
    }
    for (const auto &image : set->images) {
      if (!config_->upstreams.contains(image.registry)) {
        return fail(ErrorCode::Invalid,
                    "image " + image.str() + " of set " + set->name +
                        " is on registry " + image.registry +
                        ", which is not a configured upstream");
      }
    }
    parsed.push_back(std::move(*set));
  }
  return prewarmer_.start(std::move(parsed), front::Priority::Prewarm);
}

std::optional<nlohmann::json> DaemonStatus::prewarm_job(uint64_t id) {
  return prewarmer_.job_json(id);
}

} // namespace gatecache
