// OpenSSL contexts of the front (server) and the upstream client.
#pragma once

#include <memory>
#include <string>

#include <openssl/types.h>

#include "common/error.h"
#include "tls/ca.h"

namespace gatecache::tls {

struct SslCtxDeleter {
  void operator()(SSL_CTX *context) const noexcept;
};

using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxDeleter>;

// The HTTP version agreed on by ALPN.
enum class ApplicationProtocol { Http2, Http11 };

// Builds the front's context from `server.key` and `server.crt`:
//   - TLS 1.2 and 1.3 only, renegotiation off, session tickets on.
//   - TLS 1.3 suites TLS_AES_128_GCM_SHA256, TLS_CHACHA20_POLY1305_SHA256,
//     TLS_AES_256_GCM_SHA384 in server order, because AES-128-GCM is the
//     fastest AEAD on CPUs with AES instructions and blobs are large. A
//     client that lists ChaCha20 first (as clients without such
//     instructions do) gets ChaCha20.
//   - TLS 1.2 suites ECDHE-ECDSA with AES-GCM or ChaCha20-Poly1305 only,
//     all allowed for HTTP/2 by RFC 7540 section 9.2.2.
//   - ALPN prefers "h2", then "http/1.1". A client without ALPN gets no
//     protocol (treat it as HTTP/1.1), and one that offers only other
//     protocols fails the handshake with a no_application_protocol alert.
//   - SSL_MODE_ENABLE_PARTIAL_WRITE, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER,
//     and SSL_OP_ENABLE_KTLS so that kernel TLS (and `SSL_sendfile`) is
//     used where the kernel and the cipher allow it.
// Errors: `Invalid` when the files are missing, unreadable or do not
// match, or the key's permissions are too open; `Internal` for library
// failures.
[[nodiscard]] Result<SslCtxPtr> make_server_context(const TlsPaths &paths);

// Returns the protocol that ALPN selected on `ssl` after the handshake, and
// `Http11` when the client sent no ALPN.
ApplicationProtocol negotiated_protocol(const SSL *ssl);

// Builds the upstream client's context: TLS 1.2 and later, peers verified
// against the system's default CA paths and, when `ca_file` is not empty,
// the PEM certificates in `ca_file`; ALPN offers "h2" then "http/1.1".
// Every connection must also call `set_client_host`. Errors: `Invalid` when
// `ca_file` cannot be read; `Internal` for library failures.
[[nodiscard]] Result<SslCtxPtr> make_client_context(const std::string &ca_file);

// Sets on a client `ssl`, before the handshake, the name its peer must
// prove. `host` is a DNS name, an IPv4 address, or an IPv6 address with or
// without brackets, and carries no port. A DNS name is sent as SNI and
// matched against the certificate's DNS names. An IP address is matched
// against its IP entries and sent without SNI, which RFC 6066 section 3
// forbids for literal addresses. Errors: `Invalid` for an empty or
// malformed `host`; `Internal` for library failures.
[[nodiscard]] Result<void> set_client_host(SSL *ssl, const std::string &host);

} // namespace gatecache::tls
