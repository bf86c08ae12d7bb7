// Verified manifests kept in memory, so a manifest by digest is served
// without touching the disk. Bounded by bytes, least recently used first
// out. Loop thread only.
#pragma once

#include <cstddef>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>

namespace gatecache::registry {

struct ManifestEntry {
  std::shared_ptr<const std::string> bytes;
  std::string media_type;
  std::string digest;
};

class ManifestCache {
public:
  explicit ManifestCache(size_t max_bytes) : max_bytes_(max_bytes) {}

  // Returns the entry for `digest` and marks it recently used, or null.
  std::shared_ptr<const ManifestEntry> get(const std::string &digest) {
    auto found = entries_.find(digest);
    if (found == entries_.end()) {
      return nullptr;
    }
    order_.splice(order_.begin(), order_, found->second.position);
    return found->second.entry;
  }

  void put(std::shared_ptr<const ManifestEntry> entry) {
    size_t size = entry->bytes->size();
    if (size > max_bytes_) {
      return;
    }
    std::string digest = entry->digest;
    erase(digest);
    order_.push_front(digest);
    entries_[digest] = Slot{std::move(entry), order_.begin()};
    bytes_ += size;
    while (bytes_ > max_bytes_ && !order_.empty()) {
      std::string oldest = order_.back();
      erase(oldest);
    }
  }

  void erase(const std::string &digest) {
    auto found = entries_.find(digest);
    if (found == entries_.end()) {
      return;
    }
    bytes_ -= found->second.entry->bytes->size();
    order_.erase(found->second.position);
    entries_.erase(found);
  }

  size_t bytes() const { return bytes_; }

private:
  struct Slot {
    std::shared_ptr<const ManifestEntry> entry;
    std::list<std::string>::iterator position;
  };

  size_t max_bytes_;
  size_t bytes_ = 0;
  std::list<std::string> order_;
  std::unordered_map<std::string, Slot> entries_;
};

} // namespace gatecache::registry
