#include "appliance/front/socket_bio.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <sys/socket.h>

#include "appliance/front/write_buffer.h"

namespace gatecache::front {

namespace {

struct BioState {
  int fd = -1;
  BufferPool *pool = nullptr;
  uint8_t *buffer = nullptr;
  size_t begin = 0;
  size_t end = 0;
};

BioState &state_of(BIO *bio) {
  return *static_cast<BioState *>(BIO_get_data(bio));
}

void release_buffer(BioState &state) {
  if (state.buffer != nullptr) {
    state.pool->release(state.buffer);
    state.buffer = nullptr;
  }
  state.begin = 0;
  state.end = 0;
}

// Sends buffered bytes until none remain or the socket would block.
// Returns 1 when the buffer is empty, else -1 with the BIO's retry flag set
// when the socket is full and clear on a socket error.
int flush_buffer(BIO *bio, BioState &state) {
  while (state.begin < state.end) {
    ssize_t sent = ::send(state.fd, state.buffer + state.begin,
                          state.end - state.begin, MSG_NOSIGNAL);
    if (sent >= 0) {
      state.begin += static_cast<size_t>(sent);
      continue;
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      BIO_set_retry_write(bio);
    }
    return -1;
  }
  release_buffer(state);
  return 1;
}

int on_write(BIO *bio, const char *data, int size) noexcept {
  BioState &state = state_of(bio);
  BIO_clear_retry_flags(bio);
  if (size <= 0) {
    return 0;
  }
  auto wanted = static_cast<size_t>(size);
  if (state.buffer != nullptr && BufferPool::BufferBytes - state.end < wanted &&
      flush_buffer(bio, state) < 0 && !BIO_should_retry(bio)) {
    return -1;
  }
  if (state.buffer == nullptr) {
    state.buffer = state.pool->acquire();
  }

  // While the socket is full, take what fits. OpenSSL offers the rest
  // again later.
  size_t taken = std::min(wanted, BufferPool::BufferBytes - state.end);
  if (taken == 0) {
    return -1;
  }
  BIO_clear_retry_flags(bio);
  std::memcpy(state.buffer + state.end, data, taken);
  state.end += taken;
  return static_cast<int>(taken);
}

long on_ctrl(BIO *bio, int command, long, void *pointer) noexcept {
  BioState &state = state_of(bio);
  switch (command) {
  case BIO_CTRL_FLUSH:
    BIO_clear_retry_flags(bio);
    return flush_buffer(bio, state);
  case BIO_CTRL_WPENDING:
    return static_cast<long>(state.end - state.begin);
  case BIO_CTRL_PENDING:
    return 0;
  case BIO_C_GET_FD:
    if (pointer != nullptr) {
      *static_cast<int *>(pointer) = state.fd;
    }
    return state.fd;
  default:
    // Kernel TLS and datagram controls report "unsupported".
    return 0;
  }
}

int on_create(BIO *bio) noexcept {
  BIO_set_data(bio, new BioState());
  BIO_set_init(bio, 1);
  return 1;
}

int on_destroy(BIO *bio) noexcept {
  if (bio == nullptr) {
    return 0;
  }
  auto *state = static_cast<BioState *>(BIO_get_data(bio));
  if (state != nullptr) {
    release_buffer(*state);
    delete state;
  }
  BIO_set_data(bio, nullptr);
  return 1;
}

BIO_METHOD *socket_write_method() {
  static BIO_METHOD *method = [] {
    BIO_METHOD *created = BIO_meth_new(
        BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "gatecache socket write");
    BIO_meth_set_write(created, on_write);
    BIO_meth_set_ctrl(created, on_ctrl);
    BIO_meth_set_create(created, on_create);
    BIO_meth_set_destroy(created, on_destroy);
    return created;
  }();
  return method;
}

} // namespace

bool attach_socket(SSL *ssl, int fd, BufferPool &pool) {
  if ((SSL_get_options(ssl) & SSL_OP_ENABLE_KTLS) != 0) {
    return SSL_set_fd(ssl, fd) == 1;
  }
  BIO *read_bio = BIO_new_socket(fd, BIO_NOCLOSE);
  BIO *write_bio = new_socket_write_bio(fd, pool);
  if (read_bio == nullptr || write_bio == nullptr) {
    BIO_free(read_bio);
    BIO_free(write_bio);
    return false;
  }
  SSL_set_bio(ssl, read_bio, write_bio);
  return true;
}

bool use_buffered_writes(SSL *ssl, int fd, BufferPool &pool) {
  BIO *current = SSL_get_wbio(ssl);
  if (current == nullptr || BIO_method_type(current) != BIO_TYPE_SOCKET ||
      BIO_get_ktls_send(current) != 0) {
    return true;
  }
  BIO *buffered = new_socket_write_bio(fd, pool);
  if (buffered == nullptr) {
    return false;
  }
  // The read side keeps its reference to the socket BIO.
  SSL_set0_wbio(ssl, buffered);
  return true;
}

BIO *new_socket_write_bio(int fd, BufferPool &pool) {
  BIO_METHOD *method = socket_write_method();
  if (method == nullptr) {
    return nullptr;
  }
  BIO *bio = BIO_new(method);
  if (bio == nullptr) {
    return nullptr;
  }
  BioState &state = state_of(bio);
  state.fd = fd;
  state.pool = &pool;
  return bio;
}

} // namespace gatecache::front
