#include "tests/unit/tls/loopback.h"

#include <cerrno>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "tls/context.h"

namespace gatecache::tls::testing {
namespace {

// Bounds the handshake loop; a TLS 1.3 handshake takes a handful of rounds.
constexpr int MaxRounds = 64;

void set_non_blocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  REQUIRE(flags >= 0);
  REQUIRE(::fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0);
}

// Returns a connected client and server socket pair over 127.0.0.1.
std::pair<int, int> connect_loopback() {
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(listener >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(listener, reinterpret_cast<sockaddr *>(&address),
                 sizeof(address)) == 0);
  REQUIRE(::listen(listener, 1) == 0);
  socklen_t size = sizeof(address);
  REQUIRE(::getsockname(listener, reinterpret_cast<sockaddr *>(&address),
                        &size) == 0);

  int client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(client >= 0);
  // The kernel completes the TCP handshake from the backlog, so a blocking
  // connect returns before the accept.
  REQUIRE(::connect(client, reinterpret_cast<sockaddr *>(&address),
                    sizeof(address)) == 0);
  int server = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  ::close(listener);
  REQUIRE(server >= 0);
  int one = 1;
  ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  ::setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  set_non_blocking(client);
  set_non_blocking(server);
  return {client, server};
}

// Advances one side of the handshake. Returns true when it made progress
// or stopped, false when it waits for bytes.
bool step(SSL *ssl, HandshakeSide &side) {
  if (side.done || side.failed) {
    return false;
  }
  ERR_clear_error();
  int result = SSL_do_handshake(ssl);
  if (result == 1) {
    side.done = true;
    return true;
  }
  int error = SSL_get_error(ssl, result);
  if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
    return false;
  }
  side.failed = true;
  side.reason = ERR_GET_REASON(ERR_peek_last_error());
  ERR_clear_error();
  return true;
}

bool wait_readable(int first, int second) {
  pollfd fds[2] = {{first, POLLIN, 0}, {second, POLLIN, 0}};
  int count = second >= 0 ? 2 : 1;
  int ready = 0;
  do {
    ready = ::poll(fds, count, PollTimeoutMs);
  } while (ready < 0 && errno == EINTR);
  return ready > 0;
}

} // namespace

SSL_CTX *make_test_client_context(const std::filesystem::path &ca_file,
                                  const std::filesystem::path &cert_file,
                                  const std::filesystem::path &key_file) {
  SSL_CTX *context = SSL_CTX_new(TLS_client_method());
  REQUIRE(context != nullptr);
  REQUIRE(SSL_CTX_load_verify_locations(context, ca_file.c_str(), nullptr) ==
          1);
  SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nullptr);
  if (!cert_file.empty()) {
    REQUIRE(SSL_CTX_use_certificate_file(context, cert_file.c_str(),
                                         SSL_FILETYPE_PEM) == 1);
    REQUIRE(SSL_CTX_use_PrivateKey_file(context, key_file.c_str(),
                                        SSL_FILETYPE_PEM) == 1);
  }
  return context;
}

LoopbackConnection::LoopbackConnection(
    SSL_CTX *server_context, SSL_CTX *client_context,
    std::function<void(SSL *)> configure_client) {
  REQUIRE(server_context != nullptr);
  std::tie(client_fd_, server_fd_) = connect_loopback();
  client_.reset(SSL_new(client_context));
  server_.reset(SSL_new(server_context));
  REQUIRE(client_);
  REQUIRE(server_);
  REQUIRE(SSL_set_fd(client_.get(), client_fd_) == 1);
  REQUIRE(SSL_set_fd(server_.get(), server_fd_) == 1);
  SSL_set_connect_state(client_.get());
  SSL_set_accept_state(server_.get());
  if (configure_client) {
    configure_client(client_.get());
  } else {
    REQUIRE(set_client_host(client_.get(), "localhost"));
  }
}

LoopbackConnection::~LoopbackConnection() {
  client_.reset();
  server_.reset();
  ::close(client_fd_);
  ::close(server_fd_);
}

bool LoopbackConnection::handshake() {
  for (int round = 0; round < MaxRounds; ++round) {
    bool progressed = step(client_.get(), client);
    progressed = step(server_.get(), server) || progressed;
    bool client_stopped = client.done || client.failed;
    bool server_stopped = server.done || server.failed;
    if (client_stopped && server_stopped) {
      break;
    }
    if (!progressed &&
        !wait_readable(client_stopped ? server_fd_ : client_fd_,
                       client_stopped || server_stopped ? -1 : server_fd_)) {
      break;
    }
  }
  return client.done && server.done;
}

bool LoopbackConnection::read_exactly(SSL *ssl, int fd, size_t size,
                                      std::string &out) {
  char buffer[4096];
  while (out.size() < size) {
    ERR_clear_error();
    size_t read = 0;
    int result = SSL_read_ex(ssl, buffer, sizeof(buffer), &read);
    if (result == 1) {
      out.append(buffer, read);
      continue;
    }
    int error = SSL_get_error(ssl, result);
    if (error != SSL_ERROR_WANT_READ || !wait_readable(fd, -1)) {
      ERR_clear_error();
      return false;
    }
  }
  return true;
}

bool LoopbackConnection::round_trip(const std::string &message) {
  size_t written = 0;
  if (SSL_write_ex(client_.get(), message.data(), message.size(), &written) !=
          1 ||
      written != message.size()) {
    ERR_clear_error();
    return false;
  }
  std::string received;
  if (!read_exactly(server_.get(), server_fd_, message.size(), received)) {
    return false;
  }
  if (SSL_write_ex(server_.get(), received.data(), received.size(), &written) !=
      1) {
    ERR_clear_error();
    return false;
  }
  std::string echoed;
  return read_exactly(client_.get(), client_fd_, message.size(), echoed) &&
         echoed == message;
}

std::string LoopbackConnection::server_serial() const {
  X509 *certificate = SSL_get0_peer_certificate(client_.get());
  if (certificate == nullptr) {
    return {};
  }
  BignumPtr number(
      ASN1_INTEGER_to_BN(X509_get0_serialNumber(certificate), nullptr));
  char *hex = number ? BN_bn2hex(number.get()) : nullptr;
  if (hex == nullptr) {
    return {};
  }
  std::string text(hex);
  OPENSSL_free(hex);
  return text;
}

} // namespace gatecache::tls::testing
