#include "appliance/admin/server.h"

#include <cerrno>
#include <cstring>
#include <string_view>
#include <utility>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "appliance/admin/connection.h"
#include "common/log.h"

namespace gatecache::admin {

namespace {

constexpr int ListenBacklog = 64;
// Connections accepted per readable event of a listener.
constexpr int MaxAcceptsPerEvent = 16;
// After EMFILE or a similar accept failure, accepting pauses this long so
// that closing connections can free descriptors.
constexpr double AcceptRetryDelayS = 0.5;
// Connection-limit and accept warnings are logged at most once per period.
constexpr double WarnPeriodS = 10;
// The socket is bound under "<path>.<pid>" and renamed into place. A pid
// has at most 7 digits (Linux caps pid_max at 2^22), so the temporary name
// is at most 8 bytes longer than the path.
constexpr size_t TempSuffixBytes = 8;
constexpr size_t MaxSocketPathBytes =
    sizeof(sockaddr_un::sun_path) - 1 - TempSuffixBytes;
constexpr mode_t SocketMode = 0660;

// Sent to a connection over the limit, which is closed right after.
constexpr std::string_view BusyResponse =
    "HTTP/1.1 503 Service Unavailable\r\n"
    "Content-Type: application/json\r\n"
    "Content-Length: 52\r\n"
    "Connection: close\r\n"
    "\r\n"
    "{\"error\":\"too many admin connections; retry later\"}\n";
static_assert(BusyResponse.size() - BusyResponse.find("\r\n\r\n") - 4 == 52);

std::string format_peer(const sockaddr_storage &address) {
  char text[INET6_ADDRSTRLEN] = {};
  if (address.ss_family == AF_INET6) {
    const auto &v6 = reinterpret_cast<const sockaddr_in6 &>(address);
    inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof(text));
    return "[" + std::string(text) + "]:" + std::to_string(ntohs(v6.sin6_port));
  }
  const auto &v4 = reinterpret_cast<const sockaddr_in &>(address);
  inet_ntop(AF_INET, &v4.sin_addr, text, sizeof(text));
  return std::string(text) + ":" + std::to_string(ntohs(v4.sin_port));
}

// Names the process on the other end of a Unix socket connection.
std::string format_unix_peer(int fd) {
  ucred credentials = {};
  socklen_t size = sizeof(credentials);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &size) != 0) {
    return "unix";
  }
  return "unix:pid=" + std::to_string(credentials.pid) +
         ",uid=" + std::to_string(credentials.uid);
}

// Fills `address` for `path`. Returns false when the path does not fit.
bool make_unix_address(const std::string &path, sockaddr_un &address) {
  address = {};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof(address.sun_path)) {
    return false;
  }
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  return true;
}

// Returns true when a process accepts connections on the socket at `path`.
// A non-blocking connect never waits, and a listener with a full backlog
// makes it return EAGAIN, which also means someone is there.
Result<bool> socket_in_use(const std::string &path) {
  sockaddr_un address;
  make_unix_address(path, address);
  int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (probe < 0) {
    return fail(ErrorCode::Io, errno_message("socket", errno));
  }
  int result =
      ::connect(probe, reinterpret_cast<sockaddr *>(&address), sizeof(address));
  int error = errno;
  ::close(probe);
  if (result == 0 || error == EAGAIN || error == EINPROGRESS) {
    return true;
  }
  if (error == ECONNREFUSED || error == ENOENT) {
    return false;
  }
  return fail(ErrorCode::Io, errno_message("connect", error) + " to " + path);
}
} // namespace

struct AdminServer::Listener {
  AdminServer *server = nullptr;
  int fd = -1;
  uint16_t port = 0; // 0 for the Unix socket.
  bool local_socket = false;
  ev_io watcher;
  ev_timer retry;
};

AdminServer::AdminServer(struct ev_loop *loop, AdminHandler *handler,
                         const AdminLimits &limits)
    : loop_(loop), handler_(handler), limits_(limits),
      read_buffer_(new char[ReadBufferBytes]) {}

Result<std::unique_ptr<AdminServer>>
AdminServer::open(struct ev_loop *loop, const config::AdminConfig &config,
                  AdminHandler *handler, const AdminLimits &limits) {
  std::unique_ptr<AdminServer> server(new AdminServer(loop, handler, limits));
  if (!config.socket.empty()) {
    if (auto opened = server->open_socket(config.socket); !opened) {
      return tl::unexpected(opened.error());
    }
  }
  for (const auto &address : config.listen) {
    if (auto opened = server->open_tcp(address); !opened) {
      // The destructor removes the socket file created above.
      return tl::unexpected(opened.error());
    }
  }
  return server;
}

AdminServer::~AdminServer() { shutdown(); }

Result<void> AdminServer::open_socket(const std::string &path) {
  if (path.size() > MaxSocketPathBytes) {
    return fail(ErrorCode::Invalid,
                "admin socket path '" + path + "' is " +
                    std::to_string(path.size()) + " bytes long; at most " +
                    std::to_string(MaxSocketPathBytes) +
                    " fit in a Unix socket address, so choose a shorter "
                    "admin.socket");
  }

  struct stat existing = {};
  if (::lstat(path.c_str(), &existing) == 0) {
    if (!S_ISSOCK(existing.st_mode)) {
      return fail(ErrorCode::Invalid,
                  "admin socket path '" + path +
                      "' exists and is not a socket; remove it or choose "
                      "another admin.socket");
    }
    auto in_use = socket_in_use(path);
    if (!in_use) {
      return tl::unexpected(in_use.error());
    }
    if (*in_use) {
      return fail(ErrorCode::Invalid,
                  "another process is listening on the admin socket '" + path +
                      "'; stop the other gatecache daemon or choose another "
                      "admin.socket");
    }
    GC_LOG(Main, info, "replacing stale admin socket {}", path);
  } else if (errno != ENOENT) {
    return fail(ErrorCode::Io, errno_message("lstat", errno) + " on " + path);
  }

  // Binding under a temporary name and renaming it into place gives the
  // socket its final mode before anyone can connect, whatever the umask,
  // and replaces a stale file in one step.
  std::string temp = path + "." + std::to_string(::getpid());
  sockaddr_un address;
  if (!make_unix_address(temp, address)) {
    return fail(ErrorCode::Invalid, "admin socket path '" + path +
                                        "' is too long for a Unix socket");
  }
  ::unlink(temp.c_str());
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return fail(ErrorCode::Io, errno_message("socket", errno));
  }
  auto cleanup = [&](const char *call, int error) {
    ::close(fd);
    ::unlink(temp.c_str());
    std::string message = errno_message(call, error) + " on " + temp;
    if (error == ENOENT) {
      message += "; create the directory or choose another admin.socket";
    }
    return fail(ErrorCode::Io, message);
  };
  if (::bind(fd, reinterpret_cast<sockaddr *>(&address), sizeof(address)) !=
      0) {
    int error = errno;
    ::close(fd);
    std::string message = errno_message("bind", error) + " on " + temp;
    if (error == ENOENT) {
      message += "; create the directory or choose another admin.socket";
    }
    return fail(ErrorCode::Io, message);
  }
  if (::chmod(temp.c_str(), SocketMode) != 0) {
    return cleanup("chmod", errno);
  }
  if (::listen(fd, ListenBacklog) != 0) {
    return cleanup("listen", errno);
  }
  struct stat bound = {};
  if (::stat(temp.c_str(), &bound) != 0) {
    return cleanup("stat", errno);
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    return cleanup("rename", errno);
  }

  socket_path_ = path;
  socket_device_ = bound.st_dev;
  socket_inode_ = bound.st_ino;
  start_listener(fd, 0, true);
  GC_LOG(Main, info, "admin endpoint listening on {}", path);
  return {};
}

Result<void> AdminServer::open_tcp(const config::ListenAddress &listen) {
  std::string where = listen.str();
  sockaddr_storage address = {};
  socklen_t address_size = 0;
  auto &v4 = reinterpret_cast<sockaddr_in &>(address);
  auto &v6 = reinterpret_cast<sockaddr_in6 &>(address);
  bool loopback = false;
  if (inet_pton(AF_INET, listen.host.c_str(), &v4.sin_addr) == 1) {
    v4.sin_family = AF_INET;
    v4.sin_port = htons(listen.port);
    address_size = sizeof(v4);
    loopback = (ntohl(v4.sin_addr.s_addr) >> 24) == 127;
  } else if (inet_pton(AF_INET6, listen.host.c_str(), &v6.sin6_addr) == 1) {
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(listen.port);
    address_size = sizeof(v6);
    loopback = IN6_IS_ADDR_LOOPBACK(&v6.sin6_addr);
  } else {
    return fail(ErrorCode::Invalid, "invalid admin listen address '" + where +
                                        "': expected an IPv4 or IPv6 literal");
  }
  if (!loopback) {
    return fail(ErrorCode::Invalid,
                "admin listen address '" + where +
                    "' is not a loopback address; the admin endpoint serves "
                    "only 127.0.0.0/8 and ::1");
  }

  int fd = ::socket(address.ss_family,
                    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return fail(ErrorCode::Io, errno_message("socket", errno));
  }
  auto cleanup = [&](const char *call, int error) {
    ::close(fd);
    return fail(ErrorCode::Io, errno_message(call, error) + " on " + where);
  };
  int enable = 1;
  // No SO_REUSEPORT: a second daemon must fail to bind rather than share
  // the port.
  if (::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &enable, sizeof(enable)) !=
      0) {
    return cleanup("setsockopt", errno);
  }
  if (address.ss_family == AF_INET6 &&
      ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &enable, sizeof(enable)) !=
          0) {
    return cleanup("setsockopt", errno);
  }
  if (::bind(fd, reinterpret_cast<sockaddr *>(&address), address_size) != 0) {
    return cleanup("bind", errno);
  }
  if (::listen(fd, ListenBacklog) != 0) {
    return cleanup("listen", errno);
  }
  sockaddr_storage bound = {};
  socklen_t bound_size = sizeof(bound);
  if (::getsockname(fd, reinterpret_cast<sockaddr *>(&bound), &bound_size) !=
      0) {
    return cleanup("getsockname", errno);
  }
  uint16_t port = bound.ss_family == AF_INET6
                      ? ntohs(reinterpret_cast<sockaddr_in6 &>(bound).sin6_port)
                      : ntohs(reinterpret_cast<sockaddr_in &>(bound).sin_port);
  start_listener(fd, port, false);
  GC_LOG(Main, info, "admin endpoint listening on {}",
         format_peer(bound) + " (GET only)");
  return {};
}

void AdminServer::start_listener(int fd, uint16_t port, bool local_socket) {
  auto listener = std::make_unique<Listener>();
  listener->server = this;
  listener->fd = fd;
  listener->port = port;
  listener->local_socket = local_socket;
  ev_io_init(&listener->watcher, on_accept_ready, fd, EV_READ);
  listener->watcher.data = listener.get();
  ev_timer_init(&listener->retry, on_accept_retry, AcceptRetryDelayS, 0.);
  listener->retry.data = listener.get();
  ev_io_start(loop_, &listener->watcher);
  listeners_.push_back(std::move(listener));
}

std::vector<uint16_t> AdminServer::tcp_ports() const {
  std::vector<uint16_t> ports;
  for (const auto &listener : listeners_) {
    if (!listener->local_socket) {
      ports.push_back(listener->port);
    }
  }
  return ports;
}

void AdminServer::shutdown() {
  for (auto &listener : listeners_) {
    ev_io_stop(loop_, &listener->watcher);
    ev_timer_stop(loop_, &listener->retry);
    ::close(listener->fd);
  }
  listeners_.clear();

  if (!socket_path_.empty()) {
    struct stat current = {};
    if (::lstat(socket_path_.c_str(), &current) == 0 &&
        current.st_dev == socket_device_ && current.st_ino == socket_inode_) {
      ::unlink(socket_path_.c_str());
    }
    socket_path_.clear();
  }

  // Closing a connection erases it from the table, so close a copy.
  auto connections = connections_;
  for (auto &[id, connection] : connections) {
    connection->close();
  }
  connections_.clear();
}

void AdminServer::on_accept_ready(struct ev_loop *, ev_io *watcher,
                                  int) noexcept {
  auto *listener = static_cast<Listener *>(watcher->data);
  listener->server->accept_connections(*listener);
}

void AdminServer::on_accept_retry(struct ev_loop *loop, ev_timer *watcher,
                                  int) noexcept {
  auto *listener = static_cast<Listener *>(watcher->data);
  ev_io_start(loop, &listener->watcher);
}

void AdminServer::accept_connections(Listener &listener) {
  for (int i = 0; i < MaxAcceptsPerEvent; ++i) {
    sockaddr_storage address = {};
    socklen_t address_size = sizeof(address);
    int fd = ::accept4(listener.fd, reinterpret_cast<sockaddr *>(&address),
                       &address_size, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      int error = errno;
      if (error == EAGAIN || error == EWOULDBLOCK) {
        return;
      }
      if (error == EINTR || error == ECONNABORTED || error == EPROTO) {
        continue;
      }
      // EMFILE, ENFILE, ENOBUFS, ENOMEM: retrying at once would spin.
      ++events_since_warning_;
      double now = ev_now(loop_);
      if (now - warned_at_ >= WarnPeriodS) {
        GC_LOG(Main, warn,
               "admin accept failed: {}; pausing accepts for {} s "
               "events_since_last_warning={}",
               errno_message("accept4", error), AcceptRetryDelayS,
               events_since_warning_);
        warned_at_ = now;
        events_since_warning_ = 0;
      }
      ev_io_stop(loop_, &listener.watcher);
      ev_timer_stop(loop_, &listener.retry);
      ev_timer_set(&listener.retry, AcceptRetryDelayS, 0.);
      ev_timer_start(loop_, &listener.retry);
      return;
    }

    if (connections_.size() >= limits_.max_connections) {
      reject_connection(fd);
      continue;
    }
    uint64_t id = next_connection_id_++;
    std::string peer =
        listener.local_socket ? format_unix_peer(fd) : format_peer(address);
    auto connection = std::make_shared<Connection>(
        *this, fd, id, std::move(peer), listener.local_socket);
    connections_.emplace(id, connection);
    connection->start();
  }
}

void AdminServer::reject_connection(int fd) {
  ++events_since_warning_;
  double now = ev_now(loop_);
  if (now - warned_at_ >= WarnPeriodS) {
    GC_LOG(Main, warn,
           "admin connection limit of {} reached, rejecting new connections "
           "events_since_last_warning={}",
           limits_.max_connections, events_since_warning_);
    warned_at_ = now;
    events_since_warning_ = 0;
  }
  // A fresh socket's send buffer takes the whole short response, and a
  // client that misses it still reads the end of the stream.
  (void)::send(fd, BusyResponse.data(), BusyResponse.size(),
               MSG_NOSIGNAL | MSG_DONTWAIT);
  ::close(fd);
}

void AdminServer::release(uint64_t connection_id) {
  connections_.erase(connection_id);
}

} // namespace gatecache::admin
