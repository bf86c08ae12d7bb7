#include "appliance/admin/format.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

namespace gatecache::admin {

namespace {

using nlohmann::json;

// Length of a digest reference in tables: the algorithm and 12 hex digits,
// as `docker images` shortens image ids.
constexpr size_t ShortDigestChars = 19;

// Returns the member `key` of `object`, or null when it is missing, null
// or `object` is not an object.
const json *member(const json &object, const char *key) {
  if (!object.is_object()) {
    return nullptr;
  }
  auto found = object.find(key);
  if (found == object.end() || found->is_null()) {
    return nullptr;
  }
  return &*found;
}

std::optional<double> number(const json &object, const char *key) {
  const json *value = member(object, key);
  if (value == nullptr || !value->is_number()) {
    return std::nullopt;
  }
  return value->get<double>();
}

std::string format_number(double value) {
  char text[32];
  if (std::floor(value) == value && std::fabs(value) < 1e15) {
    std::snprintf(text, sizeof(text), "%.0f", value);
  } else {
    std::snprintf(text, sizeof(text), "%g", value);
  }
  return text;
}

// Returns a member as text: strings as they are, numbers without a
// fraction when they have none, and "-" for missing or null values.
std::string text(const json &object, const char *key) {
  const json *value = member(object, key);
  if (value == nullptr) {
    return "-";
  }
  if (value->is_string()) {
    return value->get<std::string>();
  }
  if (value->is_number()) {
    return format_number(value->get<double>());
  }
  return value->dump();
}

// Returns the strings of an array member joined by ", ".
std::string joined(const json &object, const char *key) {
  const json *values = member(object, key);
  if (values == nullptr || !values->is_array() || values->empty()) {
    return "-";
  }
  std::string result;
  for (const auto &value : *values) {
    if (!result.empty()) {
      result += ", ";
    }
    result += value.is_string() ? value.get<std::string>() : value.dump();
  }
  return result;
}

// Time from `now` until the time in member `key`: "-" when unknown, "now"
// when it has passed.
std::string time_until(const json &object, const char *key, double now) {
  auto at = number(object, key);
  if (!at) {
    return "-";
  }
  if (*at <= now) {
    return "now";
  }
  return format_duration(*at - now);
}

// A text table with two spaces between columns. Columns marked numeric
// are aligned right.
class Table {
public:
  Table(std::vector<std::string> headers, std::vector<bool> numeric)
      : numeric_(std::move(numeric)) {
    rows_.push_back(std::move(headers));
  }

  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }

  std::string render() const {
    std::vector<size_t> widths(numeric_.size(), 0);
    for (const auto &row : rows_) {
      for (size_t i = 0; i < row.size() && i < widths.size(); ++i) {
        widths[i] = std::max(widths[i], row[i].size());
      }
    }
    std::string out;
    for (const auto &row : rows_) {
      std::string line;
      for (size_t i = 0; i < row.size() && i < widths.size(); ++i) {
        if (i > 0) {
          line += "  ";
        }
        std::string padding(widths[i] - row[i].size(), ' ');
        line += numeric_[i] ? padding + row[i] : row[i] + padding;
      }
      while (!line.empty() && line.back() == ' ') {
        line.pop_back();
      }
      out += line + "\n";
    }
    return out;
  }

private:
  std::vector<bool> numeric_;
  std::vector<std::vector<std::string>> rows_;
};

std::string format_upstreams(const json &upstreams, double now) {
  Table table(
      {"UPSTREAM", "SOURCE", "LIMIT", "REMAINING", "WINDOW", "RESET IN",
       "EXHAUSTS", "QUEUED N/R/P", "IN FLIGHT", "STALE", "THROTTLED"},
      {false, false, true, true, true, true, true, true, true, true, true});
  std::string notes;
  for (const auto &upstream : upstreams) {
    auto window = number(upstream, "window_s");
    std::string exhausts = time_until(upstream, "exhaust_at", now);
    if (exhausts != "-" && exhausts != "now") {
      exhausts = "in " + exhausts;
    }
    std::string queued = "-";
    if (const json *queue = member(upstream, "queued")) {
      queued = text(*queue, "node") + "/" + text(*queue, "revalidation") + "/" +
               text(*queue, "prewarm");
    }
    table.add({text(upstream, "name"), text(upstream, "source"),
               text(upstream, "limit"), text(upstream, "remaining"),
               window ? format_duration(*window) : "-",
               time_until(upstream, "reset_at", now), exhausts, queued,
               text(upstream, "in_flight"), text(upstream, "stale_served"),
               text(upstream, "throttled")});

    auto blocked_until = number(upstream, "blocked_until");
    if (blocked_until && *blocked_until > now) {
      notes += text(upstream, "name") +
               ": throttled by the upstream; no counted request before " +
               format_time(*blocked_until) + " (in " +
               format_duration(*blocked_until - now) + ")\n";
    }
  }
  return table.render() + notes;
}

std::string format_clusters(const json &clusters) {
  Table table({"CLUSTER", "WEIGHT", "REQUESTS", "COUNTED", "HITS",
               "REVALIDATED", "MISSES", "STALE", "REFUSED"},
              {false, true, true, true, true, true, true, true, true});
  for (const auto &cluster : clusters) {
    table.add({text(cluster, "name"), text(cluster, "weight"),
               text(cluster, "requests"), text(cluster, "counted"),
               text(cluster, "hits"), text(cluster, "revalidated"),
               text(cluster, "misses"), text(cluster, "stale"),
               text(cluster, "refused")});
  }
  return table.render();
}

std::string images_progress(const json &job) {
  return text(job, "images_done") + "/" + text(job, "images_total");
}

std::string bytes_text(const json &job) {
  auto bytes = number(job, "bytes");
  return bytes ? format_bytes(*bytes) : "-";
}

std::string format_running_jobs(const json &jobs) {
  Table table({"PREWARM", "SETS", "STATE", "IMAGES", "BYTES", "COUNTED"},
              {true, false, false, true, true, true});
  size_t running = 0;
  for (const auto &job : jobs) {
    if (prewarm_finished(job)) {
      continue;
    }
    ++running;
    table.add({text(job, "id"), joined(job, "sets"), text(job, "state"),
               images_progress(job), bytes_text(job), text(job, "counted")});
  }
  if (running == 0) {
    return "no prewarm job running\n";
  }
  return table.render();
}

size_t failed_images(const json &job) {
  size_t failed = 0;
  if (const json *images = member(job, "images");
      images && images->is_array()) {
    for (const auto &image : *images) {
      if (text(image, "state") == "failed") {
        ++failed;
      }
    }
  }
  return failed;
}

std::string job_title(const json &job) {
  std::string title = "prewarm " + text(job, "id");
  std::string sets = joined(job, "sets");
  if (sets != "-") {
    title += " (" + sets + ")";
  }
  return title;
}

std::string job_totals(const json &job) {
  return images_progress(job) + " images, " + bytes_text(job) + ", " +
         text(job, "counted") + " counted requests";
}

} // namespace

std::string format_duration(double seconds) {
  if (!(seconds > 0)) {
    return "0s";
  }
  auto total = static_cast<uint64_t>(std::floor(seconds));
  uint64_t days = total / 86400;
  uint64_t hours = total % 86400 / 3600;
  uint64_t minutes = total % 3600 / 60;
  uint64_t rest = total % 60;
  auto pair = [](uint64_t major, const char *major_unit, uint64_t minor,
                 const char *minor_unit) {
    std::string result = std::to_string(major) + major_unit;
    if (minor != 0) {
      result += std::to_string(minor) + minor_unit;
    }
    return result;
  };
  if (days > 0) {
    return pair(days, "d", hours, "h");
  }
  if (hours > 0) {
    return pair(hours, "h", minutes, "m");
  }
  if (minutes > 0) {
    return pair(minutes, "m", rest, "s");
  }
  return std::to_string(rest) + "s";
}

std::string format_bytes(double bytes) {
  static constexpr const char *Units[] = {"B",   "KiB", "MiB",
                                          "GiB", "TiB", "PiB"};
  if (!(bytes >= 0)) {
    return "-";
  }
  size_t unit = 0;
  while (bytes >= 1024 && unit + 1 < std::size(Units)) {
    bytes /= 1024;
    ++unit;
  }
  char text[32];
  if (unit == 0) {
    std::snprintf(text, sizeof(text), "%.0f B", bytes);
  } else {
    std::snprintf(text, sizeof(text), "%.1f %s", bytes, Units[unit]);
  }
  return text;
}

std::string format_time(double unix_seconds) {
  auto seconds = static_cast<time_t>(std::floor(unix_seconds));
  std::tm utc = {};
  gmtime_r(&seconds, &utc);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

std::string format_status(const json &status) {
  double now = number(status, "now").value_or(0);
  std::string out = "gatecache " + text(status, "version");
  if (auto started = number(status, "started_at")) {
    out += ", up " + format_duration(now - *started);
  }
  if (number(status, "now")) {
    out += ", status at " + format_time(now);
  }
  out += "\n\n";

  const json *upstreams = member(status, "upstreams");
  if (upstreams != nullptr && upstreams->is_array() && !upstreams->empty()) {
    out += format_upstreams(*upstreams, now);
  } else {
    out += "no upstream reported\n";
  }
  out += "\n";

  const json *clusters = member(status, "clusters");
  if (clusters != nullptr && clusters->is_array() && !clusters->empty()) {
    out += format_clusters(*clusters);
  } else {
    out += "no cluster reported\n";
  }
  if (auto denied = number(status, "denied")) {
    out += "denied (client in no cluster): " + text(status, "denied") + "\n";
  }
  out += "\n";

  const json *jobs = member(status, "prewarm");
  out += format_running_jobs(
      jobs != nullptr && jobs->is_array() ? *jobs : json::array());

  if (const json *scrub = member(status, "scrub"); scrub != nullptr) {
    out += "\nscrub: " + text(*scrub, "passes") + " passes since start, " +
           text(*scrub, "damaged") + " damaged files removed";
    const json *running = member(*scrub, "running");
    if (running != nullptr && running->is_boolean() && running->get<bool>()) {
      out += ", a pass is running";
    } else if (auto next = number(*scrub, "next_pass_at")) {
      out += ", next pass " + format_time(*next);
    } else {
      out += ", no pass scheduled";
    }
    out += "\n";
  }
  return out;
}

std::string format_pulls(const json &pulls) {
  const json *entries = member(pulls, "pulls");
  if (entries == nullptr || !entries->is_array() || entries->empty()) {
    return "no pulls recorded\n";
  }
  Table table({"TIME", "CLIENT", "CLUSTER", "UPSTREAM", "REPOSITORY",
               "REFERENCE", "KIND", "STATUS", "CACHE"},
              {false, false, false, false, false, false, false, true, false});
  for (const auto &pull : *entries) {
    auto time = number(pull, "time");
    std::string reference = text(pull, "reference");
    if (reference.find(':') != std::string::npos &&
        reference.size() > ShortDigestChars) {
      reference.resize(ShortDigestChars);
    }
    table.add({time ? format_time(*time) : "-", text(pull, "client"),
               text(pull, "cluster"), text(pull, "ns"),
               text(pull, "repository"), reference, text(pull, "kind"),
               text(pull, "status"), text(pull, "cache")});
  }
  return table.render();
}

std::string format_prewarm_progress(const json &job, double now) {
  std::string line =
      job_title(job) + ": " + text(job, "state") + ", " + job_totals(job);
  if (size_t failed = failed_images(job); failed > 0) {
    line += ", " + std::to_string(failed) + " failed";
  }
  if (auto waiting_until = number(job, "waiting_until")) {
    line += ", waiting for budget";
    if (*waiting_until > now) {
      line += " (" + format_duration(*waiting_until - now) + " left)";
    }
  }
  return line;
}

std::string prewarm_progress_key(const json &job) {
  return text(job, "state") + "|" + images_progress(job) + "|" +
         text(job, "bytes") + "|" + text(job, "counted") + "|" +
         std::to_string(failed_images(job)) + "|" + text(job, "waiting_until");
}

bool prewarm_finished(const json &job) {
  std::string state = text(job, "state");
  return state == "done" || state == "failed" || state == "cancelled";
}

bool prewarm_has_failures(const json &job) {
  std::string state = text(job, "state");
  if (state == "failed" || state == "cancelled" || failed_images(job) > 0) {
    return true;
  }
  const json *errors = member(job, "errors");
  return errors != nullptr && errors->is_array() && !errors->empty();
}

std::string format_prewarm_result(const json &job) {
  std::string out =
      job_title(job) + " " + text(job, "state") + ": " + job_totals(job);
  if (size_t failed = failed_images(job); failed > 0) {
    out += ", " + std::to_string(failed) + " failed";
  }
  out += "\n";
  // The daemon may report an image failure in "errors" too, as
  // "<ref>: <error>", which is printed once.
  std::vector<std::string> image_errors;
  if (const json *images = member(job, "images");
      images && images->is_array()) {
    for (const auto &image : *images) {
      if (text(image, "state") == "failed") {
        image_errors.push_back(text(image, "ref") + ": " +
                               text(image, "error"));
        out += "  failed: " + image_errors.back() + "\n";
      }
    }
  }
  if (const json *errors = member(job, "errors");
      errors && errors->is_array()) {
    for (const auto &error : *errors) {
      std::string message =
          error.is_string() ? error.get<std::string>() : error.dump();
      if (std::find(image_errors.begin(), image_errors.end(), message) ==
          image_errors.end()) {
        out += "  error: " + message + "\n";
      }
    }
  }
  return out;
}

} // namespace gatecache::admin
