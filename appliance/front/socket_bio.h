// An OpenSSL BIO that gathers encrypted TLS records in a pooled buffer and
// sends them to a socket in large writes.
//
// OpenSSL sends each TLS record (at most 16 KiB of data) with its own
// `send()`. The BIO copies records into a `BufferPool` buffer instead and
// sends when the buffer is full or on `BIO_flush()`, which `Connection`
// calls at the end of each write pass. The buffer returns to the pool once
// empty, so idle connections hold none. Sends use MSG_NOSIGNAL, so writes
// to a connection that the client reset raise no SIGPIPE.
#pragma once

#include <openssl/bio.h>

namespace gatecache::front {

class BufferPool;

// Returns a write BIO for `fd`, which it does not close, or null when
// OpenSSL cannot allocate one. `pool` must outlive the BIO. Loop thread
// only, like the pool.
BIO *new_socket_write_bio(int fd, BufferPool &pool);

} // namespace gatecache::front
