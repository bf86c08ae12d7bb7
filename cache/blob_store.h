// Content-addressed files on disk: `<root>/blobs/<algorithm>/<ab>/<hex>`.
//
// Content enters the store only through a `Writer`: bytes go to a file in
// `<root>/tmp/`, are hashed while written, and `commit()` checks the digest
// and size, fsyncs the file, renames it into place and fsyncs the directory.
// A crash at any point leaves either no file or a complete verified one.
// Files under `tmp/` are removed by `open()`.
//
// Threading: a `BlobStore` may be used from several threads. A `Writer` is
// used by one thread at a time; `commit()` blocks on fsync, so call it off
// the event loop.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "cache/digest.h"
#include "common/error.h"

namespace gatecache::cache {

class BlobStore {
public:
  // Opens (creating when missing) the store under `root`, and removes
  // leftovers of interrupted downloads from `tmp/`.
  static Result<std::shared_ptr<BlobStore>> open(std::filesystem::path root);

  std::filesystem::path path_for(const Digest &digest) const;

  // Size of the stored content, or nullopt when absent.
  std::optional<uint64_t> size_of(const Digest &digest) const;

  // Opens stored content read-only. `NotFound` when absent.
  Result<int> open_read(const Digest &digest) const;

  // Removes stored content. Absent content is not an error.
  Result<void> remove(const Digest &digest);

  class Writer {
  public:
    ~Writer(); // Removes the temp file unless committed.
    Writer(const Writer &) = delete;
    Writer &operator=(const Writer &) = delete;

    // Appends bytes. `Io` or `StorageFull` on failure; `Corrupt` when the
    // total would pass the expected size.
    Result<void> append(const void *data, size_t size);

    uint64_t size() const { return size_; }
    // A read-only descriptor of the temp file, for readers that follow the
    // download as it grows. Owned by the writer.
    int read_fd() const { return read_fd_; }

    // Verifies digest and expected size, fsyncs, renames into place and
    // fsyncs the directory. `Corrupt` on mismatch (the temp file is then
    // removed). Blocking: call off the loop.
    Result<void> commit();

    // Removes the temp file. Idempotent.
    void abort();

  private:
    friend class BlobStore;
    Writer() = default;
    std::shared_ptr<BlobStore> store_;
    Digest expected_;
    std::optional<uint64_t> expected_size_;
    std::filesystem::path temp_path_;
    int write_fd_ = -1;
    int read_fd_ = -1;
    uint64_t size_ = 0;
    std::unique_ptr<Hasher> hasher_;
    bool done_ = false;
  };

  // Starts a download of `expected`. `expected_size` is checked on commit
  // when given.
  Result<std::unique_ptr<Writer>>
  create_writer(const Digest &expected,
                std::optional<uint64_t> expected_size);

  // Stores `bytes` under its digest in one step (write, verify, fsync,
  // rename). Blocking.
  Result<void> put(const Digest &expected, std::string_view bytes);

  const std::filesystem::path &root() const { return root_; }

private:
  explicit BlobStore(std::filesystem::path root) : root_(std::move(root)) {}
  std::filesystem::path root_;
  std::weak_ptr<BlobStore> self_;
};

} // namespace gatecache::cache
