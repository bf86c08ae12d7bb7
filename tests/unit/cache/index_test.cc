#include "cache/index.h"

#include <string>
#include <thread>
#include <vector>

#include <lmdb.h>

#include <catch2/catch.hpp>

#include "cache/digest.h"
#include "tests/unit/cache/support.h"

namespace gatecache::cache {
namespace {

using test::TempDir;

constexpr uint64_t MapSize = 16ULL << 20;
const std::string OciIndex = "application/vnd.oci.image.index.v1+json";
const std::string DockerList =
    "application/vnd.docker.distribution.manifest.list.v2+json";
const std::string OciLayer = "application/vnd.oci.image.layer.v1.tar+gzip";

std::unique_ptr<Index> open_index(const std::filesystem::path &directory,
                                  uint64_t map_size = MapSize) {
  auto index = Index::open(directory, map_size);
  if (!index) {
    FAIL("cannot open index: " << index.error().message);
  }
  return std::move(*index);
}

std::string digest_text(const std::string &seed) {
  return digest_of(seed).str();
}

ContentRecord blob_record(uint64_t size, int64_t last_access) {
  ContentRecord record;
  record.size = size;
  record.media_type = OciLayer;
  record.kind = ContentKind::Blob;
  record.last_access = last_access;
  return record;
}

TEST_CASE("index state survives reopen", "[cache][index]") {
  TempDir dir;
  {
    auto index = open_index(dir.path());
    REQUIRE(index->put_state("budget/docker.io", "{\"limit\":100}"));
    REQUIRE(index->put_state("budget/docker.io", "{\"limit\":200}"));
    REQUIRE(index->put_state("pins/kubernetes", std::string("a\0b", 3)));
  }
  auto index = open_index(dir.path());
  auto budget = index->get_state("budget/docker.io");
  REQUIRE(budget);
  REQUIRE(budget->has_value());
  CHECK(**budget == "{\"limit\":200}");
  auto pins = index->get_state("pins/kubernetes");
  REQUIRE(pins);
  CHECK(**pins == std::string("a\0b", 3));
  auto pinned = index->state_with_prefix("pins/");
  REQUIRE(pinned);
  REQUIRE(pinned->size() == 1);
  CHECK((*pinned)[0].first == "pins/kubernetes");
  REQUIRE(index->remove_state("pins/kubernetes"));
  REQUIRE(index->remove_state("pins/absent"));
  auto removed = index->get_state("pins/kubernetes");
  REQUIRE(removed);
  CHECK_FALSE(removed->has_value());
  CHECK_FALSE(index->put_state("", "x"));
  CHECK_FALSE(index->put_state(std::string(600, 'k'), "x"));
}

TEST_CASE("index stores two media types of tag", "[cache][index]") {
  TempDir dir;
  auto index = open_index(dir.path() / "index");
  TagRecord older{OciIndex, digest_text("oci"), 100, 150};
  TagRecord newer{DockerList, digest_text("docker"), 200, 210};
  REQUIRE(index->put_tag("docker.io", "library/alpine", "3.19", older));
  REQUIRE(index->put_tag("docker.io", "library/alpine", "3.19", newer));

  auto records = index->get_tag("docker.io", "library/alpine", "3.19");
  REQUIRE(records);
  REQUIRE(records->size() == 2);
  CHECK((*records)[0].media_type == DockerList);
  CHECK((*records)[0].digest == newer.digest);
  CHECK((*records)[0].fetched_at == 200);
  CHECK((*records)[0].validated_at == 210);
  CHECK((*records)[1].media_type == OciIndex);
  CHECK((*records)[1].digest == older.digest);
  CHECK((*records)[1].fetched_at == 100);
  CHECK((*records)[1].validated_at == 150);
}

TEST_CASE("index replaces tag of same media type", "[cache][index]") {
  TempDir dir;
  auto index = open_index(dir.path());
  REQUIRE(index->put_tag("ghcr.io", "org/app", "v1",
                         {OciIndex, digest_text("first"), 10, 10}));
  REQUIRE(index->put_tag("ghcr.io", "org/app", "v1",
                         {OciIndex, digest_text("second"), 20, 20}));

  auto records = index->get_tag("ghcr.io", "org/app", "v1");
  REQUIRE(records);
  REQUIRE(records->size() == 1);
  CHECK((*records)[0].digest == digest_text("second"));
}

TEST_CASE("index keeps tag keys unambiguous", "[cache][index]") {
  TempDir dir;
  auto index = open_index(dir.path());
  REQUIRE(index->put_tag("up", "a", "bc", {OciIndex, digest_text("1"), 1, 1}));
  REQUIRE(index->put_tag("up", "ab", "c", {OciIndex, digest_text("2"), 2, 2}));
  REQUIRE(index->put_tag("up", "a", "b", {OciIndex, digest_text("3"), 3, 3}));

  auto first = index->get_tag("up", "a", "bc");
  REQUIRE(first);
  REQUIRE(first->size() == 1);
  CHECK((*first)[0].digest == digest_text("1"));
  auto second = index->get_tag("up", "ab", "c");
  REQUIRE(second);
  REQUIRE(second->size() == 1);
  CHECK((*second)[0].digest == digest_text("2"));
  auto prefix = index->get_tag("up", "a", "b");
  REQUIRE(prefix);
  REQUIRE(prefix->size() == 1);
  CHECK((*prefix)[0].digest == digest_text("3"));
}

TEST_CASE("index returns no records for absent tag", "[cache][index]") {
  TempDir dir;
  auto index = open_index(dir.path());
  auto records = index->get_tag("docker.io", "library/alpine", "latest");
  REQUIRE(records);
  CHECK(records->empty());
}

TEST_CASE("index touch tag updates validation time", "[cache][index]") {
  TempDir dir;
  auto index = open_index(dir.path());
  REQUIRE(index->put_tag("up", "repo", "tag",
                         {OciIndex, digest_text("a"), 100, 100}));
  REQUIRE(index->put_tag("up", "repo", "tag",
                         {DockerList, digest_text("b"), 200, 200}));
  REQUIRE(index->put_tag("up", "repo", "other",
                         {OciIndex, digest_text("c"), 300, 300}));

  REQUIRE(index->touch_tag("up", "repo", "tag", 999));
  auto records = index->get_tag("up", "repo", "tag");
  REQUIRE(records);
  REQUIRE(records->size() == 2);
  CHECK((*records)[0].validated_at == 999);
  CHECK((*records)[0].fetched_at == 200);
  CHECK((*records)[1].validated_at == 999);
  CHECK((*records)[1].fetched_at == 100);
  auto other = index->get_tag("up", "repo", "other");
  REQUIRE(other);
  REQUIRE(other->size() == 1);
  CHECK((*other)[0].validated_at == 300);

  CHECK(index->touch_tag("up", "repo", "absent", 1000));
}

TEST_CASE("index removes every media type of tag", "[cache][index]") {
  TempDir dir;
  auto index = open_index(dir.path());
  REQUIRE(
      index->put_tag("up", "repo", "tag", {OciIndex, digest_text("a"), 1, 1}));
  REQUIRE(index->put_tag("up", "repo", "tag",
                         {DockerList, digest_text("b"), 2, 2}));
  REQUIRE(
      index->put_tag("up", "repo", "tag2", {OciIndex, digest_text("c"), 3, 3}));

  REQUIRE(index->remove_tag("up", "repo", "tag"));
  auto removed = index->get_tag("up", "repo", "tag");
  REQUIRE(removed);
  CHECK(removed->empty());
  auto kept = index->get_tag("up", "repo", "tag2");
  REQUIRE(kept);
  CHECK(kept->size() == 1);
  CHECK(index->remove_tag("up", "repo", "tag"));
}

TEST_CASE("index stores content and repositories", "[cache][index]") {
  TempDir dir;
  auto index = open_index(dir.path());
  std::string digest = digest_text("manifest");
  ContentRecord record{1234, OciIndex, ContentKind::Manifest, 42};
  REQUIRE(index->put_content(digest, record, "docker.io", "library/alpine"));

  auto stored = index->get_content(digest);
  REQUIRE(stored);
  REQUIRE(stored->has_value());
  CHECK((*stored)->size == 1234);
  CHECK((*stored)->media_type == OciIndex);
  CHECK((*stored)->kind == ContentKind::Manifest);
  CHECK((*stored)->last_access == 42);

  CHECK(index->has_repository(digest, "docker.io", "library/alpine") == true);
  CHECK(index->has_repository(digest, "docker.io", "library/busybox") == false);
  CHECK(index->has_repository(digest, "ghcr.io", "library/alpine") == false);

  REQUIRE(index->add_repository(digest, "docker.io", "library/busybox"));
  CHECK(index->has_repository(digest, "docker.io", "library/busybox") == true);

  auto absent = index->get_content(digest_text("absent"));
  REQUIRE(absent);
  CHECK_FALSE(absent->has_value());
}

TEST_CASE("index links repository only to content", "[cache][index]") {
  TempDir dir;
  auto index = open_index(dir.path());
  auto linked = index->add_repository(digest_text("absent"), "up", "repo");
  REQUIRE_FALSE(linked);
  CHECK(linked.error().code == ErrorCode::NotFound);
  CHECK(index->has_repository(digest_text("absent"), "up", "repo") == false);
}

TEST_CASE("index touch content updates last access", "[cache][index]") {
  TempDir dir;
  auto index = open_index(dir.path());
  std::string a = digest_text("a");
  std::string b = digest_text("b");
  REQUIRE(index->put_content(a, blob_record(1, 10), "up", "repo"));
  REQUIRE(index->put_content(b, blob_record(1, 20), "up", "repo"));

  REQUIRE(index->touch_content({a, digest_text("absent")}, 30));
  auto record = index->get_content(a);
  REQUIRE(record);
  REQUIRE(record->has_value());
  CHECK((*record)->last_access == 30);

  auto order = index->least_recently_used(10);
  REQUIRE(order);
  REQUIRE(order->size() == 2);
  CHECK((*order)[0].first == b);
  CHECK((*order)[1].first == a);
  CHECK((*order)[1].second.last_access == 30);
}

TEST_CASE("index remove content drops links", "[cache][index]") {
  TempDir dir;
  auto index = open_index(dir.path());
  std::string digest = digest_text("blob");
  std::string neighbour = digest_text("neighbour");
  REQUIRE(index->put_content(digest, blob_record(100, 1), "up", "one"));
  REQUIRE(index->add_repository(digest, "up", "two"));
  REQUIRE(index->put_content(neighbour, blob_record(50, 2), "up", "one"));

  REQUIRE(index->remove_content(digest));
  auto record = index->get_content(digest);
  REQUIRE(record);
  CHECK_FALSE(record->has_value());
  CHECK(index->has_repository(digest, "up", "one") == false);
  CHECK(index->has_repository(digest, "up", "two") == false);
  CHECK(index->has_repository(neighbour, "up", "one") == true);
  CHECK(index->total_size() == 50);
  auto order = index->least_recently_used(10);
  REQUIRE(order);
  REQUIRE(order->size() == 1);
  CHECK((*order)[0].first == neighbour);

  CHECK(index->remove_content(digest));
}

TEST_CASE("index tracks total stored size", "[cache][index]") {
  TempDir dir;
  auto index = open_index(dir.path());
  CHECK(index->total_size() == 0);
  REQUIRE(index->put_content(digest_text("a"), blob_record(10, 1), "u", "r"));
  REQUIRE(index->put_content(digest_text("b"), blob_record(20, 1), "u", "r"));
  REQUIRE(index->put_content(digest_text("c"), blob_record(30, 1), "u", "r"));
  CHECK(index->total_size() == 60);

  // Recording content again replaces it, so its size counts once.
  REQUIRE(index->put_content(digest_text("b"), blob_record(25, 2), "u", "s"));
  CHECK(index->total_size() == 65);
  REQUIRE(index->touch_content({digest_text("a")}, 5));
  CHECK(index->total_size() == 65);

  REQUIRE(index->remove_content(digest_text("a")));
  CHECK(index->total_size() == 55);
  REQUIRE(index->remove_content(digest_text("a")));
  CHECK(index->total_size() == 55);
  REQUIRE(index->remove_content(digest_text("b")));
  REQUIRE(index->remove_content(digest_text("c")));
  CHECK(index->total_size() == 0);
}

TEST_CASE("index lists least recently used first", "[cache][index]") {
  TempDir dir;
  auto index = open_index(dir.path());
  const std::pair<std::string, int64_t> entries[] = {
      {digest_text("300"), 300},
      {digest_text("100"), 100},
      {digest_text("negative"), -5},
      {digest_text("200"), 200},
      {digest_text("large"), int64_t{1} << 40},
  };
  for (const auto &[digest, last_access] : entries) {
    REQUIRE(index->put_content(digest, blob_record(1, last_access), "u", "r"));
  }

  auto all = index->least_recently_used(100);
  REQUIRE(all);
  REQUIRE(all->size() == 5);
  CHECK((*all)[0].first == digest_text("negative"));
  CHECK((*all)[1].first == digest_text("100"));
  CHECK((*all)[2].first == digest_text("200"));
  CHECK((*all)[3].first == digest_text("300"));
  CHECK((*all)[4].first == digest_text("large"));
  CHECK((*all)[0].second.last_access == -5);

  auto two = index->least_recently_used(2);
  REQUIRE(two);
  REQUIRE(two->size() == 2);
  CHECK((*two)[1].first == digest_text("100"));
  auto none = index->least_recently_used(0);
  REQUIRE(none);
  CHECK(none->empty());
}

TEST_CASE("index removes idle content only", "[cache][index]") {
  TempDir dir;
  auto index = open_index(dir.path());
  std::string digest = digest_text("blob");
  REQUIRE(index->put_content(digest, blob_record(10, 100), "u", "r"));

  auto kept = index->remove_content_if_idle(digest, 50);
  REQUIRE(kept);
  CHECK(*kept == false);
  CHECK(index->total_size() == 10);

  auto removed = index->remove_content_if_idle(digest, 100);
  REQUIRE(removed);
  CHECK(*removed == true);
  CHECK(index->total_size() == 0);
  auto again = index->remove_content_if_idle(digest, 100);
  REQUIRE(again);
  CHECK(*again == false);
}

TEST_CASE("index persists across reopen", "[cache][index]") {
  TempDir dir;
  std::string digest = digest_text("persisted");
  {
    auto index = open_index(dir.path());
    REQUIRE(index->put_tag("up", "repo", "tag", {OciIndex, digest, 7, 8}));
    REQUIRE(index->put_content(digest, blob_record(77, 9), "up", "repo"));
  }

  auto index = open_index(dir.path());
  auto records = index->get_tag("up", "repo", "tag");
  REQUIRE(records);
  REQUIRE(records->size() == 1);
  CHECK((*records)[0].digest == digest);
  CHECK((*records)[0].fetched_at == 7);
  CHECK((*records)[0].validated_at == 8);
  auto content = index->get_content(digest);
  REQUIRE(content);
  REQUIRE(content->has_value());
  CHECK((*content)->size == 77);
  CHECK(index->has_repository(digest, "up", "repo") == true);
  CHECK(index->total_size() == 77);
}

TEST_CASE("index rejects names with NUL", "[cache][index]") {
  TempDir dir;
  auto index = open_index(dir.path());
  std::string with_nul("library\0alpine", 14);
  auto put =
      index->put_tag("up", with_nul, "tag", {OciIndex, digest_text("a"), 1, 1});
  REQUIRE_FALSE(put);
  CHECK(put.error().code == ErrorCode::Invalid);
  auto content =
      index->put_content(digest_text("a"), blob_record(1, 1), "up", with_nul);
  REQUIRE_FALSE(content);
  CHECK(content.error().code == ErrorCode::Invalid);

  auto records = index->get_tag("up", with_nul, "tag");
  REQUIRE(records);
  CHECK(records->empty());
  CHECK(index->total_size() == 0);
}

TEST_CASE("index rejects empty names", "[cache][index]") {
  TempDir dir;
  auto index = open_index(dir.path());
  auto tag =
      index->put_tag("up", "", "tag", {OciIndex, digest_text("a"), 1, 1});
  REQUIRE_FALSE(tag);
  CHECK(tag.error().code == ErrorCode::Invalid);
  auto media =
      index->put_tag("up", "repo", "tag", {"", digest_text("a"), 1, 1});
  REQUIRE_FALSE(media);
  CHECK(media.error().code == ErrorCode::Invalid);
  auto content = index->put_content("", blob_record(1, 1), "up", "repo");
  REQUIRE_FALSE(content);
  CHECK(content.error().code == ErrorCode::Invalid);
}

TEST_CASE("index rejects overlong keys", "[cache][index]") {
  TempDir dir;
  auto index = open_index(dir.path());
  std::string repository(600, 'r');
  auto put = index->put_tag("up", repository, "tag",
                            {OciIndex, digest_text("a"), 1, 1});
  REQUIRE_FALSE(put);
  CHECK(put.error().code == ErrorCode::Invalid);
  auto records = index->get_tag("up", repository, "tag");
  REQUIRE(records);
  CHECK(records->empty());
  CHECK(index->has_repository(digest_text("a"), "up", repository) == false);
}

TEST_CASE("index reports full map as storage full", "[cache][index]") {
  TempDir dir;
  auto index = open_index(dir.path(), 256 * 1024);
  std::string media_type(300, 'm');
  Result<void> put;
  for (int i = 0; i < 10000 && put; ++i) {
    ContentRecord record{1, media_type, ContentKind::Blob, i};
    put = index->put_content(digest_text(std::to_string(i)), record, "u", "r");
  }
  REQUIRE_FALSE(put);
  CHECK(put.error().code == ErrorCode::StorageFull);
  CHECK(put.error().message.find("MDB_MAP_FULL") != std::string::npos);
}

TEST_CASE("index rejects unknown schema version", "[cache][index]") {
  TempDir dir;
  { open_index(dir.path()); }

  // Rewrite the version with LMDB directly, as a future build would.
  MDB_env *env = nullptr;
  REQUIRE(mdb_env_create(&env) == 0);
  REQUIRE(mdb_env_set_maxdbs(env, 8) == 0);
  REQUIRE(mdb_env_open(env, dir.path().c_str(), 0, 0600) == 0);
  MDB_txn *txn = nullptr;
  REQUIRE(mdb_txn_begin(env, nullptr, 0, &txn) == 0);
  MDB_dbi meta;
  REQUIRE(mdb_dbi_open(txn, "meta", 0, &meta) == 0);
  std::string key = "schema_version";
  std::string value("\x02\x00\x00\x00", 4);
  MDB_val key_val{key.size(), key.data()};
  MDB_val value_val{value.size(), value.data()};
  REQUIRE(mdb_put(txn, meta, &key_val, &value_val, 0) == 0);
  REQUIRE(mdb_txn_commit(txn) == 0);
  mdb_env_close(env);

  auto index = Index::open(dir.path(), MapSize);
  REQUIRE_FALSE(index);
  CHECK(index.error().code == ErrorCode::Invalid);
  CHECK(index.error().message.find("schema version 2") != std::string::npos);
}

TEST_CASE("index serves reads from several threads", "[cache][index]") {
  TempDir dir;
  auto index = open_index(dir.path());
  std::string digest = digest_text("shared");
  REQUIRE(index->put_content(digest, blob_record(5, 1), "u", "r"));

  std::vector<int> found(4, 0);
  std::vector<std::thread> readers;
  for (size_t t = 0; t < found.size(); ++t) {
    readers.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        auto record = index->get_content(digest);
        if (record && record->has_value() && (*record)->size == 5) {
          ++found[t];
        }
      }
    });
  }
  for (int i = 0; i < 50; ++i) {
    REQUIRE(index->touch_content({digest}, i + 2));
  }
  for (auto &reader : readers) {
    reader.join();
  }
  for (int count : found) {
    CHECK(count == 200);
  }
}

} // namespace
} // namespace gatecache::cache
