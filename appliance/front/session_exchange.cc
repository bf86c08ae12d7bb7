#include "appliance/front/session_exchange.h"

#include <utility>

#include "appliance/front/http_util.h"
#include "common/log.h"

namespace gatecache::front {

namespace {

// nginx's code for a request whose client went away before the response.
constexpr int ClientClosedStatus = 499;

} // namespace

SessionExchange::SessionExchange(Request request, ExchangeOwner *owner)
    : Exchange(std::move(request)), owner_(owner),
      start_(std::chrono::steady_clock::now()) {}

void SessionExchange::respond(Response response) {
  if (responded_) {
    return;
  }
  responded_ = true;
  if (owner_ == nullptr) {
    return;
  }

  response_ = std::move(response);
  if (response_.body) {
    // The body lives inside this exchange, so `this` outlives every call
    // of the wake-up function that the body can make.
    response_.body->set_wakeup([this] {
      if (owner_ != nullptr) {
        owner_->on_body_ready(*this);
      }
    });
  }
  owner_->on_response(*this);
}

void SessionExchange::detach(bool aborted) {
  owner_ = nullptr;
  response_ = Response{};
  if (aborted) {
    closed_ = true;
    cancel();
  }
}

double SessionExchange::elapsed_ms() const {
  auto elapsed = std::chrono::steady_clock::now() - start_;
  return std::chrono::duration<double, std::milli>(elapsed).count();
}

void SessionExchange::log_access(bool aborted) {
  if (logged_) {
    return;
  }
  logged_ = true;

  const Request &r = request();
  int status = state_.status != 0 ? state_.status : ClientClosedStatus;
  GC_LOG(Access, info,
         "c={} r={}.{} {} {} {} {}{}{} {} {} cache={} ns={} f={} t={:.1f}{}",
         r.connection_id, r.connection_id, r.request_id, r.peer, r.protocol,
         LogText{r.method_name}, LogText{r.path}, r.query.empty() ? "" : "?",
         LogText{r.query, false}, status, state_.sent, to_string(cache_result),
         LogText{upstream_name}, fetch_id, elapsed_ms(),
         aborted ? " aborted" : "");
  if (on_finished) {
    auto finished = std::move(on_finished);
    on_finished = nullptr;
    finished(*this, status);
  }
}

void ExchangeList::push_back(std::shared_ptr<SessionExchange> exchange) {
  SessionExchange *raw = exchange.get();
  raw->self_ = std::move(exchange);
  raw->prev_ = tail_;
  raw->next_ = nullptr;
  if (tail_ != nullptr) {
    tail_->next_ = raw;
  } else {
    head_ = raw;
  }
  tail_ = raw;
  ++size_;
}

std::shared_ptr<SessionExchange>
ExchangeList::remove(SessionExchange &exchange) {
  if (exchange.prev_ != nullptr) {
    exchange.prev_->next_ = exchange.next_;
  } else {
    head_ = exchange.next_;
  }
  if (exchange.next_ != nullptr) {
    exchange.next_->prev_ = exchange.prev_;
  } else {
    tail_ = exchange.prev_;
  }
  exchange.prev_ = nullptr;
  exchange.next_ = nullptr;
  --size_;
  return std::move(exchange.self_);
}

void ExchangeList::clear() {
  while (head_ != nullptr) {
    remove(*head_);
  }
}

} // namespace gatecache::front
