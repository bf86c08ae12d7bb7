#include "cache/scrubber.h"

#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/unit/cache/support.h"

namespace gatecache::cache {
namespace {

// Scheduled passes are off in these tests; each one starts passes with
// `run_now()`.
constexpr Scrubber::Options ManualOnly{0, 1ULL << 30};

// The store and index with helpers to add and damage content.
struct Storage : test::StoreAndIndex {
  Digest add(const std::string &bytes) {
    Digest digest = digest_of(bytes);
    auto put = store->put(digest, bytes);
    if (!put) {
      FAIL("cannot store: " << put.error().message);
    }
    ContentRecord record{bytes.size(), "application/octet-stream",
                         ContentKind::Blob, 1};
    auto indexed = index->put_content(digest.str(), record, "up", "repo");
    if (!indexed) {
      FAIL("cannot index: " << indexed.error().message);
    }
    return digest;
  }

  // Changes one byte of the stored file in place, keeping its size.
  void flip_byte(const Digest &digest, size_t offset) {
    std::fstream file(store->path_for(digest),
                      std::ios::in | std::ios::out | std::ios::binary);
    file.seekg(static_cast<std::streamoff>(offset));
    char byte = 0;
    file.read(&byte, 1);
    byte = static_cast<char>(byte ^ 0x01);
    file.seekp(static_cast<std::streamoff>(offset));
    file.write(&byte, 1);
  }

  bool has_file(const Digest &digest) const {
    return store->size_of(digest).has_value();
  }

  bool has_record(const Digest &digest) const {
    auto record = index->get_content(digest.str());
    return record && record->has_value();
  }
};

// Waits up to 10 s for `passes` finished passes.
Scrubber::Stats wait_for_passes(const Scrubber &scrubber, uint64_t passes) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  Scrubber::Stats stats = scrubber.stats();
  while (stats.passes < passes && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    stats = scrubber.stats();
  }
  return stats;
}

TEST_CASE("scrubber keeps intact content", "[cache][scrubber]") {
  Storage storage;
  Digest first = storage.add(std::string(300000, 'a'));
  Digest second = storage.add("small blob");
  Scrubber scrubber(storage.store, *storage.index, ManualOnly);
  scrubber.start();
  scrubber.run_now();
  auto stats = wait_for_passes(scrubber, 1);
  REQUIRE(stats.passes == 1);
  CHECK(stats.files == 2);
  CHECK(stats.bytes == 300000 + 10);
  CHECK(stats.damaged == 0);
  CHECK(storage.has_file(first));
  CHECK(storage.has_file(second));
  CHECK(storage.has_record(first));
}

TEST_CASE("scrubber removes a damaged file", "[cache][scrubber]") {
  Storage storage;
  Digest intact = storage.add(std::string(5000, 'i'));
  Digest damaged = storage.add(std::string(3 << 20, 'd'));
  storage.flip_byte(damaged, (2 << 20) + 7);
  std::vector<std::string> reported;
  Scrubber scrubber(
      storage.store, *storage.index, ManualOnly,
      [&reported](const Digest &digest) { reported.push_back(digest.str()); });
  scrubber.start();
  scrubber.run_now();
  auto stats = wait_for_passes(scrubber, 1);
  REQUIRE(stats.passes == 1);
  CHECK(stats.damaged == 1);
  CHECK_FALSE(storage.has_file(damaged));
  CHECK_FALSE(storage.has_record(damaged));
  CHECK(storage.has_file(intact));
  CHECK(storage.has_record(intact));
  scrubber.stop();
  REQUIRE(reported.size() == 1);
  CHECK(reported[0] == damaged.str());
}

TEST_CASE("scrubber saves the time of its last pass", "[cache][scrubber]") {
  Storage storage;
  storage.add("content");
  {
    Scrubber scrubber(storage.store, *storage.index, ManualOnly);
    scrubber.start();
    // A new store counts as scrubbed when first seen.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (scrubber.stats().last_pass_end == 0 &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    CHECK(scrubber.stats().last_pass_end > 0);
  }
  auto saved = storage.index->get_state("scrub/last_pass");
  REQUIRE(saved);
  REQUIRE(saved->has_value());
  CHECK(std::stoll(**saved) > 0);
}

TEST_CASE("scrubber runs when its interval is due", "[cache][scrubber]") {
  Storage storage;
  storage.add("content");
  REQUIRE(storage.index->put_state("scrub/last_pass", "1"));
  Scrubber scrubber(storage.store, *storage.index, {3600, 1ULL << 30});
  scrubber.start();
  auto stats = wait_for_passes(scrubber, 1);
  CHECK(stats.passes == 1);
  CHECK(stats.files == 1);
}

TEST_CASE("scrubber waits when its interval is not due", "[cache][scrubber]") {
  Storage storage;
  storage.add("content");
  Scrubber scrubber(storage.store, *storage.index, {3600, 1ULL << 30});
  scrubber.start();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CHECK(scrubber.stats().passes == 0);
}

TEST_CASE("scrubber stops during a slow pass", "[cache][scrubber]") {
  Storage storage;
  storage.add(std::string(4 << 20, 's'));
  // At 1 MiB/s the pass would take four seconds.
  Scrubber scrubber(storage.store, *storage.index, {0, 1 << 20});
  scrubber.start();
  scrubber.run_now();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto started = std::chrono::steady_clock::now();
  scrubber.stop();
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(1));
  CHECK(scrubber.stats().passes == 0);
}

} // namespace
} // namespace gatecache::cache
