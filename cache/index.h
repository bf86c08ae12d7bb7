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
//  - `lru`: (last access, digest) -> nothing, the content in eviction order.
//  - `meta`: schema version and the total size of all content records.
//  - `state`: small records of other parts of the daemon (upstream
//    budgets, prewarm pins), stored as the caller encodes them.
//
// Names (upstream, repository, tag, media type, digest) must not contain
// NUL, which separates them in keys, and a whole key must fit LMDB's
// maximum key size (511 bytes in the default build). Writes reject such
// names as `Invalid`; reads report them as absent, since nothing with such
// a name can be stored.
//
// Tags are not removed with the content they point at, so a tag may name a
// digest that has no content record any more: check `get_content()`.
//
// LMDB rules that apply here: read transactions are short; the environment
// is opened once per process and never used after fork(); the directory
// must be on a local file system.
//
// Errors: `StorageFull` when the LMDB map is full (MDB_MAP_FULL) or the
// disk is, `Corrupt` for damaged pages or records, `Io` for other system
// errors, `Internal` for LMDB limits; messages carry the `mdb_strerror`
// text. Absent keys are never errors.
//
// Threading: reads from any thread (the environment uses MDB_NOTLS). Writes
// serialise on LMDB's writer lock and fsync on commit, so call them off the
// event loop.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
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
  // Opens or creates the environment in `directory` (created when missing)
  // with a map of `map_size_bytes`. `Invalid` when the index was written
  // with another schema version.
  static Result<std::unique_ptr<Index>>
  open(const std::filesystem::path &directory, uint64_t map_size_bytes);
  ~Index();
  Index(const Index &) = delete;
  Index &operator=(const Index &) = delete;

  // Every stored media type of a tag, most recently fetched first. Empty
  // when the tag is not stored.
  Result<std::vector<TagRecord>> get_tag(const std::string &upstream,
                                         const std::string &repository,
                                         const std::string &tag) const;
  // Stores or replaces the record of one media type of a tag.
  Result<void> put_tag(const std::string &upstream,
                       const std::string &repository, const std::string &tag,
                       const TagRecord &record);
  // Sets validated-at of every stored media type of a tag. An absent tag
  // is not an error.
  Result<void> touch_tag(const std::string &upstream,
                         const std::string &repository, const std::string &tag,
                         int64_t validated_at);
  // Removes every stored media type of a tag. An absent tag is not an
  // error.
  Result<void> remove_tag(const std::string &upstream,
                          const std::string &repository,
                          const std::string &tag);

  Result<std::optional<ContentRecord>>
  get_content(const std::string &digest) const;
  // Records content and links it to `repository` of `upstream`, in one
  // transaction. Replacing a record adjusts the total size by the
  // difference.
  Result<void> put_content(const std::string &digest,
                           const ContentRecord &record,
                           const std::string &upstream,
                           const std::string &repository);
  Result<bool> has_repository(const std::string &digest,
                              const std::string &upstream,
                              const std::string &repository) const;
  // Links stored content to one more repository. `NotFound` when the
  // content has no record, so links never outlive their content.
  Result<void> add_repository(const std::string &digest,
                              const std::string &upstream,
                              const std::string &repository);
  // Sets last access of many digests in one transaction. Digests without a
  // record are skipped.
  Result<void> touch_content(const std::vector<std::string> &digests,
                             int64_t last_access);
  // Removes a content record and its repository links. Absent content is
  // not an error.
  Result<void> remove_content(const std::string &digest);
  // Removes a content record and its links only when its last access is
  // still at most `last_access`, and returns whether it did. The check and
  // the removal share one transaction, so content touched since an
  // eviction candidate was listed survives.
  Result<bool> remove_content_if_idle(const std::string &digest,
                                      int64_t last_access);

  // Small daemon state by key, such as an upstream's budget. Values are
  // opaque bytes; keys follow the name rules above.
  Result<std::optional<std::string>> get_state(const std::string &key) const;
  Result<void> put_state(const std::string &key, std::string_view value);
  // Removing an absent key is not an error.
  Result<void> remove_state(const std::string &key);
  // Every state record whose key starts with `prefix`, in key order.
  Result<std::vector<std::pair<std::string, std::string>>>
  state_with_prefix(const std::string &prefix) const;

  // Sum of `size` over every content record, in bytes.
  Result<uint64_t> total_size() const;
  // Up to `max_count` content records, oldest last access first. Records
  // with equal last access come in digest order.
  Result<std::vector<std::pair<std::string, ContentRecord>>>
  least_recently_used(size_t max_count) const;

private:
  Index() = default;
  struct Handles;
  std::unique_ptr<Handles> handles_;
};

} // namespace gatecache::cache
