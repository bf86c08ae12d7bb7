#include "cache/evictor.h"

#include <algorithm>

#include "common/log.h"

namespace gatecache::cache {

namespace {

// Records listed per round. In-use content stays at the head of the LRU
// order, so each round requests that many more.
constexpr size_t BatchSize = 256;

// Unlinks the file of evicted content. Failures are logged, not returned,
// because the index record is already removed_record and the file is now an
// orphan either way.
void remove_file(BlobStore &store, const std::string &digest_text) {
  auto digest = Digest::parse(digest_text);
  if (!digest) {
    GC_LOG(Cache, warn, "Evicted index record has an invalid digest: {}",
           digest.error().message);
    return;
  }
  if (auto removed = store.remove(*digest); !removed) {
    GC_LOG(Cache, warn, "Cannot remove evicted file of {}: {}", digest_text,
           removed.error().message);
  }
}

} // namespace

Result<std::vector<std::pair<std::string, ContentRecord>>>
evict_to(BlobStore &store, Index &index, uint64_t max_bytes,
         const std::function<bool(const std::string &digest)> &in_use) {
  std::vector<std::pair<std::string, ContentRecord>> removed;
  size_t limit = BatchSize;
  while (true) {
    auto total = index.total_size();
    if (!total) {
      return tl::unexpected(total.error());
    }
    if (*total <= max_bytes) {
      return removed;
    }
    auto candidates = index.least_recently_used(limit);
    if (!candidates) {
      return tl::unexpected(candidates.error());
    }

    uint64_t remaining = *total;
    size_t skipped = 0;
    bool progress = false;
    for (auto &[digest, record] : *candidates) {
      if (remaining <= max_bytes) {
        break;
      }
      if (in_use(digest)) {
        ++skipped;
        continue;
      }
      // A request may have touched the content since the listing; then it
      // is no longer the least recently used and stays.
      auto removed_record =
          index.remove_content_if_idle(digest, record.last_access);
      if (!removed_record) {
        return tl::unexpected(removed_record.error());
      }
      if (!*removed_record) {
        continue;
      }
      // TODO: remove the tags that name an evicted manifest. Until then
      // they stay and readers see a miss through `get_content()`.
      remove_file(store, digest);
      GC_LOG(Cache, debug, "Evicted {} ({} bytes)", digest, record.size);
      remaining -= std::min(remaining, record.size);
      removed.emplace_back(std::move(digest), std::move(record));
      progress = true;
    }

    if (!progress) {
      if (candidates->size() < limit) {
        // Everything left is in use or was touched during this pass.
        return removed;
      }
      limit += BatchSize;
      continue;
    }
    limit = skipped + BatchSize;
  }
}

Result<OrphanSweep> remove_orphans(BlobStore &store, const Index &index) {
  // Collect first: removing entries while a directory is being listed may
  // make the listing skip or repeat names.
  std::vector<std::pair<Digest, uint64_t>> orphans;
  Result<void> lookup;
  auto listed = store.for_each([&](const Digest &digest, uint64_t size) {
    auto record = index.get_content(digest.str());
    if (!record) {
      lookup = tl::unexpected(record.error());
      return false;
    }
    if (!*record) {
      orphans.emplace_back(digest, size);
    }
    return true;
  });
  if (!listed) {
    return tl::unexpected(listed.error());
  }
  if (!lookup) {
    return tl::unexpected(lookup.error());
  }

  OrphanSweep sweep;
  for (const auto &[digest, size] : orphans) {
    if (auto removed = store.remove(digest); !removed) {
      return tl::unexpected(removed.error());
    }
    ++sweep.files;
    sweep.bytes += size;
  }
  if (sweep.files > 0) {
    GC_LOG(Cache, info, "Removed {} files ({} bytes) without index records",
           sweep.files, sweep.bytes);
  }
  return sweep;
}

} // namespace gatecache::cache
