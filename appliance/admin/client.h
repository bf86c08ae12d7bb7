// Blocking HTTP/1.1 client of the admin endpoint over its Unix socket, for
// the CLI subcommands. Not for use on an event loop thread.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace gatecache::admin {

struct ClientResponse {
  int status = 0;
  std::string content_type;
  std::string body;
};

// Percent-encodes `value` for a query string, keeping only RFC 3986
// unreserved characters as they are.
std::string query_escape(std::string_view value);

// Returns the parsed body of a 2xx response to `request` (such as "GET
// /v1/status"), which names the request in error messages. Any other
// status is an error carrying the server's message: `Invalid` for 400,
// `NotFound` for 404, `Denied` for 403, `UpstreamRejected` otherwise.
// `Invalid` also for a 2xx body that is not JSON.
[[nodiscard]] Result<nlohmann::json> json_body(const std::string &request,
                                               const ClientResponse &response);

class AdminClient {
public:
  static constexpr double DefaultTimeoutS = 10;

  // Connects on the first request and keeps the connection for the next
  // ones. `timeout_s` bounds each request from connect to the last byte.
  explicit AdminClient(std::string socket_path,
                       double timeout_s = DefaultTimeoutS);
  ~AdminClient();
  AdminClient(const AdminClient &) = delete;
  AdminClient &operator=(const AdminClient &) = delete;

  // Sends a request and returns the response whatever its status. `target`
  // is a path with an optional query, such as "/v1/pulls?limit=10".
  // Errors: `Unreachable` when the socket cannot be connected (the message
  // names the path and how to check the daemon), `Timeout`, `Io` when the
  // connection breaks, `Invalid` for a malformed response.
  [[nodiscard]] Result<ClientResponse> get(const std::string &target);
  [[nodiscard]] Result<ClientResponse> post(const std::string &target,
                                            const std::string &body);

  // Like `get()` and `post()`, and returns the body as `json_body()` does.
  [[nodiscard]] Result<nlohmann::json> get_json(const std::string &target);
  [[nodiscard]] Result<nlohmann::json> post_json(const std::string &target,
                                                 const nlohmann::json &body);

  const std::string &socket_path() const { return socket_path_; }

private:
  Result<ClientResponse> request(const std::string &method,
                                 const std::string &target,
                                 const std::string &body);
  Result<ClientResponse> exchange(const std::string &message, double deadline,
                                  bool &sent_anything, bool &got_anything);
  Result<void> connect(double deadline);
  void disconnect();

  std::string socket_path_;
  double timeout_s_;
  int fd_ = -1;
};

} // namespace gatecache::admin
