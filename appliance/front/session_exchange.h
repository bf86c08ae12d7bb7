// The `Exchange` that both HTTP sessions hand to the request handler, and
// the per-request state they keep while its response goes out.
//
// Ownership: the session owns each exchange through a list of shared
// pointers until the request ends. The handler may keep its own shared
// pointer longer; `respond()` on an exchange the session released only
// drops the response.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "appliance/front/exchange.h"

namespace gatecache::front {

class SessionExchange;

// The session side of an exchange. Calls arrive on the loop thread, maybe
// from inside `RequestHandler::handle()` or a body source, so an owner
// must only record them and schedule work.
class ExchangeOwner {
public:
  // The handler called `respond()`.
  virtual void on_response(SessionExchange &exchange) = 0;
  // A body that returned `Wait` has more bytes, or failed.
  virtual void on_body_ready(SessionExchange &exchange) = 0;

protected:
  ~ExchangeOwner() = default;
};

// Per-request state of the session that owns the exchange.
struct ExchangeState {
  // HTTP/1.1: the request, with any body, was read completely.
  bool request_complete = false;
  // HTTP/1.1: the client allows another request on the connection.
  bool keep_alive = false;
  // HTTP/1.1: the request came as HTTP/1.0.
  bool http10 = false;
  // HTTP/2 stream id; 0 for HTTP/1.1.
  int32_t stream_id = 0;
  // HTTP/2: request body bytes received and dropped.
  uint64_t request_body_bytes = 0;
  // Status sent, 0 until the response head went out.
  int status = 0;
  bool head_sent = false;
  bool send_body = false;
  // HTTP/1.1 chunked transfer coding.
  bool chunked = false;
  // The body returned `Wait`; HTTP/2 DATA frames wait for
  // `nghttp2_session_resume_data()`.
  bool deferred = false;
  // HTTP/2: the body woke while `read_body()` was asking it for bytes.
  bool woke = false;
  // Every response byte was handed to TLS.
  bool finished = false;
  // Content-Length announced, -1 when none.
  int64_t length = -1;
  // Body bytes handed to TLS.
  uint64_t sent = 0;
  // HTTP/2: body bytes that the DATA read callback reserved for the frame
  // that `send_data_callback` writes next. Valid until `consume()`.
  const uint8_t *chunk = nullptr;
  // HTTP/2: text of the `:status`, `content-length` and `date` fields,
  // which nghttp2 reads without a copy when it encodes the HEADERS frame.
  char status_text[4] = {};
  char length_text[24] = {};
  char date_text[32] = {};
};

class SessionExchange final : public Exchange {
public:
  SessionExchange(Request request, ExchangeOwner *owner);
  ~SessionExchange() override = default;

  void respond(Response response) override;

  bool closed() const override { return closed_; }

  bool responded() const { return responded_; }

  bool attached() const { return owner_ != nullptr; }

  // The handler's response. Valid after `responded()` until `detach()`.
  Response &response() { return response_; }

  ExchangeState &state() { return state_; }

  const ExchangeState &state() const { return state_; }

  // Cuts the exchange off its session, so no callback reaches the session
  // any more, and releases the response body. With `aborted`, also marks
  // the exchange closed and runs the handler's cancel callback.
  void detach(bool aborted);

  // Writes the access log line unless one was written before. A request
  // aborted before its response head went out is logged with status 499,
  // the code that nginx uses for a client that closed the request.
  void log_access(bool aborted);

  // Milliseconds since the request head arrived.
  double elapsed_ms() const;

private:
  friend class ExchangeList;

  ExchangeOwner *owner_;
  Response response_;
  ExchangeState state_;
  std::chrono::steady_clock::time_point start_;
  bool responded_ = false;
  bool closed_ = false;
  bool logged_ = false;
  // Intrusive list links and the list's owning reference, so that queuing
  // a request allocates nothing beyond the exchange itself.
  SessionExchange *prev_ = nullptr;
  SessionExchange *next_ = nullptr;
  std::shared_ptr<SessionExchange> self_;
};

// Ordered list of the exchanges a session owns. The list keeps one shared
// pointer per member.
class ExchangeList {
public:
  ExchangeList() = default;
  ExchangeList(const ExchangeList &) = delete;
  ExchangeList &operator=(const ExchangeList &) = delete;

  ~ExchangeList() { clear(); }

  bool empty() const { return head_ == nullptr; }

  size_t size() const { return size_; }

  SessionExchange *front() const { return head_; }

  static SessionExchange *next(const SessionExchange &exchange) {
    return exchange.next_;
  }

  void push_back(std::shared_ptr<SessionExchange> exchange);
  // Unlinks `exchange` and returns the list's reference to it.
  // Precondition: `exchange` is in this list.
  std::shared_ptr<SessionExchange> remove(SessionExchange &exchange);
  // Unlinks every member.
  void clear();

private:
  SessionExchange *head_ = nullptr;
  SessionExchange *tail_ = nullptr;
  size_t size_ = 0;
};

} // namespace gatecache::front
