#include "appliance/upstream/resolver.h"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <optional>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "common/log.h"

namespace gatecache::upstream {

struct Resolver::Query {
  Resolver *resolver;
  uint64_t id;
  std::string host;
  uint16_t port;
};

namespace {

std::once_flag ares_init_once;
int ares_init_status = ARES_SUCCESS;

void set_port(Address &address, uint16_t port) {
  if (address.family() == AF_INET) {
    reinterpret_cast<sockaddr_in &>(address.storage).sin_port = htons(port);
  } else if (address.family() == AF_INET6) {
    reinterpret_cast<sockaddr_in6 &>(address.storage).sin6_port = htons(port);
  }
}

std::optional<Address> parse_ip_literal(const std::string &host) {
  Address address;
  auto &v4 = reinterpret_cast<sockaddr_in &>(address.storage);
  if (inet_pton(AF_INET, host.c_str(), &v4.sin_addr) == 1) {
    v4.sin_family = AF_INET;
    address.length = sizeof(sockaddr_in);
    return address;
  }
  auto &v6 = reinterpret_cast<sockaddr_in6 &>(address.storage);
  if (inet_pton(AF_INET6, host.c_str(), &v6.sin6_addr) == 1) {
    v6.sin6_family = AF_INET6;
    address.length = sizeof(sockaddr_in6);
    return address;
  }
  return std::nullopt;
}

AddressList with_port(AddressList addresses, uint16_t port) {
  for (Address &address : addresses) {
    set_port(address, port);
  }
  return addresses;
}

} // namespace

std::string Address::str() const {
  char text[INET6_ADDRSTRLEN] = {};
  if (family() == AF_INET) {
    const auto &v4 = reinterpret_cast<const sockaddr_in &>(storage);
    inet_ntop(AF_INET, &v4.sin_addr, text, sizeof(text));
    return std::string(text) + ":" + std::to_string(ntohs(v4.sin_port));
  }
  if (family() == AF_INET6) {
    const auto &v6 = reinterpret_cast<const sockaddr_in6 &>(storage);
    inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof(text));
    return "[" + std::string(text) + "]:" + std::to_string(ntohs(v6.sin6_port));
  }
  return "(unknown address family)";
}

Resolver::Resolver(struct ev_loop *loop) : loop_(loop) {
  ev_timer_init(&timeout_timer_, on_timeout, 0, 0);
  timeout_timer_.data = this;
  ev_timer_init(&deliver_timer_, on_deliver, 0, 0);
  deliver_timer_.data = this;
}

Resolver::~Resolver() {
  destroying_ = true;
  callbacks_.clear();
  if (channel_ != nullptr) {
    // Runs every pending `on_addrinfo` with ARES_EDESTRUCTION, which only
    // frees the queries because `destroying_` is set.
    ares_destroy(channel_);
  }
  for (auto &[fd, watcher] : sockets_) {
    ev_io_stop(loop_, watcher.get());
  }
  ev_timer_stop(loop_, &timeout_timer_);
  ev_timer_stop(loop_, &deliver_timer_);
}

Result<void> Resolver::init_channel() {
  std::call_once(ares_init_once, [] {
    ares_init_status = ares_library_init(ARES_LIB_INIT_ALL);
  });
  if (ares_init_status != ARES_SUCCESS) {
    return fail(ErrorCode::Internal, std::string("ares_library_init: ") +
                                         ares_strerror(ares_init_status));
  }
  ares_options options{};
  options.sock_state_cb = on_sock_state;
  options.sock_state_cb_data = this;
  int status = ares_init_options(&channel_, &options, ARES_OPT_SOCK_STATE_CB);
  if (status != ARES_SUCCESS) {
    channel_ = nullptr;
    return fail(ErrorCode::Internal,
                std::string("ares_init_options: ") + ares_strerror(status));
  }
  return {};
}

uint64_t Resolver::resolve(const std::string &host, uint16_t port,
                           Callback callback) {
  uint64_t id = next_id_++;
  callbacks_.emplace(id, std::move(callback));
  if (std::optional<Address> literal = parse_ip_literal(host)) {
    complete(id, with_port({*literal}, port));
    return id;
  }
  auto cached = cache_.find(host);
  if (cached != cache_.end()) {
    if (cached->second.expires_at > ev_now(loop_)) {
      complete(id, with_port(cached->second.addresses, port));
      return id;
    }
    cache_.erase(cached);
  }
  if (channel_ == nullptr) {
    if (auto init = init_channel(); !init) {
      complete(id, tl::unexpected(init.error()));
      return id;
    }
  }
  ares_addrinfo_hints hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  auto *query = new Query{this, id, host, port};
  ares_getaddrinfo(channel_, host.c_str(), nullptr, &hints, on_addrinfo, query);
  update_timer();
  return id;
}

void Resolver::cancel(uint64_t id) { callbacks_.erase(id); }

void Resolver::on_sock_state(void *data, ares_socket_t fd, int readable,
                             int writable) noexcept {
  static_cast<Resolver *>(data)->update_socket(fd, readable != 0,
                                               writable != 0);
}

void Resolver::update_socket(ares_socket_t fd, bool readable, bool writable) {
  auto it = sockets_.find(fd);
  if (!readable && !writable) {
    if (it != sockets_.end()) {
      ev_io_stop(loop_, it->second.get());
      sockets_.erase(it);
    }
    return;
  }
  if (destroying_) {
    return;
  }
  int events = (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0);
  if (it == sockets_.end()) {
    it = sockets_.emplace(fd, std::make_unique<ev_io>()).first;
    ev_io_init(it->second.get(), on_socket_ready, fd, events);
    it->second->data = this;
  } else {
    ev_io_stop(loop_, it->second.get());
    ev_io_set(it->second.get(), fd, events);
  }
  ev_io_start(loop_, it->second.get());
}

void Resolver::on_socket_ready(struct ev_loop *, ev_io *watcher,
                               int revents) noexcept {
  auto *self = static_cast<Resolver *>(watcher->data);
  int fd = watcher->fd;
  ares_process_fd(self->channel_, (revents & EV_READ) ? fd : ARES_SOCKET_BAD,
                  (revents & EV_WRITE) ? fd : ARES_SOCKET_BAD);
  self->update_timer();
}

void Resolver::on_timeout(struct ev_loop *, ev_timer *watcher, int) noexcept {
  auto *self = static_cast<Resolver *>(watcher->data);
  ares_process_fd(self->channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
  self->update_timer();
}

void Resolver::update_timer() {
  ev_timer_stop(loop_, &timeout_timer_);
  if (channel_ == nullptr || destroying_) {
    return;
  }
  timeval buffer{};
  timeval *next = ares_timeout(channel_, nullptr, &buffer);
  if (next == nullptr) {
    return;
  }
  double delay = static_cast<double>(next->tv_sec) +
                 static_cast<double>(next->tv_usec) / 1e6;
  ev_timer_set(&timeout_timer_, delay, 0);
  ev_timer_start(loop_, &timeout_timer_);
}

void Resolver::on_addrinfo(void *arg, int status, int,
                           struct ares_addrinfo *result) noexcept {
  std::unique_ptr<Query> query(static_cast<Query *>(arg));
  if (!query->resolver->destroying_) {
    query->resolver->handle_addrinfo(*query, status, result);
  }
  if (result != nullptr) {
    ares_freeaddrinfo(result);
  }
}

void Resolver::handle_addrinfo(Query &query, int status,
                               struct ares_addrinfo *result) {
  if (status != ARES_SUCCESS || result == nullptr) {
    complete(query.id, fail(ErrorCode::Unreachable,
                            "DNS lookup of " + query.host +
                                " failed: " + ares_strerror(status)));
    return;
  }
  AddressList addresses;
  int ttl_s = static_cast<int>(MaxCacheTtlS);
  for (auto *node = result->nodes; node != nullptr; node = node->ai_next) {
    if ((node->ai_family != AF_INET && node->ai_family != AF_INET6) ||
        node->ai_addrlen > sizeof(sockaddr_storage)) {
      continue;
    }
    Address address;
    std::memcpy(&address.storage, node->ai_addr, node->ai_addrlen);
    address.length = node->ai_addrlen;
    addresses.push_back(address);
    ttl_s = std::min(ttl_s, node->ai_ttl);
  }
  if (addresses.empty()) {
    complete(query.id, fail(ErrorCode::Unreachable,
                            "DNS lookup of " + query.host +
                                " returned no IPv4 or IPv6 address"));
    return;
  }
  // Results with a TTL of 0 are not cached.
  if (ttl_s > 0) {
    if (cache_.size() >= MaxCacheEntries) {
      cache_.clear();
    }
    cache_[query.host] = CacheEntry{addresses, ev_now(loop_) + ttl_s};
  }
  complete(query.id, with_port(std::move(addresses), query.port));
}

void Resolver::complete(uint64_t id, Result<AddressList> result) {
  ready_.emplace_back(id, std::move(result));
  if (!ev_is_active(&deliver_timer_)) {
    ev_timer_set(&deliver_timer_, 0, 0);
    ev_timer_start(loop_, &deliver_timer_);
  }
}

void Resolver::on_deliver(struct ev_loop *, ev_timer *watcher, int) noexcept {
  static_cast<Resolver *>(watcher->data)->deliver();
}

void Resolver::deliver() {
  auto ready = std::move(ready_);
  ready_.clear();
  for (auto &[id, result] : ready) {
    auto it = callbacks_.find(id);
    if (it == callbacks_.end()) {
      continue;
    }
    Callback callback = std::move(it->second);
    callbacks_.erase(it);
    callback(std::move(result));
  }
}

} // namespace gatecache::upstream
