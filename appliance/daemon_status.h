// The admin endpoint's view of the running daemon: status, pulls, metrics
// and prewarm jobs.
#pragma once

#include <memory>

#include "appliance/admin/api.h"
#include "appliance/config/config.h"
#include "appliance/front/connection_limit.h"
#include "appliance/registry/prewarmer.h"
#include "appliance/registry/usage.h"
#include "cache/scrubber.h"

namespace gatecache {

class DaemonStatus final : public admin::StatusSource {
public:
  // `config` is the daemon's current configuration, which a reload
  // replaces; it must outlive this object, as must `connections` and
  // `scrubber`.
  DaemonStatus(const std::shared_ptr<const config::Config> &config,
               registry::Usage &usage, registry::Prewarmer &prewarmer,
               const front::ConnectionLimit &connections,
               cache::Scrubber &scrubber)
      : config_(config), usage_(usage), prewarmer_(prewarmer),
        connections_(connections), scrubber_(scrubber) {}

  nlohmann::json status() override;
  nlohmann::json pulls(const std::string &client_ip, double since,
                       size_t limit) override;
  std::string metrics() override;
  Result<uint64_t> start_prewarm(const nlohmann::json &sets) override;
  std::optional<nlohmann::json> prewarm_job(uint64_t id) override;

  void start_scrub() override { scrubber_.run_now(); }

private:
  const std::shared_ptr<const config::Config> &config_;
  registry::Usage &usage_;
  registry::Prewarmer &prewarmer_;
  const front::ConnectionLimit &connections_;
  cache::Scrubber &scrubber_;
};

} // namespace gatecache
