// The LMDB index of what the blob store holds and which names point at it.
//
// Sub-databases of one environment under `<storage>/index/`:
//  - `tags`: (upstream, repository, tag, media type) -> digest, fetched-at,
//    validated-at. A tag is stored once per manifest media type the
//    upstream actually returned, so a client is only served a type its
//    Accept allows.
//  - `content`: digest -> size, media type, kind (manifest or blob),
//    last access.
//  - `repos`: (digest, upstream, repository) -> nothing. Content is shared
//    on disk but access is per repository.
//
// LMDB rules that apply here: read transactions are short; the environment
// is opened once per process and never used after fork(); the directory
// must be on a local file system.
//
// Threading: reads from any thread. Writes serialise on LMDB's writer lock
// and fsync on commit, so call them off the event loop.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"

namespace gatecache::cache {

struct TagRecord {
  std::string media_type;
  std::string digest;       // "sha256:<hex>".
  int64_t fetched_at = 0;   // Unix seconds of the GET that stored it.
  int64_t validated_at = 0; // Unix seconds of the last upstream check.
};

enum class ContentKind : uint8_t { Blob = 0, Manifest = 1 };

struct ContentRecord {
  uint64_t size = 0;
  std::string media_type;
  ContentKind kind = ContentKind::Blob;
  int64_t last_access = 0; // Unix seconds.
};

class Index {
public:
  // Opens or creates the environment in `directory` with a map of
  // `map_size_bytes`.
  static Result<std::unique_ptr<Index>>
  open(const std::filesystem::path &directory, uint64_t map_size_bytes);
  ~Index();

  // Every stored media type of a tag, most recently fetched first.
  Result<std::vector<TagRecord>> get_tag(const std::string &upstream,
                                         const std::string &repository,
                                         const std::string &tag) const;
  Result<void> put_tag(const std::string &upstream,
                       const std::string &repository, const std::string &tag,
                       const TagRecord &record);
  // Sets validated-at of every stored media type of a tag.
  Result<void> touch_tag(const std::string &upstream,
                         const std::string &repository,
                         const std::string &tag, int64_t validated_at);

  Result<std::optional<ContentRecord>>
  get_content(const std::string &digest) const;
  // Records content and that `repository` of `upstream` holds it, in one
  // transaction.
  Result<void> put_content(const std::string &digest,
                           const ContentRecord &record,
                           const std::string &upstream,
                           const std::string &repository);
  Result<bool> has_repository(const std::string &digest,
                              const std::string &upstream,
                              const std::string &repository) const;
  Result<void> add_repository(const std::string &digest,
                              const std::string &upstream,
                              const std::string &repository);
  // Sets last access of many digests in one transaction.
  Result<void> touch_content(const std::vector<std::string> &digests,
                             int64_t last_access);
  // Removes a content record and its repository links.
  Result<void> remove_content(const std::string &digest);

private:
  Index() = default;
  struct Handles;
  std::unique_ptr<Handles> handles_;
};

} // namespace gatecache::cache
