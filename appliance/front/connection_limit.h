// Cap on the open client connections of every listener of one loop.
//
// When the count of open connections, those still in the TLS handshake
// included, reaches the cap, each listener stops its accept watcher. New
// connections then wait in the kernel's listen backlog, which costs no
// descriptor and no TLS or HTTP/2 state in the process. Accepting resumes
// as soon as one connection closes.
//
// Threading: the loop thread of the listeners only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include <ev.h>

namespace gatecache::front {

class Listener;

class ConnectionLimit {
public:
  // `max_connections` must be at least 1.
  ConnectionLimit(struct ev_loop *loop, size_t max_connections);
  // Every listener that uses the limit must be destroyed first.
  ~ConnectionLimit();
  ConnectionLimit(const ConnectionLimit &) = delete;
  ConnectionLimit &operator=(const ConnectionLimit &) = delete;

  size_t max_connections() const { return max_connections_; }

  size_t open_connections() const { return open_connections_; }

  bool reached() const { return open_connections_ >= max_connections_; }

  // Times the open connections reached the cap since the limit was made.
  uint64_t times_reached() const { return times_reached_; }

private:
  friend class Listener;

  // For listeners: registration, and the count of their connections.
  void add_listener(Listener *listener);
  void remove_listener(Listener *listener);
  void connection_opened();
  void connections_closed(size_t count);

  void warn_reached();

  struct ev_loop *loop_;
  size_t max_connections_;
  size_t open_connections_ = 0;
  uint64_t times_reached_ = 0;
  std::vector<Listener *> listeners_;
  // Rate limit of the "cap reached" warning: the loop time of the last
  // one, and the times the cap was reached since.
  double warned_at_ = -1e9;
  uint64_t reached_since_warning_ = 0;
};

} // namespace gatecache::front
