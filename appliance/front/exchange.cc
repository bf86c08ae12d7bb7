#include "appliance/front/exchange.h"

namespace gatecache::front {

const char *to_string(CacheResult result) {
  switch (result) {
  case CacheResult::None:
    return "none";
  case CacheResult::Hit:
    return "hit";
  case CacheResult::Miss:
    return "miss";
  case CacheResult::Stale:
    return "stale";
  case CacheResult::Revalidated:
    return "revalidated";
  case CacheResult::Joined:
    return "joined";
  }
  return "none";
}

} // namespace gatecache::front
