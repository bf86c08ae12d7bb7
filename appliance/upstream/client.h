// HTTP client towards upstream registries, on the caller's libev loop.
//
// One `Client` per loop. It keeps a pool of connections per origin (scheme,
// host, port): HTTP/2 through nghttp2 when the server selects `h2` by ALPN,
// HTTP/1.1 with keep-alive otherwise. Names are resolved with c-ares on the
// same loop. Certificates are verified against the system store plus the
// origin's `ca_file`, and the host name is checked.
//
// Registry protocol handled inside the client, so callers see only the
// final response:
//  - 401 with `WWW-Authenticate: Bearer realm=...,service=...,scope=...`:
//    an anonymous token is fetched from the realm (GET with `service` and
//    `scope` query parameters), cached per (realm, service, scope) until its
//    `expires_in` (default 60 s) runs out, and the request is retried once
//    with `Authorization: Bearer <token>`. Later requests with the same
//    scope send the cached token up front.
//  - 301, 302, 303, 307 and 308: the `Location` (absolute or relative) is
//    followed, up to 5 hops. `Authorization` is sent only to the origin the
//    token was issued for, never to another host. A 401 from another host
//    is passed through as it is.
//  - A 401 whose challenges offer no Bearer realm (Basic alone, for
//    example) is passed through, since the client holds no credentials.
//
// Requests are GET or HEAD, so a request that got no response byte before
// its connection failed is sent once more on a new connection.
//
// Threading: every call and every callback is on the loop thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"

struct ev_loop;

namespace gatecache::upstream {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct ClientConfig {
  double connect_timeout_s = 10;   // TCP connect plus TLS handshake.
  double response_timeout_s = 30;  // From request sent to response head.
  double idle_timeout_s = 60;      // No bytes received while a body streams.
  double pool_idle_timeout_s = 90; // Idle pooled connections close after.
  std::string user_agent = "gatecache";
};

// Destination of requests: the registry's base URL and its trust anchor.
struct Origin {
  std::string base_url; // "https://registry-1.docker.io", no trailing slash.
  std::string ca_file;  // Extra PEM CA bundle; empty for the system store.
};

struct Request {
  std::string method = "GET"; // "GET" or "HEAD".
  std::string path;           // "/v2/library/nginx/manifests/latest".
  HeaderList headers;         // Accept, Range, ... (lower-case names).
  // Token scope for the Bearer flow, such as
  // "repository:library/nginx:pull". Empty: use the scope from the
  // challenge.
  std::string scope;
};

struct ResponseHead {
  int status = 0;
  HeaderList headers;   // Lower-case names, in arrival order.
  std::string url;      // Final URL after redirects.
  std::string protocol; // "h2" or "http/1.1".

  // Returns the first value of header `name` (lower case), or nullopt.
  std::optional<std::string> header(const std::string &name) const;
};

// Receives one response. Exactly one of `on_complete` calls ends it, after
// which the client never touches the handler again.
class ResponseHandler {
public:
  virtual ~ResponseHandler() = default;
  // The final response head (after tokens and redirects).
  virtual void on_head(const ResponseHead &head) = 0;
  // Body bytes as they arrive. Return false to abort the request; then
  // `on_complete` is not called.
  virtual bool on_data(const uint8_t *data, size_t size) = 0;
  // The body ended. `error` is set on connection failure, timeout, TLS
  // failure, a body shorter than its Content-Length, or a protocol error;
  // then any bytes already passed to `on_data` must be discarded.
  virtual void on_complete(std::optional<Error> error) = 0;
  // `error->code` is one of:
  //  - `Timeout`: the connect, response head or idle body deadline passed.
  //  - `Unreachable`: DNS, connect or TLS failed, or the connection was
  //    lost before the response head.
  //  - `Corrupt`: an HTTP/1.1 body was cut short.
  //  - `UpstreamRejected`: a malformed response, an HTTP/2 stream reset or
  //    too many redirects.
  //  - `Unauthorized`: the token endpoint rejected the request or returned
  //    no token.
  //  - `Invalid`: the request has a bad URL, method or header.
  // HTTP statuses, 401 and 404 included, arrive through `on_head` with no
  // error.
};

// Sees the head of every response from a registry origin (the host of
// `Origin::base_url`, not redirect targets), 401s, redirects and 429s
// included, before the client acts on it. Rate-limit headers arrive on any
// of these. `base_url` is the `Origin::base_url` the request was started
// with.
using ResponseObserver =
    std::function<void(const std::string &base_url, const ResponseHead &head)>;

class Client {
public:
  Client(struct ev_loop *loop, ClientConfig config);
  ~Client();
  Client(const Client &) = delete;
  Client &operator=(const Client &) = delete;

  // Starts `request` against `origin`. `handler` must outlive the request
  // or be detached with `cancel()`. Callbacks never run before `start()`
  // returns. Returns an id for `cancel()`.
  uint64_t start(const Origin &origin, Request request,
                 ResponseHandler *handler);

  // Aborts request `id`. Its handler receives no further callbacks.
  void cancel(uint64_t id);

  // Replaces the observer of registry responses; runs on the loop.
  void set_response_observer(ResponseObserver observer);

  // The implementation, opaque to callers (appliance/upstream/client_impl.h).
  class Impl;

private:
  std::unique_ptr<Impl> impl_;
};

} // namespace gatecache::upstream
