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
#include <openssl/ssl.h>

namespace gatecache::front {

class BufferPool;

// Returns a write BIO for `fd`, which it does not close, or null when
// OpenSSL cannot allocate one. `pool` must outlive the BIO. Loop thread
// only, like the pool.
BIO *new_socket_write_bio(int fd, BufferPool &pool);

// Attaches `fd` to `ssl`: a plain socket BIO for reads and
// `new_socket_write_bio()` for writes. With SSL_OP_ENABLE_KTLS set, both
// directions get the plain socket instead, because OpenSSL can turn on
// kernel TLS only there. Call `use_buffered_writes()` after the handshake
// in case kernel TLS did not start. Returns false when OpenSSL cannot
// allocate a BIO.
bool attach_socket(SSL *ssl, int fd, BufferPool &pool);

// Replaces the write BIO of `ssl` with `new_socket_write_bio()`, unless
// kernel TLS sends for it. Call only between writes, when OpenSSL has no
// partly written record. Returns false when OpenSSL cannot allocate the
// BIO, and the old one then stays.
bool use_buffered_writes(SSL *ssl, int fd, BufferPool &pool);

} // namespace gatecache::front
