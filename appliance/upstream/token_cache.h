// Bearer tokens of the registry token flow, cached until they expire.
//
// Times are seconds on one clock chosen by the caller (the client uses
// `ev_now()`), so tests pass any value they like.
#pragma once

#include <compare>
#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.h"

namespace gatecache::upstream {

// Identity of a token: the challenge's realm and service and the scope it
// grants. Docker Hub issues one token per repository scope.
struct TokenKey {
  std::string realm;
  std::string service;
  std::string scope;

  auto operator<=>(const TokenKey &) const = default;
};

// A token as the token endpoint returned it.
struct TokenGrant {
  std::string token;
  double lifetime_s = 60; // Seconds from now until the token expires.
};

// Parses a token endpoint response body: JSON with `token` or
// `access_token`, optional `expires_in` (seconds, default 60) and optional
// `issued_at` (RFC 3339). When `issued_at` lies in the past of `now_unix_s`
// (wall-clock seconds since the epoch), the lifetime is shortened by the
// token's age. Returns `ErrorCode::Unauthorized` when no token is present
// and `ErrorCode::Invalid` when the body is not JSON.
[[nodiscard]] Result<TokenGrant> parse_token_response(std::string_view body,
                                                      double now_unix_s);

class TokenCache {
public:
  // Tokens are dropped this many seconds before they expire, so a request
  // never starts with a token that runs out on the way. Short-lived tokens
  // lose at most half their lifetime instead.
  static constexpr double ExpiryMarginS = 10;

  explicit TokenCache(size_t max_entries = 4096);

  // Returns the token for `key` when it is still usable at `now`.
  std::optional<std::string> find(const TokenKey &key, double now) const;

  // Stores `grant` for `key`, received at `now`. When the cache is full,
  // expired entries go first, then the one that expires soonest.
  void insert(const TokenKey &key, const TokenGrant &grant, double now);

  // Drops the token for `key` if it is still `token`. A newer token that
  // another request stored in the meantime stays.
  void erase(const TokenKey &key, const std::string &token);

  size_t size() const { return entries_.size(); }

private:
  struct Entry {
    std::string token;
    double usable_until = 0;
  };

  void make_room(double now);

  size_t max_entries_;
  std::map<TokenKey, Entry> entries_;
};

} // namespace gatecache::upstream
