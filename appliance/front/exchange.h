// One request and its response, the contract between the HTTP sessions
// (HTTP/1.1 and HTTP/2) and the code that handles requests.
//
// A session parses a request into an `Exchange` and hands it to a
// `RequestHandler`. The handler responds, now or later, by calling
// `respond()` once. The response body is a `BodySource` that the session
// pulls from when the connection can take more bytes, so the handler never
// buffers a blob and a slow client never slows anyone else.
//
// Threading: everything here runs on the loop thread that owns the session.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gatecache::front {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

enum class Method { Get, Head, Other };

// Request class that orders counted upstream requests: a node's pull
// first, then revalidation, then prewarm.
enum class Priority { Node = 0, Revalidation = 1, Prewarm = 2 };

struct Request {
  Method method = Method::Other;
  std::string method_name; // As received, for logs.
  std::string path;        // Raw path, percent-encoding intact.
  std::string query;       // Raw query without '?', empty when absent.
  std::string accept;      // Every Accept header joined with ", ".
  std::string range;       // The Range header, empty when absent.
  std::string protocol;    // "h2" or "http/1.1".
  std::string peer;        // Client address as "ip:port" or "[ip]:port".
  // Subject common name of a client certificate verified against the
  // internal CA; empty when the client sent none.
  std::string client_name;
  // Set by internal requests (prewarm); requests from the network are
  // always Node.
  Priority priority = Priority::Node;
  uint64_t connection_id = 0;
  uint64_t request_id = 0; // HTTP/2 stream id, or HTTP/1.1 sequence number.
};

// A chunk of body bytes that stays valid until the next call to `consume()`
// or the source's destruction.
struct BodyChunk {
  enum class State { Data, Wait, End, Error };
  State state = State::End;
  const uint8_t *data = nullptr;
  size_t size = 0;
};

// Pull-based response body. The session calls `next(max)`:
//  - `Data`: up to `max` contiguous bytes to send; the session then calls
//    `consume(n)` with the number it sent (n may be less than `size`).
//  - `Wait`: nothing now. The source calls the wake-up function given to
//    `set_wakeup()` when more is ready or it failed.
//  - `End`: every byte was sent.
//  - `Error`: the body cannot be completed. The session aborts the response
//    (HTTP/2 RST_STREAM, HTTP/1.1 connection close), so the client never
//    takes a truncated or unverified body as complete.
class BodySource {
public:
  virtual ~BodySource() = default;
  virtual BodyChunk next(size_t max) = 0;
  virtual void consume(size_t n) = 0;
  // Total body length when known, for Content-Length; -1 when not known.
  virtual int64_t length() const = 0;

  void set_wakeup(std::function<void()> wakeup) { wakeup_ = std::move(wakeup); }

protected:
  void wake() {
    if (wakeup_) {
      wakeup_();
    }
  }

private:
  std::function<void()> wakeup_;
};

// Body from memory shared with a cache (manifests, error documents).
class MemoryBody final : public BodySource {
public:
  MemoryBody(std::shared_ptr<const std::string> bytes, size_t offset,
             size_t length)
      : bytes_(std::move(bytes)), offset_(offset), end_(offset + length) {}

  explicit MemoryBody(std::string bytes)
      : MemoryBody(std::make_shared<const std::string>(std::move(bytes))) {}

  explicit MemoryBody(std::shared_ptr<const std::string> bytes)
      : MemoryBody(bytes, 0, bytes->size()) {}

  BodyChunk next(size_t max) override {
    if (offset_ >= end_) {
      return {BodyChunk::State::End};
    }
    size_t n = std::min(max, end_ - offset_);
    return {BodyChunk::State::Data,
            reinterpret_cast<const uint8_t *>(bytes_->data()) + offset_, n};
  }

  void consume(size_t n) override { offset_ += n; }

  int64_t length() const override {
    return static_cast<int64_t>(end_ - offset_);
  }

private:
  std::shared_ptr<const std::string> bytes_;
  size_t offset_;
  size_t end_;
};

struct Response {
  int status = 200;
  // Lower-case names. The session adds Content-Length from the body (or
  // from `head_length` for HEAD) and Date; everything else comes here.
  HeaderList headers;
  // Null for no body. For HEAD the session never pulls from it.
  std::unique_ptr<BodySource> body;
  // Content-Length to announce for HEAD responses (-1: none).
  int64_t head_length = -1;
};

// Cache outcome for the access log.
enum class CacheResult { None, Hit, Miss, Stale, Revalidated, Joined };

class Exchange : public std::enable_shared_from_this<Exchange> {
public:
  virtual ~Exchange() = default;

  const Request &request() const { return request_; }

  // Sends the response. Call once; later calls are ignored. Safe to call
  // after the client went away (then it only releases the response).
  virtual void respond(Response response) = 0;

  // True once the client reset the stream or closed the connection. The
  // session then releases the exchange; handlers holding a weak pointer see
  // it expire.
  virtual bool closed() const = 0;

  // Called by the session when the client goes away before the response
  // ends. The handler may use it to stop work that no client waits for.
  void set_on_cancel(std::function<void()> on_cancel) {
    on_cancel_ = std::move(on_cancel);
  }

  // Access log fields the handler fills in.
  CacheResult cache_result = CacheResult::None;
  std::string upstream_name; // The `ns` that served the request.
  uint64_t fetch_id = 0;     // Upstream fetch that served it, 0 when none.
  size_t cluster = 0;        // Set by the handler: who made the request.

  // Called once when the response ended or the client went away, with the
  // status sent (499 when none was), right after the access log line.
  std::function<void(const Exchange &, int status)> on_finished;

protected:
  explicit Exchange(Request request) : request_(std::move(request)) {}

  void cancel() {
    if (on_cancel_) {
      auto callback = std::move(on_cancel_);
      on_cancel_ = nullptr;
      callback();
    }
  }

private:
  Request request_;
  std::function<void()> on_cancel_;
};

// Handler of requests. One instance per loop.
class RequestHandler {
public:
  virtual ~RequestHandler() = default;
  virtual void handle(std::shared_ptr<Exchange> exchange) = 0;
};

const char *to_string(CacheResult result);

// "node", "revalidation" or "prewarm", for logs and status. Inline, so
// the scheduler uses it without linking the front end.
inline const char *to_string(Priority priority) {
  switch (priority) {
  case Priority::Node:
    return "node";
  case Priority::Revalidation:
    return "revalidation";
  case Priority::Prewarm:
    return "prewarm";
  }
  return "node";
}

} // namespace gatecache::front
