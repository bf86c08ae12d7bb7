#include "appliance/upstream/connection_pool.h"

#include <algorithm>

#include "appliance/upstream/exchange.h"
#include "common/log.h"

namespace gatecache::upstream {

ConnectionPool::ConnectionPool(ClientContext &context, std::string host,
                               uint16_t port, std::string ca_file)
    : context_(context), host_(std::move(host)), port_(port),
      ca_file_(std::move(ca_file)) {}

ConnectionPool::~ConnectionPool() {
  // Connections refer to `tls_sessions_`, so they go first.
  connections_.clear();
}

void ConnectionPool::submit(Exchange *exchange) {
  exchange->set_queued(this);
  queue_.push_back(exchange);
  schedule_dispatch();
}

void ConnectionPool::requeue(Exchange *exchange) {
  exchange->set_queued(this);
  queue_.push_front(exchange);
  schedule_dispatch();
}

void ConnectionPool::remove(Exchange *exchange) {
  auto it = std::find(queue_.begin(), queue_.end(), exchange);
  if (it != queue_.end()) {
    queue_.erase(it);
  }
}

void ConnectionPool::schedule_dispatch() {
  if (dispatch_scheduled_) {
    return;
  }
  dispatch_scheduled_ = true;
  context_.tasks.post([this] {
    dispatch_scheduled_ = false;
    dispatch();
  });
}

Connection *ConnectionPool::find_available() const {
  for (const auto &connection : connections_) {
    if (connection->capacity() > 0) {
      return connection.get();
    }
  }
  return nullptr;
}

void ConnectionPool::dispatch() {
  while (!queue_.empty()) {
    Connection *connection = find_available();
    if (connection == nullptr) {
      break;
    }
    Exchange *exchange = queue_.front();
    queue_.pop_front();
    // A refusal leaves the connection with no capacity, so the loop moves
    // on to another one.
    if (!connection->submit(exchange)) {
      queue_.push_front(exchange);
    }
  }
  if (queue_.empty()) {
    return;
  }
  size_t connecting = static_cast<size_t>(std::count_if(
      connections_.begin(), connections_.end(), [](const auto &connection) {
        return connection->state() != Connection::State::Ready;
      }));
  size_t wanted = 0;
  if (protocol_ == Protocol::Http1) {
    wanted = queue_.size() > connecting ? queue_.size() - connecting : 0;
  } else if (connecting == 0) {
    // Until ALPN has selected the protocol, one connection is enough
    // because HTTP/2 can carry the whole queue. With HTTP/2, exchanges
    // beyond SETTINGS_MAX_CONCURRENT_STREAMS wait for a stream of a live
    // connection, and a new connection opens only when none is live.
    bool any_usable =
        protocol_ == Protocol::Http2 &&
        std::any_of(connections_.begin(), connections_.end(),
                    [](const auto &item) { return item->usable(); });
    wanted = any_usable ? 0 : 1;
  }
  size_t room = MaxConnections > connections_.size()
                    ? MaxConnections - connections_.size()
                    : 0;
  for (size_t i = 0; i < std::min(wanted, room); ++i) {
    open_connection();
  }
  // TODO: bound the time an exchange may wait in the queue when every
  // connection is busy; today only the caller's cancel() ends that wait.
}

void ConnectionPool::open_connection() {
  auto tls = context_.tls.get(ca_file_);
  if (!tls) {
    fail_queue(tls.error());
    return;
  }
  auto connection = std::make_unique<Connection>(context_, *this, *tls, host_,
                                                 port_, &tls_sessions_);
  Connection &started = *connection;
  connections_.push_back(std::move(connection));
  started.start();
}

void ConnectionPool::on_connection_ready(Connection &connection) {
  protocol_ = connection.is_http2() ? Protocol::Http2 : Protocol::Http1;
  schedule_dispatch();
}

void ConnectionPool::on_connection_closed(Connection &connection,
                                          bool was_ready,
                                          const std::optional<Error> &error) {
  auto it = std::find_if(
      connections_.begin(), connections_.end(),
      [&connection](const auto &item) { return item.get() == &connection; });
  if (it != connections_.end()) {
    context_.tasks.retire(std::move(*it));
    connections_.erase(it);
  }
  if (!was_ready && error) {
    bool others_connecting = std::any_of(
        connections_.begin(), connections_.end(), [](const auto &item) {
          return item->state() != Connection::State::Ready;
        });
    // Without a connection on the way, the queue would wait for nothing:
    // fail it with the reason, so a dead upstream fails fast instead of
    // triggering a storm of new connection attempts.
    if (!others_connecting) {
      fail_queue(*error);
    }
  }
  schedule_dispatch();
}

void ConnectionPool::fail_queue(const Error &error) {
  auto queue = std::move(queue_);
  queue_.clear();
  for (Exchange *exchange : queue) {
    // A handler called for an earlier exchange may have aborted this one.
    if (exchange->done()) {
      continue;
    }
    exchange->finish(
        Error{error.code, exchange->describe() + ": " + error.message});
  }
}

} // namespace gatecache::upstream
