#include "cache/evictor.h"

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/unit/cache/support.h"

namespace gatecache::cache {
namespace {

// The store and index with helpers to add content and look it up.
struct Storage : test::StoreAndIndex {
  // Stores `size` bytes derived from `seed` with the given last access, in
  // the blob store and the index, and returns the digest.
  std::string add(const std::string &seed, size_t size, int64_t last_access) {
    std::string bytes(size, seed.empty() ? 'x' : seed[0]);
    bytes.replace(0, std::min(seed.size(), size), seed, 0, size);
    Digest digest = digest_of(bytes);
    auto put = store->put(digest, bytes);
    if (!put) {
      FAIL("cannot store " << seed << ": " << put.error().message);
    }
    ContentRecord record{size, "application/octet-stream", ContentKind::Blob,
                         last_access};
    auto indexed = index->put_content(digest.str(), record, "up", "repo");
    if (!indexed) {
      FAIL("cannot index " << seed << ": " << indexed.error().message);
    }
    return digest.str();
  }

  bool has_file(const std::string &digest) const {
    auto parsed = Digest::parse(digest);
    return parsed && store->size_of(*parsed).has_value();
  }

  bool has_record(const std::string &digest) const {
    auto record = index->get_content(digest);
    return record && record->has_value();
  }
};

bool never_in_use(const std::string &) { return false; }

TEST_CASE("evictor removes least recently used", "[cache][evictor]") {
  Storage storage;
  std::string d1 = storage.add("one", 100, 1);
  std::string d2 = storage.add("two", 100, 2);
  std::string d3 = storage.add("three", 100, 3);
  std::string d4 = storage.add("four", 100, 4);

  auto removed = evict_to(*storage.store, *storage.index, 250, never_in_use);
  REQUIRE(removed);
  REQUIRE(removed->size() == 2);
  CHECK((*removed)[0].first == d1);
  CHECK((*removed)[0].second.size == 100);
  CHECK((*removed)[1].first == d2);
  CHECK(storage.index->total_size() == 200);

  CHECK_FALSE(storage.has_record(d1));
  CHECK_FALSE(storage.has_file(d1));
  CHECK(storage.index->has_repository(d1, "up", "repo") == false);
  CHECK_FALSE(storage.has_record(d2));
  CHECK_FALSE(storage.has_file(d2));
  CHECK(storage.has_record(d3));
  CHECK(storage.has_file(d3));
  CHECK(storage.has_record(d4));
  CHECK(storage.has_file(d4));
}

TEST_CASE("evictor skips in use content", "[cache][evictor]") {
  Storage storage;
  std::string d1 = storage.add("one", 100, 1);
  std::string d2 = storage.add("two", 100, 2);
  std::string d3 = storage.add("three", 100, 3);
  std::string d4 = storage.add("four", 100, 4);

  std::vector<std::string> queried;
  auto removed = evict_to(*storage.store, *storage.index, 200,
                          [&](const std::string &digest) {
                            queried.push_back(digest);
                            return digest == d1;
                          });
  REQUIRE(removed);
  REQUIRE(removed->size() == 2);
  CHECK((*removed)[0].first == d2);
  CHECK((*removed)[1].first == d3);
  CHECK(storage.index->total_size() == 200);
  CHECK(storage.has_record(d1));
  CHECK(storage.has_file(d1));
  CHECK(storage.has_file(d4));
  CHECK(std::find(queried.begin(), queried.end(), d1) != queried.end());
}

TEST_CASE("evictor stops when everything is in use", "[cache][evictor]") {
  Storage storage;
  storage.add("one", 100, 1);
  storage.add("two", 100, 2);

  auto removed = evict_to(*storage.store, *storage.index, 50,
                          [](const std::string &) { return true; });
  REQUIRE(removed);
  CHECK(removed->empty());
  CHECK(storage.index->total_size() == 200);
}

TEST_CASE("evictor leaves store under limit alone", "[cache][evictor]") {
  Storage storage;
  std::string d1 = storage.add("one", 100, 1);

  auto removed = evict_to(*storage.store, *storage.index, 100, never_in_use);
  REQUIRE(removed);
  CHECK(removed->empty());
  CHECK(storage.has_file(d1));
}

TEST_CASE("evictor pages past in use content", "[cache][evictor]") {
  Storage storage;
  // Index records alone are enough here: a missing file is not an error
  // for eviction. More in-use records than one listing round returns sit at
  // the head of the order.
  std::set<std::string> busy;
  for (int i = 0; i < 300; ++i) {
    std::string digest = digest_of("busy" + std::to_string(i)).str();
    ContentRecord record{1, "application/octet-stream", ContentKind::Blob, i};
    REQUIRE(storage.index->put_content(digest, record, "up", "repo"));
    busy.insert(digest);
  }
  std::string idle = storage.add("idle", 10, 1000);

  auto removed = evict_to(
      *storage.store, *storage.index, 300,
      [&](const std::string &digest) { return busy.count(digest) > 0; });
  REQUIRE(removed);
  REQUIRE(removed->size() == 1);
  CHECK((*removed)[0].first == idle);
  CHECK_FALSE(storage.has_file(idle));
  CHECK(storage.index->total_size() == 300);
}

TEST_CASE("evictor removes orphan files", "[cache][evictor]") {
  Storage storage;
  std::string indexed = storage.add("indexed", 10, 1);
  Digest orphan = digest_of("orphan");
  REQUIRE(storage.store->put(orphan, "orphan"));

  auto sweep = remove_orphans(*storage.store, *storage.index);
  REQUIRE(sweep);
  CHECK(sweep->files == 1);
  CHECK(sweep->bytes == 6);
  CHECK_FALSE(storage.store->size_of(orphan));
  CHECK(storage.has_file(indexed));
}

} // namespace
} // namespace gatecache::cache
