#include "appliance/front/file_body.h"

#include <algorithm>
#include <cerrno>
#include <string>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"

namespace gatecache::front {

namespace {

// Largest `pread` into the fallback buffer.
constexpr size_t ReadBufferBytes = 256 * 1024;
// Read-ahead is requested for this many bytes past the send position, in
// steps of half of it.
constexpr uint64_t ReadAheadBytes = 8 * 1024 * 1024;

} // namespace

Result<std::unique_ptr<FileBody>> FileBody::open(int fd, uint64_t offset,
                                                 uint64_t length) {
  struct stat info;
  if (::fstat(fd, &info) != 0) {
    return fail(ErrorCode::Io, errno_message("fstat", errno));
  }
  if (!S_ISREG(info.st_mode)) {
    return fail(ErrorCode::Invalid, "file body needs a regular file");
  }
  auto size = static_cast<uint64_t>(info.st_size);
  if (offset > size || length > size - offset) {
    return fail(ErrorCode::Invalid,
                "range of " + std::to_string(length) + " bytes at offset " +
                    std::to_string(offset) + " passes the end of a " +
                    std::to_string(size) + "-byte file");
  }
  int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) {
    return fail(ErrorCode::Io, errno_message("fcntl F_DUPFD_CLOEXEC", errno));
  }

  std::unique_ptr<FileBody> body(new FileBody(copy, offset, length));
  if (length >= MinMappedBytes) {
    body->map();
  }
  return body;
}

FileBody::FileBody(int fd, uint64_t offset, uint64_t length)
    : fd_(fd), position_(offset), end_(offset + length) {}

FileBody::~FileBody() {
  if (map_ != nullptr) {
    ::munmap(map_, map_size_);
  }
  ::close(fd_);
}

void FileBody::map() {
  auto page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  uint64_t start = position_ - position_ % page;
  size_t size = end_ - start;
  void *address = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd_,
                         static_cast<off_t>(start));
  if (address == MAP_FAILED) {
    GC_LOG(Front, debug, "mmap of {} bytes failed, reading instead: {}", size,
           errno_message("mmap", errno));
    return;
  }
  map_ = address;
  map_size_ = size;
  map_offset_ = start;
  ::madvise(map_, map_size_, MADV_SEQUENTIAL);
  advise_read_ahead();
}

void FileBody::advise_read_ahead() {
  if (advised_until_ >= end_ ||
      position_ + ReadAheadBytes / 2 < advised_until_) {
    return;
  }
  // MADV_WILLNEED starts reading the next window into the page cache
  // without waiting, so the page faults of later chunks rarely block.
  uint64_t from = std::max(position_, advised_until_);
  from -= (from - map_offset_) % static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  uint64_t to = std::min(end_, position_ + ReadAheadBytes);
  ::madvise(static_cast<uint8_t *>(map_) + (from - map_offset_), to - from,
            MADV_WILLNEED);
  advised_until_ = to;
}

BodyChunk FileBody::next(size_t max) {
  if (failed_) {
    return {BodyChunk::State::Error};
  }
  if (position_ >= end_) {
    return {BodyChunk::State::End};
  }
  size_t size = std::min<uint64_t>(max, end_ - position_);
  if (map_ != nullptr) {
    return {BodyChunk::State::Data,
            static_cast<const uint8_t *>(map_) + (position_ - map_offset_),
            size};
  }

  if (buffered_ == 0) {
    if (!buffer_) {
      buffer_.reset(
          new uint8_t[std::min<uint64_t>(ReadBufferBytes, end_ - position_)]);
    }
    size_t want = std::min<uint64_t>(ReadBufferBytes, end_ - position_);
    ssize_t n;
    do {
      n = ::pread(fd_, buffer_.get(), want, static_cast<off_t>(position_));
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
      GC_LOG(Front, error, "reading a file body at offset {} failed: {}",
             position_,
             n == 0 ? "unexpected end of file" : errno_message("pread", errno));
      failed_ = true;
      return {BodyChunk::State::Error};
    }
    buffered_ = static_cast<size_t>(n);
    buffer_start_ = 0;
  }
  return {BodyChunk::State::Data, buffer_.get() + buffer_start_,
          std::min(size, buffered_)};
}

void FileBody::consume(size_t n) {
  position_ += n;
  if (map_ != nullptr) {
    advise_read_ahead();
    return;
  }
  buffer_start_ += n;
  buffered_ -= n;
}

} // namespace gatecache::front
