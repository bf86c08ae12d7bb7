// An upstream request whose whole response fits in memory (manifests, HEAD
// checks, tag lists), shared by every identical request made while it
// runs.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "appliance/upstream/client.h"
#include "common/error.h"

namespace gatecache::registry {

struct CallResult {
  // Set when no response arrived (connect failure, timeout, truncation) or
  // the body passed the size limit.
  std::optional<Error> error;
  upstream::ResponseHead head;
  std::string body;
};

class BufferedCall : public upstream::ResponseHandler,
                     public std::enable_shared_from_this<BufferedCall> {
public:
  using Callback = std::function<void(const CallResult &)>;

  BufferedCall(uint64_t id, size_t max_body_bytes)
      : id_(id), max_body_bytes_(max_body_bytes) {}

  uint64_t id() const { return id_; }

  void add_waiter(Callback callback) {
    waiters_.push_back(std::move(callback));
  }

  // Starts the request. `on_done` runs once, before the waiters, so the
  // owner can forget the call.
  void start(upstream::Client &client, const upstream::Origin &origin,
             upstream::Request request, std::function<void()> on_done);

  void on_head(const upstream::ResponseHead &head) override;
  bool on_data(const uint8_t *data, size_t size) override;
  void on_complete(std::optional<Error> error) override;

private:
  void finish();

  uint64_t id_;
  size_t max_body_bytes_;
  CallResult result_;
  std::vector<Callback> waiters_;
  std::function<void()> on_done_;
  std::shared_ptr<BufferedCall> keep_alive_;
};

// Coalesces identical calls by key: the first caller starts the request,
// later callers with the same key wait for the same result.
class CallGroup {
public:
  explicit CallGroup(upstream::Client &client) : client_(client) {}

  // Joins the call `key` or starts it with `make_request()`. Returns the
  // id of the upstream call, for logs.
  uint64_t run(const std::string &key, const upstream::Origin &origin,
               const std::function<upstream::Request()> &make_request,
               size_t max_body_bytes, BufferedCall::Callback callback,
               bool *joined = nullptr);

  size_t in_flight() const { return calls_.size(); }

  // True while the call `key` runs, so `run()` would join it.
  bool running(const std::string &key) const { return calls_.contains(key); }

private:
  upstream::Client &client_;
  std::unordered_map<std::string, std::shared_ptr<BufferedCall>> calls_;
};

// Process-wide id for upstream fetches, shown as `f=<id>` in logs.
uint64_t next_fetch_id();

} // namespace gatecache::registry
