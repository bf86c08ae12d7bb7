#include "appliance/upstream/exchange.h"

#include <fmt/format.h>

#include "appliance/upstream/connection.h"
#include "appliance/upstream/connection_pool.h"

namespace gatecache::upstream {

Exchange::Exchange(ClientContext &context, ExchangeEvents *events, Url url,
                   std::string method, HeaderList headers)
    : context_(context), events_(events), url_(std::move(url)),
      method_(std::move(method)), headers_(std::move(headers)) {
  ev_timer_init(&timer_, on_timer, 0, 0);
  timer_.data = this;
}

Exchange::~Exchange() {
  if (!done_) {
    abort();
  }
  ev_timer_stop(context_.loop, &timer_);
}

std::string Exchange::describe() const {
  return method_ + " " + url_.redacted();
}

void Exchange::abort() {
  if (done_) {
    return;
  }
  done_ = true;
  events_ = nullptr;
  detach();
}

void Exchange::detach() {
  ev_timer_stop(context_.loop, &timer_);
  Connection *connection = connection_;
  ConnectionPool *pool = pool_;
  connection_ = nullptr;
  pool_ = nullptr;
  if (connection != nullptr) {
    connection->abort(this);
  } else if (pool != nullptr) {
    pool->remove(this);
  }
}

void Exchange::set_queued(ConnectionPool *pool) {
  pool_ = pool;
  connection_ = nullptr;
}

void Exchange::set_sent(Connection *connection) {
  connection_ = connection;
  sent_at_ = ev_now(context_.loop);
  ev_timer_stop(context_.loop, &timer_);
  ev_timer_set(&timer_, context_.config.response_timeout_s, 0);
  ev_timer_start(context_.loop, &timer_);
}

bool Exchange::requeue_for_retry() {
  if (retried_ || head_delivered_ || done_ || pool_ == nullptr) {
    return false;
  }
  retried_ = true;
  ev_timer_stop(context_.loop, &timer_);
  connection_ = nullptr;
  pool_->requeue(this);
  return true;
}

bool Exchange::deliver_head(int status, HeaderList headers,
                            std::string_view protocol) {
  head_delivered_ = true;
  last_data_at_ = ev_now(context_.loop);
  ev_timer_stop(context_.loop, &timer_);
  ev_timer_set(&timer_, context_.config.idle_timeout_s, 0);
  ev_timer_start(context_.loop, &timer_);
  ResponseHead head;
  head.status = status;
  head.headers = std::move(headers);
  head.url = url_.str();
  head.protocol = std::string(protocol);
  events_->on_exchange_head(std::move(head));
  return !done_;
}

bool Exchange::deliver_data(const uint8_t *data, size_t size) {
  // The idle timer is not restarted here: `handle_timer` compares against
  // this time stamp, which keeps the per-chunk cost to one store.
  last_data_at_ = ev_now(context_.loop);
  bool keep = events_->on_exchange_data(data, size);
  if (done_) {
    return false;
  }
  if (!keep) {
    abort();
    return false;
  }
  return true;
}

void Exchange::finish(std::optional<Error> error) {
  if (done_) {
    return;
  }
  done_ = true;
  ev_timer_stop(context_.loop, &timer_);
  connection_ = nullptr;
  pool_ = nullptr;
  ExchangeEvents *events = events_;
  events_ = nullptr;
  events->on_exchange_complete(std::move(error));
}

void Exchange::on_timer(struct ev_loop *, ev_timer *watcher, int) noexcept {
  static_cast<Exchange *>(watcher->data)->handle_timer();
}

void Exchange::handle_timer() {
  double now = ev_now(context_.loop);
  std::string message;
  if (!head_delivered_) {
    message = fmt::format("{}: no response head within {} s", describe(),
                          context_.config.response_timeout_s);
  } else {
    double deadline = last_data_at_ + context_.config.idle_timeout_s;
    if (deadline > now) {
      ev_timer_set(&timer_, deadline - now, 0);
      ev_timer_start(context_.loop, &timer_);
      return;
    }
    message = fmt::format("{}: no body bytes received for {} s", describe(),
                          context_.config.idle_timeout_s);
  }
  ExchangeEvents *events = events_;
  done_ = true;
  events_ = nullptr;
  detach();
  events->on_exchange_complete(Error{ErrorCode::Timeout, std::move(message)});
}

} // namespace gatecache::upstream
