#include "appliance/upstream/url.h"

#include <cctype>
#include <charconv>

#include <arpa/inet.h>

namespace gatecache::upstream {

namespace {

constexpr size_t MaxHostLength = 253;
constexpr char HexDigits[] = "0123456789ABCDEF";

bool is_unreserved(unsigned char c) {
  return std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

void append_percent_encoded(std::string &out, unsigned char c) {
  out.push_back('%');
  out.push_back(HexDigits[c >> 4]);
  out.push_back(HexDigits[c & 0x0f]);
}

// Copies a path or query into `out`, percent-encoding the bytes that would
// break a request line or that RFC 3986 does not allow unencoded (space,
// quotes, angle brackets, non-ASCII). Control bytes could split an HTTP/1.1
// request line, so they make the URL invalid instead.
bool append_normalized(std::string &out, std::string_view text) {
  for (unsigned char c : text) {
    if (c < 0x20 || c == 0x7f) {
      return false;
    }
    if (c == ' ' || c == '"' || c == '<' || c == '>' || c >= 0x80) {
      append_percent_encoded(out, c);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return true;
}

void remove_last_segment(std::string &output) {
  size_t slash = output.rfind('/');
  output.erase(slash == std::string::npos ? 0 : slash);
}

// Implements the remove_dot_segments algorithm of RFC 3986 section 5.2.4.
std::string remove_dot_segments(std::string input) {
  std::string output;
  size_t pos = 0;
  while (pos < input.size()) {
    std::string_view rest(input.data() + pos, input.size() - pos);
    if (rest.starts_with("../")) {
      pos += 3;
    } else if (rest.starts_with("./")) {
      pos += 2;
    } else if (rest.starts_with("/./")) {
      pos += 2;
    } else if (rest == "/.") {
      input.replace(pos, 2, "/");
    } else if (rest.starts_with("/../")) {
      pos += 3;
      remove_last_segment(output);
    } else if (rest == "/..") {
      input.replace(pos, 3, "/");
      remove_last_segment(output);
    } else if (rest == "." || rest == "..") {
      pos = input.size();
    } else {
      size_t end = rest.find('/', rest.front() == '/' ? 1 : 0);
      if (end == std::string_view::npos) {
        end = rest.size();
      }
      output.append(rest.substr(0, end));
      pos += end;
    }
  }
  return output;
}

// Returns the length of the scheme when `text` starts with
// `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"`, else 0.
size_t scheme_length(std::string_view text) {
  if (text.empty() || !std::isalpha(static_cast<unsigned char>(text[0]))) {
    return 0;
  }
  for (size_t i = 1; i < text.size(); ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c == ':') {
      return i;
    }
    if (!std::isalnum(c) && c != '+' && c != '-' && c != '.') {
      return 0;
    }
  }
  return 0;
}

bool equals_ignore_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

bool is_ipv4_literal(const std::string &host) {
  in_addr addr{};
  return inet_pton(AF_INET, host.c_str(), &addr) == 1;
}

bool is_ipv6_literal(const std::string &host) {
  in6_addr addr{};
  return inet_pton(AF_INET6, host.c_str(), &addr) == 1;
}

bool is_valid_host_name(std::string_view host) {
  if (host.empty() || host.size() > MaxHostLength) {
    return false;
  }
  for (unsigned char c : host) {
    if (!std::isalnum(c) && c != '-' && c != '.' && c != '_') {
      return false;
    }
  }
  return true;
}

tl::unexpected<Error> invalid_url(std::string_view text, const char *why) {
  return fail(ErrorCode::Invalid,
              "invalid URL '" + std::string(text) + "': " + why);
}

// Parses `host [ ":" port ]` where host may be a bracketed IPv6 literal.
Result<void> parse_authority(std::string_view text, std::string_view authority,
                             Url &url) {
  if (authority.find('@') != std::string_view::npos) {
    return invalid_url(text, "user information is not supported");
  }
  std::string_view port_text;
  if (authority.starts_with('[')) {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      return invalid_url(text, "unterminated IPv6 literal");
    }
    url.host = std::string(authority.substr(1, close - 1));
    if (!is_ipv6_literal(url.host)) {
      return invalid_url(text, "invalid IPv6 literal");
    }
    std::string_view after = authority.substr(close + 1);
    if (!after.empty() && !after.starts_with(':')) {
      return invalid_url(text, "unexpected text after IPv6 literal");
    }
    port_text = after.empty() ? after : after.substr(1);
  } else {
    size_t colon = authority.find(':');
    std::string_view host = authority.substr(0, colon);
    if (!is_valid_host_name(host)) {
      return invalid_url(text, "invalid host");
    }
    url.host.clear();
    for (unsigned char c : host) {
      url.host.push_back(static_cast<char>(std::tolower(c)));
    }
    if (colon != std::string_view::npos) {
      port_text = authority.substr(colon + 1);
    }
  }
  url.port = 443;
  if (!port_text.empty()) {
    unsigned value = 0;
    auto [end, ec] = std::from_chars(
        port_text.data(), port_text.data() + port_text.size(), value);
    if (ec != std::errc() || end != port_text.data() + port_text.size() ||
        value == 0 || value > 65535) {
      return invalid_url(text, "invalid port");
    }
    url.port = static_cast<uint16_t>(value);
  }
  return {};
}

// Sets the path and query of `url` from `path` and the optional `query`.
Result<void> set_path_and_query(std::string_view text, std::string path,
                                const std::string_view *query, Url &url) {
  url.path.clear();
  if (!append_normalized(url.path, remove_dot_segments(std::move(path)))) {
    return invalid_url(text, "control character in path");
  }
  if (url.path.empty() || url.path.front() != '/') {
    url.path.insert(url.path.begin(), '/');
  }
  url.query.clear();
  url.has_query = query != nullptr;
  if (query != nullptr && !append_normalized(url.query, *query)) {
    return invalid_url(text, "control character in query");
  }
  return {};
}

struct SplitReference {
  std::string_view path;
  std::string_view query;
  bool has_query = false;
};

SplitReference split_path_query(std::string_view text) {
  SplitReference split;
  size_t question = text.find('?');
  split.path = text.substr(0, question);
  if (question != std::string_view::npos) {
    split.query = text.substr(question + 1);
    split.has_query = true;
  }
  return split;
}

std::string_view strip_fragment(std::string_view text) {
  return text.substr(0, text.find('#'));
}

} // namespace

bool is_ip_literal(const std::string &host) {
  return is_ipv4_literal(host) || is_ipv6_literal(host);
}

bool Url::is_ip_literal() const { return upstream::is_ip_literal(host); }

std::string Url::authority() const {
  std::string out =
      host.find(':') != std::string::npos ? "[" + host + "]" : host;
  if (port != 443) {
    out += ':';
    out += std::to_string(port);
  }
  return out;
}

std::string Url::origin() const {
  std::string bracketed =
      host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return "https://" + bracketed + ":" + std::to_string(port);
}

std::string Url::target() const {
  return has_query ? path + "?" + query : path;
}

std::string Url::str() const { return "https://" + authority() + target(); }

std::string Url::redacted() const { return "https://" + authority() + path; }

Result<Url> parse_url(std::string_view text) {
  size_t scheme_end = scheme_length(text);
  if (scheme_end == 0 || !text.substr(scheme_end).starts_with("://")) {
    return invalid_url(text, "not an absolute URL");
  }
  if (!equals_ignore_case(text.substr(0, scheme_end), "https")) {
    return invalid_url(text, "only the https scheme is supported");
  }
  std::string_view rest = strip_fragment(text.substr(scheme_end + 3));
  size_t authority_end = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, authority_end);
  Url url;
  if (auto parsed = parse_authority(text, authority, url); !parsed) {
    return tl::unexpected(parsed.error());
  }
  std::string_view remainder = authority_end == std::string_view::npos
                                   ? std::string_view()
                                   : rest.substr(authority_end);
  SplitReference split = split_path_query(remainder);
  auto set = set_path_and_query(text, std::string(split.path),
                                split.has_query ? &split.query : nullptr, url);
  if (!set) {
    return tl::unexpected(set.error());
  }
  return url;
}

Result<Url> resolve_reference(const Url &base, std::string_view reference) {
  std::string_view ref = strip_fragment(reference);
  if (scheme_length(ref) != 0) {
    return parse_url(ref);
  }
  if (ref.starts_with("//")) {
    return parse_url("https:" + std::string(ref));
  }
  SplitReference split = split_path_query(ref);
  Url url = base;
  if (split.path.empty()) {
    // RFC 3986 section 5.2.2: an empty path keeps the base path, and the
    // base query too unless the reference has its own.
    if (split.has_query) {
      url.query.clear();
      url.has_query = true;
      if (!append_normalized(url.query, split.query)) {
        return invalid_url(reference, "control character in query");
      }
    }
    return url;
  }
  std::string path;
  if (split.path.front() == '/') {
    path = std::string(split.path);
  } else {
    // Merge (RFC 3986 section 5.2.3): replace the last segment of the base
    // path with the reference.
    size_t slash = base.path.rfind('/');
    path = base.path.substr(0, slash == std::string::npos ? 0 : slash + 1);
    path.append(split.path);
  }
  auto set = set_path_and_query(reference, std::move(path),
                                split.has_query ? &split.query : nullptr, url);
  if (!set) {
    return tl::unexpected(set.error());
  }
  return url;
}

std::string encode_query_component(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (unsigned char c : value) {
    if (is_unreserved(c)) {
      out.push_back(static_cast<char>(c));
    } else {
      append_percent_encoded(out, c);
    }
  }
  return out;
}

} // namespace gatecache::upstream
