#include "cache/blob_store.h"

#include <atomic>
#include <cerrno>
#include <map>
#include <string>
#include <thread>

#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "tests/unit/cache/support.h"

namespace gatecache::cache {
namespace {

namespace fs = std::filesystem;
using test::count_entries;
using test::pread_all;
using test::read_file;
using test::TempDir;

std::shared_ptr<BlobStore> open_store(const fs::path &root) {
  auto store = BlobStore::open(root);
  if (!store) {
    FAIL("cannot open blob store: " << store.error().message);
  }
  return *store;
}

std::unique_ptr<BlobStore::Writer> start_writer(BlobStore &store,
                                                const Digest &digest,
                                                std::optional<uint64_t> size) {
  auto writer = store.create_writer(digest, size);
  if (!writer) {
    FAIL("cannot create writer: " << writer.error().message);
  }
  return std::move(*writer);
}

TEST_CASE("blob store writes commits and reads", "[cache][blob]") {
  TempDir dir;
  auto store = open_store(dir.path());
  std::string content = "layer bytes, in two appends";
  Digest digest = digest_of(content);

  auto writer = start_writer(*store, digest, content.size());
  REQUIRE(writer->append(content.data(), 10));
  REQUIRE(writer->append(content.data() + 10, content.size() - 10));
  CHECK(writer->size() == content.size());
  auto committed = writer->commit();
  INFO(test::message_of(committed));
  REQUIRE(committed);

  fs::path expected_path =
      dir.path() / "blobs" / "sha256" / digest.hex.substr(0, 2) / digest.hex;
  CHECK(store->path_for(digest) == expected_path);
  CHECK(read_file(expected_path) == content);
  CHECK(store->size_of(digest) == content.size());
  CHECK(count_entries(dir.path() / "tmp") == 0);

  auto fd = store->open_read(digest);
  REQUIRE(fd);
  CHECK(pread_all(*fd, 1000) == content);
  ::close(*fd);
}

TEST_CASE("blob store commits without expected size", "[cache][blob]") {
  TempDir dir;
  auto store = open_store(dir.path());
  std::string content(70000, 'z');
  Digest digest = digest_of(content, DigestAlgorithm::Sha512);

  auto writer = start_writer(*store, digest, std::nullopt);
  REQUIRE(writer->append(content.data(), content.size()));
  REQUIRE(writer->commit());
  CHECK(store->size_of(digest) == content.size());
  CHECK(fs::exists(dir.path() / "blobs" / "sha512" / digest.hex.substr(0, 2) /
                   digest.hex));
}

TEST_CASE("blob store rejects digest mismatch", "[cache][blob]") {
  TempDir dir;
  auto store = open_store(dir.path());
  Digest expected = digest_of("expected content");
  Digest actual = digest_of("received content");

  auto writer = start_writer(*store, expected, std::nullopt);
  REQUIRE(writer->append("received content", 16));
  auto committed = writer->commit();
  REQUIRE_FALSE(committed);
  CHECK(committed.error().code == ErrorCode::Corrupt);
  CHECK(committed.error().message.find(expected.str()) != std::string::npos);
  CHECK(committed.error().message.find(actual.str()) != std::string::npos);
  CHECK_FALSE(store->size_of(expected));
  CHECK_FALSE(store->size_of(actual));
  CHECK(count_entries(dir.path() / "tmp") == 0);
}

TEST_CASE("blob store rejects truncated content", "[cache][blob]") {
  TempDir dir;
  auto store = open_store(dir.path());
  std::string content = "0123456789";
  Digest digest = digest_of(content);

  auto writer = start_writer(*store, digest, content.size());
  REQUIRE(writer->append(content.data(), 5));
  auto committed = writer->commit();
  REQUIRE_FALSE(committed);
  CHECK(committed.error().code == ErrorCode::Corrupt);
  CHECK(committed.error().message.find("expected 10 bytes, got 5") !=
        std::string::npos);
  CHECK_FALSE(store->size_of(digest));
  CHECK(count_entries(dir.path() / "tmp") == 0);
}

TEST_CASE("blob store rejects oversize append", "[cache][blob]") {
  TempDir dir;
  auto store = open_store(dir.path());
  std::string content = "abc";
  Digest digest = digest_of(content);

  auto writer = start_writer(*store, digest, content.size());
  auto appended = writer->append("abcd", 4);
  REQUIRE_FALSE(appended);
  CHECK(appended.error().code == ErrorCode::Corrupt);
  CHECK(writer->size() == 0);

  auto retried = writer->append("abc", 3);
  REQUIRE_FALSE(retried);
  CHECK(retried.error().code == ErrorCode::Internal);
  auto committed = writer->commit();
  REQUIRE_FALSE(committed);
  CHECK_FALSE(store->size_of(digest));
  CHECK(count_entries(dir.path() / "tmp") == 0);
}

TEST_CASE("blob store cleans tmp on open", "[cache][blob]") {
  TempDir dir;
  { open_store(dir.path()); }
  test::write_file(dir.path() / "tmp" / "sha256-leftover.Ab12Cd", "partial");
  fs::create_directory(dir.path() / "tmp" / "stray-directory");
  test::write_file(dir.path() / "tmp" / "stray-directory" / "file", "x");

  auto store = open_store(dir.path());
  CHECK(count_entries(dir.path() / "tmp") == 0);
}

TEST_CASE("blob store lock excludes second process", "[cache][blob]") {
  TempDir dir;
  auto store = open_store(dir.path());
  auto second = BlobStore::open(dir.path());
  REQUIRE_FALSE(second);
  CHECK(second.error().code == ErrorCode::Io);
  CHECK(second.error().message.find("in use") != std::string::npos);

  store.reset();
  CHECK(BlobStore::open(dir.path()));
}

TEST_CASE("blob store destructor aborts download", "[cache][blob]") {
  TempDir dir;
  auto store = open_store(dir.path());
  Digest digest = digest_of("abc");
  {
    auto writer = start_writer(*store, digest, 3);
    REQUIRE(writer->append("ab", 2));
    CHECK(count_entries(dir.path() / "tmp") == 1);
  }
  CHECK(count_entries(dir.path() / "tmp") == 0);
  CHECK_FALSE(store->size_of(digest));
}

TEST_CASE("blob store temp names are unique", "[cache][blob]") {
  TempDir dir;
  auto store = open_store(dir.path());
  Digest digest = digest_of("abc");
  auto first = start_writer(*store, digest, 3);
  auto second = start_writer(*store, digest, 3);
  CHECK(count_entries(dir.path() / "tmp") == 2);

  REQUIRE(first->append("abc", 3));
  REQUIRE(second->append("abc", 3));
  CHECK(first->commit());
  CHECK(second->commit());
  CHECK(store->size_of(digest) == 3);
  CHECK(count_entries(dir.path() / "tmp") == 0);
}

TEST_CASE("blob store reader follows growing download", "[cache][blob]") {
  TempDir dir;
  auto store = open_store(dir.path());
  std::string content(1 << 20, '\0');
  for (size_t i = 0; i < content.size(); ++i) {
    content[i] = static_cast<char>(i * 7 + i / 251);
  }
  Digest digest = digest_of(content);
  auto writer = start_writer(*store, digest, content.size());
  int fd = writer->read_fd();
  REQUIRE(fd >= 0);

  REQUIRE(writer->append(content.data(), 100));
  CHECK(pread_all(fd, writer->size()) == content.substr(0, 100));
  REQUIRE(writer->append(content.data() + 100, 900));
  CHECK(pread_all(fd, writer->size()) == content.substr(0, 1000));

  // The rest is appended and committed on a worker thread while this
  // thread keeps reading what `size()` reports.
  std::atomic<bool> finished = false;
  Result<void> committed;
  std::thread worker([&] {
    for (size_t offset = 1000; offset < content.size(); offset += 4096) {
      size_t length = std::min<size_t>(4096, content.size() - offset);
      if (auto appended = writer->append(content.data() + offset, length);
          !appended) {
        committed = tl::unexpected(appended.error());
        finished = true;
        return;
      }
    }
    committed = writer->commit();
    finished = true;
  });
  size_t mismatches = 0;
  while (!finished) {
    size_t visible = writer->size();
    if (pread_all(fd, visible) != content.substr(0, visible)) {
      ++mismatches;
    }
  }
  worker.join();
  CHECK(mismatches == 0);
  INFO(test::message_of(committed));
  REQUIRE(committed);

  CHECK(pread_all(fd, content.size()) == content);
  auto follower = writer->open_follower();
  REQUIRE(follower);
  writer.reset();
  CHECK(pread_all(*follower, content.size()) == content);
  CHECK(read_file(store->path_for(digest)) == content);
  ::close(*follower);
}

TEST_CASE("blob store reader survives abort", "[cache][blob]") {
  TempDir dir;
  auto store = open_store(dir.path());
  Digest digest = digest_of("abcdef");
  auto writer = start_writer(*store, digest, 6);
  REQUIRE(writer->append("abc", 3));
  auto follower = writer->open_follower();
  REQUIRE(follower);

  writer->abort();
  CHECK(count_entries(dir.path() / "tmp") == 0);
  CHECK(pread_all(writer->read_fd(), 3) == "abc");
  writer->abort();
  writer.reset();
  CHECK(pread_all(*follower, 3) == "abc");
  ::close(*follower);
}

TEST_CASE("blob store reader survives failed commit", "[cache][blob]") {
  TempDir dir;
  auto store = open_store(dir.path());
  auto writer = start_writer(*store, digest_of("abc"), std::nullopt);
  REQUIRE(writer->append("xyz", 3));
  REQUIRE_FALSE(writer->commit());
  CHECK(count_entries(dir.path() / "tmp") == 0);
  CHECK(pread_all(writer->read_fd(), 3) == "xyz");
}

TEST_CASE("blob store put stores small content", "[cache][blob]") {
  TempDir dir;
  auto store = open_store(dir.path());
  std::string manifest = R"({"schemaVersion":2})";
  Digest digest = digest_of(manifest);

  REQUIRE(store->put(digest, manifest));
  CHECK(read_file(store->path_for(digest)) == manifest);
  CHECK(store->put(digest, manifest));
  CHECK(read_file(store->path_for(digest)) == manifest);

  auto wrong = store->put(digest_of("other"), manifest);
  REQUIRE_FALSE(wrong);
  CHECK(wrong.error().code == ErrorCode::Corrupt);
  CHECK(count_entries(dir.path() / "tmp") == 0);
}

TEST_CASE("blob store stores empty content", "[cache][blob]") {
  TempDir dir;
  auto store = open_store(dir.path());
  Digest digest = digest_of("");
  REQUIRE(store->put(digest, ""));
  CHECK(store->size_of(digest) == 0);
}

TEST_CASE("blob store removes content", "[cache][blob]") {
  TempDir dir;
  auto store = open_store(dir.path());
  Digest digest = digest_of("abc");
  REQUIRE(store->put(digest, "abc"));
  auto fd = store->open_read(digest);
  REQUIRE(fd);

  REQUIRE(store->remove(digest));
  CHECK_FALSE(store->size_of(digest));
  CHECK(store->remove(digest));
  CHECK(pread_all(*fd, 3) == "abc");
  ::close(*fd);
}

TEST_CASE("blob store reports absent content", "[cache][blob]") {
  TempDir dir;
  auto store = open_store(dir.path());
  auto fd = store->open_read(digest_of("absent"));
  REQUIRE_FALSE(fd);
  CHECK(fd.error().code == ErrorCode::NotFound);
}

TEST_CASE("blob store rejects forged digests", "[cache][blob]") {
  TempDir dir;
  auto store = open_store(dir.path());
  const Digest forged[] = {
      {DigestAlgorithm::Sha256, "../../../etc/passwd"},
      {DigestAlgorithm::Sha256, ""},
      {DigestAlgorithm::Sha512, digest_of("abc").hex},
  };
  for (const auto &digest : forged) {
    INFO("hex '" << digest.hex << "'");
    auto fd = store->open_read(digest);
    REQUIRE_FALSE(fd);
    CHECK(fd.error().code == ErrorCode::Invalid);
    auto writer = store->create_writer(digest, std::nullopt);
    REQUIRE_FALSE(writer);
    CHECK(writer.error().code == ErrorCode::Invalid);
    CHECK_FALSE(store->remove(digest));
    CHECK_FALSE(store->size_of(digest));
  }
}

TEST_CASE("blob store lists stored content", "[cache][blob]") {
  TempDir dir;
  auto store = open_store(dir.path());
  Digest small = digest_of("small");
  Digest large = digest_of(std::string(5000, 'l'), DigestAlgorithm::Sha512);
  REQUIRE(store->put(small, "small"));
  REQUIRE(store->put(large, std::string(5000, 'l')));
  test::write_file(store->path_for(small).parent_path() / "not-a-digest", "x");

  std::map<std::string, uint64_t> listed;
  auto visited = store->for_each([&](const Digest &digest, uint64_t size) {
    listed[digest.str()] = size;
    return true;
  });
  REQUIRE(visited);
  CHECK(listed.size() == 2);
  CHECK(listed[small.str()] == 5);
  CHECK(listed[large.str()] == 5000);
}

// Runs `body` in a child process inside its own mount namespace, where a
// 256 KiB tmpfs covers `directory`. Returns nullopt when the namespace or
// mount is not permitted here, and otherwise whether `body` returned true.
template <typename Body>
std::optional<bool> run_on_small_tmpfs(const fs::path &directory, Body body) {
  pid_t child = ::fork();
  if (child < 0) {
    return std::nullopt;
  }
  if (child == 0) {
    // MS_PRIVATE keeps the mount from propagating to the parent's
    // namespace.
    if (::unshare(CLONE_NEWNS) != 0 ||
        ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("tmpfs", directory.c_str(), "tmpfs", 0, "size=256k") != 0) {
      ::_exit(2);
    }
    ::_exit(body() ? 0 : 1);
  }
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) == 2) {
    return std::nullopt;
  }
  return WEXITSTATUS(status) == 0;
}

TEST_CASE("blob store reports full disk", "[cache][blob]") {
  TempDir dir;
  auto outcome = run_on_small_tmpfs(dir.path(), [&] {
    auto store = BlobStore::open(dir.path());
    if (!store) {
      return false;
    }
    std::string chunk(64 * 1024, 'f');
    auto writer = (*store)->create_writer(digest_of("never"), std::nullopt);
    if (!writer) {
      return false;
    }
    for (int i = 0; i < 64; ++i) {
      auto appended = (*writer)->append(chunk.data(), chunk.size());
      if (!appended) {
        return appended.error().code == ErrorCode::StorageFull;
      }
    }
    return false;
  });
  if (!outcome) {
    WARN("mount namespaces are not permitted here; full disk not tested");
    return;
  }
  CHECK(*outcome);
}

TEST_CASE("blob store reserves expected size", "[cache][blob]") {
  TempDir dir;
  auto outcome = run_on_small_tmpfs(dir.path(), [&] {
    auto store = BlobStore::open(dir.path());
    if (!store) {
      return false;
    }
    auto writer = (*store)->create_writer(digest_of("huge"), 1ULL << 30);
    return !writer && writer.error().code == ErrorCode::StorageFull;
  });
  if (!outcome) {
    WARN("mount namespaces are not permitted here; reservation not tested");
    return;
  }
  CHECK(*outcome);
}

} // namespace
} // namespace gatecache::cache
