// OpenSSL client contexts for upstream connections.
#pragma once

#include <map>
#include <string>

#include <openssl/ssl.h>

#include "common/error.h"

namespace gatecache::upstream {

// Keeps the last TLS session of one origin so a new connection can resume
// it and skip a full handshake.
class TlsSessionStore {
public:
  TlsSessionStore() = default;
  ~TlsSessionStore();
  TlsSessionStore(const TlsSessionStore &) = delete;
  TlsSessionStore &operator=(const TlsSessionStore &) = delete;

  // Takes ownership of `session`, replacing the one stored before.
  void store(SSL_SESSION *session);

  // Returns the stored session, owned by the store, or null.
  SSL_SESSION *get() const { return session_; }

private:
  SSL_SESSION *session_ = nullptr;
};

// Client contexts, one per extra CA file, created on first use and kept
// for the life of the cache. Each trusts the system store plus the CA file
// and verifies the peer. It requires TLS 1.2 or later, offers "h2" then
// "http/1.1" by ALPN, and hands new sessions to `TlsSessionStore`.
class TlsContextCache {
public:
  TlsContextCache() = default;
  ~TlsContextCache();
  TlsContextCache(const TlsContextCache &) = delete;
  TlsContextCache &operator=(const TlsContextCache &) = delete;

  // Returns the context for `ca_file` (empty: the system store alone),
  // owned by the cache. Fails with `ErrorCode::Invalid` when the CA file
  // cannot be loaded and `ErrorCode::Internal` when OpenSSL fails.
  [[nodiscard]] Result<SSL_CTX *> get(const std::string &ca_file);

private:
  std::map<std::string, SSL_CTX *> contexts_;
};

// Prepares `ssl` for a handshake with `host`: SNI and host name
// verification for a name, IP address verification for an IP literal (RFC
// 6066 section 3 forbids literals in SNI). Resumes the session in `store`
// if there is one, and routes new sessions to `store`, which must outlive
// `ssl`.
[[nodiscard]] Result<void> prepare_client_ssl(SSL *ssl, const std::string &host,
                                              bool ip_literal,
                                              TlsSessionStore *store);

// Returns the queued OpenSSL errors of this thread as one line and clears
// the queue; "unknown error" when it is empty.
std::string take_ssl_errors();

} // namespace gatecache::upstream
