// Subcommands of the gatecache binary other than `serve` and
// `check-config`. Each group registers its subcommands on the application;
// a subcommand's callback runs it and reports failure by throwing
// CLI::RuntimeError with the exit status.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

namespace gatecache::cli {

// `status`, `prewarm`, `scrub` and `pulls`: clients of a running daemon's admin
// socket. `config_path` is bound to each subcommand's --config option.
void add_admin_commands(CLI::App &app, std::string &config_path);

// `ca init|issue-server|issue-client|show|export|rotate`: the internal CA.
void add_ca_commands(CLI::App &app, std::string &config_path);

} // namespace gatecache::cli
