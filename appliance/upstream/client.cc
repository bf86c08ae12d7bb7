#include "appliance/upstream/client.h"

#include <cassert>
#include <ctime>
#include <vector>

#include "appliance/upstream/client_impl.h"
#include "appliance/upstream/fetch.h"
#include "common/log.h"

namespace gatecache::upstream {

// Fetches one token from a realm and hands the result to every fetch that
// waits for the same (realm, service, scope).
class TokenRequest final : public Retirable, public ResponseHandler {
public:
  // A token response is a small JSON object; anything larger is refused.
  static constexpr size_t MaxBodyBytes = 64 * 1024;

  TokenRequest(Client::Impl &impl, TokenKey key)
      : impl_(impl), key_(std::move(key)) {}

  void add_waiter(uint64_t id) { waiters_.push_back(id); }

  const std::vector<uint64_t> &waiters() const { return waiters_; }

  void on_head(const ResponseHead &head) override { status_ = head.status; }

  bool on_data(const uint8_t *data, size_t size) override {
    if (body_.size() + size > MaxBodyBytes) {
      impl_.on_token_response(
          key_, fail(ErrorCode::Unauthorized,
                     "token response from " + key_.realm + " exceeds " +
                         std::to_string(MaxBodyBytes) + " bytes"));
      return false;
    }
    body_.append(reinterpret_cast<const char *>(data), size);
    return true;
  }

  void on_complete(std::optional<Error> error) override {
    if (error) {
      impl_.on_token_response(
          key_, fail(error->code, "token request failed: " + error->message));
      return;
    }
    if (status_ != 200) {
      impl_.on_token_response(
          key_, fail(ErrorCode::Unauthorized, "token endpoint " + key_.realm +
                                                  " returned status " +
                                                  std::to_string(status_)));
      return;
    }
    auto grant =
        parse_token_response(body_, static_cast<double>(std::time(nullptr)));
    if (!grant) {
      impl_.on_token_response(
          key_, fail(grant.error().code, "token endpoint " + key_.realm + ": " +
                                             grant.error().message));
      return;
    }
    impl_.on_token_response(key_, std::move(*grant));
  }

private:
  Client::Impl &impl_;
  TokenKey key_;
  std::vector<uint64_t> waiters_;
  int status_ = 0;
  std::string body_;
};

std::optional<std::string> ResponseHead::header(const std::string &name) const {
  for (const auto &[key, value] : headers) {
    if (key == name) {
      return value;
    }
  }
  return std::nullopt;
}

Client::Impl::Impl(struct ev_loop *loop, ClientConfig config)
    : context_(loop, std::move(config)) {}

Client::Impl::~Impl() {
  // Fetches abort their exchanges, which need the pools; pending tasks may
  // point at pools, so they go before the pools do.
  for (auto &[id, fetch] : fetches_) {
    fetch->cancel();
  }
  context_.tasks.clear();
  fetches_.clear();
  token_requests_.clear();
  context_.tasks.clear();
  pools_.clear();
  context_.tasks.clear();
}

uint64_t Client::Impl::start(const Origin &origin, Request request,
                             ResponseHandler *handler) {
  std::string url = origin.base_url;
  if (!request.path.empty() && request.path.front() != '/') {
    url += '/';
  }
  url += request.path;
  return start_url(std::move(url), origin.ca_file, std::move(request), handler,
                   true, origin.base_url);
}

uint64_t Client::Impl::start_url(std::string url, std::string ca_file,
                                 Request request, ResponseHandler *handler,
                                 bool token_flow, std::string observed_base) {
  assert(handler != nullptr);
  uint64_t id = next_fetch_id_++;
  fetches_.emplace(
      id, std::make_unique<Fetch>(*this, id, std::move(url), std::move(ca_file),
                                  std::move(request), handler, token_flow,
                                  std::move(observed_base)));
  context_.tasks.post([this, id] {
    auto it = fetches_.find(id);
    if (it != fetches_.end()) {
      it->second->begin();
    }
  });
  return id;
}

void Client::Impl::cancel(uint64_t id) {
  auto it = fetches_.find(id);
  if (it == fetches_.end()) {
    return;
  }
  std::unique_ptr<Fetch> fetch = std::move(it->second);
  fetches_.erase(it);
  fetch->cancel();
  context_.tasks.retire(std::move(fetch));
}

void Client::Impl::finish_fetch(uint64_t id) {
  auto it = fetches_.find(id);
  if (it == fetches_.end()) {
    return;
  }
  context_.tasks.retire(std::move(it->second));
  fetches_.erase(it);
}

ConnectionPool &Client::Impl::pool_for(const Url &url,
                                       const std::string &ca_file) {
  std::string key = url.origin() + " " + ca_file;
  auto it = pools_.find(key);
  if (it == pools_.end()) {
    // NOTE: pools are kept for the client's life; the set of origins (the
    // registries and their CDN hosts) is small and fixed in practice.
    it = pools_
             .emplace(key, std::make_unique<ConnectionPool>(context_, url.host,
                                                            url.port, ca_file))
             .first;
  }
  return *it->second;
}

std::optional<std::string>
Client::Impl::cached_token(const TokenKey &key) const {
  return tokens_.find(key, ev_now(context_.loop));
}

void Client::Impl::forget_token(const TokenKey &key, const std::string &token) {
  tokens_.erase(key, token);
}

std::optional<TokenKey>
Client::Impl::scope_key(const std::string &origin,
                        const std::string &scope) const {
  auto it = scope_keys_.find({origin, scope});
  if (it == scope_keys_.end()) {
    return std::nullopt;
  }
  return it->second;
}

void Client::Impl::remember_scope(const std::string &origin,
                                  const std::string &scope,
                                  const TokenKey &key) {
  if (scope_keys_.size() >= MaxScopeKeys &&
      scope_keys_.find({origin, scope}) == scope_keys_.end()) {
    // Losing the mappings costs one 401 round trip per scope, not a
    // failure, so a full table is simply emptied.
    scope_keys_.clear();
  }
  scope_keys_[{origin, scope}] = key;
}

void Client::Impl::request_token(const TokenKey &key,
                                 const std::string &ca_file, uint64_t waiter) {
  auto running = token_requests_.find(key);
  if (running != token_requests_.end()) {
    running->second->add_waiter(waiter);
    return;
  }
  // The token endpoint takes the service and each scope as query
  // parameters (Docker registry token specification).
  std::string url = key.realm;
  char separator = url.find('?') == std::string::npos ? '?' : '&';
  if (!key.service.empty()) {
    url += separator;
    url += "service=" + encode_query_component(key.service);
    separator = '&';
  }
  size_t start = 0;
  while (start < key.scope.size()) {
    size_t end = key.scope.find(' ', start);
    if (end == std::string::npos) {
      end = key.scope.size();
    }
    if (end > start) {
      url += separator;
      url += "scope=" +
             encode_query_component(key.scope.substr(start, end - start));
      separator = '&';
    }
    start = end + 1;
  }
  auto request = std::make_unique<TokenRequest>(*this, key);
  request->add_waiter(waiter);
  TokenRequest *handler = request.get();
  token_requests_.emplace(key, std::move(request));
  Request token_request;
  token_request.headers.emplace_back("accept", "application/json");
  start_url(std::move(url), ca_file, std::move(token_request), handler, false);
}

void Client::Impl::on_token_response(const TokenKey &key,
                                     Result<TokenGrant> grant) {
  auto it = token_requests_.find(key);
  if (it == token_requests_.end()) {
    return;
  }
  std::vector<uint64_t> waiters = it->second->waiters();
  context_.tasks.retire(std::move(it->second));
  token_requests_.erase(it);
  Result<std::string> token =
      grant.map([](const TokenGrant &value) { return value.token; });
  if (grant) {
    tokens_.insert(key, *grant, ev_now(context_.loop));
    GC_LOG(Upstream, info,
           "fetched token realm={} service={} scope={} expires_in={}s",
           key.realm, key.service, key.scope, grant->lifetime_s);
  } else {
    GC_LOG(Upstream, warn,
           "token fetch failed realm={} service={} scope={}: {}", key.realm,
           key.service, key.scope, grant.error().message);
  }
  for (uint64_t id : waiters) {
    auto fetch = fetches_.find(id);
    if (fetch != fetches_.end()) {
      fetch->second->resume_with_token(token);
    }
  }
}

Client::Client(struct ev_loop *loop, ClientConfig config)
    : impl_(std::make_unique<Impl>(loop, std::move(config))) {}

Client::~Client() = default;

uint64_t Client::start(const Origin &origin, Request request,
                       ResponseHandler *handler) {
  return impl_->start(origin, std::move(request), handler);
}

void Client::cancel(uint64_t id) { impl_->cancel(id); }

void Client::set_response_observer(ResponseObserver observer) {
  impl_->context().observer = std::move(observer);
}

} // namespace gatecache::upstream
