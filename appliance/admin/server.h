// Admin endpoint: a small plain HTTP/1.1 server on a Unix socket and,
// optionally, on loopback TCP addresses, running in the daemon's libev
// loop. `gatecache status`, `gatecache prewarm`, `gatecache pulls` and
// metrics scrapers use it, and `AdminApi` in api.h routes its requests.
//
// The Unix socket accepts every method. TCP listeners accept only GET and
// HEAD, so anything that changes state (starting a prewarm job) needs
// access to the socket file, which has mode 0660 and belongs to the
// service user.
//
// Threading: the server, its connections and every handler call belong to
// the thread running the loop passed to `open()`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ev.h>
#include <sys/types.h>

#include "appliance/config/config.h"
#include "common/error.h"

namespace gatecache::admin {

struct AdminRequest {
  std::string method; // "GET", "POST", ...
  std::string path;   // Request target up to '?', not percent-decoded.
  std::string query;  // Text after '?', not percent-decoded, or empty.
  std::string body;
  // "127.0.0.1:40550" or "[::1]:40550" on TCP, "unix:pid=12,uid=0" on the
  // socket.
  std::string peer;
  bool local_socket = false; // Arrived on the Unix socket.
};

struct AdminResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  // Header fields besides Content-Type and Content-Length, such as the
  // Allow field that a 405 response must carry.
  std::vector<std::pair<std::string, std::string>> headers;
};

// Produces the responses of the admin endpoint.
class AdminHandler {
public:
  virtual ~AdminHandler() = default;

  // Handles one request, which is valid only during the call. `reply`
  // sends the response and may be called before `handle()` returns or
  // later, on the loop thread. The connection waits for it and reads no
  // further request meanwhile. Calls after the connection closed, and
  // every call after the first, are ignored.
  virtual void handle(const AdminRequest &request,
                      std::function<void(AdminResponse)> reply) = 0;
};

// Limits of the admin endpoint. Production uses the defaults, and tests
// shorten the timeouts.
struct AdminLimits {
  // Maximum request body. A larger one gets 413 and the connection closes.
  size_t max_body_bytes = 1024 * 1024;
  // Maximum size of the request line plus header fields. More gets 431,
  // and a request target over `max_target_bytes` gets 414.
  size_t max_header_bytes = 16 * 1024;
  size_t max_target_bytes = 8 * 1024;
  size_t max_header_fields = 64;
  // Open connections over all listeners. A connection beyond this gets 503
  // and is closed.
  size_t max_connections = 64;
  // A connection with no request in progress closes after this many
  // seconds without I/O, and so does one whose client stops reading the
  // response.
  double idle_timeout_s = 60;
  // A request must arrive whole within this many seconds of its first
  // byte. Time spent waiting for the handler never counts.
  double request_timeout_s = 30;
};

class AdminServer {
public:
  // Creates the Unix socket `config.socket` (unless empty) and the TCP
  // listeners of `config.listen`, and starts serving on `loop` through
  // `handler`, which must outlive the server.
  //
  // The socket gets mode 0660. A socket file left by a daemon that is gone
  // is replaced. If a process still accepts connections on it, or the path
  // exists and is not a socket, nothing is replaced and `open()` fails.
  // TCP addresses must be loopback literals.
  //
  // Errors: `Invalid` for a path too long for a Unix socket, a path that
  // is not a socket, a non-loopback or malformed address, or a socket in
  // use by another process. `Io` when a system call fails, with the call
  // and the path or address in the message.
  [[nodiscard]] static Result<std::unique_ptr<AdminServer>>
  open(struct ev_loop *loop, const config::AdminConfig &config,
       AdminHandler *handler, const AdminLimits &limits = {});

  ~AdminServer();
  AdminServer(const AdminServer &) = delete;
  AdminServer &operator=(const AdminServer &) = delete;

  // Closes the listeners and every connection at once, and removes the
  // socket file if it is still the one this server created. Replies that
  // arrive afterwards are ignored. Idempotent, and the destructor calls it.
  void shutdown();

  // Path of the Unix socket, empty when it is turned off.
  const std::string &socket_path() const { return socket_path_; }

  // Ports the TCP listeners are bound to, in the order of `config.listen`,
  // so that a test can listen on port 0 and learn the port.
  std::vector<uint16_t> tcp_ports() const;

  size_t connection_count() const { return connections_.size(); }

private:
  class Connection;
  struct Listener;

  AdminServer(struct ev_loop *loop, AdminHandler *handler,
              const AdminLimits &limits);

  [[nodiscard]] Result<void> open_socket(const std::string &path);
  [[nodiscard]] Result<void> open_tcp(const config::ListenAddress &address);
  void start_listener(int fd, uint16_t port, bool local_socket);

  static void on_accept_ready(struct ev_loop *loop, ev_io *watcher,
                              int events) noexcept;
  static void on_accept_retry(struct ev_loop *loop, ev_timer *watcher,
                              int events) noexcept;
  void accept_connections(Listener &listener);
  void reject_connection(int fd);
  void release(uint64_t connection_id);

  struct ev_loop *loop_;
  AdminHandler *handler_;
  AdminLimits limits_;
  std::string socket_path_;
  // Device and inode of the socket file this server created, so that
  // `shutdown()` never removes a file that replaced it.
  dev_t socket_device_ = 0;
  ino_t socket_inode_ = 0;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::map<uint64_t, std::shared_ptr<Connection>> connections_;
  uint64_t next_connection_id_ = 1;
  // Buffer that every connection reads into before parsing.
  std::unique_ptr<char[]> read_buffer_;
  // Rate limit of the "connection limit reached" and "accept failed"
  // warnings: loop time of the last one and the events since.
  double warned_at_ = -1e9;
  uint64_t events_since_warning_ = 0;
};

} // namespace gatecache::admin
