#include "appliance/admin/api.h"

#include <charconv>
#include <cmath>
#include <exception>
#include <optional>
#include <utility>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "common/ascii.h"
#include "common/log.h"

namespace gatecache::admin {

namespace {

constexpr std::string_view MetricsContentType =
    "text/plain; version=0.0.4; charset=utf-8";
constexpr std::string_view PrewarmJobPrefix = "/v1/prewarm/";

// Serializes `value`, replacing invalid UTF-8 instead of throwing on it.
std::string dump(const nlohmann::json &value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
         "\n";
}

AdminResponse json_response(int status, const nlohmann::json &body) {
  AdminResponse response;
  response.status = status;
  response.body = dump(body);
  return response;
}

AdminResponse error_response(int status, const std::string &message) {
  return json_response(status, nlohmann::json{{"error", message}});
}

AdminResponse method_not_allowed(const AdminRequest &request,
                                 std::string allow) {
  AdminResponse response =
      error_response(405, "method " + request.method + " is not allowed on " +
                              request.path + "; use " + allow);
  response.headers.emplace_back("Allow", std::move(allow));
  return response;
}

bool is_get(const AdminRequest &request) {
  return request.method == "GET" || request.method == "HEAD";
}

int status_for(ErrorCode code) {
  switch (code) {
  case ErrorCode::Invalid:
    return 400;
  case ErrorCode::Denied:
    return 403;
  case ErrorCode::NotFound:
    return 404;
  default:
    return 500;
  }
}

// Returns the canonical text of an IPv4 or IPv6 literal, or nothing.
std::optional<std::string> canonical_ip(const std::string &text) {
  char buffer[INET6_ADDRSTRLEN] = {};
  in_addr v4 = {};
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) {
    inet_ntop(AF_INET, &v4, buffer, sizeof(buffer));
    return std::string(buffer);
  }
  in6_addr v6 = {};
  if (inet_pton(AF_INET6, text.c_str(), &v6) == 1) {
    inet_ntop(AF_INET6, &v6, buffer, sizeof(buffer));
    return std::string(buffer);
  }
  return std::nullopt;
}

// Parses a whole decimal unsigned integer, with no sign or spaces.
template <typename T> std::optional<T> parse_unsigned(std::string_view text) {
  T value = 0;
  auto [end, error] =
      std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() ||
      end != text.data() + text.size()) {
    return std::nullopt;
  }
  return value;
}

} // namespace

Result<PullsQuery> parse_pulls_query(std::string_view query) {
  PullsQuery parsed;
  parsed.limit = DefaultPullsLimit;
  bool seen_client = false;
  bool seen_since = false;
  bool seen_limit = false;

  while (!query.empty()) {
    size_t end = query.find('&');
    std::string_view pair = query.substr(0, end);
    query = end == std::string_view::npos ? std::string_view()
                                          : query.substr(end + 1);
    if (pair.empty()) {
      continue;
    }
    size_t equals = pair.find('=');
    std::string_view name = pair.substr(0, equals);
    std::string_view raw = equals == std::string_view::npos
                               ? std::string_view()
                               : pair.substr(equals + 1);
    auto value = decode_form_value(raw);
    if (!value) {
      return fail(ErrorCode::Invalid,
                  "invalid percent-encoding in '" + std::string(pair) + "'");
    }

    if (name == "client") {
      if (seen_client) {
        return fail(ErrorCode::Invalid, "parameter 'client' given twice");
      }
      seen_client = true;
      auto ip = canonical_ip(*value);
      if (!ip) {
        return fail(ErrorCode::Invalid,
                    "invalid client '" + *value +
                        "': expected an IPv4 or IPv6 address such as "
                        "10.0.0.5 or fd00::5");
      }
      parsed.client = *ip;
    } else if (name == "since") {
      if (seen_since) {
        return fail(ErrorCode::Invalid, "parameter 'since' given twice");
      }
      seen_since = true;
      double since = 0;
      const char *first = value->data();
      const char *last = first + value->size();
      auto [stop, error] = std::from_chars(first, last, since);
      if (value->empty() || error != std::errc() || stop != last ||
          !std::isfinite(since) || since < 0) {
        return fail(ErrorCode::Invalid,
                    "invalid since '" + *value +
                        "': expected Unix seconds, a non-negative number "
                        "such as 1765000000 or 1765000000.5");
      }
      parsed.since = since;
    } else if (name == "limit") {
      if (seen_limit) {
        return fail(ErrorCode::Invalid, "parameter 'limit' given twice");
      }
      seen_limit = true;
      auto limit = parse_unsigned<size_t>(*value);
      if (!limit || *limit == 0 || *limit > MaxPullsLimit) {
        return fail(ErrorCode::Invalid,
                    "invalid limit '" + *value +
                        "': expected an integer from 1 to " +
                        std::to_string(MaxPullsLimit));
      }
      parsed.limit = *limit;
    } else {
      return fail(ErrorCode::Invalid, "unknown parameter '" +
                                          std::string(name) +
                                          "': expected client, since or limit");
    }
  }
  return parsed;
}

void AdminApi::handle(const AdminRequest &request,
                      std::function<void(AdminResponse)> reply) {
  AdminResponse response;
  try {
    response = route(request);
  } catch (const std::exception &e) {
    GC_LOG(Main, error, "admin request {} {} failed: {} peer={}",
           request.method, request.path, e.what(), request.peer);
    response = error_response(500, std::string("internal error: ") + e.what());
  }
  reply(std::move(response));
}

AdminResponse AdminApi::route(const AdminRequest &request) {
  const std::string &path = request.path;
  if (path == "/healthz") {
    if (!is_get(request)) {
      return method_not_allowed(request, "GET, HEAD");
    }
    return json_response(200, nlohmann::json{{"status", "ok"}});
  }
  if (path == "/v1/status") {
    if (!is_get(request)) {
      return method_not_allowed(request, "GET, HEAD");
    }
    return json_response(200, source_.status());
  }
  if (path == "/v1/pulls") {
    if (!is_get(request)) {
      return method_not_allowed(request, "GET, HEAD");
    }
    return get_pulls(request);
  }
  if (path == "/metrics") {
    if (!is_get(request)) {
      return method_not_allowed(request, "GET, HEAD");
    }
    AdminResponse response;
    response.content_type = MetricsContentType;
    response.body = source_.metrics();
    return response;
  }
  if (path == "/v1/prewarm") {
    if (request.method != "POST") {
      return method_not_allowed(request, "POST");
    }
    return post_prewarm(request);
  }
  if (path == "/v1/scrub") {
    if (request.method != "POST") {
      return method_not_allowed(request, "POST");
    }
    if (!request.local_socket) {
      return error_response(
          403, "a scrub can be started only through the admin Unix socket");
    }
    source_.start_scrub();
    GC_LOG(Main, info, "scrub pass requested peer={}", request.peer);
    return json_response(202, nlohmann::json{{"status", "started"}});
  }
  if (path.starts_with(PrewarmJobPrefix)) {
    if (!is_get(request)) {
      return method_not_allowed(request, "GET, HEAD");
    }
    return get_prewarm_job(
        std::string_view(path).substr(PrewarmJobPrefix.size()));
  }
  return error_response(404, "no admin resource at " + path +
                                 "; see /v1/status, /v1/pulls, /v1/prewarm, "
                                 "/v1/scrub, /metrics and /healthz");
}

AdminResponse AdminApi::get_pulls(const AdminRequest &request) {
  auto query = parse_pulls_query(request.query);
  if (!query) {
    return error_response(400, query.error().message);
  }
  return json_response(
      200, source_.pulls(query->client, query->since, query->limit));
}

AdminResponse AdminApi::post_prewarm(const AdminRequest &request) {
  // `AdminServer` already rejects POST on TCP, and this keeps the rule if the
  // API is ever served through something else.
  if (!request.local_socket) {
    return error_response(
        403, "prewarm jobs can be started only through the admin Unix socket");
  }
  auto body = nlohmann::json::parse(request.body, nullptr, false);
  if (body.is_discarded()) {
    return error_response(400, "request body is not valid JSON; expected "
                               "{\"sets\":[<image set>, ...]}");
  }
  if (!body.is_object() || !body.contains("sets")) {
    return error_response(400, "request body has no \"sets\" member; "
                               "expected {\"sets\":[<image set>, ...]}");
  }
  for (const auto &[key, value] : body.items()) {
    if (key != "sets") {
      return error_response(400, "unknown member \"" + key +
                                     "\" in the request body; expected "
                                     "only \"sets\"");
    }
  }
  const nlohmann::json &sets = body["sets"];
  if (!sets.is_array() || sets.empty()) {
    return error_response(
        400, "\"sets\" must be a non-empty array of image set objects");
  }
  for (size_t i = 0; i < sets.size(); ++i) {
    if (!sets[i].is_object()) {
      return error_response(400, "\"sets\"[" + std::to_string(i) +
                                     "] is not an image set object");
    }
  }

  auto id = source_.start_prewarm(sets);
  if (!id) {
    GC_LOG(Main, info, "prewarm request rejected: {} peer={}",
           id.error().message, request.peer);
    return error_response(status_for(id.error().code), id.error().message);
  }
  std::string location = std::string(PrewarmJobPrefix) + std::to_string(*id);
  GC_LOG(Main, info, "prewarm job {} started with {} sets peer={}", *id,
         sets.size(), request.peer);
  AdminResponse response =
      json_response(202, nlohmann::json{{"id", *id}, {"location", location}});
  response.headers.emplace_back("Location", location);
  return response;
}

AdminResponse AdminApi::get_prewarm_job(std::string_view id_text) {
  auto id = parse_unsigned<uint64_t>(id_text);
  if (!id) {
    return error_response(400, "invalid prewarm job id '" +
                                   std::string(id_text) +
                                   "': expected a decimal number");
  }
  auto job = source_.prewarm_job(*id);
  if (!job) {
    return error_response(404,
                          "prewarm job " + std::to_string(*id) + " not found");
  }
  return json_response(200, *job);
}

} // namespace gatecache::admin
