// Keeps the blob store within its size bound by removing the least recently
// used content, and removes files the index does not know.
//
// Order of removal: the index record (with its repository links) goes
// first, in a transaction that also checks the content was not touched
// since it was listed, and the file second. So the index never points at a
// missing file, and a crash between the two steps leaves only an orphan
// file, which `remove_orphans()` deletes at the next start. A reader that
// opened the file before keeps reading it, and one that looks it up later
// finds no record.
//
// Both functions block on LMDB commits and unlink(), so call them off the
// event loop.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "cache/blob_store.h"
#include "cache/index.h"
#include "common/error.h"

namespace gatecache::cache {

// Removes least recently used content until the index's total size is at
// most `max_bytes`, skipping every digest for which `in_use(digest)` returns
// true. Returns the removed records, oldest first, which may leave the
// total above `max_bytes` when everything left is in use. A file that
// cannot be unlinked is logged and still counts as removed, since its
// record is gone. Index errors are returned; content removed before the
// error stays removed.
Result<std::vector<std::pair<std::string, ContentRecord>>>
evict_to(BlobStore &store, Index &index, uint64_t max_bytes,
         const std::function<bool(const std::string &digest)> &in_use);

struct OrphanSweep {
  uint64_t files = 0; // Files removed.
  uint64_t bytes = 0; // Their total size.
};

// Removes every stored file that has no content record in `index`: the
// leftovers of a crash between a commit and its index record, or between
// an eviction's two steps. Precondition: nothing commits to `store` while
// this runs, because a file committed but not yet indexed would be removed.
// Call it at start, before the service accepts requests.
// TODO: also remove content records whose file is missing, which only a
// damaged or hand-edited store has.
Result<OrphanSweep> remove_orphans(BlobStore &store, const Index &index);

} // namespace gatecache::cache
