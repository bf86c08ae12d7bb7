// The logger of the cache component, for the files of this folder.
#pragma once

#include "common/log.h"

namespace gatecache::cache {

// Returns the `cache` logger. Calls go through it rather than `GC_LOG`,
// whose `level` parameter also replaces the `level` in `spdlog::level::`,
// so `GC_LOG(Cache, info, ...)` does not compile.
inline spdlog::logger &logger() { return log::get(log::Component::Cache); }

} // namespace gatecache::cache
