// TLS connections over TCP on 127.0.0.1 for the tls unit tests. Both ends
// live in the test's thread: the sockets are non-blocking, and each side
// steps in turn, waiting in poll(2) only for bytes from the other side.
#pragma once

#include <filesystem>
#include <functional>
#include <string>

#include <openssl/ssl.h>

#include "tls/openssl_ptr.h"

namespace gatecache::tls::testing {

// Upper bound on one wait for the other side, so that a broken test fails
// instead of hanging. No test measures time.
inline constexpr int PollTimeoutMs = 10000;

// A client context that trusts the PEM certificates in `ca_file` and,
// when `cert_file` is not empty, presents that certificate and
// `key_file`. Fails the test on error. The caller frees it.
SSL_CTX *make_test_client_context(const std::filesystem::path &ca_file,
                                  const std::filesystem::path &cert_file = {},
                                  const std::filesystem::path &key_file = {});

// One end of a loopback connection during the handshake.
struct HandshakeSide {
  bool done = false;
  bool failed = false;
  int reason = 0; // OpenSSL reason code of the failure.
};

class LoopbackConnection {
public:
  // Connects a client SSL from `client_context` to a server SSL from
  // `server_context` over a new TCP connection on 127.0.0.1.
  // `configure_client` runs on the client SSL before the handshake; by
  // default it expects the server name "localhost".
  LoopbackConnection(SSL_CTX *server_context, SSL_CTX *client_context,
                     std::function<void(SSL *)> configure_client = {});
  ~LoopbackConnection();
  LoopbackConnection(const LoopbackConnection &) = delete;
  LoopbackConnection &operator=(const LoopbackConnection &) = delete;

  // Runs the handshake until both ends finish or one fails. Returns true
  // when both finished. With TLS 1.3 the client finishes before the server
  // checks the client certificate, so a rejected client shows in `server`.
  bool handshake();

  // Sends `message` from the client, echoes it from the server and reads
  // it back. Returns true when the client read `message` back.
  bool round_trip(const std::string &message);

  // Serial number (upper-case hex) of the certificate the server sent.
  std::string server_serial() const;

  SSL *client_ssl() const { return client_.get(); }

  SSL *server_ssl() const { return server_.get(); }

  HandshakeSide client;
  HandshakeSide server;

private:
  bool read_exactly(SSL *ssl, int fd, size_t size, std::string &out);

  int client_fd_ = -1;
  int server_fd_ = -1;
  SslPtr client_;
  SslPtr server_;
};

} // namespace gatecache::tls::testing
