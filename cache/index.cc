// Storage format of the index, schema version 1.
//
// Keys join names with a NUL byte, which no name may contain. So every key
// splits back into one tuple, and a prefix ending in NUL selects exactly
// one tuple's children ("tag\0" never matches "tag2\0"). The keys are:
//   tags     upstream NUL repository NUL tag NUL media-type
//   content  digest
//   repos    digest NUL upstream NUL repository
//   lru      be64(last_access XOR 2^63) digest
//   meta     "schema_version" | "total_size"
//   state    any key chosen by the caller (budgets, prewarm pins)
// The `lru` key starts with the last access as a big-endian integer with
// the sign bit flipped, so LMDB's byte order is time order, negative times
// included.
//
// Values are little-endian, start with a format version byte (1), and end
// with a variable-length string that takes the rest of the value, so no
// length field is needed:
//   tags     u8 version, i64 fetched_at, i64 validated_at, digest
//   content  u8 version, u8 kind, u64 size, i64 last_access, media type
//   repos    empty
//   lru      empty
//   meta     schema_version: u32; total_size: u64
//   state    the caller's bytes, unchanged
#include "cache/index.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>
#include <system_error>
#include <utility>

#include <lmdb.h>

#include "common/log.h"

namespace gatecache::cache {

namespace {

constexpr uint32_t SchemaVersion = 1;
constexpr uint8_t RecordVersion = 1;
constexpr std::string_view SchemaKey = "schema_version";
constexpr std::string_view TotalSizeKey = "total_size";
constexpr size_t TagHeaderSize = 1 + 8 + 8;
constexpr size_t ContentHeaderSize = 1 + 1 + 8 + 8;

Error mdb_error(const std::string &operation, int rc) {
  ErrorCode code = ErrorCode::Internal;
  switch (rc) {
  case MDB_MAP_FULL:
  case ENOSPC:
  case EDQUOT:
    code = ErrorCode::StorageFull;
    break;
  case MDB_CORRUPTED:
  case MDB_PAGE_NOTFOUND:
  case MDB_INVALID:
  case MDB_VERSION_MISMATCH:
    code = ErrorCode::Corrupt;
    break;
  default:
    // LMDB passes system errors through as positive errno values. Its own
    // codes are negative and name limits or misuse.
    code = rc > 0 && rc != ENOMEM ? ErrorCode::Io : ErrorCode::Internal;
    break;
  }
  return Error{code, operation + ": " + mdb_strerror(rc)};
}

MDB_val to_val(std::string_view bytes) {
  return MDB_val{bytes.size(), const_cast<char *>(bytes.data())};
}

std::string_view from_val(const MDB_val &value) {
  return {static_cast<const char *>(value.mv_data), value.mv_size};
}

void append_u64(std::string &out, uint64_t value) {
  for (int i = 0; i < 8; ++i) {
    out += static_cast<char>(value >> (8 * i));
  }
}

uint64_t read_u64(std::string_view bytes) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) {
    value = (value << 8) | static_cast<unsigned char>(bytes[size_t(i)]);
  }
  return value;
}

std::string encode_tag(const TagRecord &record) {
  std::string out;
  out.reserve(TagHeaderSize + record.digest.size());
  out += static_cast<char>(RecordVersion);
  append_u64(out, static_cast<uint64_t>(record.fetched_at));
  append_u64(out, static_cast<uint64_t>(record.validated_at));
  out += record.digest;
  return out;
}

std::string encode_content(const ContentRecord &record) {
  std::string out;
  out.reserve(ContentHeaderSize + record.media_type.size());
  out += static_cast<char>(RecordVersion);
  out += static_cast<char>(record.kind);
  append_u64(out, record.size);
  append_u64(out, static_cast<uint64_t>(record.last_access));
  out += record.media_type;
  return out;
}

// Returns a printable form of a key, whose NUL separators become '/'.
std::string printable_key(std::string_view key) {
  std::string out(key.substr(0, 200));
  std::replace(out.begin(), out.end(), '\0', '/');
  return out;
}

tl::unexpected<Error> malformed(std::string_view db, std::string_view key,
                                const char *reason) {
  return fail(ErrorCode::Corrupt, "malformed record in index database " +
                                      std::string(db) + " at key '" +
                                      printable_key(key) + "': " + reason);
}

Result<TagRecord> decode_tag(std::string_view key, std::string_view value) {
  if (value.size() < TagHeaderSize) {
    return malformed("tags", key, "too short");
  }
  if (static_cast<uint8_t>(value[0]) != RecordVersion) {
    return malformed("tags", key, "unknown record version");
  }
  TagRecord record;
  record.media_type = key.substr(key.rfind('\0') + 1);
  record.fetched_at = static_cast<int64_t>(read_u64(value.substr(1)));
  record.validated_at = static_cast<int64_t>(read_u64(value.substr(9)));
  record.digest = value.substr(TagHeaderSize);
  return record;
}

Result<ContentRecord> decode_content(std::string_view key,
                                     std::string_view value) {
  if (value.size() < ContentHeaderSize) {
    return malformed("content", key, "too short");
  }
  if (static_cast<uint8_t>(value[0]) != RecordVersion) {
    return malformed("content", key, "unknown record version");
  }
  auto kind = static_cast<uint8_t>(value[1]);
  if (kind > static_cast<uint8_t>(ContentKind::Manifest)) {
    return malformed("content", key, "unknown content kind");
  }
  ContentRecord record;
  record.kind = static_cast<ContentKind>(kind);
  record.size = read_u64(value.substr(2));
  record.last_access = static_cast<int64_t>(read_u64(value.substr(10)));
  record.media_type = value.substr(ContentHeaderSize);
  return record;
}

std::string lru_key(int64_t last_access, std::string_view digest) {
  uint64_t ordered = static_cast<uint64_t>(last_access) ^ (1ULL << 63);
  std::string out;
  out.reserve(8 + digest.size());
  for (int i = 7; i >= 0; --i) {
    out += static_cast<char>(ordered >> (8 * i));
  }
  out += digest;
  return out;
}

bool has_nul(std::string_view name) {
  return name.find('\0') != std::string_view::npos;
}

// Joins names with NUL, and ends the result with NUL when it is a prefix
// for a scan. Returns nullopt when a name is empty or contains NUL.
std::optional<std::string>
join_names(std::initializer_list<std::string_view> names,
           bool as_prefix = false) {
  std::string out;
  for (std::string_view name : names) {
    if (name.empty() || has_nul(name)) {
      return std::nullopt;
    }
    if (!out.empty()) {
      out += '\0';
    }
    out += name;
  }
  if (as_prefix) {
    out += '\0';
  }
  return out;
}

// Owns a transaction and aborts it unless committed.
class Txn {
public:
  static Result<Txn> begin(MDB_env *env, unsigned flags) {
    Txn txn;
    int rc = mdb_txn_begin(env, nullptr, flags, &txn.txn_);
    if (rc != 0) {
      return tl::unexpected(mdb_error("mdb_txn_begin", rc));
    }
    return txn;
  }

  Txn() = default;

  Txn(Txn &&other) noexcept : txn_(std::exchange(other.txn_, nullptr)) {}

  Txn &operator=(Txn &&) = delete;

  ~Txn() {
    if (txn_ != nullptr) {
      mdb_txn_abort(txn_);
    }
  }

  Result<void> commit() {
    int rc = mdb_txn_commit(std::exchange(txn_, nullptr));
    if (rc != 0) {
      return tl::unexpected(mdb_error("mdb_txn_commit", rc));
    }
    return {};
  }

  MDB_txn *get() const { return txn_; }

private:
  MDB_txn *txn_ = nullptr;
};

// Owns a cursor. It must be destroyed before its transaction commits or
// aborts, so every cursor here lives in a helper's scope.
class Cursor {
public:
  static Result<Cursor> open(MDB_txn *txn, MDB_dbi dbi) {
    Cursor cursor;
    int rc = mdb_cursor_open(txn, dbi, &cursor.cursor_);
    if (rc != 0) {
      return tl::unexpected(mdb_error("mdb_cursor_open", rc));
    }
    return cursor;
  }

  Cursor() = default;

  Cursor(Cursor &&other) noexcept
      : cursor_(std::exchange(other.cursor_, nullptr)) {}

  Cursor &operator=(Cursor &&) = delete;

  ~Cursor() {
    if (cursor_ != nullptr) {
      mdb_cursor_close(cursor_);
    }
  }

  MDB_cursor *get() const { return cursor_; }

private:
  MDB_cursor *cursor_ = nullptr;
};

// Calls `visit(key, value)` for every entry whose key starts with `prefix`,
// in key order, until it returns false.
template <typename Visit>
Result<void> scan_prefix(MDB_txn *txn, MDB_dbi dbi, std::string_view prefix,
                         Visit &&visit) {
  auto cursor = Cursor::open(txn, dbi);
  if (!cursor) {
    return tl::unexpected(cursor.error());
  }
  MDB_val key = to_val(prefix);
  MDB_val value{};
  MDB_cursor_op op = prefix.empty() ? MDB_FIRST : MDB_SET_RANGE;
  while (true) {
    int rc = mdb_cursor_get(cursor->get(), &key, &value, op);
    if (rc == MDB_NOTFOUND) {
      return {};
    }
    if (rc != 0) {
      return tl::unexpected(mdb_error("mdb_cursor_get", rc));
    }
    std::string_view key_bytes = from_val(key);
    if (key_bytes.substr(0, prefix.size()) != prefix) {
      return {};
    }
    if (!visit(key_bytes, from_val(value))) {
      return {};
    }
    op = MDB_NEXT;
  }
}

// Reads one value. nullopt when absent. The view is valid until the
// transaction ends or, in a write transaction, until the next write.
Result<std::optional<std::string_view>> get_value(MDB_txn *txn, MDB_dbi dbi,
                                                  std::string_view key) {
  MDB_val key_val = to_val(key);
  MDB_val value{};
  int rc = mdb_get(txn, dbi, &key_val, &value);
  if (rc == MDB_NOTFOUND) {
    return std::nullopt;
  }
  if (rc != 0) {
    return tl::unexpected(mdb_error("mdb_get", rc));
  }
  return from_val(value);
}

Result<void> put_value(MDB_txn *txn, MDB_dbi dbi, std::string_view key,
                       std::string_view value) {
  MDB_val key_val = to_val(key);
  MDB_val value_val = to_val(value);
  int rc = mdb_put(txn, dbi, &key_val, &value_val, 0);
  if (rc != 0) {
    return tl::unexpected(mdb_error("mdb_put", rc));
  }
  return {};
}

// Deletes one key. Absent keys are not an error.
Result<void> delete_key(MDB_txn *txn, MDB_dbi dbi, std::string_view key) {
  MDB_val key_val = to_val(key);
  int rc = mdb_del(txn, dbi, &key_val, nullptr);
  if (rc != 0 && rc != MDB_NOTFOUND) {
    return tl::unexpected(mdb_error("mdb_del", rc));
  }
  return {};
}

} // namespace

struct Index::Handles {
  MDB_env *env = nullptr;
  MDB_dbi tags = 0;
  MDB_dbi content = 0;
  MDB_dbi repos = 0;
  MDB_dbi lru = 0;
  MDB_dbi meta = 0;
  MDB_dbi state = 0;
  size_t max_key_size = 0;

  ~Handles() {
    if (env != nullptr) {
      mdb_env_close(env);
    }
  }

  // Returns `key` when it fits LMDB's key size limit.
  std::optional<std::string> fit(std::optional<std::string> key) const {
    if (key && (key->empty() || key->size() > max_key_size)) {
      return std::nullopt;
    }
    return key;
  }

  tl::unexpected<Error> invalid_names(const char *subject) const {
    return fail(ErrorCode::Invalid,
                std::string("invalid ") + subject +
                    ": names must be non-empty, contain no NUL byte and "
                    "together fit in " +
                    std::to_string(max_key_size) + " bytes");
  }

  Result<uint64_t> read_total(MDB_txn *txn) const {
    auto value = get_value(txn, meta, TotalSizeKey);
    if (!value) {
      return tl::unexpected(value.error());
    }
    if (!*value) {
      return 0;
    }
    if ((*value)->size() != 8) {
      return malformed("meta", TotalSizeKey, "total size is not 8 bytes");
    }
    return read_u64(**value);
  }

  Result<void> write_total(MDB_txn *txn, uint64_t total) const {
    std::string value;
    append_u64(value, total);
    return put_value(txn, meta, TotalSizeKey, value);
  }

  Result<std::optional<ContentRecord>> read_content(MDB_txn *txn,
                                                    std::string_view digest) {
    auto value = get_value(txn, content, digest);
    if (!value) {
      return tl::unexpected(value.error());
    }
    if (!*value) {
      return std::nullopt;
    }
    auto record = decode_content(digest, **value);
    if (!record) {
      return tl::unexpected(record.error());
    }
    return std::move(*record);
  }

  Result<void> create_dbs(MDB_txn *txn);
  Result<void> check_schema(MDB_txn *txn);
  Result<bool> remove_content(MDB_txn *txn, std::string_view digest,
                              std::optional<int64_t> idle_limit);
};

Result<void> Index::Handles::create_dbs(MDB_txn *txn) {
  std::pair<const char *, MDB_dbi *> dbs[] = {{"tags", &tags},
                                              {"content", &content},
                                              {"repos", &repos},
                                              {"lru", &lru},
                                              {"meta", &meta},
                                              {"state", &state}};
  for (auto [name, dbi] : dbs) {
    int rc = mdb_dbi_open(txn, name, MDB_CREATE, dbi);
    if (rc != 0) {
      return tl::unexpected(mdb_error(std::string("mdb_dbi_open ") + name, rc));
    }
  }
  return {};
}

Result<void> Index::Handles::check_schema(MDB_txn *txn) {
  auto value = get_value(txn, meta, SchemaKey);
  if (!value) {
    return tl::unexpected(value.error());
  }
  if (!*value) {
    std::string encoded;
    for (int i = 0; i < 4; ++i) {
      encoded += static_cast<char>(SchemaVersion >> (8 * i));
    }
    return put_value(txn, meta, SchemaKey, encoded);
  }
  std::string_view bytes = **value;
  uint32_t found = 0;
  for (size_t i = 0; i < bytes.size() && i < 4; ++i) {
    found |= uint32_t{static_cast<unsigned char>(bytes[i])} << (8 * i);
  }
  if (bytes.size() != 4 || found != SchemaVersion) {
    return fail(ErrorCode::Invalid,
                "index has schema version " + std::to_string(found) +
                    ", this build supports version " +
                    std::to_string(SchemaVersion) +
                    ": move the index directory away to start empty");
  }
  return {};
}

Result<std::unique_ptr<Index>>
Index::open(const std::filesystem::path &directory, uint64_t map_size_bytes) {
  std::error_code error;
  std::filesystem::create_directories(directory, error);
  if (error) {
    return fail(ErrorCode::Io, "cannot create index directory " +
                                   directory.string() + ": " + error.message());
  }

  std::unique_ptr<Index> index(new Index());
  index->handles_ = std::make_unique<Handles>();
  Handles &h = *index->handles_;
  std::string where = " (" + directory.string() + ")";
  int rc = mdb_env_create(&h.env);
  if (rc != 0) {
    return tl::unexpected(mdb_error("mdb_env_create" + where, rc));
  }
  constexpr unsigned MaxDbs = 8;
  rc = mdb_env_set_maxdbs(h.env, MaxDbs);
  if (rc != 0) {
    return tl::unexpected(mdb_error("mdb_env_set_maxdbs" + where, rc));
  }
  rc = mdb_env_set_mapsize(h.env, map_size_bytes);
  if (rc != 0) {
    return tl::unexpected(mdb_error("mdb_env_set_mapsize" + where, rc));
  }
  // MDB_NOTLS ties read slots to transactions instead of threads, so read
  // transactions may begin on any thread, including event loops.
  rc = mdb_env_open(h.env, directory.c_str(), MDB_NOTLS, 0600);
  if (rc != 0) {
    return tl::unexpected(mdb_error("mdb_env_open" + where, rc));
  }
  h.max_key_size = static_cast<size_t>(mdb_env_get_maxkeysize(h.env));

  // A process that died inside a read transaction leaves its reader slot
  // taken, which pins old pages and grows the file. Clear such slots.
  int stale = 0;
  if (mdb_reader_check(h.env, &stale) == 0 && stale > 0) {
    GC_LOG(Cache, warn, "Cleared {} stale LMDB reader slots in {}", stale,
           directory.string());
  }

  auto txn = Txn::begin(h.env, 0);
  if (!txn) {
    return tl::unexpected(txn.error());
  }
  if (auto created = h.create_dbs(txn->get()); !created) {
    return tl::unexpected(created.error());
  }
  if (auto checked = h.check_schema(txn->get()); !checked) {
    return tl::unexpected(checked.error());
  }
  if (auto committed = txn->commit(); !committed) {
    return tl::unexpected(committed.error());
  }
  return index;
}

Index::~Index() = default;

Result<std::vector<TagRecord>> Index::get_tag(const std::string &upstream,
                                              const std::string &repository,
                                              const std::string &tag) const {
  std::vector<TagRecord> records;
  auto prefix = handles_->fit(join_names({upstream, repository, tag}, true));
  if (!prefix) {
    return records;
  }

  auto txn = Txn::begin(handles_->env, MDB_RDONLY);
  if (!txn) {
    return tl::unexpected(txn.error());
  }
  Result<void> decoded;
  auto scanned = scan_prefix(txn->get(), handles_->tags, *prefix,
                             [&](std::string_view key, std::string_view value) {
                               auto record = decode_tag(key, value);
                               if (!record) {
                                 decoded = tl::unexpected(record.error());
                                 return false;
                               }
                               records.push_back(std::move(*record));
                               return true;
                             });
  if (!scanned) {
    return tl::unexpected(scanned.error());
  }
  if (!decoded) {
    return tl::unexpected(decoded.error());
  }

  std::sort(records.begin(), records.end(),
            [](const TagRecord &a, const TagRecord &b) {
              if (a.fetched_at != b.fetched_at) {
                return a.fetched_at > b.fetched_at;
              }
              return a.media_type < b.media_type;
            });
  return records;
}

Result<void> Index::put_tag(const std::string &upstream,
                            const std::string &repository,
                            const std::string &tag, const TagRecord &record) {
  auto key =
      handles_->fit(join_names({upstream, repository, tag, record.media_type}));
  if (!key || record.media_type.empty() || record.digest.empty()) {
    return handles_->invalid_names("tag record");
  }

  auto txn = Txn::begin(handles_->env, 0);
  if (!txn) {
    return tl::unexpected(txn.error());
  }
  if (auto put =
          put_value(txn->get(), handles_->tags, *key, encode_tag(record));
      !put) {
    return put;
  }
  return txn->commit();
}

Result<void> Index::touch_tag(const std::string &upstream,
                              const std::string &repository,
                              const std::string &tag, int64_t validated_at) {
  auto prefix = handles_->fit(join_names({upstream, repository, tag}, true));
  if (!prefix) {
    return {};
  }

  auto txn = Txn::begin(handles_->env, 0);
  if (!txn) {
    return tl::unexpected(txn.error());
  }
  // Collect first and write after, because a put through LMDB would
  // invalidate the views the scan hands out.
  std::vector<std::pair<std::string, TagRecord>> updates;
  Result<void> decoded;
  auto scanned =
      scan_prefix(txn->get(), handles_->tags, *prefix,
                  [&](std::string_view key, std::string_view value) {
                    auto record = decode_tag(key, value);
                    if (!record) {
                      decoded = tl::unexpected(record.error());
                      return false;
                    }
                    updates.emplace_back(std::string(key), std::move(*record));
                    return true;
                  });
  if (!scanned) {
    return scanned;
  }
  if (!decoded) {
    return decoded;
  }
  if (updates.empty()) {
    return {};
  }

  for (auto &[key, record] : updates) {
    record.validated_at = validated_at;
    if (auto put =
            put_value(txn->get(), handles_->tags, key, encode_tag(record));
        !put) {
      return put;
    }
  }
  return txn->commit();
}

Result<void> Index::remove_tag(const std::string &upstream,
                               const std::string &repository,
                               const std::string &tag) {
  auto prefix = handles_->fit(join_names({upstream, repository, tag}, true));
  if (!prefix) {
    return {};
  }

  auto txn = Txn::begin(handles_->env, 0);
  if (!txn) {
    return tl::unexpected(txn.error());
  }
  std::vector<std::string> keys;
  auto scanned = scan_prefix(txn->get(), handles_->tags, *prefix,
                             [&](std::string_view key, std::string_view) {
                               keys.emplace_back(key);
                               return true;
                             });
  if (!scanned) {
    return scanned;
  }
  if (keys.empty()) {
    return {};
  }
  for (const auto &key : keys) {
    if (auto deleted = delete_key(txn->get(), handles_->tags, key); !deleted) {
      return deleted;
    }
  }
  return txn->commit();
}

Result<std::optional<std::string>>
Index::get_state(const std::string &key) const {
  if (key.empty() || !handles_->fit(key)) {
    return std::nullopt;
  }
  auto txn = Txn::begin(handles_->env, MDB_RDONLY);
  if (!txn) {
    return tl::unexpected(txn.error());
  }
  auto value = get_value(txn->get(), handles_->state, key);
  if (!value) {
    return tl::unexpected(value.error());
  }
  if (!*value) {
    return std::nullopt;
  }
  return std::string(**value);
}

Result<void> Index::put_state(const std::string &key, std::string_view value) {
  if (key.empty() || !handles_->fit(key)) {
    return handles_->invalid_names("state key");
  }
  auto txn = Txn::begin(handles_->env, 0);
  if (!txn) {
    return tl::unexpected(txn.error());
  }
  if (auto put = put_value(txn->get(), handles_->state, key, value); !put) {
    return put;
  }
  return txn->commit();
}

Result<std::vector<std::pair<std::string, std::string>>>
Index::state_with_prefix(const std::string &prefix) const {
  std::vector<std::pair<std::string, std::string>> records;
  auto txn = Txn::begin(handles_->env, MDB_RDONLY);
  if (!txn) {
    return tl::unexpected(txn.error());
  }
  auto scanned = scan_prefix(txn->get(), handles_->state, prefix,
                             [&](std::string_view key, std::string_view value) {
                               records.emplace_back(key, value);
                               return true;
                             });
  if (!scanned) {
    return tl::unexpected(scanned.error());
  }
  return records;
}

Result<void> Index::remove_state(const std::string &key) {
  if (key.empty() || !handles_->fit(key)) {
    return {};
  }
  auto txn = Txn::begin(handles_->env, 0);
  if (!txn) {
    return tl::unexpected(txn.error());
  }
  if (auto deleted = delete_key(txn->get(), handles_->state, key); !deleted) {
    return deleted;
  }
  return txn->commit();
}

Result<std::optional<ContentRecord>>
Index::get_content(const std::string &digest) const {
  if (!handles_->fit(join_names({digest}))) {
    return std::nullopt;
  }
  auto txn = Txn::begin(handles_->env, MDB_RDONLY);
  if (!txn) {
    return tl::unexpected(txn.error());
  }
  return handles_->read_content(txn->get(), digest);
}

Result<void> Index::put_content(const std::string &digest,
                                const ContentRecord &record,
                                const std::string &upstream,
                                const std::string &repository) {
  auto link = handles_->fit(join_names({digest, upstream, repository}));
  auto lru = handles_->fit(lru_key(record.last_access, digest));
  if (!link || !lru || !handles_->fit(join_names({digest}))) {
    return handles_->invalid_names("content record");
  }

  auto txn = Txn::begin(handles_->env, 0);
  if (!txn) {
    return tl::unexpected(txn.error());
  }
  MDB_txn *t = txn->get();
  Handles &h = *handles_;
  auto total = h.read_total(t);
  if (!total) {
    return tl::unexpected(total.error());
  }
  auto old = h.read_content(t, digest);
  if (!old) {
    return tl::unexpected(old.error());
  }
  uint64_t new_total = *total;
  if (*old) {
    new_total -= std::min(new_total, (*old)->size);
    auto deleted = delete_key(t, h.lru, lru_key((*old)->last_access, digest));
    if (!deleted) {
      return deleted;
    }
  }
  new_total += record.size;

  Result<void> written =
      put_value(t, h.content, digest, encode_content(record));
  if (written) {
    written = put_value(t, h.lru, *lru, {});
  }
  if (written) {
    written = put_value(t, h.repos, *link, {});
  }
  if (written) {
    written = h.write_total(t, new_total);
  }
  if (!written) {
    return written;
  }
  return txn->commit();
}

Result<bool> Index::has_repository(const std::string &digest,
                                   const std::string &upstream,
                                   const std::string &repository) const {
  auto link = handles_->fit(join_names({digest, upstream, repository}));
  if (!link) {
    return false;
  }
  auto txn = Txn::begin(handles_->env, MDB_RDONLY);
  if (!txn) {
    return tl::unexpected(txn.error());
  }
  auto value = get_value(txn->get(), handles_->repos, *link);
  if (!value) {
    return tl::unexpected(value.error());
  }
  return value->has_value();
}

Result<void> Index::add_repository(const std::string &digest,
                                   const std::string &upstream,
                                   const std::string &repository) {
  auto link = handles_->fit(join_names({digest, upstream, repository}));
  if (!link) {
    return handles_->invalid_names("repository link");
  }

  auto txn = Txn::begin(handles_->env, 0);
  if (!txn) {
    return tl::unexpected(txn.error());
  }
  auto stored = get_value(txn->get(), handles_->content, digest);
  if (!stored) {
    return tl::unexpected(stored.error());
  }
  if (!*stored) {
    return fail(ErrorCode::NotFound, "cannot link " + digest + " to " +
                                         upstream + "/" + repository +
                                         ": the content has no index record");
  }
  if (auto put = put_value(txn->get(), handles_->repos, *link, {}); !put) {
    return put;
  }
  return txn->commit();
}

Result<void> Index::touch_content(const std::vector<std::string> &digests,
                                  int64_t last_access) {
  auto txn = Txn::begin(handles_->env, 0);
  if (!txn) {
    return tl::unexpected(txn.error());
  }
  MDB_txn *t = txn->get();
  Handles &h = *handles_;
  bool changed = false;
  for (const auto &digest : digests) {
    if (!h.fit(join_names({digest})) || !h.fit(lru_key(0, digest))) {
      continue;
    }
    auto record = h.read_content(t, digest);
    if (!record) {
      return tl::unexpected(record.error());
    }
    if (!*record || (*record)->last_access == last_access) {
      continue;
    }
    auto deleted =
        delete_key(t, h.lru, lru_key((*record)->last_access, digest));
    if (!deleted) {
      return deleted;
    }
    (*record)->last_access = last_access;
    Result<void> written =
        put_value(t, h.content, digest, encode_content(**record));
    if (written) {
      written = put_value(t, h.lru, lru_key(last_access, digest), {});
    }
    if (!written) {
      return written;
    }
    changed = true;
  }
  if (!changed) {
    return {};
  }
  return txn->commit();
}

Result<bool> Index::Handles::remove_content(MDB_txn *txn,
                                            std::string_view digest,
                                            std::optional<int64_t> idle_limit) {
  auto record = read_content(txn, digest);
  if (!record) {
    return tl::unexpected(record.error());
  }
  if (!*record) {
    return false;
  }
  if (idle_limit && (*record)->last_access > *idle_limit) {
    return false;
  }

  std::string prefix(digest);
  prefix += '\0';
  std::vector<std::string> links;
  auto scanned = scan_prefix(txn, repos, prefix,
                             [&](std::string_view key, std::string_view) {
                               links.emplace_back(key);
                               return true;
                             });
  if (!scanned) {
    return tl::unexpected(scanned.error());
  }
  for (const auto &link : links) {
    if (auto deleted = delete_key(txn, repos, link); !deleted) {
      return tl::unexpected(deleted.error());
    }
  }

  auto total = read_total(txn);
  if (!total) {
    return tl::unexpected(total.error());
  }
  if (*total < (*record)->size) {
    GC_LOG(Cache, warn,
           "Index total size {} is below the size {} of {}, which is "
           "removed; the total is reset to 0",
           *total, (*record)->size, digest);
  }
  Result<void> written =
      delete_key(txn, lru, lru_key((*record)->last_access, digest));
  if (written) {
    written = delete_key(txn, content, digest);
  }
  if (written) {
    written = write_total(txn, *total - std::min(*total, (*record)->size));
  }
  if (!written) {
    return tl::unexpected(written.error());
  }
  return true;
}

Result<void> Index::remove_content(const std::string &digest) {
  if (!handles_->fit(join_names({digest}))) {
    return {};
  }
  auto txn = Txn::begin(handles_->env, 0);
  if (!txn) {
    return tl::unexpected(txn.error());
  }
  auto removed = handles_->remove_content(txn->get(), digest, std::nullopt);
  if (!removed) {
    return tl::unexpected(removed.error());
  }
  if (!*removed) {
    return {};
  }
  return txn->commit();
}

Result<bool> Index::remove_content_if_idle(const std::string &digest,
                                           int64_t last_access) {
  if (!handles_->fit(join_names({digest}))) {
    return false;
  }
  auto txn = Txn::begin(handles_->env, 0);
  if (!txn) {
    return tl::unexpected(txn.error());
  }
  auto removed = handles_->remove_content(txn->get(), digest, last_access);
  if (!removed || !*removed) {
    return removed;
  }
  if (auto committed = txn->commit(); !committed) {
    return tl::unexpected(committed.error());
  }
  return true;
}

Result<uint64_t> Index::total_size() const {
  auto txn = Txn::begin(handles_->env, MDB_RDONLY);
  if (!txn) {
    return tl::unexpected(txn.error());
  }
  return handles_->read_total(txn->get());
}

Result<std::vector<std::pair<std::string, ContentRecord>>>
Index::least_recently_used(size_t max_count) const {
  std::vector<std::pair<std::string, ContentRecord>> records;
  if (max_count == 0) {
    return records;
  }
  auto txn = Txn::begin(handles_->env, MDB_RDONLY);
  if (!txn) {
    return tl::unexpected(txn.error());
  }
  Result<void> read;
  auto scanned = scan_prefix(
      txn->get(), handles_->lru, "",
      [&](std::string_view key, std::string_view) {
        if (key.size() <= 8) {
          read = malformed("lru", key, "key shorter than its time prefix");
          return false;
        }
        std::string_view digest = key.substr(8);
        auto record = handles_->read_content(txn->get(), digest);
        if (!record) {
          read = tl::unexpected(record.error());
          return false;
        }
        if (!*record) {
          read = malformed("lru", key, "no content record for this entry");
          return false;
        }
        records.emplace_back(std::string(digest), std::move(**record));
        return records.size() < max_count;
      });
  if (!scanned) {
    return tl::unexpected(scanned.error());
  }
  if (!read) {
    return tl::unexpected(read.error());
  }
  return records;
}

} // namespace gatecache::cache
