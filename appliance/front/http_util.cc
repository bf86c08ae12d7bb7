#include "appliance/front/http_util.h"

#include <array>
#include <ctime>

#include <fmt/format.h>

namespace gatecache::front {

namespace {

struct DateCache {
  time_t second = -1;
  // Larger than the date, because the compiler cannot prove the ranges of
  // the `struct tm` fields that `snprintf` formats.
  std::array<char, 64> text{};
};

thread_local DateCache date_cache;

constexpr const char *WeekDays[] = {"Sun", "Mon", "Tue", "Wed",
                                    "Thu", "Fri", "Sat"};
constexpr const char *Months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

// RFC 9110 section 5.6.2: tchar, less the upper-case letters.
bool is_token_char(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
    return true;
  }
  switch (c) {
  case '!':
  case '#':
  case '$':
  case '%':
  case '&':
  case '\'':
  case '*':
  case '+':
  case '-':
  case '.':
  case '^':
  case '_':
  case '`':
  case '|':
  case '~':
    return true;
  default:
    return false;
  }
}

} // namespace

EveryPowerOfTwo invalid_response_warnings;

std::string_view http_date() {
  time_t now = time(nullptr);
  if (now != date_cache.second) {
    struct tm parts;
    gmtime_r(&now, &parts);
    snprintf(date_cache.text.data(), date_cache.text.size(),
             "%s, %02d %s %04d %02d:%02d:%02d GMT", WeekDays[parts.tm_wday],
             parts.tm_mday, Months[parts.tm_mon], parts.tm_year + 1900,
             parts.tm_hour, parts.tm_min, parts.tm_sec);
    date_cache.second = now;
  }
  return {date_cache.text.data(), HttpDateLength};
}

std::string_view reason_phrase(int status) {
  switch (status) {
  case 200:
    return "OK";
  case 201:
    return "Created";
  case 202:
    return "Accepted";
  case 204:
    return "No Content";
  case 206:
    return "Partial Content";
  case 301:
    return "Moved Permanently";
  case 302:
    return "Found";
  case 303:
    return "See Other";
  case 304:
    return "Not Modified";
  case 307:
    return "Temporary Redirect";
  case 308:
    return "Permanent Redirect";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 406:
    return "Not Acceptable";
  case 408:
    return "Request Timeout";
  case 409:
    return "Conflict";
  case 411:
    return "Length Required";
  case 413:
    return "Content Too Large";
  case 414:
    return "URI Too Long";
  case 416:
    return "Range Not Satisfiable";
  case 429:
    return "Too Many Requests";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 501:
    return "Not Implemented";
  case 502:
    return "Bad Gateway";
  case 503:
    return "Service Unavailable";
  case 504:
    return "Gateway Timeout";
  case 505:
    return "HTTP Version Not Supported";
  default:
    return "Unknown";
  }
}

bool is_valid_header_name(std::string_view name) {
  if (name.empty()) {
    return false;
  }
  for (char c : name) {
    if (!is_token_char(static_cast<unsigned char>(c))) {
      return false;
    }
  }
  return true;
}

bool is_valid_header_value(std::string_view value) {
  for (char c : value) {
    auto byte = static_cast<unsigned char>(c);
    if ((byte < 0x20 && byte != '\t') || byte == 0x7f) {
      return false;
    }
  }
  return true;
}

bool is_reserved_header(std::string_view name) {
  switch (name.size()) {
  case 2:
    return name == "te";
  case 4:
    return name == "date";
  case 6:
    return name == "server";
  case 7:
    return name == "upgrade";
  case 10:
    return name == "connection" || name == "keep-alive";
  case 14:
    return name == "content-length";
  case 16:
    return name == "proxy-connection";
  case 17:
    return name == "transfer-encoding";
  default:
    return false;
  }
}

BodyPlan plan_body(Method method, const Response &response) {
  int status = response.status;
  if (status < 200 || status == 204) {
    return {false, -1};
  }
  if (status == 304) {
    return {false, response.head_length >= 0 ? response.head_length : -1};
  }
  if (method == Method::Head) {
    if (response.head_length >= 0) {
      return {false, response.head_length};
    }
    return {false, response.body ? response.body->length() : 0};
  }
  if (!response.body) {
    return {false, 0};
  }
  int64_t length = response.body->length();
  return {length != 0, length};
}

} // namespace gatecache::front

fmt::format_context::iterator fmt::formatter<gatecache::front::LogText>::format(
    gatecache::front::LogText value, fmt::format_context &context) const {
  static constexpr char Hex[] = "0123456789abcdef";
  auto out = context.out();
  for (char c : value.text) {
    auto byte = static_cast<unsigned char>(c);
    if (byte > 0x20 && byte < 0x7f && byte != '\\') {
      *out++ = c;
      continue;
    }
    *out++ = '\\';
    *out++ = 'x';
    *out++ = Hex[byte >> 4];
    *out++ = Hex[byte & 0xf];
  }
  if (value.text.empty() && value.dash_if_empty) {
    *out++ = '-';
  }
  return out;
}
