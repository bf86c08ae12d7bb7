// Temporary directories and file helpers for the cache unit tests.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "cache/blob_store.h"
#include "cache/index.h"
#include "common/error.h"

namespace gatecache::cache::test {

// A directory for one test, removed with everything in it at scope exit.

class TempDir {
public:
  // Creates a fresh directory under $TMPDIR (or /tmp). Throws
  // std::runtime_error on failure, which Catch2 reports as a test failure.
  TempDir();
  ~TempDir();
  TempDir(const TempDir &) = delete;
  TempDir &operator=(const TempDir &) = delete;

  const std::filesystem::path &path() const { return path_; }

private:
  std::filesystem::path path_;
};

// A blob store and a 16 MiB index side by side in a temporary directory,
// as the service keeps them. Throws std::runtime_error when either cannot
// be opened.
struct StoreAndIndex {
  TempDir dir;
  std::shared_ptr<BlobStore> store;
  std::unique_ptr<Index> index;

  StoreAndIndex();
};

// Returns the whole content of `path`, or throws std::runtime_error.
std::string read_file(const std::filesystem::path &path);

// Writes `bytes` to `path`, replacing it, or throws std::runtime_error.
void write_file(const std::filesystem::path &path, std::string_view bytes);

// Returns the bytes of `fd` in [offset, offset + size), read with pread, or
// throws std::runtime_error. Fewer bytes come back at end of file.
std::string pread_all(int fd, size_t size, size_t offset = 0);

// Returns how many entries `directory` contains.
size_t count_entries(const std::filesystem::path &directory);

// Returns the error message of `result`, or "" when it contains a value.
template <typename T> std::string message_of(const Result<T> &result) {
  return result ? std::string() : result.error().message;
}

} // namespace gatecache::cache::test
