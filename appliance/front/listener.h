// TLS listener of the HTTP front: accepts connections on one address and
// serves HTTP/2 or HTTP/1.1 on each, chosen by ALPN.
//
// Threading: a listener and its connections belong to the thread running
// its libev loop. Every method, and every call into the `RequestHandler`,
// happens on that thread. The socket has no SO_REUSEPORT, so an address
// has one listener, and a second daemon cannot bind it. A server with
// several loops would share one listening socket between them. With
// SO_REUSEPORT instead, Linux lets any socket of the same user join, so
// the server would also need another guard against a second daemon.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>

#include <ev.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include "appliance/front/connection_limit.h"
#include "appliance/front/front_config.h"
#include "appliance/front/write_buffer.h"
#include "common/error.h"

namespace gatecache::front {

class Connection;
class RequestHandler;

// Size of the buffer that `SSL_read` fills. One per listener is enough,
// because sessions consume what is read before the next read.
inline constexpr size_t ReadBufferBytes = 64 * 1024;

// Returns the SSL_CTX for the next accepted connection, or null to reject
// it. Called once per accept, so a renewed certificate takes effect for new
// connections while older ones keep the context they started with
// (`SSL_new()` holds a reference).
using SslCtxProvider = std::function<SSL_CTX *()>;

// Installs the ALPN selection of the front on `ctx`: `h2` when the client
// offers it, else `http/1.1`, else no ALPN (then HTTP/1.1 is served). Call
// it once per context before a provider returns it: OpenSSL contexts are
// shared between threads, so listeners never change them.
void enable_alpn(SSL_CTX *ctx);

class Listener {
public:
  // Binds `host` (an IPv4 or IPv6 literal, brackets allowed) and `port` (0
  // for any free port) with SO_REUSEADDR, IPv6 sockets with IPV6_V6ONLY,
  // and starts accepting on `loop`. Without SO_REUSEPORT, an address that
  // another socket listens on fails with `Io` ("bind: Address already in
  // use"). `handler` must
  // outlive the listener. The listener counts its connections against
  // `limit`, which every listener of one loop shares and which must
  // outlive them. Without one, the listener makes its own limit of
  // `config.max_connections`. `Invalid` for a bad address, `Io` when a
  // socket call fails (the message names the call and the address).
  [[nodiscard]] static Result<std::unique_ptr<Listener>>
  open(struct ev_loop *loop, const std::string &host, uint16_t port,
       SslCtxProvider ssl_ctx, RequestHandler *handler,
       const FrontConfig &config, ConnectionLimit *limit = nullptr);

  // Closes the socket and every connection at once, aborting requests in
  // flight. Do not destroy a listener from inside its own `RequestHandler`
  // call; use `shutdown()` and destroy it in the `on_done` callback.
  ~Listener();
  Listener(const Listener &) = delete;
  Listener &operator=(const Listener &) = delete;

  // Port the socket is bound to.
  uint16_t port() const { return port_; }

  // Stops accepting new connections and closes the listening socket.
  // Connections already open keep running.
  void stop_accepting();

  // Stops gracefully: stops accepting, sends GOAWAY on HTTP/2 connections,
  // closes idle HTTP/1.1 connections and lets requests in flight finish.
  // Calls `on_done` from the loop, never from inside this call, once no
  // connection remains, or after `graceful_timeout_s` when the remaining
  // connections were closed by force. The listener may be destroyed from
  // `on_done`.
  void shutdown(std::function<void()> on_done);

  // Open connections of this listener, including those still in the TLS
  // handshake.
  size_t connection_count() const { return connections_.size(); }

  // The limit this listener counts its connections against.
  const ConnectionLimit &connection_limit() const { return *limit_; }

private:
  friend class Connection;
  friend class ConnectionLimit;

  Listener(struct ev_loop *loop, int fd, uint16_t port, SslCtxProvider ssl_ctx,
           RequestHandler *handler, const FrontConfig &config,
           ConnectionLimit *limit);

  static void on_accept_ready(struct ev_loop *loop, ev_io *watcher,
                              int events) noexcept;
  static void on_accept_retry(struct ev_loop *loop, ev_timer *watcher,
                              int events) noexcept;
  static void on_shutdown_timer(struct ev_loop *loop, ev_timer *watcher,
                                int events) noexcept;

  void accept_connections();
  void pause_accepting(int error);
  void add_connection(int fd, const sockaddr_storage &address);
  void close_all_connections();
  void finish_shutdown();

  // For the limit: stop accepting while the cap is reached, and start
  // again unless the socket is closed or an accept failure pauses it.
  void pause_for_limit();
  void resume_after_limit();

  // For connections: resources shared by every connection of this
  // listener, and the call that destroys a finished connection.
  struct ev_loop *loop() const {
    return loop_;
  }

  const FrontConfig &config() const { return config_; }

  RequestHandler &handler() const { return *handler_; }

  BufferPool &buffers() { return buffers_; }

  uint8_t *read_buffer() { return read_buffer_.get(); }

  void release(Connection *connection);

  struct ev_loop *loop_;
  int fd_;
  uint16_t port_;
  SslCtxProvider ssl_ctx_;
  RequestHandler *handler_;
  FrontConfig config_;
  // Set when `open()` got no shared limit.
  std::unique_ptr<ConnectionLimit> own_limit_;
  ConnectionLimit *limit_;
  ev_io accept_watcher_;
  ev_timer accept_retry_;
  ev_timer shutdown_timer_;
  BufferPool buffers_;
  std::unique_ptr<uint8_t[]> read_buffer_;
  std::list<std::unique_ptr<Connection>> connections_;
  std::function<void()> on_shutdown_done_;
  bool shutting_down_ = false;
  // Rate limit of the "accept failed" warning: the loop time of the last
  // one, and the failures since.
  double accept_warned_at_ = -1e9;
  uint64_t accept_failures_ = 0;
};

} // namespace gatecache::front
