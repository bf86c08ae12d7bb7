#include "appliance/registry/buffered_call.h"

#include <atomic>
#include <utility>

namespace gatecache::registry {

uint64_t next_fetch_id() {
  static std::atomic<uint64_t> counter{0};
  return ++counter;
}

void BufferedCall::start(upstream::Client &client,
                         const upstream::Origin &origin,
                         upstream::Request request,
                         std::function<void()> on_done) {
  on_done_ = std::move(on_done);
  // The client stores a plain pointer, so the call keeps itself alive until
  // it completes.
  keep_alive_ = shared_from_this();
  client.start(origin, std::move(request), this);
}

void BufferedCall::on_head(const upstream::ResponseHead &head) {
  result_.head = head;
}

bool BufferedCall::on_data(const uint8_t *data, size_t size) {
  if (result_.body.size() + size > max_body_bytes_) {
    result_.error = Error{ErrorCode::Invalid,
                          "upstream response larger than " +
                              std::to_string(max_body_bytes_) + " bytes"};
    finish();
    return false;
  }
  result_.body.append(reinterpret_cast<const char *>(data), size);
  return true;
}

void BufferedCall::on_complete(std::optional<Error> error) {
  if (error) {
    result_.error = std::move(error);
  }
  finish();
}

void BufferedCall::finish() {
  auto self = std::move(keep_alive_);
  if (!self) {
    return;
  }
  if (on_done_) {
    on_done_();
  }
  auto waiters = std::move(waiters_);
  for (auto &waiter : waiters) {
    waiter(result_);
  }
}

uint64_t CallGroup::run(const std::string &key, const upstream::Origin &origin,
                        const std::function<upstream::Request()> &make_request,
                        size_t max_body_bytes, BufferedCall::Callback callback,
                        bool *joined) {
  auto found = calls_.find(key);
  if (found != calls_.end()) {
    found->second->add_waiter(std::move(callback));
    if (joined != nullptr) {
      *joined = true;
    }
    return found->second->id();
  }
  if (joined != nullptr) {
    *joined = false;
  }
  auto call = std::make_shared<BufferedCall>(next_fetch_id(), max_body_bytes);
  call->add_waiter(std::move(callback));
  calls_.emplace(key, call);
  call->start(client_, origin, make_request(),
              [this, key] { calls_.erase(key); });
  return call->id();
}

} // namespace gatecache::registry
