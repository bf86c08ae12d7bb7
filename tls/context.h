// OpenSSL contexts of the front (server) and the upstream client.
#pragma once

#include <cstddef>
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

// Whether a listener requests a certificate from the internal CA of its
// clients.
enum class ClientAuth {
  None,     // No certificate is requested.
  Optional, // A certificate is requested, and one that is sent must verify.
  Required, // A client without a verified certificate is rejected.
};

// Returns "none", "optional" or "required".
const char *to_string(ClientAuth mode);

// Keys that encrypt and authenticate TLS session tickets, in the 80-byte
// layout of `SSL_CTX_set_tlsext_ticket_keys`: a 16-byte key name, a 32-byte
// HMAC key and a 32-byte AES key. Contexts that share them resume each
// other's sessions. The bytes are wiped on destruction.
class TicketKeys {
public:
  static constexpr size_t Size = 80;

  // Returns fresh random keys. Errors: `Internal` when the random number
  // generator fails.
  [[nodiscard]] static Result<TicketKeys> generate();

  TicketKeys(const TicketKeys &other);
  TicketKeys &operator=(const TicketKeys &other);
  ~TicketKeys();

  const unsigned char *data() const { return bytes_; }

private:
  TicketKeys() = default;

  unsigned char bytes_[Size] = {};
};

struct ServerContextOptions {
  ClientAuth client_auth = ClientAuth::None;
  // Session ticket keys to install; null keeps the random keys that
  // OpenSSL makes for each context.
  const TicketKeys *ticket_keys = nullptr;
};

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
//   - With `ClientAuth::Optional` or `Required`: clients are asked for a
//     certificate that chains to a CA of the trust bundle (current, next
//     and previous CA, see `read_trust_bundle`) and carries the clientAuth
//     extended key usage. A certificate that fails verification ends the
//     handshake, and with `Required` so does a missing one. The bundle's
//     subjects are sent as the acceptable CA list.
//   - The session id context differs per client-auth mode and trust
//     bundle, so that a session is never resumed on a listener with
//     another mode, nor after the CA that verified its client certificate
//     left the bundle.
// Errors: `Invalid` when the files are missing, unreadable or do not
// match, or the key's permissions are too open; `NotFound` when a mode
// that verifies clients finds no CA certificate; `Internal` for library
// failures.
[[nodiscard]] Result<SslCtxPtr>
make_server_context(const TlsPaths &paths,
                    const ServerContextOptions &options = {});

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
