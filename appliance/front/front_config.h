// Limits and timeouts of the client-facing HTTP listeners.
#pragma once

#include <cstddef>
#include <cstdint>

namespace gatecache::front {

struct FrontConfig {
  // Open client connections, those in the TLS handshake included, at which
  // the listeners of a loop stop accepting until one closes. Each
  // connection uses a descriptor and keeps its OpenSSL and nghttp2 state. The
  // default keeps client sockets well inside the systemd unit's
  // LimitNOFILE=65536 and leaves the rest for blob files, upstream
  // connections and LMDB.
  size_t max_connections = 10000;
  // A TLS handshake must finish within this many seconds of the accept.
  double handshake_timeout_s = 10;
  // A connection with no request in flight closes after this many seconds
  // without I/O. The same limit ends a response whose client stopped
  // reading. Time spent waiting for the request handler never counts.
  double idle_timeout_s = 120;
  // An HTTP/1.1 request head must arrive completely within this many
  // seconds of its first byte.
  double header_timeout_s = 30;
  // Maximum bytes of one request head: the request line or pseudo-headers
  // plus every header name and value. Larger requests get 431.
  size_t max_header_bytes = 64 * 1024;
  // HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS sent to clients.
  uint32_t max_concurrent_streams = 256;
  // `Listener::shutdown()` force-closes the connections that remain after
  // this many seconds.
  double graceful_timeout_s = 30;
};

} // namespace gatecache::front
