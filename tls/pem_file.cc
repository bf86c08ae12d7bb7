#include "tls/pem_file.h"

#include <atomic>
#include <cerrno>
#include <cstdio>

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

namespace gatecache::tls {
namespace {

namespace fs = std::filesystem;

// Closes a file descriptor on scope exit unless released.
class FdGuard {
public:
  explicit FdGuard(int fd) : fd_(fd) {}

  FdGuard(const FdGuard &) = delete;
  FdGuard &operator=(const FdGuard &) = delete;

  ~FdGuard() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }

  int get() const { return fd_; }

  // Closes the descriptor and returns close()'s errno, or 0.
  int close() {
    int fd = fd_;
    fd_ = -1;
    // Linux releases the descriptor even when close() fails, so it is
    // never retried on EINTR.
    return ::close(fd) == 0 ? 0 : errno;
  }

private:
  int fd_;
};

Result<void> write_all(int fd, std::string_view data, const fs::path &path) {
  while (!data.empty()) {
    ssize_t written = ::write(fd, data.data(), data.size());
    if (written < 0) {
      if (errno == EINTR) {
        continue;
      }
      return fail(ErrorCode::Io,
                  errno_message("write", errno) + " on " + path.string());
    }
    data.remove_prefix(static_cast<size_t>(written));
  }
  return {};
}

Result<void> fsync_directory(const fs::path &directory) {
  int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return fail(ErrorCode::Io,
                errno_message("open", errno) + " on " + directory.string());
  }
  FdGuard guard(fd);
  if (::fsync(fd) != 0) {
    return fail(ErrorCode::Io,
                errno_message("fsync", errno) + " on " + directory.string());
  }
  return {};
}

// Creates a new temporary file next to `path`. The name carries the process
// id and a counter, and O_EXCL makes a clash (a file left by a crashed
// process with the same id) a retry instead of a shared file.
Result<int> create_temporary(const fs::path &path, mode_t mode,
                             fs::path &temporary) {
  static std::atomic<unsigned> counter{0};
  constexpr int MaxAttempts = 100;

  for (int attempt = 0; attempt < MaxAttempts; ++attempt) {
    temporary = path;
    temporary += ".tmp-" + std::to_string(::getpid()) + "-" +
                 std::to_string(counter.fetch_add(1));
    int fd = ::open(temporary.c_str(),
                    O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd >= 0) {
      return fd;
    }
    if (errno != EEXIST && errno != EINTR) {
      return fail(ErrorCode::Io,
                  errno_message("open", errno) + " on " + temporary.string());
    }
  }
  return fail(ErrorCode::Io, "no free temporary name next to " + path.string());
}

// Moves `temporary` to `path` without replacing an existing file.
Result<void> publish_new(const fs::path &temporary, const fs::path &path) {
  if (::renameat2(AT_FDCWD, temporary.c_str(), AT_FDCWD, path.c_str(),
                  RENAME_NOREPLACE) == 0) {
    return {};
  }
  int error = errno;

  // Some file systems lack RENAME_NOREPLACE. link() also fails when the
  // destination exists, so it gives the same guarantee there.
  if (error == EINVAL || error == ENOSYS) {
    if (::link(temporary.c_str(), path.c_str()) == 0) {
      ::unlink(temporary.c_str());
      return {};
    }
    error = errno;
  }
  if (error == EEXIST) {
    return fail(ErrorCode::Invalid,
                path.string() + " already exists and is kept as it is");
  }
  return fail(ErrorCode::Io,
              errno_message("rename", error) + " on " + path.string());
}

Result<void> publish(const fs::path &temporary, const fs::path &path,
                     ExistingFile existing) {
  if (existing == ExistingFile::Keep) {
    return publish_new(temporary, path);
  }
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    return fail(ErrorCode::Io,
                errno_message("rename", errno) + " on " + path.string());
  }
  return {};
}

// Gives a file written by root the owner and group of its directory, so
// that `gatecache ca` run as root leaves files that a daemon running as the
// directory's owner can read and accepts as its own.
Result<void> match_directory_owner(int fd, const fs::path &path,
                                   const fs::path &temporary) {
  if (::geteuid() != 0) {
    return {};
  }
  fs::path directory = path.parent_path();

  struct stat status {};

  if (::stat(directory.empty() ? "." : directory.c_str(), &status) != 0) {
    return fail(ErrorCode::Io,
                errno_message("stat", errno) + " on " + directory.string());
  }
  if (status.st_uid == 0 && status.st_gid == 0) {
    return {};
  }
  if (::fchown(fd, status.st_uid, status.st_gid) != 0) {
    return fail(ErrorCode::Io,
                errno_message("fchown", errno) + " on " + temporary.string());
  }
  return {};
}

Result<void> fill_and_publish(int fd, const fs::path &temporary,
                              const fs::path &path, std::string_view data,
                              mode_t mode, ExistingFile existing) {
  FdGuard guard(fd);

  // The mode given to open() is masked by the umask, so set it exactly.
  if (::fchmod(fd, mode) != 0) {
    return fail(ErrorCode::Io,
                errno_message("fchmod", errno) + " on " + temporary.string());
  }
  if (auto owned = match_directory_owner(fd, path, temporary); !owned) {
    return owned;
  }
  if (auto written = write_all(fd, data, temporary); !written) {
    return written;
  }
  if (::fsync(fd) != 0) {
    return fail(ErrorCode::Io,
                errno_message("fsync", errno) + " on " + temporary.string());
  }
  if (int error = guard.close(); error != 0) {
    return fail(ErrorCode::Io,
                errno_message("close", error) + " on " + temporary.string());
  }
  return publish(temporary, path, existing);
}

// Returns the PEM text that `write` puts into a memory BIO of `method`.
template <typename Write>
Result<BioPtr> write_pem(const BIO_METHOD *method, Write write,
                         const fs::path &path) {
  BioPtr bio(BIO_new(method));
  if (!bio) {
    return fail(ErrorCode::Internal, "BIO_new: " + take_openssl_errors());
  }
  if (write(bio.get()) != 1) {
    return fail(ErrorCode::Internal, "failed to encode PEM for " +
                                         path.string() + ": " +
                                         take_openssl_errors());
  }
  return bio;
}

Result<void> write_bio_atomic(const fs::path &path, BIO *bio, mode_t mode,
                              ExistingFile existing) {
  char *data = nullptr;
  long size = BIO_get_mem_data(bio, &data);
  if (size <= 0 || data == nullptr) {
    return fail(ErrorCode::Internal, "empty PEM for " + path.string());
  }
  return write_file_atomic(path, std::string_view(data, size), mode, existing);
}

BioPtr open_for_reading(const fs::path &path) {
  return BioPtr(BIO_new_file(path.c_str(), "rb"));
}

} // namespace

Result<void> write_file_atomic(const fs::path &path, std::string_view data,
                               mode_t mode, ExistingFile existing) {
  fs::path temporary;
  auto fd = create_temporary(path, mode, temporary);
  if (!fd) {
    return tl::unexpected(fd.error());
  }
  if (auto published =
          fill_and_publish(*fd, temporary, path, data, mode, existing);
      !published) {
    ::unlink(temporary.c_str());
    return published;
  }

  // The rename is durable only once the directory entry is on disk.
  fs::path directory = path.parent_path();
  return fsync_directory(directory.empty() ? fs::path(".") : directory);
}

Result<void> write_private_key(const fs::path &path, EVP_PKEY *key,
                               ExistingFile existing) {
  auto pem = write_pem(
      BIO_s_secmem(),
      [key](BIO *bio) {
        return PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr,
                                        nullptr);
      },
      path);
  if (!pem) {
    return tl::unexpected(pem.error());
  }
  return write_bio_atomic(path, pem->get(), 0600, existing);
}

Result<void> write_certificate(const fs::path &path, X509 *certificate,
                               ExistingFile existing) {
  auto pem = write_pem(
      BIO_s_mem(),
      [certificate](BIO *bio) { return PEM_write_bio_X509(bio, certificate); },
      path);
  if (!pem) {
    return tl::unexpected(pem.error());
  }
  return write_bio_atomic(path, pem->get(), 0644, existing);
}

Result<EvpPkeyPtr> read_private_key(const fs::path &path) {
  BioPtr bio = open_for_reading(path);
  if (!bio) {
    return fail(ErrorCode::Invalid, "failed to open private key " +
                                        path.string() + ": " +
                                        take_openssl_errors());
  }
  EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) {
    return fail(ErrorCode::Invalid, "failed to parse private key " +
                                        path.string() + ": " +
                                        take_openssl_errors());
  }
  return key;
}

Result<X509Ptr> read_certificate(const fs::path &path) {
  BioPtr bio = open_for_reading(path);
  if (!bio) {
    return fail(ErrorCode::Invalid, "failed to open certificate " +
                                        path.string() + ": " +
                                        take_openssl_errors());
  }
  X509Ptr certificate(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!certificate) {
    return fail(ErrorCode::Invalid, "failed to parse certificate " +
                                        path.string() + ": " +
                                        take_openssl_errors());
  }
  return certificate;
}

std::string take_openssl_errors() {
  std::string text;
  while (unsigned long code = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof(buffer));
    if (!text.empty()) {
      text += "; ";
    }
    text += buffer;
  }
  return text.empty() ? "no OpenSSL error queued" : text;
}

} // namespace gatecache::tls
