// Content-addressed files on disk: `<root>/blobs/<algorithm>/<ab>/<hex>`,
// where `<ab>` is the first two hex characters of the digest.
//
// Content enters the store only through a `Writer`: bytes go to a file in
// `<root>/tmp/`, are hashed while written, and `commit()` checks the digest
// and size, fsyncs the file, renames it into place and fsyncs the directory.
// A crash at any point leaves either no file or a complete verified one.
// Files under `tmp/` are removed by `open()`.
//
// One process owns a store: `open()` takes an exclusive `flock` on
// `<root>/lock`, because cleaning `tmp/` would otherwise delete another
// process's downloads.
//
// Threading: a `BlobStore` may be used from several threads. A `Writer` is
// used by one thread at a time, except that `size()`, `read_fd()` and
// `open_follower()` may be called from another thread while it appends or
// commits. `commit()` blocks on fsync, so call it off the event loop.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "cache/digest.h"
#include "common/error.h"

namespace gatecache::cache {

class BlobStore {
public:
  // Opens (creating when missing) the store under `root`, and removes
  // leftovers of interrupted downloads from `tmp/`. `Io` when a directory
  // cannot be created or another process holds the store's lock.
  static Result<std::shared_ptr<BlobStore>> open(std::filesystem::path root);
  ~BlobStore();
  BlobStore(const BlobStore &) = delete;
  BlobStore &operator=(const BlobStore &) = delete;

  std::filesystem::path path_for(const Digest &digest) const;

  // Size of the stored content, or nullopt when absent or not readable.
  std::optional<uint64_t> size_of(const Digest &digest) const;

  // Opens stored content read-only with O_CLOEXEC. The caller owns and
  // closes the descriptor. `NotFound` when absent, `Io` otherwise.
  Result<int> open_read(const Digest &digest) const;

  // Removes stored content. Absent content is not an error. Readers that
  // opened the file before keep reading it until they close it.
  Result<void> remove(const Digest &digest);

  // Calls `visit` with the digest and size of every stored file, in no
  // particular order, until it returns false. Files whose names are not
  // valid digests are skipped. Blocking: it reads every directory.
  Result<void>
  for_each(const std::function<bool(const Digest &, uint64_t)> &visit) const;

  class Writer {
  public:
    ~Writer(); // Removes the temp file unless committed.
    Writer(const Writer &) = delete;
    Writer &operator=(const Writer &) = delete;

    // Appends bytes, retrying short writes and EINTR. `StorageFull` on
    // ENOSPC or EDQUOT, `Io` on other write errors, `Corrupt` when the total
    // would pass the expected size (nothing is written then). After any
    // error the writer is failed: further appends and `commit()` return
    // `Internal`, and only `abort()` or the destructor remain.
    Result<void> append(const void *data, size_t size);

    // Bytes appended so far. Safe to read from another thread; a value
    // read there is backed by data that `pread` on `read_fd()` returns.
    uint64_t size() const { return size_.load(std::memory_order_acquire); }

    // A read-only descriptor of the temp file, for readers that follow the
    // download as it grows. Owned by the writer and open until its
    // destructor runs: `commit()` (rename) and `abort()` (unlink) leave it
    // valid, and it then reads the committed or orphaned file. Use `pread`,
    // since every reader of this descriptor shares its offset.
    int read_fd() const { return read_fd_; }

    // Returns a new descriptor of the same file (F_DUPFD_CLOEXEC), owned by
    // the caller, for readers that may outlive the writer. It shares the
    // file offset with `read_fd()`, so use `pread`. `Io` on failure.
    Result<int> open_follower() const;

    // Verifies digest and expected size, fsyncs, renames into place and
    // fsyncs the directory. `Corrupt` on mismatch, with a message naming
    // the expected and actual values, `StorageFull` or `Io` when a system
    // call fails. On any error the temp file is removed. Blocking: call off
    // the loop.
    Result<void> commit();

    // Removes the temp file. Idempotent, and a no-op after `commit()`.
    void abort();

    const Digest &expected() const { return expected_; }

  private:
    friend class BlobStore;
    Writer() = default;
    Result<void> fail_commit(Error error);

    std::shared_ptr<BlobStore> store_;
    Digest expected_;
    std::optional<uint64_t> expected_size_;
    std::filesystem::path temp_path_;
    int write_fd_ = -1;
    int read_fd_ = -1;
    std::atomic<uint64_t> size_ = 0;
    std::unique_ptr<Hasher> hasher_;
    bool done_ = false;   // Committed or aborted.
    bool failed_ = false; // An append failed, so the hash is unusable.
  };

  // Starts a download of `expected`. `expected_size` is checked on append
  // and commit when given. `Io` or `StorageFull` when the temp file cannot
  // be created.
  Result<std::unique_ptr<Writer>>
  create_writer(const Digest &expected, std::optional<uint64_t> expected_size);

  // Stores `bytes` under its digest in one step (write, verify, fsync,
  // rename). Content already stored with the same size is left as it is.
  // Errors as for `Writer::commit()`. Blocking.
  Result<void> put(const Digest &expected, std::string_view bytes);

  const std::filesystem::path &root() const { return root_; }

private:
  explicit BlobStore(std::filesystem::path root) : root_(std::move(root)) {}

  Result<void> make_directories();
  Result<void> lock();
  Result<void> clean_tmp();
  Result<void> ensure_fan_out_dir(const Digest &digest);

  std::filesystem::path root_;
  std::weak_ptr<BlobStore> self_;
  int lock_fd_ = -1;
  // One flag per `<algorithm>/<ab>` directory whose entry in its parent is
  // known to be on disk, so that only the first commit into a directory in
  // this process pays for the parent's fsync.
  std::array<std::atomic<bool>, 512> durable_dirs_{};
};

} // namespace gatecache::cache
