// Test fixtures of the HTTP front: a self-signed TLS context, a libev loop
// on its own thread, a request handler with fixed routes, an access-log
// capture, and blocking HTTP/1.1 and HTTP/2 clients over OpenSSL.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <ev.h>
#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>

#include "appliance/front/exchange.h"
#include "appliance/front/front_config.h"
#include "appliance/front/listener.h"

namespace gatecache::front::test {

// Upper bound on any wait of a test for the server, so that a bug fails
// the test instead of hanging it. No test measures time.
inline constexpr int SafetyTimeoutS = 20;

// Returns a server context with a fresh self-signed P-256 certificate for
// "localhost" and the front's ALPN selection, and with
// SSL_OP_ENABLE_KTLS when `kernel_tls`. The caller frees it.
SSL_CTX *make_server_ctx(bool kernel_tls = false);

// A directory under $TMPDIR (or /tmp), removed with its contents.
class TempDir {
public:
  TempDir();
  ~TempDir();

  const std::string &path() const { return path_; }

private:
  std::string path_;
};

// Writes `size` bytes of `pattern_byte(i)` to `path`.
void write_pattern_file(const std::string &path, size_t size);
uint8_t pattern_byte(size_t index);
std::string pattern(size_t size);

// A libev loop running on its own thread.
class LoopThread {
public:
  LoopThread();
  ~LoopThread();

  struct ev_loop *loop() const {
    return loop_;
  }

  // Runs `task` on the loop thread and waits for it to return.
  void call(std::function<void()> task);
  // Runs `task` on the loop thread later.
  void post(std::function<void()> task);

private:
  static void on_async(struct ev_loop *loop, ev_async *watcher, int events);

  struct ev_loop *loop_;
  ev_async async_;
  std::mutex mutex_;
  std::vector<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::thread thread_;
};

// Releases every `GatedBody` waiting on it.
class Gate {
public:
  void open();

  bool is_open() const { return open_; }

  void add(class GatedBody *body) { waiting_.insert(body); }

  void remove(class GatedBody *body) { waiting_.erase(body); }

private:
  bool open_ = false;
  std::set<class GatedBody *> waiting_;
};

// Request handler with fixed routes:
//   /small           "hello world" (11 bytes)
//   /bytes/<n>       n bytes of `pattern()`
//   /unknown-length  "alpha", "beta", "gamma" from a body of unknown length
//   /gated           "first-part|", then waits for the gate, then
//                    "second-part"
//   /bad-headers     "ok", with invalid and reserved response headers
//   /bad-status      status 99, which no session may send
//   /wake-inside     "woken", after a Wait whose wake-up came from inside
//                    `next()`
//   /error           "partial-data" of an announced 100 bytes, then Error
//   /file            the whole of `file_path` through `FileBody`
//   /late            no response until `respond_late()`
//   /echo            the request fields as "name=value" lines
//   /client          the request's `client_name`
// Anything else gets 404.
class TestHandler final : public RequestHandler {
public:
  void handle(std::shared_ptr<Exchange> exchange) override;

  // Loop thread only.
  void open_gate() { gate_.open(); }

  void respond_late(int status, std::string body);

  std::string file_path;
  std::atomic<int> cancelled{0};
  std::atomic<int> handled{0};
  // Exchanges of /late requests, held until `respond_late()`.
  std::vector<std::shared_ptr<Exchange>> late;

private:
  Gate gate_;
};

// Collects the messages of the access logger.
class AccessLogCapture {
public:
  // Installs the capture on the access logger once per process.
  static AccessLogCapture &instance();

  void add(std::string line);
  // Number of lines captured so far.
  size_t size();
  // Waits until `count` lines containing `needle`, among those captured
  // after the first `from`, exist or the safety timeout passes. Returns
  // the matching lines.
  std::vector<std::string> wait_for(const std::string &needle, size_t count,
                                    size_t from);

private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::string> lines_;
};

// A listener on 127.0.0.1:0 with a `TestHandler`, on its own loop.
class TestServer {
public:
  explicit TestServer(FrontConfig config = {}, bool kernel_tls = false);
  // Serves with the contexts of `provider` instead of a self-signed one.
  explicit TestServer(SslCtxProvider provider, FrontConfig config = {});
  ~TestServer();

  uint16_t port() const { return port_; }

  TestHandler &handler() { return handler_; }

  // Waits for `count` access-log lines containing `needle` that this
  // server wrote, and returns them.
  std::vector<std::string> access_log(const std::string &needle,
                                      size_t count = 1);

  LoopThread &loop() { return loop_; }

  Listener &listener() { return *listener_; }

private:
  LoopThread loop_;
  TestHandler handler_;
  SSL_CTX *ctx_;
  std::unique_ptr<Listener> listener_;
  uint16_t port_ = 0;
  size_t first_log_line_ = 0;
};

// Polls `condition` until it is true or the safety timeout passes. Returns
// its last value.
bool wait_until(const std::function<bool()> &condition);

// PEM files of a client certificate and its key; empty for none.
struct ClientCertificate {
  std::string cert_file;
  std::string key_file;
};

// A blocking TLS client connection to 127.0.0.1.
class TlsClient {
public:
  // `alpn` in OpenSSL wire format, such as "\x02h2\x08http/1.1"; empty
  // for no ALPN. The client presents `certificate` when the server asks
  // for one.
  TlsClient(uint16_t port, const std::string &alpn,
            const ClientCertificate &certificate = {});
  ~TlsClient();
  TlsClient(const TlsClient &) = delete;
  TlsClient &operator=(const TlsClient &) = delete;

  bool connected() const { return ssl_ != nullptr; }

  // The connection's TLS state, null when the handshake failed.
  const SSL *ssl() const { return ssl_; }

  std::string alpn() const;
  void write_all(const std::string &bytes);
  // Returns decrypted bytes, or an empty string at the end of the stream,
  // on a reset or after the safety timeout.
  std::string read_some();

  // Why the last `read_some()` returned nothing: "close_notify", "eof"
  // (closed without close_notify), "timeout" or "error".
  const std::string &end_reason() const { return end_reason_; }

private:
  int fd_ = -1;
  SSL_CTX *ctx_ = nullptr;
  SSL *ssl_ = nullptr;
  std::string end_reason_;
};

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers; // Lower-case names.
  std::string body;
  bool complete = false; // The body ended where its framing puts the end.
};

// HTTP/1.1 client over `TlsClient` that reads responses one by one.
class Http1Client {
public:
  explicit Http1Client(uint16_t port, const std::string &alpn = "",
                       const ClientCertificate &certificate = {});

  void send(const std::string &raw) { tls_.write_all(raw); }

  // Reads the next response. For a HEAD request pass `head`.
  HttpResponse read_response(bool head = false);
  // True when the server closed the connection and nothing more came.
  bool closed_by_server();

  TlsClient &tls() { return tls_; }

private:
  bool fill();
  std::string read_line();

  TlsClient tls_;
  std::string buffer_;
};

// HTTP/2 client over `TlsClient` with nghttp2's client API.
class Http2Client {
public:
  explicit Http2Client(uint16_t port,
                       const ClientCertificate &certificate = {});
  ~Http2Client();

  struct Stream {
    int status = 0;
    std::map<std::string, std::string> headers;
    std::string body;
    bool closed = false;
    uint32_t error_code = 0; // From RST_STREAM, or NGHTTP2_NO_ERROR.
  };

  bool connected() const { return tls_.connected(); }

  std::string alpn() const { return tls_.alpn(); }

  const TlsClient &tls() const { return tls_; }

  // Submits a request, with a body of `body_size` bytes unless zero.
  int32_t submit(const std::string &path, const std::string &method = "GET",
                 std::vector<std::pair<std::string, std::string>> headers = {},
                 size_t body_size = 0);
  // Sends RST_STREAM(CANCEL) for `stream_id`.
  void cancel(int32_t stream_id);
  // Exchanges frames until `done()` is true, the connection ends or the
  // safety timeout passes. Returns `done()`.
  bool run_until(const std::function<bool()> &done);
  // Runs until every submitted stream closed.
  bool run();
  // Writes the frames submitted so far without reading. Returns false
  // when the session fails.
  bool send() { return flush(); }

  std::map<int32_t, Stream> streams;
  bool goaway = false;
  uint32_t max_concurrent_streams = 0;

private:
  static int on_header(nghttp2_session *, const nghttp2_frame *frame,
                       const uint8_t *name, size_t name_size,
                       const uint8_t *value, size_t value_size, uint8_t,
                       void *user_data);
  static int on_data(nghttp2_session *, uint8_t, int32_t stream_id,
                     const uint8_t *data, size_t size, void *user_data);
  static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame,
                           void *user_data);
  static int on_stream_close(nghttp2_session *, int32_t stream_id,
                             uint32_t error_code, void *user_data);
  bool flush();

  static ssize_t on_read_body(nghttp2_session *, int32_t stream_id,
                              uint8_t *buffer, size_t size, uint32_t *flags,
                              nghttp2_data_source *, void *user_data);

  TlsClient tls_;
  nghttp2_session *session_ = nullptr;
  bool ended_ = false;
  // Request body bytes still to send, per stream.
  std::map<int32_t, size_t> body_left_;
};

} // namespace gatecache::front::test
