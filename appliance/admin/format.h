// Text output of the admin CLI subcommands, built from the daemon's JSON.
// Every function tolerates missing members and null values, which it
// prints as "-".
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace gatecache::admin {

// Formats a duration with its two largest units: "45s", "12m5s", "2h10m",
// "3d4h". Negative durations print as "0s".
std::string format_duration(double seconds);

// Formats a byte count with binary units: "512 B", "1.5 KiB", "120.6 MiB".
std::string format_bytes(double bytes);

// Formats Unix seconds as UTC: "2026-12-06T05:46:40Z".
std::string format_time(double unix_seconds);

// Formats the response of GET /v1/status: a header line, a table of
// upstream budgets, a table of clusters and the prewarm jobs still
// running. Times are relative to the status object's "now".
std::string format_status(const nlohmann::json &status);

// Formats the response of GET /v1/pulls as a table, oldest first.
std::string format_pulls(const nlohmann::json &pulls);

// Returns one line of progress of a prewarm job (the response of GET
// /v1/prewarm/<id>) at `now` (Unix seconds), such as "prewarm 3
// (kubernetes-1.31): running, 3/8 images, 120.6 KiB, 4 counted requests".
std::string format_prewarm_progress(const nlohmann::json &job, double now);

// Returns what the progress line shows, without the countdown of a budget
// wait, so that a caller printing one line per change does not print one
// per second.
std::string prewarm_progress_key(const nlohmann::json &job);

// True once the job is done, failed or cancelled.
bool prewarm_finished(const nlohmann::json &job);

// True when the job failed or was cancelled, an image failed, or the job
// reported errors.
bool prewarm_has_failures(const nlohmann::json &job);

// Returns the final report of a finished job: a summary line, then one
// line per failed image and per job error not already shown for an image.
std::string format_prewarm_result(const nlohmann::json &job);

} // namespace gatecache::admin
