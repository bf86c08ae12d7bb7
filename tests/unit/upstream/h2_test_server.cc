#include "h2_test_server.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

namespace gatecache::upstream::testing {

namespace {

constexpr double ResponseDelayS = 0.05;

double monotonic_s() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<double>(now.tv_sec) + now.tv_nsec / 1e9;
}

int select_h2(SSL *, const unsigned char **out, unsigned char *out_length,
              const unsigned char *in, unsigned int in_length, void *) {
  unsigned char *selected = nullptr;
  if (nghttp2_select_next_protocol(&selected, out_length, in, in_length) != 1) {
    return SSL_TLSEXT_ERR_NOACK;
  }
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

nghttp2_nv make_nv(const std::string &name, const std::string &value) {
  return nghttp2_nv{
      reinterpret_cast<uint8_t *>(const_cast<char *>(name.data())),
      reinterpret_cast<uint8_t *>(const_cast<char *>(value.data())),
      name.size(), value.size(), NGHTTP2_NV_FLAG_NONE};
}

} // namespace

struct H2TestConnection {
  struct Body {
    std::string data;
    size_t offset = 0;
    bool end_stream = true;
  };

  H2TestServer *server = nullptr;
  SSL *ssl = nullptr;
  int fd = -1;
  bool failed = false;
  nghttp2_session *session = nullptr;
  int open_streams = 0;
  std::map<int32_t, std::string> paths;
  std::vector<std::pair<int32_t, double>> pending;
  std::vector<int32_t> to_reset;
  std::map<int32_t, Body> bodies;

  static H2TestConnection &of(void *user_data) {
    return *static_cast<H2TestConnection *>(user_data);
  }

  static ssize_t on_send(nghttp2_session *, const uint8_t *data, size_t length,
                         int, void *user_data) {
    H2TestConnection &self = of(user_data);
    size_t sent = 0;
    while (sent < length) {
      int n = SSL_write(self.ssl, data + sent, static_cast<int>(length - sent));
      if (n > 0) {
        sent += static_cast<size_t>(n);
        continue;
      }
      int error = SSL_get_error(self.ssl, n);
      if (error != SSL_ERROR_WANT_WRITE && error != SSL_ERROR_WANT_READ) {
        self.failed = true;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
      }
      pollfd pfd{self.fd, static_cast<short>(POLLIN | POLLOUT), 0};
      poll(&pfd, 1, 100);
    }
    return static_cast<ssize_t>(length);
  }

  static int on_begin_headers(nghttp2_session *, const nghttp2_frame *,
                              void *user_data) {
    H2TestConnection &self = of(user_data);
    ++self.open_streams;
    int seen = self.server->max_open_streams_.load();
    while (self.open_streams > seen &&
           !self.server->max_open_streams_.compare_exchange_weak(
               seen, self.open_streams)) {
    }
    return 0;
  }

  static int on_header(nghttp2_session *, const nghttp2_frame *frame,
                       const uint8_t *name, size_t name_length,
                       const uint8_t *value, size_t value_length, uint8_t,
                       void *user_data) {
    if (std::string_view(reinterpret_cast<const char *>(name), name_length) ==
        ":path") {
      of(user_data).paths[frame->hd.stream_id] =
          std::string(reinterpret_cast<const char *>(value), value_length);
    }
    return 0;
  }

  static int on_frame_recv(nghttp2_session *, const nghttp2_frame *frame,
                           void *user_data) {
    if (frame->hd.type == NGHTTP2_HEADERS &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
      of(user_data).pending.emplace_back(frame->hd.stream_id, monotonic_s());
    }
    return 0;
  }

  static int on_stream_close(nghttp2_session *, int32_t stream_id, uint32_t,
                             void *user_data) {
    H2TestConnection &self = of(user_data);
    --self.open_streams;
    self.bodies.erase(stream_id);
    return 0;
  }

  static ssize_t read_body(nghttp2_session *, int32_t stream_id, uint8_t *buf,
                           size_t length, uint32_t *data_flags,
                           nghttp2_data_source *, void *user_data) {
    H2TestConnection &self = of(user_data);
    Body &body = self.bodies[stream_id];
    size_t n = std::min(length, body.data.size() - body.offset);
    std::memcpy(buf, body.data.data() + body.offset, n);
    body.offset += n;
    if (body.offset == body.data.size()) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
      if (!body.end_stream) {
        *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      }
    }
    return static_cast<ssize_t>(n);
  }

  void respond(int32_t stream_id) {
    const std::string &path = paths[stream_id];
    Body body;
    std::string content_length;
    if (path == "/reset" || path == "/short") {
      body.data = "0123456789";
      body.end_stream = path == "/short";
      content_length = "1000";
      if (path == "/reset") {
        to_reset.push_back(stream_id);
      }
    } else {
      body.data = "ok";
      content_length = "2";
    }
    bodies[stream_id] = body;
    const std::string status_name = ":status";
    const std::string status = "200";
    const std::string length_name = "content-length";
    nghttp2_nv headers[] = {make_nv(status_name, status),
                            make_nv(length_name, content_length)};
    nghttp2_data_provider provider{};
    provider.read_callback = read_body;
    nghttp2_submit_response(session, stream_id, headers, 2, &provider);
  }

  void respond_due() {
    double now = monotonic_s();
    auto due = std::stable_partition(
        pending.begin(), pending.end(),
        [now](const auto &item) { return now - item.second < ResponseDelayS; });
    std::vector<std::pair<int32_t, double>> ready(due, pending.end());
    pending.erase(due, pending.end());
    for (const auto &[stream_id, received_at] : ready) {
      respond(stream_id);
    }
  }

  bool read_available() {
    uint8_t buffer[16384];
    while (true) {
      int n = SSL_read(ssl, buffer, sizeof(buffer));
      if (n > 0) {
        if (nghttp2_session_mem_recv(session, buffer, static_cast<size_t>(n)) <
            0) {
          return false;
        }
        continue;
      }
      int error = SSL_get_error(ssl, n);
      return error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE;
    }
  }
};

H2TestServer::H2TestServer(const TestPki &pki, uint32_t max_concurrent_streams)
    : max_concurrent_streams_(max_concurrent_streams) {
  context_ = SSL_CTX_new(TLS_server_method());
  if (SSL_CTX_use_certificate_chain_file(context_, pki.server_cert.c_str()) !=
          1 ||
      SSL_CTX_use_PrivateKey_file(context_, pki.server_key.c_str(),
                                  SSL_FILETYPE_PEM) != 1) {
    return;
  }
  SSL_CTX_set_alpn_select_cb(context_, select_h2, nullptr);
  listener_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(addr);
  if (bind(listener_, reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) != 0 ||
      listen(listener_, 16) != 0 ||
      getsockname(listener_, reinterpret_cast<sockaddr *>(&addr), &length) !=
          0) {
    return;
  }
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { run(); });
}

H2TestServer::~H2TestServer() {
  stop_ = true;
  if (thread_.joinable()) {
    thread_.join();
  }
  if (listener_ >= 0) {
    close(listener_);
  }
  SSL_CTX_free(context_);
}

void H2TestServer::run() {
  while (!stop_) {
    pollfd pfd{listener_, POLLIN, 0};
    if (poll(&pfd, 1, 20) <= 0) {
      continue;
    }
    int fd = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) {
      workers_.emplace_back([this, fd] {
        serve(fd);
        close(fd);
      });
    }
  }
  for (std::thread &worker : workers_) {
    worker.join();
  }
}

void H2TestServer::serve(int fd) {
  H2TestConnection connection;
  connection.server = this;
  connection.fd = fd;
  connection.ssl = SSL_new(context_);
  SSL_set_fd(connection.ssl, fd);
  if (SSL_accept(connection.ssl) != 1) {
    SSL_free(connection.ssl);
    return;
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  ++connections_;

  nghttp2_session_callbacks *callbacks = nullptr;
  nghttp2_session_callbacks_new(&callbacks);
  nghttp2_session_callbacks_set_send_callback(callbacks,
                                              H2TestConnection::on_send);
  nghttp2_session_callbacks_set_on_begin_headers_callback(
      callbacks, H2TestConnection::on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(callbacks,
                                                   H2TestConnection::on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(
      callbacks, H2TestConnection::on_frame_recv);
  nghttp2_session_callbacks_set_on_stream_close_callback(
      callbacks, H2TestConnection::on_stream_close);
  nghttp2_session_server_new(&connection.session, callbacks, &connection);
  nghttp2_session_callbacks_del(callbacks);
  nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, max_concurrent_streams_}};
  nghttp2_submit_settings(connection.session, NGHTTP2_FLAG_NONE, settings, 1);

  while (!stop_ && !connection.failed &&
         (nghttp2_session_want_read(connection.session) != 0 ||
          nghttp2_session_want_write(connection.session) != 0)) {
    if (nghttp2_session_send(connection.session) != 0) {
      break;
    }
    // Resets go out after the frames that were queued before them.
    for (int32_t stream_id : connection.to_reset) {
      nghttp2_submit_rst_stream(connection.session, NGHTTP2_FLAG_NONE,
                                stream_id, NGHTTP2_INTERNAL_ERROR);
    }
    connection.to_reset.clear();
    if (nghttp2_session_send(connection.session) != 0) {
      break;
    }
    pollfd pfd{fd, POLLIN, 0};
    int ready = SSL_pending(connection.ssl) > 0 ? 1 : poll(&pfd, 1, 10);
    if (ready > 0 && !connection.read_available()) {
      break;
    }
    connection.respond_due();
  }
  nghttp2_session_del(connection.session);
  SSL_free(connection.ssl);
}

} // namespace gatecache::upstream::testing
