// One TCP + TLS connection to an upstream origin, carrying an HTTP/1.1 or
// an HTTP/2 session chosen by ALPN.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <ev.h>
#include <openssl/ssl.h>

#include "appliance/upstream/context.h"
#include "appliance/upstream/resolver.h"
#include "common/error.h"

namespace gatecache::upstream {

class ConnectionPool;
class Connection;
class Exchange;

// The HTTP half of a connection. The connection moves bytes and owns the
// socket; the session turns them into exchanges.
class Session {
public:
  virtual ~Session() = default;
  // Queues the connection preface, if the protocol has one.
  virtual void start() = 0;
  // Sends `exchange`'s request. Returns false when the session cannot take
  // it now; then `capacity()` is 0.
  virtual bool submit(Exchange *exchange) = 0;
  // Forgets `exchange` with no event: HTTP/2 resets the stream, HTTP/1.1
  // closes the connection because the response cannot be skipped.
  virtual void abort(Exchange *exchange) = 0;
  // Parses received bytes. An error closes the connection.
  [[nodiscard]] virtual Result<void> on_read(const uint8_t *data,
                                             size_t size) = 0;
  // The peer closed the connection.
  virtual void on_eof() = 0;
  // Appends bytes to send to `out`.
  virtual void produce(std::string &out) = 0;
  virtual size_t active() const = 0;
  // Number of further exchanges the session can take now.
  virtual size_t capacity() const = 0;
  // Ends every exchange with `error` or a retry.
  virtual void fail_all(const Error &error) = 0;
  // Returns true when nothing is left to read or write (HTTP/2 after
  // GOAWAY with no stream left).
  virtual bool finished() const = 0;
  // Returns true when the session will take no new exchange ever again,
  // such as after GOAWAY or a `Connection: close` response.
  virtual bool draining() const = 0;
};

class Connection final : public Retirable {
public:
  enum class State { Idle, Resolving, Connecting, Handshaking, Ready, Closed };

  // Reads per readiness event before yielding to other watchers, so one
  // fast download cannot starve the loop.
  static constexpr int MaxReadsPerEvent = 16;

  Connection(ClientContext &context, ConnectionPool &pool, SSL_CTX *tls,
             std::string host, uint16_t port, TlsSessionStore *sessions);
  ~Connection() override;
  Connection(const Connection &) = delete;
  Connection &operator=(const Connection &) = delete;

  // Resolves, connects and handshakes, then reports to the pool through
  // `on_connection_ready()` or `on_connection_closed()`. No report comes
  // before this call returns.
  void start();

  State state() const { return state_; }

  bool closed() const { return state_ == State::Closed; }

  uint64_t id() const { return id_; }

  bool is_http2() const { return http2_; }

  const char *protocol() const { return http2_ ? "h2" : "http/1.1"; }

  size_t capacity() const;
  // Returns true when the connection is ready and will take new exchanges,
  // now or once its running ones end.
  bool usable() const;
  // Name and port for messages: "registry.example:443".
  std::string peer_name() const;

  // Pool side. `submit` returns false when the session is full.
  bool submit(Exchange *exchange);
  void abort(Exchange *exchange);

  // Closes the socket and ends every exchange with `error` (or a generic
  // "connection closed" error). Safe to call from session callbacks; the
  // object itself is destroyed later by the task queue.
  void close(std::optional<Error> error);

  // Session side.
  void request_write();
  // An exchange ended, so the pool may send another.
  void on_exchange_done();
  // Ends `exchange` with `error` prefixed by its method and URL, or sends
  // it again on another connection when `retryable` and allowed.
  void fail_exchange(Exchange *exchange, Error error, bool retryable);

private:
  static void on_io(struct ev_loop *loop, ev_io *watcher, int revents) noexcept;
  static void on_connect_timer(struct ev_loop *loop, ev_timer *watcher,
                               int revents) noexcept;
  static void on_idle_timer(struct ev_loop *loop, ev_timer *watcher,
                            int revents) noexcept;
  static void on_resume_read(struct ev_loop *loop, ev_timer *watcher,
                             int revents) noexcept;

  void handle_io(int revents);
  void on_resolved(Result<AddressList> addresses);
  void connect_next();
  void on_connect_ready();
  void start_tls();
  void handshake();
  void on_handshake_done();
  void handle_connect_timeout();
  void do_read();
  void do_write();
  void on_peer_closed();
  void update_idle_timer();
  void close_socket();
  std::string handshake_failure(int ssl_error);

  ClientContext &context_;
  ConnectionPool &pool_;
  SSL_CTX *tls_;
  std::string host_;
  uint16_t port_;
  TlsSessionStore *sessions_;
  uint64_t id_;
  State state_ = State::Idle;
  bool http2_ = false;
  uint64_t resolve_id_ = 0;
  AddressList addresses_;
  size_t next_address_ = 0;
  std::string address_text_;
  Error last_error_;
  int fd_ = -1;
  SSL *ssl_ = nullptr;
  std::unique_ptr<Session> session_;
  bool read_wants_write_ = false;
  std::string out_;
  size_t out_offset_ = 0;
  ev_io read_watcher_;
  ev_io write_watcher_;
  ev_timer connect_timer_;
  ev_timer idle_timer_;
  // Zero timer that resumes reading bytes that OpenSSL buffered after a read
  // budget ran out.
  ev_timer resume_read_timer_;
  uint8_t buffer_[16384];
};

} // namespace gatecache::upstream
