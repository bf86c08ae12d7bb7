// Internal state of `Client`: the fetches in flight, the connection pools
// and the token flow.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

#include "appliance/upstream/client.h"
#include "appliance/upstream/connection_pool.h"
#include "appliance/upstream/context.h"
#include "appliance/upstream/token_cache.h"
#include "appliance/upstream/url.h"

namespace gatecache::upstream {

class Fetch;
class TokenRequest;

class Client::Impl {
public:
  // Bound on remembered (origin, scope) to token key mappings.
  static constexpr size_t MaxScopeKeys = 4096;

  Impl(struct ev_loop *loop, ClientConfig config);
  ~Impl();

  uint64_t start(const Origin &origin, Request request,
                 ResponseHandler *handler);
  // Starts a request for an absolute URL. `token_flow` false: a 401 is
  // passed through, as the token endpoint's own requests need.
  uint64_t start_url(std::string url, std::string ca_file, Request request,
                     ResponseHandler *handler, bool token_flow,
                     std::string observed_base = {});
  void cancel(uint64_t id);

  ClientContext &context() { return context_; }

  ConnectionPool &pool_for(const Url &url, const std::string &ca_file);
  // Forgets fetch `id` after it ended; it is destroyed later.
  void finish_fetch(uint64_t id);

  // Token flow, used by `Fetch`.
  std::optional<std::string> cached_token(const TokenKey &key) const;
  void forget_token(const TokenKey &key, const std::string &token);
  std::optional<TokenKey> scope_key(const std::string &origin,
                                    const std::string &scope) const;
  void remember_scope(const std::string &origin, const std::string &scope,
                      const TokenKey &key);
  // Fetches a token for `key` unless a fetch for it is already running,
  // then calls `Fetch::resume_with_token` on fetch `waiter`.
  void request_token(const TokenKey &key, const std::string &ca_file,
                     uint64_t waiter);
  // Called by `TokenRequest` when its fetch ended.
  void on_token_response(const TokenKey &key, Result<TokenGrant> grant);

private:
  ClientContext context_;
  TokenCache tokens_;
  uint64_t next_fetch_id_ = 1;
  std::map<std::string, std::unique_ptr<ConnectionPool>> pools_;
  std::unordered_map<uint64_t, std::unique_ptr<Fetch>> fetches_;
  std::map<TokenKey, std::unique_ptr<TokenRequest>> token_requests_;
  std::map<std::pair<std::string, std::string>, TokenKey> scope_keys_;
};

} // namespace gatecache::upstream
