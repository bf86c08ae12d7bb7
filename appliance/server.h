// The daemon: wires configuration, storage, TLS, the upstream client and
// the HTTP front onto one event loop, and handles signals.
#pragma once

#include <string>

namespace gatecache {

// Runs the daemon until SIGTERM or SIGINT. Returns the process exit code:
// 0 after a clean stop, 2 for a configuration error, 1 for a startup
// failure.
int run_server(const std::string &config_path);

} // namespace gatecache
