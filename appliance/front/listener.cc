#include "appliance/front/listener.h"

#include <atomic>
#include <cerrno>
#include <cstring>
#include <utility>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "appliance/front/connection.h"
#include "appliance/front/socket_bio.h"
#include "common/log.h"

namespace gatecache::front {

namespace {

// Connection ids are unique in the process, across loops and listeners.
std::atomic<uint64_t> next_connection_id{1};

// Accepts per readable event, so that a burst of connections does not keep
// the loop from serving the ones already open.
constexpr int MaxAcceptsPerEvent = 128;
// After EMFILE or a similar failure, accepting pauses this long so that
// closing connections can free descriptors.
constexpr double AcceptRetryDelayS = 0.5;
// The "accept failed" warning is logged at most once per this period.
constexpr double AcceptWarnPeriodS = 10;
constexpr int ListenBacklog = 4096;

int on_alpn_select(SSL *, const unsigned char **out, unsigned char *out_size,
                   const unsigned char *in, unsigned int in_size,
                   void *) noexcept {
  // `in` is the client's list in wire format: length-prefixed names.
  const unsigned char *http1 = nullptr;
  for (unsigned int i = 0; i < in_size;) {
    unsigned int size = in[i];
    if (i + 1 + size > in_size) {
      break;
    }
    const unsigned char *name = in + i + 1;
    if (size == 2 && std::memcmp(name, "h2", 2) == 0) {
      *out = name;
      *out_size = static_cast<unsigned char>(size);
      return SSL_TLSEXT_ERR_OK;
    }
    if (size == 8 && std::memcmp(name, "http/1.1", 8) == 0) {
      http1 = name;
    }
    i += 1 + size;
  }
  if (http1 != nullptr) {
    *out = http1;
    *out_size = 8;
    return SSL_TLSEXT_ERR_OK;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

std::string format_peer(const sockaddr_storage &address) {
  char text[INET6_ADDRSTRLEN] = {};
  if (address.ss_family == AF_INET6) {
    const auto &v6 = reinterpret_cast<const sockaddr_in6 &>(address);
    inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof(text));
    return "[" + std::string(text) + "]:" + std::to_string(ntohs(v6.sin6_port));
  }
  const auto &v4 = reinterpret_cast<const sockaddr_in &>(address);
  inet_ntop(AF_INET, &v4.sin_addr, text, sizeof(text));
  return std::string(text) + ":" + std::to_string(ntohs(v4.sin_port));
}

} // namespace

void enable_alpn(SSL_CTX *ctx) {
  SSL_CTX_set_alpn_select_cb(ctx, on_alpn_select, nullptr);
}

Result<std::unique_ptr<Listener>>
Listener::open(struct ev_loop *loop, const std::string &host, uint16_t port,
               SslCtxProvider ssl_ctx, RequestHandler *handler,
               const FrontConfig &config, ConnectionLimit *limit) {
  std::string literal = host;
  if (literal.size() >= 2 && literal.front() == '[' && literal.back() == ']') {
    literal = literal.substr(1, literal.size() - 2);
  }
  std::string where =
      (literal.find(':') != std::string::npos ? "[" + literal + "]" : literal) +
      ":" + std::to_string(port);

  sockaddr_storage address = {};
  socklen_t address_size = 0;
  auto &v4 = reinterpret_cast<sockaddr_in &>(address);
  auto &v6 = reinterpret_cast<sockaddr_in6 &>(address);
  if (inet_pton(AF_INET, literal.c_str(), &v4.sin_addr) == 1) {
    v4.sin_family = AF_INET;
    v4.sin_port = htons(port);
    address_size = sizeof(v4);
  } else if (inet_pton(AF_INET6, literal.c_str(), &v6.sin6_addr) == 1) {
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(port);
    address_size = sizeof(v6);
  } else {
    return fail(ErrorCode::Invalid, "invalid listen address '" + host +
                                        "': expected an IPv4 or IPv6 literal");
  }

  int fd = ::socket(address.ss_family,
                    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return fail(ErrorCode::Io, errno_message("socket", errno) + " on " + where);
  }
  int one = 1;
  // SO_REUSEADDR only lets a restarted daemon bind while connections of the
  // previous one are in TIME_WAIT. There is no SO_REUSEPORT, so a second
  // daemon on the same address fails with EADDRINUSE instead of sharing
  // the port with this one.
  bool ok =
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
      (address.ss_family != AF_INET6 ||
       ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) == 0);
  if (!ok) {
    int error = errno;
    ::close(fd);
    return fail(ErrorCode::Io,
                errno_message("setsockopt", error) + " on " + where);
  }
  if (::bind(fd, reinterpret_cast<sockaddr *>(&address), address_size) != 0) {
    int error = errno;
    ::close(fd);
    return fail(ErrorCode::Io, errno_message("bind", error) + " on " + where);
  }
  if (::listen(fd, ListenBacklog) != 0) {
    int error = errno;
    ::close(fd);
    return fail(ErrorCode::Io, errno_message("listen", error) + " on " + where);
  }
  sockaddr_storage bound = {};
  socklen_t bound_size = sizeof(bound);
  if (::getsockname(fd, reinterpret_cast<sockaddr *>(&bound), &bound_size) !=
      0) {
    int error = errno;
    ::close(fd);
    return fail(ErrorCode::Io,
                errno_message("getsockname", error) + " on " + where);
  }
  uint16_t bound_port =
      bound.ss_family == AF_INET6
          ? ntohs(reinterpret_cast<sockaddr_in6 &>(bound).sin6_port)
          : ntohs(reinterpret_cast<sockaddr_in &>(bound).sin_port);

  GC_LOG(Front, info, "listening on {}",
         where.substr(0, where.rfind(':')) + ":" + std::to_string(bound_port));
  return std::unique_ptr<Listener>(new Listener(
      loop, fd, bound_port, std::move(ssl_ctx), handler, config, limit));
}

Listener::Listener(struct ev_loop *loop, int fd, uint16_t port,
                   SslCtxProvider ssl_ctx, RequestHandler *handler,
                   const FrontConfig &config, ConnectionLimit *limit)
    : loop_(loop), fd_(fd), port_(port), ssl_ctx_(std::move(ssl_ctx)),
      handler_(handler), config_(config),
      own_limit_(limit == nullptr ? std::make_unique<ConnectionLimit>(
                                        loop, config.max_connections)
                                  : nullptr),
      limit_(limit == nullptr ? own_limit_.get() : limit),
      read_buffer_(new uint8_t[ReadBufferBytes]) {
  ev_io_init(&accept_watcher_, on_accept_ready, fd_, EV_READ);
  accept_watcher_.data = this;
  ev_timer_init(&accept_retry_, on_accept_retry, AcceptRetryDelayS, 0.);
  accept_retry_.data = this;
  ev_timer_init(&shutdown_timer_, on_shutdown_timer, 0., 0.);
  shutdown_timer_.data = this;
  limit_->add_listener(this);
  if (!limit_->reached()) {
    ev_io_start(loop_, &accept_watcher_);
  }
}

Listener::~Listener() {
  limit_->remove_listener(this);
  stop_accepting();
  ev_timer_stop(loop_, &shutdown_timer_);
  close_all_connections();
}

void Listener::stop_accepting() {
  ev_io_stop(loop_, &accept_watcher_);
  ev_timer_stop(loop_, &accept_retry_);
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

void Listener::on_accept_ready(struct ev_loop *, ev_io *watcher, int) noexcept {
  static_cast<Listener *>(watcher->data)->accept_connections();
}

void Listener::on_accept_retry(struct ev_loop *loop, ev_timer *watcher,
                               int) noexcept {
  auto *listener = static_cast<Listener *>(watcher->data);
  if (listener->fd_ >= 0 && !listener->limit_->reached()) {
    ev_io_start(loop, &listener->accept_watcher_);
  }
}

void Listener::pause_for_limit() { ev_io_stop(loop_, &accept_watcher_); }

void Listener::resume_after_limit() {
  if (fd_ >= 0 && !ev_is_active(&accept_retry_)) {
    ev_io_start(loop_, &accept_watcher_);
  }
}

void Listener::accept_connections() {
  for (int i = 0; i < MaxAcceptsPerEvent; ++i) {
    if (limit_->reached()) {
      // The limit has stopped the watcher. The rest of the backlog waits
      // until a connection closes.
      return;
    }
    sockaddr_storage address = {};
    socklen_t address_size = sizeof(address);
    int fd = ::accept4(fd_, reinterpret_cast<sockaddr *>(&address),
                       &address_size, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      add_connection(fd, address);
      continue;
    }
    switch (errno) {
    case EAGAIN:
#if EAGAIN != EWOULDBLOCK
    case EWOULDBLOCK:
#endif
      return;
    case EINTR:
    case ECONNABORTED:
    case EPROTO:
      // The client gave up before the accept; try the next one.
      continue;
    default:
      // EMFILE, ENFILE, ENOBUFS, ENOMEM: out of descriptors or memory.
      // Retrying at once would spin, so wait for connections to close.
      pause_accepting(errno);
      return;
    }
  }
}

void Listener::pause_accepting(int error) {
  ++accept_failures_;
  double now = ev_now(loop_);
  if (now - accept_warned_at_ >= AcceptWarnPeriodS) {
    GC_LOG(Front, warn,
           "accept failed: {}; pausing accepts for {} s port={} "
           "failures_since_last_warning={}",
           errno_message("accept4", error), AcceptRetryDelayS, port_,
           accept_failures_);
    accept_warned_at_ = now;
    accept_failures_ = 0;
  }
  ev_io_stop(loop_, &accept_watcher_);
  ev_timer_stop(loop_, &accept_retry_);
  ev_timer_set(&accept_retry_, AcceptRetryDelayS, 0.);
  ev_timer_start(loop_, &accept_retry_);
}

void Listener::add_connection(int fd, const sockaddr_storage &address) {
  int one = 1;
  // Responses are flushed whole, so Nagle's delay only adds latency.
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

  uint64_t id = next_connection_id.fetch_add(1, std::memory_order_relaxed);
  SSL_CTX *ctx = ssl_ctx_ ? ssl_ctx_() : nullptr;
  SSL *ssl = ctx != nullptr ? SSL_new(ctx) : nullptr;
  if (ssl == nullptr) {
    GC_LOG(Front, error, "no TLS context for a new connection c={} port={}", id,
           port_);
    ::close(fd);
    return;
  }
  if (!attach_socket(ssl, fd, buffers_)) {
    GC_LOG(Front, error, "cannot attach a socket to TLS c={}", id);
    SSL_free(ssl);
    ::close(fd);
    return;
  }
  SSL_set_accept_state(ssl);
  // Partial writes let a session hand OpenSSL a large buffer and learn how
  // much it took. A moving buffer lets a retry pass the same bytes from
  // another address. Releasing OpenSSL's record buffers between bursts
  // keeps idle connections small.
  SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
                        SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                        SSL_MODE_RELEASE_BUFFERS);
  // Client-initiated renegotiation only costs the server CPU.
  SSL_set_options(ssl, SSL_OP_NO_RENEGOTIATION);
  // Read ahead fetches several records per system call.
  SSL_set_read_ahead(ssl, 1);

  auto connection =
      std::make_unique<Connection>(*this, fd, ssl, id, format_peer(address));
  Connection *raw = connection.get();
  connections_.push_back(std::move(connection));
  limit_->connection_opened();
  raw->set_position(std::prev(connections_.end()));
  raw->start();
  if (raw->dead()) {
    release(raw);
  }
}

void Listener::release(Connection *connection) {
  connections_.erase(connection->position());
  limit_->connections_closed(1);
  if (shutting_down_ && connections_.empty()) {
    // `on_done` may destroy the listener, so it runs from the listener's
    // own timer callback rather than from inside a connection's.
    ev_timer_stop(loop_, &shutdown_timer_);
    ev_timer_set(&shutdown_timer_, 0., 0.);
    ev_timer_start(loop_, &shutdown_timer_);
  }
}

void Listener::shutdown(std::function<void()> on_done) {
  stop_accepting();
  on_shutdown_done_ = std::move(on_done);
  shutting_down_ = true;
  for (auto &connection : connections_) {
    connection->begin_shutdown();
  }
  ev_timer_stop(loop_, &shutdown_timer_);
  ev_timer_set(&shutdown_timer_,
               connections_.empty() ? 0. : config_.graceful_timeout_s, 0.);
  ev_timer_start(loop_, &shutdown_timer_);
}

void Listener::on_shutdown_timer(struct ev_loop *, ev_timer *watcher,
                                 int) noexcept {
  static_cast<Listener *>(watcher->data)->finish_shutdown();
}

void Listener::close_all_connections() {
  size_t count = connections_.size();
  // Destroying a connection aborts and logs the requests it still has.
  connections_.clear();
  limit_->connections_closed(count);
}

void Listener::finish_shutdown() {
  if (!connections_.empty()) {
    GC_LOG(Front, warn,
           "graceful stop timed out, closing {} connections port={}",
           connections_.size(), port_);
    close_all_connections();
  }
  shutting_down_ = false;
  auto on_done = std::move(on_shutdown_done_);
  on_shutdown_done_ = nullptr;
  if (on_done) {
    on_done();
  }
}

} // namespace gatecache::front
