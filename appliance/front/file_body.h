// Response body read from a complete file, such as a committed blob.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "appliance/front/exchange.h"
#include "common/error.h"

namespace gatecache::front {

// Serves `length` bytes of a file from `offset`. Large ranges are mapped
// read-only once and handed out as pointers into the mapping, so the bytes
// reach `SSL_write` without a copy. Small ranges, and files that cannot be
// mapped, are read with `pread` into a buffer.
//
// Precondition: nobody truncates the file while the body exists. A mapped
// page past the end of the file raises SIGBUS. Blob store files are never
// truncated once committed, and removing them (`unlink`) is safe.
//
// NOTE: a page that is not in the page cache is read by a page fault (or
// `pread`) on the loop thread, which blocks the loop for the time of one
// disk read. Read-ahead advice keeps this rare for sequential transfers.
class FileBody final : public BodySource {
public:
  // Ranges shorter than this are read with `pread`, which costs less than
  // setting up and tearing down a mapping.
  static constexpr uint64_t MinMappedBytes = 256 * 1024;

  // Duplicates `fd` (the caller keeps its own descriptor) and prepares the
  // range. `Invalid` when the range passes the end of the file, `Io` when
  // `fstat` or `dup` fails.
  [[nodiscard]] static Result<std::unique_ptr<FileBody>>
  open(int fd, uint64_t offset, uint64_t length);

  ~FileBody() override;
  FileBody(const FileBody &) = delete;
  FileBody &operator=(const FileBody &) = delete;

  BodyChunk next(size_t max) override;
  void consume(size_t n) override;

  // Bytes not yet consumed.
  int64_t length() const override {
    return static_cast<int64_t>(end_ - position_);
  }

  // True when the range is served from a memory mapping.
  bool mapped() const { return map_ != nullptr; }

private:
  FileBody(int fd, uint64_t offset, uint64_t length);
  void map();
  void advise_read_ahead();

  int fd_;
  // File offsets: the next byte to send and the end of the range.
  uint64_t position_;
  uint64_t end_;
  // The mapping starts at `map_offset_`, the page-aligned offset at or
  // before the range.
  void *map_ = nullptr;
  size_t map_size_ = 0;
  uint64_t map_offset_ = 0;
  // File offset up to which read-ahead was requested.
  uint64_t advised_until_ = 0;
  // The `pread` buffer and the bytes in it, which start at `position_`.
  std::unique_ptr<uint8_t[]> buffer_;
  size_t buffered_ = 0;
  size_t buffer_start_ = 0;
  // A read failed; every later `next()` returns `Error`.
  bool failed_ = false;
};

} // namespace gatecache::front
