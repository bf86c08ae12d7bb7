#include "appliance/cli/commands.h"

namespace gatecache::cli {

void add_ca_commands(CLI::App &, std::string &) {}

} // namespace gatecache::cli
