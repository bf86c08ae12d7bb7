// The connections to one origin and the exchanges waiting for them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "appliance/upstream/connection.h"
#include "appliance/upstream/context.h"
#include "appliance/upstream/tls_context.h"
#include "common/error.h"

namespace gatecache::upstream {

class Exchange;

// Sends exchanges for one (host, port, CA file) over up to
// `MaxConnections` connections. While the protocol is unknown, one
// connection is opened and the queue waits for its ALPN result. HTTP/2
// then carries every exchange on one live connection, and exchanges beyond
// the server's SETTINGS_MAX_CONCURRENT_STREAMS wait in the queue. HTTP/1.1
// takes one connection per exchange in flight.
class ConnectionPool {
public:
  static constexpr size_t MaxConnections = 8;

  ConnectionPool(ClientContext &context, std::string host, uint16_t port,
                 std::string ca_file);
  ~ConnectionPool();
  ConnectionPool(const ConnectionPool &) = delete;
  ConnectionPool &operator=(const ConnectionPool &) = delete;

  // Queues `exchange`; it is sent on a later loop iteration.
  void submit(Exchange *exchange);
  // Queues `exchange` ahead of the others, for a retry.
  void requeue(Exchange *exchange);
  // Drops a queued `exchange` that was aborted.
  void remove(Exchange *exchange);
  // Runs `dispatch()` on a later loop iteration.
  void schedule_dispatch();

  // Connection side.
  void on_connection_ready(Connection &connection);
  void on_connection_closed(Connection &connection, bool was_ready,
                            const std::optional<Error> &error);

  size_t connection_count() const { return connections_.size(); }

private:
  enum class Protocol { Unknown, Http1, Http2 };

  void dispatch();
  Connection *find_available() const;
  void open_connection();
  void fail_queue(const Error &error);

  ClientContext &context_;
  std::string host_;
  uint16_t port_;
  std::string ca_file_;
  Protocol protocol_ = Protocol::Unknown;
  TlsSessionStore tls_sessions_;
  std::vector<std::unique_ptr<Connection>> connections_;
  std::deque<Exchange *> queue_;
  bool dispatch_scheduled_ = false;
};

} // namespace gatecache::upstream
