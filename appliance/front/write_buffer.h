// Output buffers of the HTTP sessions.
//
// A connection needs a large buffer only while it has bytes queued for
// TLS, so buffers come from a per-loop pool and go back to it as soon as
// they drain. Idle connections then hold no output memory, and busy ones
// reuse the same few buffers without touching the allocator.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

namespace gatecache::front {

// Free list of equally sized buffers. Loop thread only.
class BufferPool {
public:
  // Size of every buffer. 256 KiB lets one flush fill 16 full TLS records.
  static constexpr size_t BufferBytes = 256 * 1024;

  explicit BufferPool(size_t max_free = 64) : max_free_(max_free) {}

  ~BufferPool();
  BufferPool(const BufferPool &) = delete;
  BufferPool &operator=(const BufferPool &) = delete;

  // Returns a buffer of `BufferBytes`, owned by the caller until
  // `release()`.
  uint8_t *acquire();
  // Takes back a buffer from `acquire()`. Frees it when the pool already
  // keeps `max_free` buffers.
  void release(uint8_t *buffer);

private:
  std::vector<uint8_t *> free_;
  size_t max_free_;
};

// Bytes waiting for TLS, in one pooled buffer: appended at the end and
// drained from the front. The buffer is taken on the first append and
// returned when the last byte drains.
class WriteBuffer {
public:
  explicit WriteBuffer(BufferPool &pool) : pool_(pool) {}

  ~WriteBuffer() { release(); }

  WriteBuffer(const WriteBuffer &) = delete;
  WriteBuffer &operator=(const WriteBuffer &) = delete;

  static constexpr size_t Capacity = BufferPool::BufferBytes;

  bool empty() const { return begin_ == end_; }

  // Bytes waiting to be written.
  size_t size() const { return end_ - begin_; }

  const uint8_t *data() const { return buffer_ + begin_; }

  // Bytes that can still be appended.
  size_t space() const { return Capacity - end_; }

  // Precondition: `size <= space()`.
  void append(const void *data, size_t size) {
    ensure_buffer();
    std::memcpy(buffer_ + end_, data, size);
    end_ += size;
  }

  void append(std::string_view text) { append(text.data(), text.size()); }

  // Appends the decimal form of `value`. Precondition: 20 bytes of space.
  void append_decimal(uint64_t value);
  // Appends the lower-case hexadecimal form of `value`. Precondition: 16
  // bytes of space.
  void append_hex(uint64_t value);

  // Removes `size` written bytes from the front.
  void drain(size_t size) {
    begin_ += size;
    if (begin_ == end_) {
      release();
    }
  }

  // Drops every byte and returns the buffer to the pool.
  void release();

private:
  void ensure_buffer() {
    if (buffer_ == nullptr) {
      buffer_ = pool_.acquire();
    }
  }

  BufferPool &pool_;
  uint8_t *buffer_ = nullptr;
  size_t begin_ = 0;
  size_t end_ = 0;
};

} // namespace gatecache::front
