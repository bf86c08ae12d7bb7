// Routes of the admin endpoint. Every response body is JSON except that
// of /metrics. Errors are {"error": "..."} with status 400, 403, 404, 405
// or 500.
//
//   GET  /healthz               {"status":"ok"}
//   GET  /v1/status             StatusSource::status()
//   GET  /v1/pulls?client=IP&since=UNIX&limit=N
//                               StatusSource::pulls(), every parameter
//                               optional
//   GET  /metrics               Prometheus text format 0.0.4
//   POST /v1/prewarm            body {"sets":[<image set>, ...]}, answered
//                               by 202 with {"id":N} and a Location header
//   GET  /v1/prewarm/<id>       StatusSource::prewarm_job()
//   POST /v1/scrub              StatusSource::start_scrub(), then 202
//
// HEAD is accepted wherever GET is. POST arrives only over the Unix socket,
// because `AdminServer` rejects it on TCP listeners.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "appliance/admin/server.h"
#include "common/error.h"

namespace gatecache::admin {

// Source of what the daemon reports through the admin endpoint. Every method is
// called on the loop thread of the `AdminServer` and must not block it.
// An exception thrown by a method becomes a 500 response.
class StatusSource {
public:
  virtual ~StatusSource() = default;

  // Budget per upstream, statistics per cluster and prewarm jobs: the
  // object `gatecache status` formats. null marks an unknown value.
  virtual nlohmann::json status() = 0;

  // Returns {"pulls":[...]}: the newest `limit` requests at or after
  // `since` (Unix seconds), oldest first. `client` is a canonical IP
  // literal ("10.0.0.5", "::1"), or empty for every client.
  virtual nlohmann::json pulls(const std::string &client_ip, double since,
                               size_t limit) = 0;

  // Prometheus text exposition format 0.0.4.
  virtual std::string metrics() = 0;

  // Starts prewarming `sets`, a non-empty array of image set objects.
  // Returns the job id. `Invalid` for a malformed set (then the response
  // is 400), `Denied` (403), `NotFound` (404), anything else 500.
  virtual Result<uint64_t> start_prewarm(const nlohmann::json &sets) = 0;

  // Returns the job's status entry with "images" and "waiting_until", or
  // nothing when no job has this id.
  virtual std::optional<nlohmann::json> prewarm_job(uint64_t id) = 0;

  // Starts a pass of the scrubber over the store at once, or right after
  // the pass in progress.
  virtual void start_scrub() = 0;
};

// Query of GET /v1/pulls after validation.
struct PullsQuery {
  std::string client; // Canonical IP literal, or empty for every client.
  double since = 0;   // Unix seconds.
  size_t limit = 0;
};

// Default and maximum number of pulls one request returns.
inline constexpr size_t DefaultPullsLimit = 1000;
inline constexpr size_t MaxPullsLimit = 10000;

// Parses the query of GET /v1/pulls: `client` an IPv4 or IPv6 literal,
// `since` a non-negative number, `limit` an integer from 1 to
// `MaxPullsLimit` (default `DefaultPullsLimit`). Values may be
// percent-encoded. `Invalid` names the parameter and the value for a
// malformed, repeated or unknown parameter.
[[nodiscard]] Result<PullsQuery> parse_pulls_query(std::string_view query);

class AdminApi final : public AdminHandler {
public:
  // `source` must outlive the API.
  explicit AdminApi(StatusSource &source) : source_(source) {}

  // Replies before returning.
  void handle(const AdminRequest &request,
              std::function<void(AdminResponse)> reply) override;

private:
  AdminResponse route(const AdminRequest &request);
  AdminResponse get_pulls(const AdminRequest &request);
  AdminResponse post_prewarm(const AdminRequest &request);
  AdminResponse get_prewarm_job(std::string_view id);

  StatusSource &source_;
};

} // namespace gatecache::admin
