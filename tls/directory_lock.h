// Exclusive lock of the TLS directory, shared by the daemon and the
// `gatecache ca` commands.
#pragma once

#include <filesystem>

#include "common/error.h"

namespace gatecache::tls {

// Holds flock(2) LOCK_EX on `<dir>/.lock` for its lifetime, so that a
// change to the CA or server files (a renewal, a rotation step) never
// interleaves with another one or with a daemon reading the files. The
// lock belongs to the open file, so a second `DirectoryLock` on the same
// directory blocks even in the same process: never nest them.
class DirectoryLock {
public:
  // Creates `dir` (mode 0700) and the lock file when missing, then waits
  // for the lock. Errors: `Io` naming the path and the failing call.
  [[nodiscard]] static Result<DirectoryLock>
  acquire(const std::filesystem::path &dir);

  DirectoryLock(DirectoryLock &&other) noexcept;
  DirectoryLock &operator=(DirectoryLock &&other) noexcept;
  DirectoryLock(const DirectoryLock &) = delete;
  DirectoryLock &operator=(const DirectoryLock &) = delete;
  ~DirectoryLock();

private:
  explicit DirectoryLock(int fd) : fd_(fd) {}

  int fd_ = -1;
};

} // namespace gatecache::tls
