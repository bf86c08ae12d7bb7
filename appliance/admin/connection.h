// One connection of the admin endpoint. Private to server.cc and
// connection.cc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include <ev.h>
#include <http_parser.h>

#include "appliance/admin/server.h"

namespace gatecache::admin {

// Bytes read from a socket per readable event.
inline constexpr size_t ReadBufferBytes = 16 * 1024;

// One client connection: reads requests with http-parser, hands each to
// the handler, and writes its response before reading the next one.
class AdminServer::Connection
    : public std::enable_shared_from_this<AdminServer::Connection> {
public:
  Connection(AdminServer &server, int fd, uint64_t id, std::string peer,
             bool local_socket);
  ~Connection();
  Connection(const Connection &) = delete;
  Connection &operator=(const Connection &) = delete;

  void start();
  // Stops the watchers, closes the socket and leaves the server's table.
  // Idempotent.
  void close();

private:
  static const http_parser_settings &parser_settings();

  static Connection &from(http_parser *parser) {
    return *static_cast<Connection *>(parser->data);
  }

  // http-parser callbacks.
  int on_message_begin();
  int on_url(const char *at, size_t size);
  int on_header_field(const char *at, size_t size);
  int on_header_value(const char *at, size_t size);
  int on_headers_complete();
  int on_body(const char *at, size_t size);
  int on_message_complete();

  // Idle: no request in progress. Reading: a request has begun. Handling:
  // waiting for the handler's reply. Writing: a response is queued.
  enum class State { Idle, Reading, Handling, Writing };

  static void on_io_ready(struct ev_loop *loop, ev_io *watcher,
                          int events) noexcept;
  static void on_timeout(struct ev_loop *loop, ev_timer *watcher,
                         int events) noexcept;

  void read_input();
  void advance();
  void parse_input();
  void dispatch();
  void on_reply(uint64_t sequence, AdminResponse response);
  void queue_response(const AdminResponse &response);
  void queue_error(int status, const std::string &message);
  int reject(int status, std::string message);
  bool finish_header_field();
  bool flush();
  void update_watchers();
  void arm_timer();

  AdminServer &server_;
  int fd_;
  uint64_t id_;
  std::string peer_;
  bool local_socket_;
  ev_io read_watcher_;
  ev_io write_watcher_;
  ev_timer timer_;
  http_parser parser_;
  State state_ = State::Idle;
  // Bytes received and not parsed yet.
  std::string input_;
  std::string output_;
  size_t output_sent_ = 0;

  // The request being parsed.
  AdminRequest request_;
  std::string field_;
  std::string value_;
  bool in_value_ = false;
  size_t header_bytes_ = 0;
  size_t header_count_ = 0;
  unsigned host_count_ = 0;
  std::string host_;
  bool expect_continue_ = false;
  bool head_request_ = false;
  bool request_ready_ = false;
  double request_started_at_ = 0;
  // Status and message chosen by a parser callback that rejected the
  // request.
  int reject_status_ = 0;
  std::string reject_message_;

  // Sequence number of the request the handler holds. Replies carrying an
  // older one are ignored.
  uint64_t sequence_ = 0;
  bool in_dispatch_ = false;
  // The response being written ends the connection.
  bool close_after_ = false;
  // The client shut down its side. Requests already received are served.
  bool end_of_input_ = false;
  bool closed_ = false;
};

} // namespace gatecache::admin
