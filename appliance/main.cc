// gatecache: command-line entry point. Parses arguments and hands over to
// the daemon or an admin command.
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "appliance/cli/commands.h"
#include "appliance/config/config.h"
#include "appliance/server.h"

namespace {

int check_config(const std::string &path) {
  auto config = gatecache::config::load_config(path);
  if (!config) {
    std::fprintf(stderr, "%s\n", config.error().message.c_str());
    return 2;
  }
  std::printf("%s: ok\n", path.c_str());
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"gatecache: an edge pull-through cache for container images"};
  app.require_subcommand(1);
  app.set_version_flag("--version", GATECACHE_VERSION);

  std::string config_path = "/etc/gatecache/gatecache.yaml";
  auto *serve = app.add_subcommand("serve", "Run the registry mirror in the "
                                            "foreground, logging to stderr");
  serve->add_option("-c,--config", config_path, "Configuration file")
      ->capture_default_str();

  auto *check = app.add_subcommand("check-config",
                                   "Validate a configuration file and exit");
  check->add_option("-c,--config", config_path, "Configuration file")
      ->capture_default_str();

  gatecache::cli::add_admin_commands(app, config_path);
  gatecache::cli::add_ca_commands(app, config_path);

  // Subcommands other than serve and check-config run in their callbacks
  // and report failure as CLI::RuntimeError.
  CLI11_PARSE(app, argc, argv);

  if (*serve) {
    return gatecache::run_server(config_path);
  }
  if (*check) {
    return check_config(config_path);
  }
  // Another subcommand ran in its callback and succeeded; failures left
  // CLI11_PARSE with their exit status.
  return 0;
}
