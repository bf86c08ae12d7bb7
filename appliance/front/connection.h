// One accepted client connection: the socket, its TLS state and the HTTP
// session chosen by ALPN after the handshake.
//
// The TLS handshake, reads and writes are non-blocking and driven by two
// libev I/O watchers; OpenSSL's WANT_READ and WANT_WRITE are honoured in
// both directions. A connection is destroyed only at the end of one of its
// own libev callbacks, so code that runs inside a session or handler call
// may ask for a close but never frees the object under its own feet.
//
// Threading: the loop thread of the owning `Listener` only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <string>

#include <ev.h>
#include <openssl/ssl.h>

namespace gatecache::front {

class BufferPool;
class Listener;
class RequestHandler;
class Session;
struct FrontConfig;

class Connection {
public:
  // Takes ownership of `fd` and `ssl`; `ssl` is already attached to `fd`.
  Connection(Listener &listener, int fd, SSL *ssl, uint64_t id,
             std::string peer);
  ~Connection();
  Connection(const Connection &) = delete;
  Connection &operator=(const Connection &) = delete;

  // Starts the TLS handshake. The connection may be dead on return (the
  // client left already); the caller then destroys it.
  void start();

  bool dead() const { return state_ == State::Dead; }

  enum class IoStatus { Ok, WouldBlock, Error };

  struct WriteResult {
    IoStatus status = IoStatus::Error;
    size_t bytes = 0;
  };

  // Encrypts a prefix of the `size` bytes, usually one TLS record, and
  // queues it for the socket. `Ok` reports how many bytes were taken.
  // After `WouldBlock`, the next call must pass at least the same bytes
  // again, because OpenSSL has already encrypted part of them; they may sit
  // at another address. The connection calls `Session::on_write()` again
  // once the socket can take more.
  WriteResult write(const void *data, size_t size);

  // Schedules `Session::on_write()`. Cheap and safe from any code on the
  // loop thread, including handler and body callbacks.
  void request_write();

  // Stops and restarts reading from the client, for back-pressure.
  void pause_reading();
  void resume_reading();

  // Closes gracefully once every pending byte is written: TLS close_notify,
  // TCP half-close, then a short lingering read so that a client still
  // sending does not get a reset that destroys the response in transit.
  void close_after_flush();

  // Closes at once, without close_notify, so that a client reading a
  // response of unknown or announced length detects the truncation.
  void abort();

  // Makes the connection's timer fire within `seconds`, so that a session
  // entering a phase with a shorter timeout is checked in time.
  void check_deadline_within(double seconds);

  uint64_t id() const { return id_; }

  const std::string &peer() const { return peer_; }

  // Subject common name of the client certificate that the TLS context
  // verified, or empty when the client sent none. Set after the handshake.
  const std::string &client_name() const { return client_name_; }

  struct ev_loop *loop() const {
    return loop_;
  }

  const FrontConfig &config() const;
  RequestHandler &handler() const;
  BufferPool &buffers() const;

  // Loop time of the last successful read or write.
  double last_io() const { return last_io_; }

  // For the listener: requests a graceful stop, which the connection
  // carries out in its own callback.
  void begin_shutdown();

  void set_position(std::list<std::unique_ptr<Connection>>::iterator it) {
    position_ = it;
  }

  std::list<std::unique_ptr<Connection>>::iterator position() const {
    return position_;
  }

private:
  enum class State { Handshake, Open, Closing, Lingering, Dead };

  static void on_read_ready(struct ev_loop *loop, ev_io *watcher,
                            int events) noexcept;
  static void on_write_ready(struct ev_loop *loop, ev_io *watcher,
                             int events) noexcept;
  static void on_timer(struct ev_loop *loop, ev_timer *watcher,
                       int events) noexcept;
  static void on_resume_read(struct ev_loop *loop, ev_timer *watcher,
                             int events) noexcept;

  void handle_readable();
  void handle_writable();
  void handle_timer();
  void finish_callback();

  void do_handshake();
  void start_session();
  void do_read();
  void do_write();
  void do_shutdown_request();
  bool flush_tls();
  void finish_closing();
  void do_linger_read();
  double deadline() const;
  void arm_timer(double seconds);
  void start_write_watcher();
  void stop_write_watcher();
  void start_read_watcher();
  void stop_read_watcher();

  Listener &listener_;
  struct ev_loop *loop_;
  int fd_;
  SSL *ssl_;
  uint64_t id_;
  std::string peer_;
  std::string client_name_;
  State state_ = State::Handshake;
  std::unique_ptr<Session> session_;
  ev_io read_watcher_;
  ev_io write_watcher_;
  ev_timer timer_;
  // Zero timer that resumes reading bytes that OpenSSL buffered after a read
  // budget ran out.
  ev_timer resume_read_timer_;
  double started_at_ = 0;
  double last_io_ = 0;
  double linger_started_at_ = 0;
  size_t linger_bytes_ = 0;
  // Length of a write that returned WouldBlock; the retry must not be
  // shorter.
  size_t retry_size_ = 0;
  // Bytes written since the current writable event began, and whether the
  // connection stopped writing because they reached the per-event budget.
  size_t written_in_event_ = 0;
  bool write_yielded_ = false;
  bool reading_paused_ = false;
  bool read_wants_write_ = false;
  bool write_wants_read_ = false;
  bool write_blocked_ = false;
  bool in_callback_ = false;
  bool write_requested_ = false;
  bool shutdown_requested_ = false;
  bool close_notify_sent_ = false;
  std::list<std::unique_ptr<Connection>>::iterator position_;
};

} // namespace gatecache::front
