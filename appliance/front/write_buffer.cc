#include "appliance/front/write_buffer.h"

namespace gatecache::front {

BufferPool::~BufferPool() {
  for (uint8_t *buffer : free_) {
    delete[] buffer;
  }
}

uint8_t *BufferPool::acquire() {
  if (free_.empty()) {
    return new uint8_t[BufferBytes];
  }
  uint8_t *buffer = free_.back();
  free_.pop_back();
  return buffer;
}

void BufferPool::release(uint8_t *buffer) {
  if (free_.size() >= max_free_) {
    delete[] buffer;
    return;
  }
  free_.push_back(buffer);
}

void WriteBuffer::append_decimal(uint64_t value) {
  char digits[20];
  size_t n = 0;
  do {
    digits[n++] = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value != 0);
  ensure_buffer();
  while (n > 0) {
    buffer_[end_++] = static_cast<uint8_t>(digits[--n]);
  }
}

void WriteBuffer::append_hex(uint64_t value) {
  static constexpr char Hex[] = "0123456789abcdef";
  char digits[16];
  size_t n = 0;
  do {
    digits[n++] = Hex[value & 0xf];
    value >>= 4;
  } while (value != 0);
  ensure_buffer();
  while (n > 0) {
    buffer_[end_++] = static_cast<uint8_t>(digits[--n]);
  }
}

void WriteBuffer::release() {
  if (buffer_ != nullptr) {
    pool_.release(buffer_);
    buffer_ = nullptr;
  }
  begin_ = 0;
  end_ = 0;
}

} // namespace gatecache::front
