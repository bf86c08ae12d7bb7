// A small HTTP/2 server over TLS on 127.0.0.1 that misbehaves on request,
// for the client paths docker-registry never takes: stream resets, short
// bodies and a limit of concurrent streams.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include <openssl/ssl.h>

#include "test_support.h"

namespace gatecache::upstream::testing {

// Serves each connection on a thread of its own. Each response waits
// 50 ms, so requests that the client sends together overlap on the
// server. Paths:
//  - /reset: 200 with Content-Length 1000, 10 body bytes, then RST_STREAM.
//  - /short: 200 with Content-Length 1000 and 10 body bytes, then the end
//    of the stream.
//  - anything else: 200 with the body "ok".
class H2TestServer {
public:
  H2TestServer(const TestPki &pki, uint32_t max_concurrent_streams);
  ~H2TestServer();
  H2TestServer(const H2TestServer &) = delete;
  H2TestServer &operator=(const H2TestServer &) = delete;

  bool ready() const { return port_ != 0; }

  uint16_t port() const { return port_; }

  // Connections accepted so far.
  int connections() const { return connections_.load(); }

  // Highest number of streams open at once on one connection.
  int max_open_streams() const { return max_open_streams_.load(); }

private:
  void run();
  void serve(int fd);

  friend struct H2TestConnection;

  SSL_CTX *context_ = nullptr;
  int listener_ = -1;
  uint16_t port_ = 0;
  uint32_t max_concurrent_streams_;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  std::atomic<int> max_open_streams_{0};
  std::thread thread_;
  std::vector<std::thread> workers_;
};

} // namespace gatecache::upstream::testing
