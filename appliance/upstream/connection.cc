#include "appliance/upstream/connection.h"

#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <unistd.h>

#include "appliance/upstream/connection_pool.h"
#include "appliance/upstream/exchange.h"
#include "appliance/upstream/http1_session.h"
#include "appliance/upstream/http2_session.h"
#include "appliance/upstream/url.h"
#include "common/log.h"

namespace gatecache::upstream {

Connection::Connection(ClientContext &context, ConnectionPool &pool,
                       SSL_CTX *tls, std::string host, uint16_t port,
                       TlsSessionStore *sessions)
    : context_(context), pool_(pool), tls_(tls), host_(std::move(host)),
      port_(port), sessions_(sessions), id_(context.next_connection_id++) {
  ev_io_init(&read_watcher_, on_io, -1, EV_READ);
  read_watcher_.data = this;
  ev_io_init(&write_watcher_, on_io, -1, EV_WRITE);
  write_watcher_.data = this;
  ev_timer_init(&connect_timer_, on_connect_timer, 0, 0);
  connect_timer_.data = this;
  ev_timer_init(&idle_timer_, on_idle_timer, 0, 0);
  idle_timer_.data = this;
  ev_timer_init(&resume_read_timer_, on_resume_read, 0, 0);
  resume_read_timer_.data = this;
}

Connection::~Connection() {
  close_socket();
  // The session goes first: nghttp2 must not outlive the callbacks' target.
  session_.reset();
  if (ssl_ != nullptr) {
    SSL_free(ssl_);
  }
}

std::string Connection::peer_name() const {
  return host_.find(':') != std::string::npos
             ? fmt::format("[{}]:{}", host_, port_)
             : fmt::format("{}:{}", host_, port_);
}

size_t Connection::capacity() const {
  return state_ == State::Ready ? session_->capacity() : 0;
}

bool Connection::usable() const {
  return state_ == State::Ready && !session_->draining();
}

void Connection::start() {
  state_ = State::Resolving;
  ev_timer_set(&connect_timer_, context_.config.connect_timeout_s, 0);
  ev_timer_start(context_.loop, &connect_timer_);
  resolve_id_ = context_.resolver.resolve(
      host_, port_, [this](Result<AddressList> addresses) {
        on_resolved(std::move(addresses));
      });
}

void Connection::on_resolved(Result<AddressList> addresses) {
  resolve_id_ = 0;
  if (!addresses) {
    close(addresses.error());
    return;
  }
  addresses_ = std::move(*addresses);
  next_address_ = 0;
  last_error_ = Error{ErrorCode::Unreachable, "no address to connect to"};
  connect_next();
}

void Connection::connect_next() {
  while (next_address_ < addresses_.size()) {
    const Address &address = addresses_[next_address_++];
    address_text_ = address.str();
    int fd = ::socket(address.family(),
                      SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      last_error_ =
          Error{ErrorCode::Unreachable, errno_message("socket", errno)};
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    int rc = ::connect(fd, reinterpret_cast<const sockaddr *>(&address.storage),
                       address.length);
    // A non-blocking connect interrupted by a signal goes on in the
    // background, like EINPROGRESS (connect(2)).
    if (rc == 0 || errno == EINPROGRESS || errno == EINTR) {
      fd_ = fd;
      state_ = State::Connecting;
      ev_io_set(&write_watcher_, fd_, EV_WRITE);
      ev_io_start(context_.loop, &write_watcher_);
      // The connect timeout covers each address on its own.
      ev_timer_stop(context_.loop, &connect_timer_);
      ev_timer_set(&connect_timer_, context_.config.connect_timeout_s, 0);
      ev_timer_start(context_.loop, &connect_timer_);
      return;
    }
    last_error_ =
        Error{ErrorCode::Unreachable,
              errno_message(("connect to " + address_text_).c_str(), errno)};
    ::close(fd);
  }
  close(Error{last_error_.code,
              "cannot connect to " + peer_name() + ": " + last_error_.message});
}

void Connection::on_connect_ready() {
  int error = 0;
  socklen_t length = sizeof(error);
  if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &error, &length) != 0) {
    error = errno;
  }
  if (error != 0) {
    last_error_ =
        Error{ErrorCode::Unreachable,
              errno_message(("connect to " + address_text_).c_str(), error)};
    close_socket();
    connect_next();
    return;
  }
  start_tls();
}

void Connection::start_tls() {
  ev_io_stop(context_.loop, &write_watcher_);
  ssl_ = SSL_new(tls_);
  if (ssl_ == nullptr) {
    close(Error{ErrorCode::Internal, "SSL_new: " + take_ssl_errors()});
    return;
  }
  if (auto prepared =
          prepare_client_ssl(ssl_, host_, is_ip_literal(host_), sessions_);
      !prepared) {
    close(prepared.error());
    return;
  }
  SSL_set_fd(ssl_, fd_);
  SSL_set_connect_state(ssl_);
  state_ = State::Handshaking;
  ev_io_set(&read_watcher_, fd_, EV_READ);
  ev_io_start(context_.loop, &read_watcher_);
  handshake();
}

std::string Connection::handshake_failure(int ssl_error) {
  long verify = SSL_get_verify_result(ssl_);
  if (verify != X509_V_OK) {
    take_ssl_errors();
    return std::string("certificate verification failed: ") +
           X509_verify_cert_error_string(verify);
  }
  if (ssl_error == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
    return errno != 0 ? errno_message("read", errno)
                      : "connection closed by peer";
  }
  return take_ssl_errors();
}

void Connection::handshake() {
  ERR_clear_error();
  errno = 0;
  int rc = SSL_do_handshake(ssl_);
  if (rc == 1) {
    on_handshake_done();
    return;
  }
  int error = SSL_get_error(ssl_, rc);
  if (error == SSL_ERROR_WANT_READ) {
    ev_io_stop(context_.loop, &write_watcher_);
    return;
  }
  if (error == SSL_ERROR_WANT_WRITE) {
    ev_io_start(context_.loop, &write_watcher_);
    return;
  }
  close(Error{ErrorCode::Unreachable,
              fmt::format("TLS handshake with {} ({}) failed: {}", peer_name(),
                          address_text_, handshake_failure(error))});
}

void Connection::on_handshake_done() {
  ev_timer_stop(context_.loop, &connect_timer_);
  ev_io_stop(context_.loop, &write_watcher_);
  const unsigned char *alpn = nullptr;
  unsigned int alpn_length = 0;
  SSL_get0_alpn_selected(ssl_, &alpn, &alpn_length);
  http2_ = alpn_length == 2 && std::memcmp(alpn, "h2", 2) == 0;
  if (http2_) {
    session_ = std::make_unique<Http2Session>(*this);
  } else {
    session_ = std::make_unique<Http1Session>(*this);
  }
  state_ = State::Ready;
  GC_LOG(Upstream, info,
         "connected to upstream c={} upstream={} address={} "
         "protocol={} tls={} resumed={}",
         id_, peer_name(), address_text_, protocol(), SSL_get_version(ssl_),
         SSL_session_reused(ssl_) == 1);
  session_->start();
  update_idle_timer();
  pool_.on_connection_ready(*this);
  do_write();
}

void Connection::on_connect_timer(struct ev_loop *, ev_timer *watcher,
                                  int) noexcept {
  static_cast<Connection *>(watcher->data)->handle_connect_timeout();
}

void Connection::handle_connect_timeout() {
  std::string phase = state_ == State::Resolving    ? "DNS lookup of"
                      : state_ == State::Connecting ? "TCP connect to"
                                                    : "TLS handshake with";
  std::string message =
      fmt::format("{} {} timed out after {} s", phase, peer_name(),
                  context_.config.connect_timeout_s);
  if (state_ == State::Connecting && next_address_ < addresses_.size()) {
    last_error_ = Error{ErrorCode::Timeout, message};
    close_socket();
    connect_next();
    return;
  }
  close(Error{ErrorCode::Timeout, std::move(message)});
}

void Connection::on_io(struct ev_loop *, ev_io *watcher, int revents) noexcept {
  static_cast<Connection *>(watcher->data)->handle_io(revents);
}

void Connection::on_resume_read(struct ev_loop *, ev_timer *watcher,
                                int) noexcept {
  static_cast<Connection *>(watcher->data)->handle_io(EV_READ);
}

void Connection::handle_io(int revents) {
  switch (state_) {
  case State::Connecting:
    if ((revents & EV_WRITE) != 0) {
      on_connect_ready();
    }
    return;
  case State::Handshaking:
    handshake();
    return;
  case State::Ready:
    if ((revents & EV_READ) != 0 ||
        (read_wants_write_ && (revents & EV_WRITE) != 0)) {
      do_read();
    }
    if (state_ == State::Ready) {
      do_write();
    }
    return;
  default:
    return;
  }
}

void Connection::do_read() {
  read_wants_write_ = false;
  for (int i = 0; i < MaxReadsPerEvent; ++i) {
    ERR_clear_error();
    errno = 0;
    int n = SSL_read(ssl_, buffer_, sizeof(buffer_));
    if (n > 0) {
      auto parsed = session_->on_read(buffer_, static_cast<size_t>(n));
      if (state_ != State::Ready) {
        return;
      }
      if (!parsed) {
        close(parsed.error());
        return;
      }
      continue;
    }
    int error = SSL_get_error(ssl_, n);
    switch (error) {
    case SSL_ERROR_WANT_READ:
      return;
    case SSL_ERROR_WANT_WRITE:
      read_wants_write_ = true;
      ev_io_start(context_.loop, &write_watcher_);
      return;
    case SSL_ERROR_ZERO_RETURN:
      on_peer_closed();
      return;
    case SSL_ERROR_SYSCALL:
      if (ERR_peek_error() == 0 && (errno == 0 || errno == ECONNRESET)) {
        on_peer_closed();
        return;
      }
      if (errno == EINTR || errno == EAGAIN) {
        continue;
      }
      close(Error{ErrorCode::Unreachable,
                  errno_message(("read from " + peer_name()).c_str(), errno)});
      return;
    default:
      // OpenSSL 3 reports a close without close_notify as an error; the
      // session's framing decides whether the response was complete.
      if (ERR_GET_REASON(ERR_peek_error()) ==
          SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        ERR_clear_error();
        on_peer_closed();
        return;
      }
      close(Error{ErrorCode::Unreachable, "TLS read from " + peer_name() +
                                              " failed: " + take_ssl_errors()});
      return;
    }
  }
  // The read budget is spent. Bytes still in the socket make the
  // level-triggered read watcher fire after the next poll, but bytes that
  // OpenSSL has read ahead are invisible to the poll. A zero timer comes
  // back for them after the next poll too, so other connections get their
  // turn first. A fed event would run again before them.
  if (SSL_has_pending(ssl_) == 1) {
    ev_timer_stop(context_.loop, &resume_read_timer_);
    ev_timer_set(&resume_read_timer_, 0, 0);
    ev_timer_start(context_.loop, &resume_read_timer_);
  }
}

void Connection::on_peer_closed() {
  session_->on_eof();
  if (state_ != State::Closed) {
    close(Error{ErrorCode::Unreachable, "connection closed by " + peer_name()});
  }
}

void Connection::do_write() {
  while (state_ == State::Ready) {
    if (out_offset_ == out_.size()) {
      out_.clear();
      out_offset_ = 0;
      session_->produce(out_);
      if (state_ != State::Ready) {
        return;
      }
      if (out_.empty()) {
        break;
      }
    }
    ERR_clear_error();
    errno = 0;
    int n = SSL_write(ssl_, out_.data() + out_offset_,
                      static_cast<int>(out_.size() - out_offset_));
    if (n > 0) {
      out_offset_ += static_cast<size_t>(n);
      continue;
    }
    int error = SSL_get_error(ssl_, n);
    if (error == SSL_ERROR_WANT_WRITE) {
      ev_io_start(context_.loop, &write_watcher_);
      return;
    }
    if (error == SSL_ERROR_WANT_READ) {
      // The read watcher is always on; `handle_io` writes again after it.
      return;
    }
    if (error == SSL_ERROR_SYSCALL && errno == EINTR) {
      continue;
    }
    std::string why = error == SSL_ERROR_SYSCALL && ERR_peek_error() == 0
                          ? errno_message("write", errno)
                          : take_ssl_errors();
    close(Error{ErrorCode::Unreachable,
                "TLS write to " + peer_name() + " failed: " + why});
    return;
  }
  if (state_ != State::Ready) {
    return;
  }
  if (!read_wants_write_) {
    ev_io_stop(context_.loop, &write_watcher_);
  }
  if (session_->finished()) {
    close(std::nullopt);
  }
}

void Connection::request_write() {
  if (state_ == State::Ready) {
    ev_io_start(context_.loop, &write_watcher_);
  }
}

bool Connection::submit(Exchange *exchange) {
  if (capacity() == 0 || !session_->submit(exchange)) {
    return false;
  }
  exchange->set_sent(this);
  update_idle_timer();
  return true;
}

void Connection::abort(Exchange *exchange) {
  if (session_ != nullptr) {
    session_->abort(exchange);
  }
}

void Connection::on_exchange_done() {
  update_idle_timer();
  pool_.schedule_dispatch();
}

void Connection::fail_exchange(Exchange *exchange, Error error,
                               bool retryable) {
  if (retryable && exchange->requeue_for_retry()) {
    GC_LOG(Upstream, debug, "retrying on a new connection c={} url={}: {}", id_,
           exchange->url().redacted(), error.message);
    return;
  }
  error.message = exchange->describe() + ": " + error.message;
  exchange->finish(std::move(error));
}

void Connection::update_idle_timer() {
  ev_timer_stop(context_.loop, &idle_timer_);
  if (state_ == State::Ready && session_->active() == 0) {
    ev_timer_set(&idle_timer_, context_.config.pool_idle_timeout_s, 0);
    ev_timer_start(context_.loop, &idle_timer_);
  }
}

void Connection::on_idle_timer(struct ev_loop *, ev_timer *watcher,
                               int) noexcept {
  auto *self = static_cast<Connection *>(watcher->data);
  GC_LOG(Upstream, debug, "closing idle connection c={} upstream={}", self->id_,
         self->peer_name());
  self->close(std::nullopt);
}

void Connection::close_socket() {
  ev_io_stop(context_.loop, &read_watcher_);
  ev_io_stop(context_.loop, &write_watcher_);
  ev_timer_stop(context_.loop, &resume_read_timer_);
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

void Connection::close(std::optional<Error> error) {
  if (state_ == State::Closed) {
    return;
  }
  bool was_ready = state_ == State::Ready;
  state_ = State::Closed;
  ev_timer_stop(context_.loop, &connect_timer_);
  ev_timer_stop(context_.loop, &idle_timer_);
  if (resolve_id_ != 0) {
    context_.resolver.cancel(resolve_id_);
    resolve_id_ = 0;
  }
  if (ssl_ != nullptr && was_ready && !error) {
    // Best effort close_notify; the socket is closed right after.
    SSL_shutdown(ssl_);
  }
  close_socket();
  if (error) {
    GC_LOG(Upstream, debug, "connection c={} upstream={} closed: {}", id_,
           peer_name(), error->message);
  }
  if (session_ != nullptr) {
    session_->fail_all(error
                           ? *error
                           : Error{ErrorCode::Unreachable,
                                   "connection to " + peer_name() + " closed"});
  }
  pool_.on_connection_closed(*this, was_ready, error);
}

} // namespace gatecache::upstream
