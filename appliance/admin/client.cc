#include "appliance/admin/client.h"

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <utility>

#include <http_parser.h>
#include <poll.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace gatecache::admin {

namespace {

// Maximum response body the client accepts. The largest daemon response,
// 10000 pulls, is estimated at about 3 MiB.
constexpr size_t MaxResponseBytes = 64 * 1024 * 1024;
constexpr size_t ReadChunkBytes = 16 * 1024;
// Pause between connect attempts while the daemon's accept queue is full.
constexpr int ConnectRetryMs = 20;

double monotonic_s() {
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Milliseconds left until `deadline` for poll(), or 0 once it passed.
int remaining_ms(double deadline) {
  double left = deadline - monotonic_s();
  if (left <= 0) {
    return 0;
  }
  return static_cast<int>(std::ceil(left * 1000));
}

// Formats a timeout for messages: "10", "0.5".
std::string format_seconds(double seconds) {
  char text[32];
  std::snprintf(text, sizeof(text), "%g", seconds);
  return text;
}

std::string connect_error(const std::string &path, int error) {
  std::string message =
      "cannot connect to " + path + ": " + std::strerror(error);
  if (error == ENOENT || error == ECONNREFUSED) {
    message += "; is gatecache running? (systemctl status gatecache)";
  } else if (error == EACCES || error == EPERM) {
    message += "; run as root or as a member of the group that owns the "
               "socket";
  }
  return message;
}

// Response being parsed, reached through `http_parser::data`.
struct ResponseParse {
  ClientResponse response;
  std::string field;
  std::string value;
  bool in_value = false;
  bool complete = false;
  bool too_large = false;

  void finish_field() {
    if (strcasecmp(field.c_str(), "content-type") == 0) {
      response.content_type = value;
    }
    field.clear();
    value.clear();
    in_value = false;
  }
};

ResponseParse &parse_of(http_parser *parser) {
  return *static_cast<ResponseParse *>(parser->data);
}

const http_parser_settings &response_settings() {
  static const http_parser_settings settings = [] {
    http_parser_settings value;
    http_parser_settings_init(&value);
    value.on_header_field = [](http_parser *parser, const char *at,
                               size_t size) {
      auto &parse = parse_of(parser);
      if (parse.in_value) {
        parse.finish_field();
      }
      parse.field.append(at, size);
      return 0;
    };
    value.on_header_value = [](http_parser *parser, const char *at,
                               size_t size) {
      auto &parse = parse_of(parser);
      parse.in_value = true;
      parse.value.append(at, size);
      return 0;
    };
    value.on_headers_complete = [](http_parser *parser) {
      auto &parse = parse_of(parser);
      if (parse.in_value) {
        parse.finish_field();
      }
      parse.response.status = static_cast<int>(parser->status_code);
      return 0;
    };
    value.on_body = [](http_parser *parser, const char *at, size_t size) {
      auto &parse = parse_of(parser);
      if (parse.response.body.size() + size > MaxResponseBytes) {
        parse.too_large = true;
        return -1;
      }
      parse.response.body.append(at, size);
      return 0;
    };
    value.on_message_complete = [](http_parser *parser) {
      auto &parse = parse_of(parser);
      // Interim 1xx responses are skipped, and the final one follows.
      if (parser->status_code >= 100 && parser->status_code < 200) {
        parse.response = ClientResponse{};
        return 0;
      }
      parse.complete = true;
      http_parser_pause(parser, 1);
      return 0;
    };
    return value;
  }();
  return settings;
}

} // namespace

std::string query_escape(std::string_view value) {
  static constexpr char Hex[] = "0123456789ABCDEF";
  std::string escaped;
  for (char c : value) {
    bool unreserved = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                      (c >= '0' && c <= '9') || c == '-' || c == '.' ||
                      c == '_' || c == '~';
    if (unreserved) {
      escaped += c;
    } else {
      auto byte = static_cast<unsigned char>(c);
      escaped += '%';
      escaped += Hex[byte >> 4];
      escaped += Hex[byte & 0xf];
    }
  }
  return escaped;
}

AdminClient::AdminClient(std::string socket_path, double timeout_s)
    : socket_path_(std::move(socket_path)), timeout_s_(timeout_s) {}

AdminClient::~AdminClient() { disconnect(); }

void AdminClient::disconnect() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

Result<void> AdminClient::connect(double deadline) {
  sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  if (socket_path_.size() >= sizeof(address.sun_path)) {
    return fail(ErrorCode::Invalid, "admin socket path '" + socket_path_ +
                                        "' is too long for a Unix socket");
  }
  std::memcpy(address.sun_path, socket_path_.c_str(), socket_path_.size() + 1);

  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return fail(ErrorCode::Io, errno_message("socket", errno));
  }
  while (::connect(fd, reinterpret_cast<sockaddr *>(&address),
                   sizeof(address)) != 0) {
    int error = errno;
    if (error == EINTR) {
      continue;
    }
    if (error == EAGAIN && monotonic_s() < deadline) {
      // A non-blocking connect to a Unix socket fails with EAGAIN while the
      // listener's accept queue is full.
      ::poll(nullptr, 0, ConnectRetryMs);
      continue;
    }
    ::close(fd);
    if (error == EAGAIN) {
      return fail(ErrorCode::Timeout,
                  "cannot connect to " + socket_path_ + " within " +
                      format_seconds(timeout_s_) +
                      " s: the daemon accepts no connections");
    }
    return fail(ErrorCode::Unreachable, connect_error(socket_path_, error));
  }
  fd_ = fd;
  return {};
}

Result<ClientResponse> AdminClient::get(const std::string &target) {
  return request("GET", target, "");
}

Result<ClientResponse> AdminClient::post(const std::string &target,
                                         const std::string &body) {
  return request("POST", target, body);
}

Result<ClientResponse> AdminClient::request(const std::string &method,
                                            const std::string &target,
                                            const std::string &body) {
  double deadline = monotonic_s() + timeout_s_;
  bool reused = fd_ >= 0;
  if (reused) {
    // An idle connection that is readable was closed by the daemon (its
    // idle timeout) or contains unrequested bytes, so a new one is opened.
    pollfd check = {fd_, POLLIN, 0};
    if (::poll(&check, 1, 0) != 0) {
      disconnect();
      reused = false;
    }
  }
  if (fd_ < 0) {
    if (auto connected = connect(deadline); !connected) {
      return tl::unexpected(connected.error());
    }
  }

  std::string message = method + " " + target + " HTTP/1.1\r\n";
  message += "Host: localhost\r\n";
  message += "User-Agent: gatecache-cli\r\n";
  message += "Accept: application/json\r\n";
  if (method == "POST") {
    message += "Content-Type: application/json\r\n";
    message += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  }
  message += "\r\n";
  message += body;

  bool sent_anything = false;
  bool got_anything = false;
  auto response = exchange(message, deadline, sent_anything, got_anything);
  if (!response && reused && !got_anything && method == "GET" &&
      response.error().code == ErrorCode::Io) {
    // The daemon closed the kept connection just as the request went out.
    // A GET changes nothing, so sending it again on a new one is safe.
    disconnect();
    if (auto connected = connect(deadline); !connected) {
      return tl::unexpected(connected.error());
    }
    response = exchange(message, deadline, sent_anything, got_anything);
  }
  if (!response) {
    disconnect();
    response.error().message =
        method + " " + target + ": " + response.error().message;
  }
  return response;
}

Result<ClientResponse> AdminClient::exchange(const std::string &message,
                                             double deadline,
                                             bool &sent_anything,
                                             bool &got_anything) {
  auto timed_out = [&] {
    return fail(ErrorCode::Timeout,
                "no response from gatecache on " + socket_path_ + " within " +
                    format_seconds(timeout_s_) +
                    " s; the daemon may be overloaded or stuck");
  };

  size_t sent = 0;
  while (sent < message.size()) {
    ssize_t result =
        ::send(fd_, message.data() + sent, message.size() - sent, MSG_NOSIGNAL);
    if (result >= 0) {
      sent += static_cast<size_t>(result);
      sent_anything = true;
      continue;
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      return fail(ErrorCode::Io, errno_message("send", errno));
    }
    pollfd ready = {fd_, POLLOUT, 0};
    if (::poll(&ready, 1, remaining_ms(deadline)) == 0) {
      return timed_out();
    }
  }

  http_parser parser;
  http_parser_init(&parser, HTTP_RESPONSE);
  ResponseParse parse;
  parser.data = &parse;
  char buffer[ReadChunkBytes];
  while (!parse.complete) {
    pollfd ready = {fd_, POLLIN, 0};
    int polled = ::poll(&ready, 1, remaining_ms(deadline));
    if (polled == 0) {
      return timed_out();
    }
    if (polled < 0) {
      if (errno == EINTR) {
        continue;
      }
      return fail(ErrorCode::Io, errno_message("poll", errno));
    }
    ssize_t got = ::recv(fd_, buffer, sizeof(buffer), 0);
    if (got < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) {
        continue;
      }
      return fail(ErrorCode::Io, errno_message("recv", errno));
    }
    if (got > 0) {
      got_anything = true;
    }
    // A zero-length call signals the end of the stream to the parser,
    // which ends a body that has no Content-Length.
    http_parser_execute(&parser, &response_settings(), buffer,
                        static_cast<size_t>(got));
    auto error = HTTP_PARSER_ERRNO(&parser);
    if (parse.too_large) {
      return fail(ErrorCode::Invalid,
                  "response larger than " +
                      std::to_string(MaxResponseBytes >> 20) + " MiB");
    }
    if (error != HPE_OK && error != HPE_PAUSED) {
      return fail(ErrorCode::Invalid, std::string("invalid HTTP response: ") +
                                          http_errno_description(error));
    }
    if (got == 0 && !parse.complete) {
      return fail(ErrorCode::Io,
                  "the daemon closed the connection before the response "
                  "ended");
    }
  }
  if (!http_should_keep_alive(&parser)) {
    disconnect();
  }
  return std::move(parse.response);
}

Result<nlohmann::json> AdminClient::get_json(const std::string &target) {
  auto response = get(target);
  if (!response) {
    return tl::unexpected(response.error());
  }
  return json_body("GET " + target, *response);
}

Result<nlohmann::json> AdminClient::post_json(const std::string &target,
                                              const nlohmann::json &body) {
  auto response = post(target, body.dump());
  if (!response) {
    return tl::unexpected(response.error());
  }
  return json_body("POST " + target, *response);
}

Result<nlohmann::json> json_body(const std::string &request,
                                 const ClientResponse &response) {
  auto body = nlohmann::json::parse(response.body, nullptr, false);
  int status = response.status;
  if (status >= 200 && status < 300) {
    if (body.is_discarded()) {
      return fail(ErrorCode::Invalid,
                  request + ": the daemon's response is not valid JSON");
    }
    return body;
  }

  std::string message;
  if (!body.is_discarded() && body.is_object() && body.contains("error") &&
      body["error"].is_string()) {
    message = body["error"].get<std::string>();
  } else {
    message = response.body.substr(0, 200);
  }
  message += " (HTTP " + std::to_string(status) + " from " + request + ")";
  ErrorCode code = status == 400   ? ErrorCode::Invalid
                   : status == 403 ? ErrorCode::Denied
                   : status == 404 ? ErrorCode::NotFound
                                   : ErrorCode::UpstreamRejected;
  return fail(code, message);
}

} // namespace gatecache::admin
