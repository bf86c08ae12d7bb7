// One HTTP request sent on one upstream connection, and its response.
//
// A `Fetch` (one `Client::start()`) may need several exchanges: the first
// attempt, the retry with a token, one per redirect. The pool queues an
// exchange until a connection can take it; the connection's HTTP/1.1 or
// HTTP/2 session then reports the response through the methods below.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <ev.h>

#include "appliance/upstream/client.h"
#include "appliance/upstream/context.h"
#include "appliance/upstream/url.h"
#include "common/error.h"

namespace gatecache::upstream {

class Connection;
class ConnectionPool;

// Receives the outcome of one exchange. Exactly one of
// `on_exchange_complete` or an `Exchange::abort()` by the receiver ends it.
class ExchangeEvents {
public:
  virtual void on_exchange_head(ResponseHead head) = 0;
  // Returns false to abort the exchange; no completion follows then.
  virtual bool on_exchange_data(const uint8_t *data, size_t size) = 0;
  virtual void on_exchange_complete(std::optional<Error> error) = 0;

protected:
  ~ExchangeEvents() = default;
};

class Exchange final : public Retirable {
public:
  // Sends `headers` as they are, after the pseudo-headers or the Host
  // header. Names must be lower case, and values free of CR, LF and NUL.
  Exchange(ClientContext &context, ExchangeEvents *events, Url url,
           std::string method, HeaderList headers);
  ~Exchange() override;
  Exchange(const Exchange &) = delete;
  Exchange &operator=(const Exchange &) = delete;

  const Url &url() const { return url_; }

  const std::string &method() const { return method_; }

  const HeaderList &headers() const { return headers_; }

  bool is_head() const { return method_ == "HEAD"; }

  bool done() const { return done_; }

  // Returns "GET https://host/path", without the query, for messages.
  std::string describe() const;

  // Detaches the exchange from its pool or connection with no further
  // event. The receiver calls it when it no longer wants the response.
  void abort();

  // Pool side: the exchange waits in `pool`'s queue.
  void set_queued(ConnectionPool *pool);
  // Connection side: `connection` sent the request; the response timeout
  // starts.
  void set_sent(Connection *connection);
  // Returns true, and puts the exchange back in its pool's queue, when the
  // request may be sent again on another connection: no response byte was
  // delivered and it was not retried before. Requests are GET or HEAD,
  // which RFC 9110 section 9.2.2 makes idempotent.
  bool requeue_for_retry();

  // Session side. Each returns false when the exchange was aborted during
  // the call; the session must then forget it.
  bool deliver_head(int status, HeaderList headers, std::string_view protocol);
  bool deliver_data(const uint8_t *data, size_t size);
  // Ends the exchange. The session has already forgotten it.
  void finish(std::optional<Error> error);

private:
  static void on_timer(struct ev_loop *loop, ev_timer *watcher,
                       int revents) noexcept;
  void handle_timer();
  void detach();

  ClientContext &context_;
  ExchangeEvents *events_;
  Url url_;
  std::string method_;
  HeaderList headers_;
  ConnectionPool *pool_ = nullptr;
  Connection *connection_ = nullptr;
  bool done_ = false;
  bool head_delivered_ = false;
  bool retried_ = false;
  double sent_at_ = 0;
  double last_data_at_ = 0;
  ev_timer timer_;
};

} // namespace gatecache::upstream
