// The HTTP protocol half of a client connection. `Connection` owns the
// socket and TLS; a session turns decrypted bytes into exchanges and
// responses into bytes for `Connection::write()`.
#pragma once

#include <cstddef>
#include <cstdint>

namespace gatecache::front {

class Session {
public:
  virtual ~Session() = default;

  // Queues what the session sends first (the HTTP/2 SETTINGS frame).
  // Called once, after the TLS handshake and before `on_read()`.
  virtual void start() = 0;

  // Processes decrypted bytes. Returns false when the connection must
  // close at once; the session has logged why.
  virtual bool on_read(const uint8_t *data, size_t size) = 0;

  // Writes pending output through `Connection::write()` until nothing is
  // left, the connection would block, or a body waits. Returns false when
  // the connection must close at once.
  virtual bool on_write() = 0;

  // Starts a graceful stop: finish the requests in flight, accept no new
  // ones, then ask the connection to close.
  virtual void shutdown() = 0;

  // Handles the passing of `deadline()`.
  virtual void on_timeout() = 0;

  // Returns the loop time (`ev_now`) at which the connection times out,
  // given the time of its last successful read or write, or infinity
  // while every open request waits for the handler or a body source.
  virtual double deadline(double last_io) const = 0;

  // Aborts every exchange still open, logging and cancelling each. Called
  // once, right before the connection is destroyed; nothing is written.
  virtual void close() = 0;
};

} // namespace gatecache::front
