#include "tests/unit/front/test_support.h"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <spdlog/sinks/base_sink.h>
#include <sys/socket.h>
#include <unistd.h>

#include "appliance/front/file_body.h"
#include "common/log.h"

namespace gatecache::front::test {

namespace {

// A server writing to a connection its client reset gets SIGPIPE, which
// would end the test process.
const bool sigpipe_ignored = [] {
  std::signal(SIGPIPE, SIG_IGN);
  return true;
}();

class CaptureSink final : public spdlog::sinks::base_sink<std::mutex> {
public:
  explicit CaptureSink(AccessLogCapture &capture) : capture_(capture) {}

protected:
  void sink_it_(const spdlog::details::log_msg &message) override {
    capture_.add(std::string(message.payload.data(), message.payload.size()));
  }

  void flush_() override {}

private:
  AccessLogCapture &capture_;
};

// Body of unknown length that yields its pieces one call at a time.
class PiecesBody final : public BodySource {
public:
  explicit PiecesBody(std::vector<std::string> pieces)
      : pieces_(std::move(pieces)) {}

  BodyChunk next(size_t max) override {
    if (index_ >= pieces_.size()) {
      return {BodyChunk::State::End};
    }
    const std::string &piece = pieces_[index_];
    size_t size = std::min(max, piece.size() - offset_);
    return {BodyChunk::State::Data,
            reinterpret_cast<const uint8_t *>(piece.data()) + offset_, size};
  }

  void consume(size_t n) override {
    offset_ += n;
    if (offset_ == pieces_[index_].size()) {
      ++index_;
      offset_ = 0;
    }
  }

  int64_t length() const override { return -1; }

private:
  std::vector<std::string> pieces_;
  size_t index_ = 0;
  size_t offset_ = 0;
};

// Body that sends "partial-data" of an announced 100 bytes, then fails.
class FailingBody final : public BodySource {
public:
  BodyChunk next(size_t max) override {
    if (offset_ < text_.size()) {
      return {BodyChunk::State::Data,
              reinterpret_cast<const uint8_t *>(text_.data()) + offset_,
              std::min(max, text_.size() - offset_)};
    }
    return {BodyChunk::State::Error};
  }

  void consume(size_t n) override { offset_ += n; }

  int64_t length() const override { return 100; }

private:
  std::string text_ = "partial-data";
  size_t offset_ = 0;
};

// Body that wakes itself from inside `next()` before returning Wait once,
// then sends "woken".
class SelfWakingBody final : public BodySource {
public:
  BodyChunk next(size_t max) override {
    if (!waited_) {
      waited_ = true;
      wake();
      return {BodyChunk::State::Wait};
    }
    if (offset_ >= text_.size()) {
      return {BodyChunk::State::End};
    }
    return {BodyChunk::State::Data,
            reinterpret_cast<const uint8_t *>(text_.data()) + offset_,
            std::min(max, text_.size() - offset_)};
  }

  void consume(size_t n) override { offset_ += n; }

  int64_t length() const override { return static_cast<int64_t>(text_.size()); }

private:
  bool waited_ = false;
  std::string text_ = "woken";
  size_t offset_ = 0;
};

std::string wire_alpn_name(const unsigned char *data, unsigned int size) {
  return std::string(reinterpret_cast<const char *>(data), size);
}

} // namespace

// Body that sends "first-part|", waits for its gate, then "second-part".
class GatedBody final : public BodySource {
public:
  explicit GatedBody(Gate &gate) : gate_(gate) { gate_.add(this); }

  ~GatedBody() override { gate_.remove(this); }

  void release() { wake(); }

  BodyChunk next(size_t max) override {
    if (offset_ == first_.size() && !gate_.is_open()) {
      return {BodyChunk::State::Wait};
    }
    if (offset_ >= text_.size()) {
      return {BodyChunk::State::End};
    }
    size_t limit = offset_ < first_.size() ? first_.size() : text_.size();
    return {BodyChunk::State::Data,
            reinterpret_cast<const uint8_t *>(text_.data()) + offset_,
            std::min(max, limit - offset_)};
  }

  void consume(size_t n) override { offset_ += n; }

  int64_t length() const override { return static_cast<int64_t>(text_.size()); }

private:
  Gate &gate_;
  std::string first_ = "first-part|";
  std::string text_ = "first-part|second-part";
  size_t offset_ = 0;
};

void Gate::open() {
  open_ = true;
  std::set<GatedBody *> waiting = waiting_;
  for (GatedBody *body : waiting) {
    body->release();
  }
}

SSL_CTX *make_server_ctx(bool kernel_tls) {
  EVP_PKEY *key = EVP_EC_gen("P-256");
  X509 *cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
  X509_set_pubkey(cert, key);
  X509_NAME *name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(
      name, "CN", MBSTRING_ASC,
      reinterpret_cast<const unsigned char *>("localhost"), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  X509_sign(cert, key, EVP_sha256());

  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (kernel_tls) {
    SSL_CTX_set_options(ctx, SSL_OP_ENABLE_KTLS);
  }
  SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:"
                                "TLS_AES_256_GCM_SHA384:"
                                "TLS_CHACHA20_POLY1305_SHA256");
  SSL_CTX_use_certificate(ctx, cert);
  SSL_CTX_use_PrivateKey(ctx, key);
  enable_alpn(ctx);
  X509_free(cert);
  EVP_PKEY_free(key);
  return ctx;
}

TempDir::TempDir() {
  const char *base = std::getenv("TMPDIR");
  std::string pattern =
      std::string(base != nullptr ? base : "/tmp") + "/front-test-XXXXXX";
  std::vector<char> text(pattern.begin(), pattern.end());
  text.push_back('\0');
  if (mkdtemp(text.data()) != nullptr) {
    path_ = text.data();
  }
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

uint8_t pattern_byte(size_t index) {
  return static_cast<uint8_t>((index * 7 + index / 251) % 251);
}

std::string pattern(size_t size) {
  std::string text(size, '\0');
  for (size_t i = 0; i < size; ++i) {
    text[i] = static_cast<char>(pattern_byte(i));
  }
  return text;
}

void write_pattern_file(const std::string &path, size_t size) {
  std::ofstream out(path, std::ios::binary);
  std::string block;
  const size_t block_size = 1 << 20;
  for (size_t done = 0; done < size; done += block.size()) {
    size_t n = std::min(block_size, size - done);
    block.resize(n);
    for (size_t i = 0; i < n; ++i) {
      block[i] = static_cast<char>(pattern_byte(done + i));
    }
    out.write(block.data(), static_cast<std::streamsize>(n));
  }
}

LoopThread::LoopThread() : loop_(ev_loop_new(EVFLAG_AUTO)) {
  ev_async_init(&async_, on_async);
  async_.data = this;
  ev_async_start(loop_, &async_);
  thread_ = std::thread([this] { ev_run(loop_, 0); });
}

LoopThread::~LoopThread() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  ev_async_send(loop_, &async_);
  thread_.join();
  ev_async_stop(loop_, &async_);
  ev_loop_destroy(loop_);
}

void LoopThread::on_async(struct ev_loop *loop, ev_async *watcher, int) {
  auto *self = static_cast<LoopThread *>(watcher->data);
  std::vector<std::function<void()>> tasks;
  bool stopping = false;
  {
    std::lock_guard<std::mutex> lock(self->mutex_);
    tasks.swap(self->tasks_);
    stopping = self->stopping_;
  }
  for (auto &task : tasks) {
    task();
  }
  if (stopping) {
    ev_break(loop, EVBREAK_ALL);
  }
}

void LoopThread::post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    tasks_.push_back(std::move(task));
  }
  ev_async_send(loop_, &async_);
}

void LoopThread::call(std::function<void()> task) {
  std::promise<void> done;
  post([&] {
    task();
    done.set_value();
  });
  done.get_future().wait();
}

void TestHandler::handle(std::shared_ptr<Exchange> exchange) {
  ++handled;
  const Request &request = exchange->request();
  const std::string &path = request.path;
  exchange->set_on_cancel([this] { ++cancelled; });

  Response response;
  response.headers.emplace_back("content-type", "application/octet-stream");
  if (path == "/small") {
    response.body = std::make_unique<MemoryBody>("hello world");
    response.head_length = 11;
  } else if (path.rfind("/bytes/", 0) == 0) {
    size_t size = std::stoul(path.substr(7));
    response.body = std::make_unique<MemoryBody>(pattern(size));
  } else if (path == "/unknown-length") {
    response.body = std::make_unique<PiecesBody>(
        std::vector<std::string>{"alpha", "beta", "gamma"});
  } else if (path == "/gated") {
    response.body = std::make_unique<GatedBody>(gate_);
  } else if (path == "/bad-headers") {
    response.headers.emplace_back("x-ok", "1");
    response.headers.emplace_back("x-injected", "a\r\nset-cookie: x=1");
    response.headers.emplace_back("X-Upper", "1");
    response.headers.emplace_back("content-length", "999");
    response.headers.emplace_back("connection", "upgrade");
    response.body = std::make_unique<MemoryBody>("ok");
  } else if (path == "/bad-status") {
    response.status = 99;
    response.body = std::make_unique<MemoryBody>("never sent");
  } else if (path == "/wake-inside") {
    response.body = std::make_unique<SelfWakingBody>();
  } else if (path == "/error") {
    response.body = std::make_unique<FailingBody>();
  } else if (path == "/file") {
    int fd = ::open(file_path.c_str(), O_RDONLY | O_CLOEXEC);
    off_t size = ::lseek(fd, 0, SEEK_END);
    auto body = FileBody::open(fd, 0, static_cast<uint64_t>(size));
    ::close(fd);
    if (!body) {
      response.status = 500;
    } else {
      response.body = std::move(*body);
    }
  } else if (path == "/late") {
    late.push_back(std::move(exchange));
    return;
  } else if (path == "/client") {
    response.body = std::make_unique<MemoryBody>(request.client_name);
  } else if (path == "/echo") {
    std::string text =
        "method=" + request.method_name + "\n" + "path=" + request.path + "\n" +
        "query=" + request.query + "\n" + "accept=" + request.accept + "\n" +
        "range=" + request.range + "\n" + "protocol=" + request.protocol + "\n";
    response.body = std::make_unique<MemoryBody>(std::move(text));
  } else {
    response.status = 404;
  }
  exchange->respond(std::move(response));
}

void TestHandler::respond_late(int status, std::string body) {
  for (auto &exchange : late) {
    Response response;
    response.status = status;
    response.body = std::make_unique<MemoryBody>(body);
    exchange->respond(std::move(response));
  }
  late.clear();
}

AccessLogCapture &AccessLogCapture::instance() {
  static AccessLogCapture *capture = [] {
    auto *created = new AccessLogCapture();
    log::get(log::Component::Access)
        .sinks()
        .push_back(std::make_shared<CaptureSink>(*created));
    return created;
  }();
  return *capture;
}

void AccessLogCapture::add(std::string line) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    lines_.push_back(std::move(line));
  }
  changed_.notify_all();
}

size_t AccessLogCapture::size() {
  std::lock_guard<std::mutex> lock(mutex_);
  return lines_.size();
}

std::vector<std::string> AccessLogCapture::wait_for(const std::string &needle,
                                                    size_t count, size_t from) {
  std::unique_lock<std::mutex> lock(mutex_);
  std::vector<std::string> found;
  changed_.wait_for(lock, std::chrono::seconds(SafetyTimeoutS), [&] {
    found.clear();
    for (size_t i = from; i < lines_.size(); ++i) {
      if (lines_[i].find(needle) != std::string::npos) {
        found.push_back(lines_[i]);
      }
    }
    return found.size() >= count;
  });
  return found;
}

bool wait_until(const std::function<bool()> &condition) {
  auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(SafetyTimeoutS);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

TestServer::TestServer(FrontConfig config, bool kernel_tls)
    : ctx_(make_server_ctx(kernel_tls)) {
  first_log_line_ = AccessLogCapture::instance().size();
  loop_.call([&] {
    auto listener = Listener::open(
        loop_.loop(), "127.0.0.1", 0, [this] { return ctx_; }, &handler_,
        config);
    if (listener) {
      listener_ = std::move(*listener);
      port_ = listener_->port();
    }
  });
}

TestServer::TestServer(SslCtxProvider provider, FrontConfig config)
    : ctx_(nullptr) {
  first_log_line_ = AccessLogCapture::instance().size();
  loop_.call([&] {
    auto listener = Listener::open(loop_.loop(), "127.0.0.1", 0,
                                   std::move(provider), &handler_, config);
    if (listener) {
      listener_ = std::move(*listener);
      port_ = listener_->port();
    }
  });
}

std::vector<std::string> TestServer::access_log(const std::string &needle,
                                                size_t count) {
  return AccessLogCapture::instance().wait_for(needle, count, first_log_line_);
}

TestServer::~TestServer() {
  loop_.call([&] {
    listener_.reset();
    handler_.late.clear();
  });
  SSL_CTX_free(ctx_);
}

TlsClient::TlsClient(uint16_t port, const std::string &alpn,
                     const ClientCertificate &certificate) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr *>(&address), sizeof(address)) !=
      0) {
    return;
  }
  timeval timeout = {SafetyTimeoutS, 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

  ctx_ = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_verify(ctx_, SSL_VERIFY_NONE, nullptr);
  if (!certificate.cert_file.empty() &&
      (SSL_CTX_use_certificate_file(ctx_, certificate.cert_file.c_str(),
                                    SSL_FILETYPE_PEM) != 1 ||
       SSL_CTX_use_PrivateKey_file(ctx_, certificate.key_file.c_str(),
                                   SSL_FILETYPE_PEM) != 1)) {
    return;
  }
  SSL *ssl = SSL_new(ctx_);
  SSL_set_fd(ssl, fd_);
  if (!alpn.empty()) {
    SSL_set_alpn_protos(ssl,
                        reinterpret_cast<const unsigned char *>(alpn.data()),
                        static_cast<unsigned int>(alpn.size()));
  }
  if (SSL_connect(ssl) != 1) {
    SSL_free(ssl);
    return;
  }
  ssl_ = ssl;
}

TlsClient::~TlsClient() {
  if (ssl_ != nullptr) {
    SSL_free(ssl_);
  }
  if (ctx_ != nullptr) {
    SSL_CTX_free(ctx_);
  }
  if (fd_ >= 0) {
    ::close(fd_);
  }
}

std::string TlsClient::alpn() const {
  const unsigned char *data = nullptr;
  unsigned int size = 0;
  SSL_get0_alpn_selected(ssl_, &data, &size);
  return wire_alpn_name(data, size);
}

void TlsClient::write_all(const std::string &bytes) {
  size_t done = 0;
  while (ssl_ != nullptr && done < bytes.size()) {
    size_t written = 0;
    if (SSL_write_ex(ssl_, bytes.data() + done, bytes.size() - done,
                     &written) != 1) {
      return;
    }
    done += written;
  }
}

std::string TlsClient::read_some() {
  if (ssl_ == nullptr) {
    end_reason_ = "error";
    return {};
  }
  char buffer[65536];
  size_t size = 0;
  ERR_clear_error();
  int rv = SSL_read_ex(ssl_, buffer, sizeof(buffer), &size);
  if (rv == 1) {
    return std::string(buffer, size);
  }
  int error = SSL_get_error(ssl_, rv);
  if (error == SSL_ERROR_ZERO_RETURN) {
    // Reply with close_notify and half-close as browsers do, so the server
    // stops lingering.
    end_reason_ = "close_notify";
    SSL_shutdown(ssl_);
    ::shutdown(fd_, SHUT_WR);
  } else if (error == SSL_ERROR_SYSCALL &&
             (errno == EAGAIN || errno == EWOULDBLOCK)) {
    end_reason_ = "timeout";
  } else if (error == SSL_ERROR_SYSCALL ||
             ERR_GET_REASON(ERR_peek_error()) ==
                 SSL_R_UNEXPECTED_EOF_WHILE_READING) {
    end_reason_ = "eof";
  } else {
    end_reason_ = "error";
  }
  return {};
}

Http1Client::Http1Client(uint16_t port, const std::string &alpn,
                         const ClientCertificate &certificate)
    : tls_(port, alpn, certificate) {}

bool Http1Client::fill() {
  std::string more = tls_.read_some();
  if (more.empty()) {
    return false;
  }
  buffer_ += more;
  return true;
}

std::string Http1Client::read_line() {
  for (;;) {
    size_t end = buffer_.find("\r\n");
    if (end != std::string::npos) {
      std::string line = buffer_.substr(0, end);
      buffer_.erase(0, end + 2);
      return line;
    }
    if (!fill()) {
      return {};
    }
  }
}

HttpResponse Http1Client::read_response(bool head) {
  HttpResponse response;
  std::string status_line = read_line();
  if (status_line.size() < 12) {
    return response;
  }
  response.status = std::stoi(status_line.substr(9, 3));
  for (;;) {
    std::string line = read_line();
    if (line.empty()) {
      break;
    }
    size_t colon = line.find(':');
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(), ::tolower);
    size_t value_start = line.find_first_not_of(' ', colon + 1);
    response.headers[name] =
        value_start == std::string::npos ? "" : line.substr(value_start);
  }

  bool no_body = head || response.status == 204 || response.status == 304;
  if (no_body) {
    response.complete = true;
    return response;
  }
  if (response.headers.count("content-length") != 0) {
    size_t length = std::stoul(response.headers["content-length"]);
    while (buffer_.size() < length && fill()) {
    }
    size_t take = std::min(length, buffer_.size());
    response.body = buffer_.substr(0, take);
    buffer_.erase(0, take);
    response.complete = take == length;
    return response;
  }
  auto coding = response.headers.find("transfer-encoding");
  if (coding != response.headers.end() && coding->second == "chunked") {
    for (;;) {
      std::string size_line = read_line();
      if (size_line.empty()) {
        return response;
      }
      size_t size = std::stoul(size_line, nullptr, 16);
      while (buffer_.size() < size + 2 && fill()) {
      }
      if (buffer_.size() < size + 2) {
        return response;
      }
      response.body += buffer_.substr(0, size);
      buffer_.erase(0, size + 2);
      if (size == 0) {
        response.complete = true;
        return response;
      }
    }
  }
  while (fill()) {
  }
  response.body = std::move(buffer_);
  buffer_.clear();
  response.complete = tls_.end_reason() == "close_notify";
  return response;
}

bool Http1Client::closed_by_server() {
  if (!buffer_.empty()) {
    return false;
  }
  std::string more = tls_.read_some();
  return more.empty() && tls_.end_reason() != "timeout";
}

Http2Client::Http2Client(uint16_t port, const ClientCertificate &certificate)
    : tls_(port, "\x02h2", certificate) {
  nghttp2_session_callbacks *callbacks;
  nghttp2_session_callbacks_new(&callbacks);
  nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data);
  nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks,
                                                       on_frame_recv);
  nghttp2_session_callbacks_set_on_stream_close_callback(callbacks,
                                                         on_stream_close);
  nghttp2_session_client_new(&session_, callbacks, this);
  nghttp2_session_callbacks_del(callbacks);

  nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (1U << 30) - 1},
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, 2);
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0,
                                        (1 << 30) - 1);
}

Http2Client::~Http2Client() { nghttp2_session_del(session_); }

int32_t
Http2Client::submit(const std::string &path, const std::string &method,
                    std::vector<std::pair<std::string, std::string>> headers,
                    size_t body_size) {
  std::vector<std::pair<std::string, std::string>> all = {
      {":method", method},
      {":scheme", "https"},
      {":authority", "localhost"},
      {":path", path}};
  all.insert(all.end(), headers.begin(), headers.end());
  std::vector<nghttp2_nv> fields;
  for (auto &[name, value] : all) {
    fields.push_back({reinterpret_cast<uint8_t *>(name.data()),
                      reinterpret_cast<uint8_t *>(value.data()), name.size(),
                      value.size(), NGHTTP2_NV_FLAG_NONE});
  }
  nghttp2_data_provider provider = {};
  provider.read_callback = on_read_body;
  int32_t id =
      nghttp2_submit_request(session_, nullptr, fields.data(), fields.size(),
                             body_size > 0 ? &provider : nullptr, nullptr);
  streams[id] = Stream{};
  body_left_[id] = body_size;
  return id;
}

ssize_t Http2Client::on_read_body(nghttp2_session *, int32_t stream_id,
                                  uint8_t *buffer, size_t size, uint32_t *flags,
                                  nghttp2_data_source *, void *user_data) {
  auto *self = static_cast<Http2Client *>(user_data);
  size_t &left = self->body_left_[stream_id];
  size_t n = std::min(size, left);
  std::memset(buffer, 'u', n);
  left -= n;
  if (left == 0) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
  }
  return static_cast<ssize_t>(n);
}

void Http2Client::cancel(int32_t stream_id) {
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id,
                            NGHTTP2_CANCEL);
}

bool Http2Client::flush() {
  for (;;) {
    const uint8_t *data = nullptr;
    ssize_t size = nghttp2_session_mem_send(session_, &data);
    if (size < 0) {
      return false;
    }
    if (size == 0) {
      return true;
    }
    tls_.write_all(std::string(reinterpret_cast<const char *>(data),
                               static_cast<size_t>(size)));
  }
}

bool Http2Client::run_until(const std::function<bool()> &done) {
  while (!done()) {
    if (ended_ || !flush()) {
      return done();
    }
    if (done()) {
      break;
    }
    std::string bytes = tls_.read_some();
    if (bytes.empty()) {
      ended_ = true;
      return done();
    }
    if (nghttp2_session_mem_recv(
            session_, reinterpret_cast<const uint8_t *>(bytes.data()),
            bytes.size()) < 0) {
      ended_ = true;
      return done();
    }
  }
  flush();
  return true;
}

bool Http2Client::run() {
  return run_until([this] {
    for (const auto &[id, stream] : streams) {
      if (!stream.closed) {
        return false;
      }
    }
    return true;
  });
}

int Http2Client::on_header(nghttp2_session *, const nghttp2_frame *frame,
                           const uint8_t *name, size_t name_size,
                           const uint8_t *value, size_t value_size, uint8_t,
                           void *user_data) {
  auto *self = static_cast<Http2Client *>(user_data);
  Stream &stream = self->streams[frame->hd.stream_id];
  std::string key(reinterpret_cast<const char *>(name), name_size);
  std::string text(reinterpret_cast<const char *>(value), value_size);
  if (key == ":status") {
    stream.status = std::stoi(text);
  }
  stream.headers[key] = text;
  return 0;
}

int Http2Client::on_data(nghttp2_session *, uint8_t, int32_t stream_id,
                         const uint8_t *data, size_t size, void *user_data) {
  auto *self = static_cast<Http2Client *>(user_data);
  self->streams[stream_id].body.append(reinterpret_cast<const char *>(data),
                                       size);
  return 0;
}

int Http2Client::on_frame_recv(nghttp2_session *session,
                               const nghttp2_frame *frame, void *user_data) {
  auto *self = static_cast<Http2Client *>(user_data);
  if (frame->hd.type == NGHTTP2_GOAWAY) {
    self->goaway = true;
  }
  if (frame->hd.type == NGHTTP2_SETTINGS &&
      (frame->hd.flags & NGHTTP2_FLAG_ACK) == 0) {
    self->max_concurrent_streams = nghttp2_session_get_remote_settings(
        session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
  }
  return 0;
}

int Http2Client::on_stream_close(nghttp2_session *, int32_t stream_id,
                                 uint32_t error_code, void *user_data) {
  auto *self = static_cast<Http2Client *>(user_data);
  Stream &stream = self->streams[stream_id];
  stream.closed = true;
  stream.error_code = error_code;
  return 0;
}

} // namespace gatecache::front::test
