// Name resolution with c-ares on a libev loop.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <ares.h>
#include <ev.h>
#include <sys/socket.h>

#include "common/error.h"

namespace gatecache::upstream {

// A socket address with its port set.
struct Address {
  sockaddr_storage storage{};
  socklen_t length = 0;

  int family() const { return storage.ss_family; }

  // Returns "192.0.2.1:443" or "[2001:db8::1]:443".
  std::string str() const;
};

using AddressList = std::vector<Address>;

class Resolver {
public:
  using Callback = std::function<void(Result<AddressList>)>;

  // Answers are cached for their DNS TTL, but never longer than this.
  static constexpr double MaxCacheTtlS = 300;
  // Bound on cached host names; a full cache is emptied.
  static constexpr size_t MaxCacheEntries = 1024;

  explicit Resolver(struct ev_loop *loop);
  ~Resolver();
  Resolver(const Resolver &) = delete;
  Resolver &operator=(const Resolver &) = delete;

  // Looks up the A and AAAA records of `host` and returns the addresses
  // with `port`, in the order c-ares sorts them. IP literals are returned
  // without a lookup. `callback` runs on a later loop iteration, never
  // inside this call, unless `cancel()` comes first. Fails with
  // `ErrorCode::Unreachable` when the lookup fails or finds nothing.
  uint64_t resolve(const std::string &host, uint16_t port, Callback callback);

  // Drops the callback of lookup `id`. The lookup itself may go on.
  void cancel(uint64_t id);

private:
  struct Query;

  struct CacheEntry {
    AddressList addresses; // Ports left at 0.
    double expires_at = 0;
  };

  static void on_sock_state(void *data, ares_socket_t fd, int readable,
                            int writable) noexcept;
  static void on_addrinfo(void *arg, int status, int timeouts,
                          struct ares_addrinfo *result) noexcept;
  static void on_socket_ready(struct ev_loop *loop, ev_io *watcher,
                              int revents) noexcept;
  static void on_timeout(struct ev_loop *loop, ev_timer *watcher,
                         int revents) noexcept;
  static void on_deliver(struct ev_loop *loop, ev_timer *watcher,
                         int revents) noexcept;

  Result<void> init_channel();
  void update_socket(ares_socket_t fd, bool readable, bool writable);
  void handle_addrinfo(Query &query, int status, struct ares_addrinfo *result);
  void update_timer();
  void complete(uint64_t id, Result<AddressList> result);
  void deliver();

  struct ev_loop *loop_;
  ares_channel channel_ = nullptr;
  bool destroying_ = false;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, Callback> callbacks_;
  std::map<int, std::unique_ptr<ev_io>> sockets_;
  std::unordered_map<std::string, CacheEntry> cache_;
  std::vector<std::pair<uint64_t, Result<AddressList>>> ready_;
  ev_timer timeout_timer_;
  ev_timer deliver_timer_;
};

} // namespace gatecache::upstream
