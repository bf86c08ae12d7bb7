#include "appliance/front/connection.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include <openssl/err.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <unistd.h>

#include "appliance/front/front_config.h"
#include "appliance/front/http1_session.h"
#include "appliance/front/http2_session.h"
#include "appliance/front/listener.h"
#include "appliance/front/socket_bio.h"
#include "common/log.h"

namespace gatecache::front {

namespace {

// Reads per readable event before other watchers get their turn.
constexpr int MaxReadsPerEvent = 16;
// Bytes one connection hands to TLS in one writable event before the loop
// polls again, so that a client reading a large body at loopback speed
// cannot keep other connections waiting. 1 MiB takes well under a
// millisecond to encrypt and send.
constexpr size_t WriteBytesPerEvent = 1024 * 1024;
// A closing connection reads and drops client bytes for at most this long
// and this many bytes after its close_notify.
constexpr double LingerTimeoutS = 2;
constexpr size_t LingerMaxBytes = 1024 * 1024;

// Returns the subject common name of the peer certificate when the context
// verified it, else an empty string. Contexts that do not request client
// certificates never receive one. A name with control characters is
// dropped, because it ends up in logs and cluster lookups.
std::string verified_client_name(SSL *ssl) {
  X509 *certificate = SSL_get0_peer_certificate(ssl);
  if (certificate == nullptr || SSL_get_verify_result(ssl) != X509_V_OK) {
    return {};
  }
  X509_NAME *subject = X509_get_subject_name(certificate);
  int index = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (index < 0) {
    return {};
  }
  unsigned char *utf8 = nullptr;
  int size = ASN1_STRING_to_UTF8(
      &utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, index)));
  if (size < 0) {
    ERR_clear_error();
    return {};
  }
  std::string name(reinterpret_cast<char *>(utf8), static_cast<size_t>(size));
  OPENSSL_free(utf8);
  bool printable = std::none_of(name.begin(), name.end(), [](char c) {
    return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
  });
  return printable ? name : std::string();
}

// Returns the reason of the first error on OpenSSL's queue, for logs.
const char *ssl_error_reason() {
  unsigned long error = ERR_peek_error();
  if (error == 0) {
    return "no details";
  }
  const char *reason = ERR_reason_error_string(error);
  return reason != nullptr ? reason : "unknown";
}

} // namespace

Connection::Connection(Listener &listener, int fd, SSL *ssl, uint64_t id,
                       std::string peer)
    : listener_(listener), loop_(listener.loop()), fd_(fd), ssl_(ssl), id_(id),
      peer_(std::move(peer)) {
  ev_io_init(&read_watcher_, on_read_ready, fd_, EV_READ);
  read_watcher_.data = this;
  ev_io_init(&write_watcher_, on_write_ready, fd_, EV_WRITE);
  write_watcher_.data = this;
  ev_timer_init(&timer_, on_timer, 0., 0.);
  timer_.data = this;
  ev_timer_init(&resume_read_timer_, on_resume_read, 0., 0.);
  resume_read_timer_.data = this;
}

Connection::~Connection() {
  if (session_) {
    session_->close();
    session_.reset();
  }
  // Stopping also clears events fed by `request_write()` that are still
  // pending, so none reaches freed memory.
  ev_io_stop(loop_, &read_watcher_);
  ev_io_stop(loop_, &write_watcher_);
  ev_timer_stop(loop_, &timer_);
  ev_timer_stop(loop_, &resume_read_timer_);
  // Send what the write buffer still holds, such as the part of a body
  // written before its source failed, if the socket takes it now.
  BIO_flush(SSL_get_wbio(ssl_));
  SSL_free(ssl_);
  ::close(fd_);
}

const FrontConfig &Connection::config() const { return listener_.config(); }

RequestHandler &Connection::handler() const { return listener_.handler(); }

BufferPool &Connection::buffers() const { return listener_.buffers(); }

void Connection::on_read_ready(struct ev_loop *, ev_io *watcher, int) noexcept {
  static_cast<Connection *>(watcher->data)->handle_readable();
}

void Connection::on_write_ready(struct ev_loop *, ev_io *watcher,
                                int) noexcept {
  static_cast<Connection *>(watcher->data)->handle_writable();
}

void Connection::on_timer(struct ev_loop *, ev_timer *watcher, int) noexcept {
  static_cast<Connection *>(watcher->data)->handle_timer();
}

void Connection::on_resume_read(struct ev_loop *, ev_timer *watcher,
                                int) noexcept {
  static_cast<Connection *>(watcher->data)->handle_readable();
}

void Connection::start() {
  started_at_ = ev_now(loop_);
  last_io_ = started_at_;
  start_read_watcher();
  arm_timer(config().handshake_timeout_s);

  // The ClientHello often arrives with the final ACK of the TCP handshake,
  // so trying now usually saves one trip through the loop.
  in_callback_ = true;
  do_handshake();
  if (state_ == State::Open) {
    do_read();
    do_write();
  }
  in_callback_ = false;
  // The listener destroys a connection that died here.
}

void Connection::handle_readable() {
  in_callback_ = true;
  switch (state_) {
  case State::Handshake:
    do_handshake();
    if (state_ == State::Open) {
      do_read();
      do_write();
    }
    break;
  case State::Open:
  case State::Closing:
    if (write_wants_read_) {
      write_wants_read_ = false;
      do_write();
    }
    do_read();
    do_write();
    break;
  case State::Lingering:
    do_linger_read();
    break;
  case State::Dead:
    break;
  }
  in_callback_ = false;
  finish_callback();
}

void Connection::handle_writable() {
  in_callback_ = true;
  if (shutdown_requested_) {
    shutdown_requested_ = false;
    do_shutdown_request();
  }
  switch (state_) {
  case State::Handshake:
    do_handshake();
    if (state_ == State::Open) {
      do_read();
      do_write();
    }
    break;
  case State::Open:
  case State::Closing:
    if (read_wants_write_) {
      read_wants_write_ = false;
      do_read();
    }
    do_write();
    break;
  case State::Lingering:
    stop_write_watcher();
    break;
  case State::Dead:
    break;
  }
  in_callback_ = false;
  finish_callback();
}

void Connection::handle_timer() {
  in_callback_ = true;
  double now = ev_now(loop_);
  double at = deadline();
  if (std::isinf(at)) {
    // Nothing can time out now. Look again after an idle period; a phase
    // with a shorter limit calls `check_deadline_within()`.
    arm_timer(config().idle_timeout_s);
  } else if (at > now) {
    arm_timer(at - now);
  } else {
    switch (state_) {
    case State::Handshake:
      GC_LOG(Front, debug, "TLS handshake timed out c={} peer={}", id_, peer_);
      state_ = State::Dead;
      break;
    case State::Open:
      session_->on_timeout();
      if (state_ == State::Open || state_ == State::Closing) {
        arm_timer(config().idle_timeout_s);
        do_write();
      }
      break;
    case State::Closing:
      GC_LOG(Front, debug, "client stopped reading while closing c={}", id_);
      state_ = State::Dead;
      break;
    case State::Lingering:
    case State::Dead:
      state_ = State::Dead;
      break;
    }
  }
  in_callback_ = false;
  finish_callback();
}

void Connection::finish_callback() {
  if (state_ == State::Dead) {
    // Destroys `this`.
    listener_.release(this);
  }
}

double Connection::deadline() const {
  const FrontConfig &c = config();
  switch (state_) {
  case State::Handshake:
    return started_at_ + c.handshake_timeout_s;
  case State::Open:
    return session_->deadline(last_io_);
  case State::Closing:
    return last_io_ + c.idle_timeout_s;
  case State::Lingering:
    return linger_started_at_ + LingerTimeoutS;
  case State::Dead:
    break;
  }
  return ev_now(loop_);
}

void Connection::arm_timer(double seconds) {
  ev_timer_stop(loop_, &timer_);
  ev_timer_set(&timer_, seconds > 0 ? seconds : 0., 0.);
  ev_timer_start(loop_, &timer_);
}

void Connection::check_deadline_within(double seconds) {
  if (!ev_is_active(&timer_) || ev_timer_remaining(loop_, &timer_) > seconds) {
    arm_timer(seconds);
  }
}

void Connection::do_handshake() {
  ERR_clear_error();
  int rv = SSL_do_handshake(ssl_);
  if (rv == 1) {
    last_io_ = ev_now(loop_);
    start_session();
    return;
  }

  int error = SSL_get_error(ssl_, rv);
  switch (error) {
  case SSL_ERROR_WANT_READ:
    stop_write_watcher();
    return;
  case SSL_ERROR_WANT_WRITE:
    start_write_watcher();
    return;
  case SSL_ERROR_SYSCALL:
    // Clients that connect and leave, such as port checks, end here.
    GC_LOG(Front, debug,
           "connection closed during TLS handshake c={} "
           "peer={}",
           id_, peer_);
    break;
  default: {
    // Operators look for rejected client certificates after a CA
    // rotation, so those are logged at info. Other failures come from
    // scanners and stay at debug.
    std::string reason = ssl_error_reason();
    long verified = SSL_get_verify_result(ssl_);
    if (verified != X509_V_OK ||
        reason.find("certificate") != std::string::npos) {
      GC_LOG(Front, info,
             "TLS handshake failed: client certificate rejected: {} ({}) "
             "c={} peer={}",
             reason, X509_verify_cert_error_string(verified), id_, peer_);
    } else {
      GC_LOG(Front, debug, "TLS handshake failed: {} c={} peer={}", reason, id_,
             peer_);
    }
    break;
  }
  }
  state_ = State::Dead;
}

void Connection::start_session() {
  state_ = State::Open;
  stop_write_watcher();
  if (!use_buffered_writes(ssl_, fd_, listener_.buffers())) {
    GC_LOG(Front, warn, "cannot allocate a write buffer BIO c={}", id_);
  }

  const unsigned char *alpn = nullptr;
  unsigned int alpn_size = 0;
  SSL_get0_alpn_selected(ssl_, &alpn, &alpn_size);
  if (alpn_size == 2 && std::memcmp(alpn, "h2", 2) == 0) {
    session_ = std::make_unique<Http2Session>(*this);
  } else {
    session_ = std::make_unique<Http1Session>(*this);
  }
  client_name_ = verified_client_name(ssl_);
  GC_LOG(Front, debug,
         "connection open c={} peer={} protocol={} tls={} client={}", id_,
         peer_, alpn_size == 2 ? "h2" : "http/1.1", SSL_get_version(ssl_),
         client_name_.empty() ? "-" : client_name_);

  arm_timer(config().idle_timeout_s);
  session_->start();
}

void Connection::do_read() {
  uint8_t *buffer = listener_.read_buffer();
  for (int i = 0; i < MaxReadsPerEvent; ++i) {
    if (reading_paused_ ||
        (state_ != State::Open && state_ != State::Closing)) {
      return;
    }
    ERR_clear_error();
    size_t size = 0;
    int rv = SSL_read_ex(ssl_, buffer, ReadBufferBytes, &size);
    if (rv == 1) {
      last_io_ = ev_now(loop_);
      if (!session_->on_read(buffer, size)) {
        state_ = State::Dead;
        return;
      }
      continue;
    }

    int error = SSL_get_error(ssl_, rv);
    switch (error) {
    case SSL_ERROR_WANT_READ:
      return;
    case SSL_ERROR_WANT_WRITE:
      // A TLS message that needs a reply, such as a KeyUpdate, waits for a
      // writable socket.
      read_wants_write_ = true;
      start_write_watcher();
      return;
    case SSL_ERROR_ZERO_RETURN:
      GC_LOG(Front, debug, "client sent close_notify c={}", id_);
      break;
    case SSL_ERROR_SYSCALL:
      GC_LOG(Front, debug, "client closed the connection c={}", id_);
      break;
    default:
      GC_LOG(Front, debug, "TLS read failed: {} c={}", ssl_error_reason(), id_);
      break;
    }
    state_ = State::Dead;
    return;
  }

  // The budget is spent. Bytes still in the socket make the level-triggered
  // read watcher fire again after the next poll. Bytes that OpenSSL has
  // already read ahead are invisible to the poll, so a zero timer, which
  // also runs only after the next poll, comes back for them. Feeding the
  // read event instead would run it again before any other watcher.
  if (SSL_has_pending(ssl_) == 1) {
    ev_timer_stop(loop_, &resume_read_timer_);
    ev_timer_set(&resume_read_timer_, 0., 0.);
    ev_timer_start(loop_, &resume_read_timer_);
  }
}

Connection::WriteResult Connection::write(const void *data, size_t size) {
  if (size < retry_size_) {
    GC_LOG(Front, error,
           "TLS write retried with {} bytes after {} c={}, closing", size,
           retry_size_, id_);
    return {IoStatus::Error, 0};
  }
  if (written_in_event_ >= WriteBytesPerEvent) {
    // The writable socket makes the write watcher fire again after the
    // loop has polled the other connections.
    write_yielded_ = true;
    write_blocked_ = true;
    start_write_watcher();
    return {IoStatus::WouldBlock, 0};
  }
  ERR_clear_error();
  size_t written = 0;
  int rv = SSL_write_ex(ssl_, data, size, &written);
  if (rv == 1) {
    retry_size_ = 0;
    last_io_ = ev_now(loop_);
    written_in_event_ += written;
    return {IoStatus::Ok, written};
  }

  int error = SSL_get_error(ssl_, rv);
  if (error == SSL_ERROR_WANT_WRITE) {
    retry_size_ = size;
    write_blocked_ = true;
    start_write_watcher();
    return {IoStatus::WouldBlock, 0};
  }
  if (error == SSL_ERROR_WANT_READ) {
    retry_size_ = size;
    write_blocked_ = true;
    write_wants_read_ = true;
    start_read_watcher();
    return {IoStatus::WouldBlock, 0};
  }
  if (error == SSL_ERROR_SYSCALL) {
    GC_LOG(Front, debug, "client closed the connection during a write c={}",
           id_);
  } else {
    GC_LOG(Front, debug, "TLS write failed: {} c={}", ssl_error_reason(), id_);
  }
  return {IoStatus::Error, 0};
}

void Connection::request_write() {
  if (state_ != State::Open && state_ != State::Closing) {
    return;
  }
  if (in_callback_) {
    write_requested_ = true;
    return;
  }
  ev_feed_event(loop_, &write_watcher_, EV_WRITE);
}

void Connection::do_write() {
  written_in_event_ = 0;
  write_yielded_ = false;
  do {
    if (state_ != State::Open && state_ != State::Closing) {
      return;
    }
    write_requested_ = false;
    write_blocked_ = false;
    if (!session_->on_write()) {
      state_ = State::Dead;
      return;
    }
  } while (write_requested_ && !write_blocked_);

  // A connection that yielded sends what the write BIO gathered now, so
  // the client has it while other connections take their turn.
  if ((!write_blocked_ || write_yielded_) && !flush_tls()) {
    state_ = State::Dead;
    return;
  }
  if (!write_blocked_ && !read_wants_write_) {
    stop_write_watcher();
  }
  if (state_ == State::Closing && !write_blocked_) {
    finish_closing();
  }
}

bool Connection::flush_tls() {
  BIO *bio = SSL_get_wbio(ssl_);
  if (BIO_wpending(bio) == 0) {
    return true;
  }
  if (BIO_flush(bio) == 1) {
    last_io_ = ev_now(loop_);
    return true;
  }
  if (BIO_should_retry(bio)) {
    write_blocked_ = true;
    start_write_watcher();
    return true;
  }
  GC_LOG(Front, debug, "client closed the connection during a write c={}", id_);
  return false;
}

void Connection::close_after_flush() {
  if (state_ != State::Open) {
    return;
  }
  state_ = State::Closing;
  request_write();
}

void Connection::abort() { state_ = State::Dead; }

void Connection::finish_closing() {
  if (!close_notify_sent_) {
    ERR_clear_error();
    int rv = SSL_shutdown(ssl_);
    if (rv < 0) {
      int error = SSL_get_error(ssl_, rv);
      if (error == SSL_ERROR_WANT_WRITE) {
        write_blocked_ = true;
        start_write_watcher();
        return;
      }
      state_ = State::Dead;
      return;
    }
    close_notify_sent_ = true;
  }
  if (!flush_tls()) {
    state_ = State::Dead;
    return;
  }
  if (write_blocked_) {
    return;
  }

  // close_notify is out. Half-close TCP and read what the client still
  // sends, so its unread bytes do not make the kernel send a reset.
  ::shutdown(fd_, SHUT_WR);
  state_ = State::Lingering;
  linger_started_at_ = ev_now(loop_);
  stop_write_watcher();
  reading_paused_ = false;
  start_read_watcher();
  arm_timer(LingerTimeoutS);
}

void Connection::do_linger_read() {
  uint8_t *buffer = listener_.read_buffer();
  for (;;) {
    ssize_t n = ::recv(fd_, buffer, ReadBufferBytes, 0);
    if (n > 0) {
      linger_bytes_ += static_cast<size_t>(n);
      if (linger_bytes_ > LingerMaxBytes) {
        state_ = State::Dead;
        return;
      }
      continue;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return;
    }
    // End of stream or an error: nothing more to wait for.
    state_ = State::Dead;
    return;
  }
}

void Connection::pause_reading() {
  reading_paused_ = true;
  if (!write_wants_read_ && state_ != State::Lingering) {
    stop_read_watcher();
  }
}

void Connection::resume_reading() {
  if (!reading_paused_) {
    return;
  }
  reading_paused_ = false;
  start_read_watcher();
  // OpenSSL may hold decrypted bytes that epoll does not report.
  ev_feed_event(loop_, &read_watcher_, EV_READ);
}

void Connection::begin_shutdown() {
  shutdown_requested_ = true;
  ev_feed_event(loop_, &write_watcher_, EV_WRITE);
}

void Connection::do_shutdown_request() {
  switch (state_) {
  case State::Handshake:
    state_ = State::Dead;
    break;
  case State::Open:
    session_->shutdown();
    break;
  default:
    break;
  }
}

void Connection::start_write_watcher() {
  if (!ev_is_active(&write_watcher_)) {
    ev_io_start(loop_, &write_watcher_);
  }
}

void Connection::stop_write_watcher() {
  if (ev_is_active(&write_watcher_)) {
    ev_io_stop(loop_, &write_watcher_);
  }
}

void Connection::start_read_watcher() {
  if (!ev_is_active(&read_watcher_)) {
    ev_io_start(loop_, &read_watcher_);
  }
}

void Connection::stop_read_watcher() {
  if (ev_is_active(&read_watcher_)) {
    ev_io_stop(loop_, &read_watcher_);
  }
}

} // namespace gatecache::front
