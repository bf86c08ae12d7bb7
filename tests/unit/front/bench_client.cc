// Manual HTTP/1.1 throughput client for `front_bench_server`: downloads a
// path over N parallel TLS connections, reads and drops the bodies, and
// prints the rate. Not a test; nothing runs it automatically.
//
//   front_bench_client PORT PATH CONNECTIONS REQUESTS_PER_CONNECTION
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

namespace {

// Downloads `path` `requests` times on one keep-alive connection and
// returns the body bytes received, or -1 on a failure.
long long download(uint16_t port, const std::string &path, int requests) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr *>(&address), sizeof(address)) !=
      0) {
    return -1;
  }
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  SSL *ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  SSL_set_alpn_protos(
      ssl, reinterpret_cast<const unsigned char *>("\x08http/1.1"), 9);
  SSL_set_read_ahead(ssl, 1);
  if (SSL_connect(ssl) != 1) {
    return -1;
  }

  long long total = 0;
  std::vector<char> buffer(1 << 20);
  std::string request = "GET " + path + " HTTP/1.1\r\nHost: localhost\r\n\r\n";
  for (int i = 0; i < requests; ++i) {
    SSL_write(ssl, request.data(), static_cast<int>(request.size()));
    std::string head;
    long long length = -1;
    long long body = 0;
    for (;;) {
      int n = SSL_read(ssl, buffer.data(), static_cast<int>(buffer.size()));
      if (n <= 0) {
        return -1;
      }
      if (length < 0) {
        head.append(buffer.data(), static_cast<size_t>(n));
        size_t end = head.find("\r\n\r\n");
        if (end == std::string::npos) {
          continue;
        }
        size_t field = head.find("content-length: ");
        length = std::atoll(head.c_str() + field + 16);
        body = static_cast<long long>(head.size() - end - 4);
      } else {
        body += n;
      }
      if (body >= length) {
        break;
      }
    }
    total += length;
  }
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  ::close(fd);
  return total;
}

} // namespace

int main(int argc, char **argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s PORT PATH CONNECTIONS REQUESTS\n", argv[0]);
    return 2;
  }
  auto port = static_cast<uint16_t>(std::atoi(argv[1]));
  std::string path = argv[2];
  int connections = std::atoi(argv[3]);
  int requests = std::atoi(argv[4]);

  std::vector<long long> totals(static_cast<size_t>(connections));
  auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int i = 0; i < connections; ++i) {
    threads.emplace_back([&, i] {
      totals[static_cast<size_t>(i)] = download(port, path, requests);
    });
  }
  for (auto &thread : threads) {
    thread.join();
  }
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  long long bytes = 0;
  for (long long total : totals) {
    if (total < 0) {
      std::fprintf(stderr, "a download failed\n");
      return 1;
    }
    bytes += total;
  }
  std::printf("%lld bytes in %.3f s: %.1f MB/s\n", bytes, seconds,
              static_cast<double>(bytes) / seconds / 1e6);
  return 0;
}
