#include "appliance/upstream/token_cache.h"

#include <algorithm>
#include <cstdio>
#include <ctime>

#include <nlohmann/json.hpp>

namespace gatecache::upstream {

namespace {

// The Docker registry token specification: "When omitted, this defaults to
// 60 seconds".
constexpr double DefaultLifetimeS = 60;

// Parses RFC 3339 date-times such as "2024-01-02T03:04:05Z" or
// "2024-01-02T03:04:05.123+02:00" into seconds since the epoch.
std::optional<double> parse_rfc3339(const std::string &text) {
  std::tm tm{};
  int consumed = 0;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year,
                  &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec,
                  &consumed) != 6) {
    return std::nullopt;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  double seconds = static_cast<double>(timegm(&tm));
  std::string_view rest(text.c_str() + consumed);
  if (rest.starts_with('.')) {
    size_t digits = rest.find_first_not_of("0123456789", 1);
    rest.remove_prefix(digits == std::string_view::npos ? rest.size() : digits);
  }
  if (rest == "Z" || rest == "z") {
    return seconds;
  }
  int hours = 0;
  int minutes = 0;
  char sign = 0;
  std::string offset(rest);
  if (std::sscanf(offset.c_str(), "%c%2d:%2d", &sign, &hours, &minutes) != 3 ||
      (sign != '+' && sign != '-')) {
    return std::nullopt;
  }
  double shift = hours * 3600.0 + minutes * 60.0;
  return sign == '+' ? seconds - shift : seconds + shift;
}

} // namespace

Result<TokenGrant> parse_token_response(std::string_view body,
                                        double now_unix_s) {
  auto json = nlohmann::json::parse(body, nullptr, false);
  if (json.is_discarded() || !json.is_object()) {
    return fail(ErrorCode::Invalid, "token response is not a JSON object");
  }
  TokenGrant grant;
  for (const char *field : {"token", "access_token"}) {
    auto it = json.find(field);
    if (it != json.end() && it->is_string() &&
        !it->get_ref<const std::string &>().empty()) {
      grant.token = it->get<std::string>();
      break;
    }
  }
  if (grant.token.empty()) {
    return fail(ErrorCode::Unauthorized,
                "token response has neither `token` nor `access_token`");
  }
  grant.lifetime_s = DefaultLifetimeS;
  auto expires = json.find("expires_in");
  if (expires != json.end() && expires->is_number() &&
      expires->get<double>() > 0) {
    grant.lifetime_s = expires->get<double>();
  }
  auto issued = json.find("issued_at");
  if (issued != json.end() && issued->is_string()) {
    std::optional<double> issued_at = parse_rfc3339(issued->get<std::string>());
    // A timestamp ahead of our clock is skew, not a younger token, so only
    // an age in the past shortens the lifetime.
    if (issued_at && *issued_at < now_unix_s) {
      grant.lifetime_s =
          std::max(0.0, grant.lifetime_s - (now_unix_s - *issued_at));
    }
  }
  return grant;
}

TokenCache::TokenCache(size_t max_entries)
    : max_entries_(std::max<size_t>(max_entries, 1)) {}

std::optional<std::string> TokenCache::find(const TokenKey &key,
                                            double now) const {
  auto it = entries_.find(key);
  if (it == entries_.end() || it->second.usable_until <= now) {
    return std::nullopt;
  }
  return it->second.token;
}

void TokenCache::insert(const TokenKey &key, const TokenGrant &grant,
                        double now) {
  double margin = std::min(ExpiryMarginS, grant.lifetime_s / 2);
  double usable_until = now + grant.lifetime_s - margin;
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    make_room(now);
    entries_.emplace(key, Entry{grant.token, usable_until});
    return;
  }
  it->second = Entry{grant.token, usable_until};
}

void TokenCache::erase(const TokenKey &key, const std::string &token) {
  auto it = entries_.find(key);
  if (it != entries_.end() && it->second.token == token) {
    entries_.erase(it);
  }
}

void TokenCache::make_room(double now) {
  if (entries_.size() < max_entries_) {
    return;
  }
  std::erase_if(entries_, [now](const auto &item) {
    return item.second.usable_until <= now;
  });
  if (entries_.size() < max_entries_) {
    return;
  }
  auto soonest = std::min_element(
      entries_.begin(), entries_.end(), [](const auto &a, const auto &b) {
        return a.second.usable_until < b.second.usable_until;
      });
  entries_.erase(soonest);
}

} // namespace gatecache::upstream
