#include "tls/directory_lock.h"

#include <cerrno>
#include <system_error>
#include <utility>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tls/ca.h"

namespace gatecache::tls {

Result<DirectoryLock> DirectoryLock::acquire(const std::filesystem::path &dir) {
  std::error_code error;
  if (std::filesystem::create_directories(dir, error)) {
    // The directory contains private keys, so only its owner may list it.
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all, error);
  }
  if (error) {
    return fail(ErrorCode::Io,
                "failed to create " + dir.string() + ": " + error.message());
  }

  std::filesystem::path path = TlsPaths{dir}.lock_file();
  // Read-only is enough for flock, and lets a daemon running as another
  // user lock a file that root created.
  int fd =
      ::open(path.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) {
    return fail(ErrorCode::Io,
                errno_message("open", errno) + " on " + path.string());
  }
  while (::flock(fd, LOCK_EX) != 0) {
    if (errno != EINTR) {
      int saved = errno;
      ::close(fd);
      return fail(ErrorCode::Io,
                  errno_message("flock", saved) + " on " + path.string());
    }
  }
  return DirectoryLock(fd);
}

DirectoryLock::DirectoryLock(DirectoryLock &&other) noexcept
    : fd_(std::exchange(other.fd_, -1)) {}

DirectoryLock &DirectoryLock::operator=(DirectoryLock &&other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) {
      ::close(fd_);
    }
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

DirectoryLock::~DirectoryLock() {
  // Closing the only descriptor of the open file releases the lock.
  if (fd_ >= 0) {
    ::close(fd_);
  }
}

} // namespace gatecache::tls
