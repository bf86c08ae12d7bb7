#include "cache/blob_store.h"

#include <cerrno>
#include <system_error>
#include <vector>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"

namespace gatecache::cache {

namespace fs = std::filesystem;

namespace {

constexpr mode_t DirectoryMode = 0750;

// A full disk or quota is `StorageFull`, so the service can evict and retry.
ErrorCode storage_code(int errnum) {
  return errnum == ENOSPC || errnum == EDQUOT ? ErrorCode::StorageFull
                                              : ErrorCode::Io;
}

Error errno_error(const char *call, const fs::path &path, int errnum) {
  return Error{storage_code(errnum),
               errno_message(call, errnum) + " (" + path.string() + ")"};
}

// `Digest` is a plain struct, so a caller could build one with a hex that
// is not a hash ("../x"). Every entry point checks it before it becomes a
// path.
bool is_valid(const Digest &digest) {
  if (digest.hex.size() != hex_length(digest.algorithm)) {
    return false;
  }
  for (char c : digest.hex) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}

tl::unexpected<Error> invalid_digest(const Digest &digest) {
  return fail(ErrorCode::Invalid, std::string("invalid ") +
                                      digest.algorithm_name() + " digest of " +
                                      std::to_string(digest.hex.size()) +
                                      " characters");
}

int hex_value(char c) { return c <= '9' ? c - '0' : c - 'a' + 10; }

void close_quietly(int fd) {
  // Linux releases the descriptor even when close() fails with EINTR, so a
  // retry could close a descriptor another thread has just opened.
  if (fd >= 0) {
    ::close(fd);
  }
}

Result<void> fsync_fd(int fd, const fs::path &path) {
  while (::fsync(fd) != 0) {
    if (errno != EINTR) {
      return tl::unexpected(errno_error("fsync", path, errno));
    }
  }
  return {};
}

Result<void> fsync_directory(const fs::path &path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return tl::unexpected(errno_error("open", path, errno));
  }
  auto synced = fsync_fd(fd, path);
  close_quietly(fd);
  return synced;
}

} // namespace

Result<std::shared_ptr<BlobStore>> BlobStore::open(fs::path root) {
  std::shared_ptr<BlobStore> store(new BlobStore(std::move(root)));
  store->self_ = store;
  if (auto made = store->make_directories(); !made) {
    return tl::unexpected(made.error());
  }
  if (auto locked = store->lock(); !locked) {
    return tl::unexpected(locked.error());
  }
  if (auto cleaned = store->clean_tmp(); !cleaned) {
    return tl::unexpected(cleaned.error());
  }
  return store;
}

BlobStore::~BlobStore() { close_quietly(lock_fd_); }

Result<void> BlobStore::make_directories() {
  for (const char *sub : {"blobs/sha256", "blobs/sha512", "tmp"}) {
    fs::path path = root_ / sub;
    std::error_code error;
    fs::create_directories(path, error);
    if (error) {
      return fail(storage_code(error.value()), "cannot create directory " +
                                                   path.string() + ": " +
                                                   error.message());
    }
  }
  return {};
}

Result<void> BlobStore::lock() {
  fs::path path = root_ / "lock";
  lock_fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd_ < 0) {
    return tl::unexpected(errno_error("open", path, errno));
  }
  while (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR) {
      continue;
    }
    if (errno == EWOULDBLOCK) {
      return fail(ErrorCode::Io, "blob store " + root_.string() +
                                     " is in use by another process, which "
                                     "holds the lock on " +
                                     path.string());
    }
    return tl::unexpected(errno_error("flock", path, errno));
  }
  return {};
}

Result<void> BlobStore::clean_tmp() {
  fs::path tmp = root_ / "tmp";
  std::error_code error;
  fs::directory_iterator it(tmp, error);
  size_t removed = 0;
  for (; !error && it != fs::directory_iterator(); it.increment(error)) {
    std::error_code remove_error;
    fs::remove_all(it->path(), remove_error);
    if (remove_error) {
      return fail(ErrorCode::Io, "cannot remove " + it->path().string() + ": " +
                                     remove_error.message());
    }
    ++removed;
  }
  if (error) {
    return fail(ErrorCode::Io,
                "cannot list " + tmp.string() + ": " + error.message());
  }
  if (removed > 0) {
    GC_LOG(Cache, info, "Removed {} interrupted downloads from {}", removed,
           tmp.string());
  }
  return {};
}

fs::path BlobStore::path_for(const Digest &digest) const {
  return root_ / "blobs" / digest.algorithm_name() /
         std::string_view(digest.hex).substr(0, 2) / digest.hex;
}

std::optional<uint64_t> BlobStore::size_of(const Digest &digest) const {
  if (!is_valid(digest)) {
    return std::nullopt;
  }
  struct stat status;
  if (::stat(path_for(digest).c_str(), &status) != 0 ||
      !S_ISREG(status.st_mode)) {
    return std::nullopt;
  }
  return static_cast<uint64_t>(status.st_size);
}

Result<int> BlobStore::open_read(const Digest &digest) const {
  if (!is_valid(digest)) {
    return invalid_digest(digest);
  }
  fs::path path = path_for(digest);
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd >= 0) {
    return fd;
  }
  if (errno == ENOENT) {
    return fail(ErrorCode::NotFound, digest.str() + " is not stored");
  }
  return tl::unexpected(errno_error("open", path, errno));
}

Result<void> BlobStore::remove(const Digest &digest) {
  if (!is_valid(digest)) {
    return invalid_digest(digest);
  }
  // The directory is not fsynced: if a crash undoes the unlink, the file
  // is an orphan that `remove_orphans()` deletes at the next start.
  fs::path path = path_for(digest);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return tl::unexpected(errno_error("unlink", path, errno));
  }
  return {};
}

Result<void> BlobStore::for_each(
    const std::function<bool(const Digest &, uint64_t)> &visit) const {
  for (auto algorithm : {DigestAlgorithm::Sha256, DigestAlgorithm::Sha512}) {
    fs::path top = root_ / "blobs" / cache::algorithm_name(algorithm);
    std::error_code error;
    fs::directory_iterator fan_out(top, error);
    for (; !error && fan_out != fs::directory_iterator();
         fan_out.increment(error)) {
      std::error_code inner_error;
      fs::directory_iterator it(fan_out->path(), inner_error);
      for (; !inner_error && it != fs::directory_iterator();
           it.increment(inner_error)) {
        auto digest = Digest::parse(std::string(algorithm_name(algorithm)) +
                                    ":" + it->path().filename().string());
        if (!digest || path_for(*digest) != it->path()) {
          continue;
        }
        std::error_code size_error;
        uint64_t size = it->file_size(size_error);
        if (size_error) {
          // Removed since the listing; nothing to report.
          continue;
        }
        if (!visit(*digest, size)) {
          return {};
        }
      }
      if (inner_error && inner_error != std::errc::not_a_directory) {
        return fail(ErrorCode::Io, "cannot list " + fan_out->path().string() +
                                       ": " + inner_error.message());
      }
    }
    if (error) {
      return fail(ErrorCode::Io,
                  "cannot list " + top.string() + ": " + error.message());
    }
  }
  return {};
}

Result<void> BlobStore::ensure_fan_out_dir(const Digest &digest) {
  fs::path dir = path_for(digest).parent_path();
  if (::mkdir(dir.c_str(), DirectoryMode) != 0 && errno != EEXIST) {
    return tl::unexpected(errno_error("mkdir", dir, errno));
  }

  // Another writer may have created the directory and still be fsyncing
  // its parent, so "it exists" does not mean "its entry is on disk". A set
  // flag means that some fsync of the parent has finished since.
  size_t slot =
      (digest.algorithm == DigestAlgorithm::Sha512 ? 256 : 0) +
      size_t(hex_value(digest.hex[0]) * 16 + hex_value(digest.hex[1]));
  if (durable_dirs_[slot].load(std::memory_order_acquire)) {
    return {};
  }
  if (auto synced = fsync_directory(dir.parent_path()); !synced) {
    return synced;
  }
  durable_dirs_[slot].store(true, std::memory_order_release);
  return {};
}

Result<std::unique_ptr<BlobStore::Writer>>
BlobStore::create_writer(const Digest &expected,
                         std::optional<uint64_t> expected_size) {
  if (!is_valid(expected)) {
    return invalid_digest(expected);
  }

  std::unique_ptr<Writer> writer(new Writer());
  writer->store_ = self_.lock();
  writer->expected_ = expected;
  writer->expected_size_ = expected_size;
  writer->hasher_ = std::make_unique<Hasher>(expected.algorithm);

  // mkostemp() picks a unique name and creates the file with O_EXCL, so two
  // downloads of one digest never share a temp file.
  std::string name = (root_ / "tmp").string() + "/" +
                     expected.algorithm_name() + "-" + expected.hex + ".XXXXXX";
  std::vector<char> buffer(name.begin(), name.end());
  buffer.push_back('\0');
  writer->write_fd_ = ::mkostemp(buffer.data(), O_CLOEXEC);
  if (writer->write_fd_ < 0) {
    writer->done_ = true;
    return tl::unexpected(errno_error("mkostemp", name, errno));
  }
  writer->temp_path_ = buffer.data();

  writer->read_fd_ = ::open(buffer.data(), O_RDONLY | O_CLOEXEC);
  if (writer->read_fd_ < 0) {
    int saved = errno;
    writer->abort();
    return tl::unexpected(errno_error("open", writer->temp_path_, saved));
  }

  // Reserving the blocks up front turns a full disk into an early error
  // instead of a failure deep into a large download. KEEP_SIZE leaves the
  // file size at 0, so followers still see only appended bytes. File
  // systems without fallocate() are fine without the reservation.
  if (expected_size && *expected_size > 0) {
    int rc;
    do {
      rc = ::fallocate(writer->write_fd_, FALLOC_FL_KEEP_SIZE, 0,
                       static_cast<off_t>(*expected_size));
    } while (rc != 0 && errno == EINTR);
    if (rc != 0 && storage_code(errno) == ErrorCode::StorageFull) {
      int saved = errno;
      writer->abort();
      return tl::unexpected(
          errno_error("fallocate", writer->temp_path_, saved));
    }
  }
  return writer;
}

Result<void> BlobStore::put(const Digest &expected, std::string_view bytes) {
  if (size_of(expected) == bytes.size()) {
    return {};
  }
  auto writer = create_writer(expected, bytes.size());
  if (!writer) {
    return tl::unexpected(writer.error());
  }
  if (auto appended = (*writer)->append(bytes.data(), bytes.size());
      !appended) {
    return appended;
  }
  return (*writer)->commit();
}

BlobStore::Writer::~Writer() {
  abort();
  close_quietly(read_fd_);
}

Result<void> BlobStore::Writer::append(const void *data, size_t size) {
  if (done_ || failed_) {
    return fail(ErrorCode::Internal,
                "append to a download of " + expected_.str() +
                    " that is already committed, aborted or failed");
  }

  uint64_t current = size_.load(std::memory_order_relaxed);
  if (expected_size_ && size > *expected_size_ - current) {
    failed_ = true;
    return fail(ErrorCode::Corrupt,
                "content of " + expected_.str() +
                    " is longer than its expected size: expected " +
                    std::to_string(*expected_size_) + " bytes, got at least " +
                    std::to_string(current + size));
  }

  const char *next = static_cast<const char *>(data);
  size_t remaining = size;
  while (remaining > 0) {
    ssize_t written = ::write(write_fd_, next, remaining);
    if (written < 0 && errno == EINTR) {
      continue;
    }
    if (written <= 0) {
      // A regular file returns 0 only when it can take no more bytes, which
      // would otherwise loop forever.
      int errnum = written == 0 ? ENOSPC : errno;
      failed_ = true;
      return tl::unexpected(errno_error("write", temp_path_, errnum));
    }
    hasher_->update(next, static_cast<size_t>(written));
    next += written;
    remaining -= static_cast<size_t>(written);
    current += static_cast<uint64_t>(written);
    // Release after write() returned, so a reader that sees the new size
    // finds the bytes with pread().
    size_.store(current, std::memory_order_release);
  }
  return {};
}

Result<int> BlobStore::Writer::open_follower() const {
  int fd = ::fcntl(read_fd_, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) {
    return tl::unexpected(
        errno_error("fcntl(F_DUPFD_CLOEXEC)", temp_path_, errno));
  }
  return fd;
}

Result<void> BlobStore::Writer::fail_commit(Error error) {
  abort();
  return tl::unexpected(std::move(error));
}

Result<void> BlobStore::Writer::commit() {
  if (done_) {
    return fail(ErrorCode::Internal, "commit of a download of " +
                                         expected_.str() +
                                         " that is already committed or "
                                         "aborted");
  }
  if (failed_) {
    return fail_commit(
        Error{ErrorCode::Internal,
              "commit of a failed download of " + expected_.str()});
  }

  uint64_t actual_size = size();
  if (expected_size_ && actual_size != *expected_size_) {
    return fail_commit(Error{ErrorCode::Corrupt,
                             "size mismatch for " + expected_.str() +
                                 ": expected " +
                                 std::to_string(*expected_size_) +
                                 " bytes, got " + std::to_string(actual_size)});
  }
  Digest actual = hasher_->finish();
  if (actual != expected_) {
    return fail_commit(Error{ErrorCode::Corrupt,
                             "digest mismatch: expected " + expected_.str() +
                                 ", got " + actual.str() + " over " +
                                 std::to_string(actual_size) + " bytes"});
  }

  // Crash safety: the data must be on disk before the rename makes it
  // visible, and the directory entry must be on disk before the caller
  // records the content in the index.
  if (auto synced = fsync_fd(write_fd_, temp_path_); !synced) {
    return fail_commit(synced.error());
  }
  close_quietly(write_fd_);
  write_fd_ = -1;

  if (auto made = store_->ensure_fan_out_dir(expected_); !made) {
    return fail_commit(made.error());
  }
  // A concurrent download of the same digest may have committed first.
  // Replacing its file with identical bytes is harmless, and its readers
  // keep their descriptors.
  fs::path final_path = store_->path_for(expected_);
  if (::rename(temp_path_.c_str(), final_path.c_str()) != 0) {
    return fail_commit(errno_error("rename", final_path, errno));
  }
  done_ = true;

  // The file is in place and complete. If this fsync fails, the caller
  // does not index it, and `remove_orphans()` deletes it at the next start.
  return fsync_directory(final_path.parent_path());
}

void BlobStore::Writer::abort() {
  if (done_) {
    return;
  }
  done_ = true;
  close_quietly(write_fd_);
  write_fd_ = -1;
  if (::unlink(temp_path_.c_str()) != 0 && errno != ENOENT) {
    GC_LOG(Cache, warn, "Cannot remove temp file {}: {}", temp_path_.string(),
           errno_message("unlink", errno));
  }
}

} // namespace gatecache::cache
