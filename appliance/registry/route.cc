#include "appliance/registry/route.h"

#include <array>
#include <optional>
#include <utility>

#include "appliance/config/values.h"
#include "appliance/registry/grammar.h"
#include "common/ascii.h"

namespace gatecache::registry {
namespace {

// A request target split into its parts. The views point into the raw path.
struct Target {
  Endpoint endpoint = Endpoint::Base;
  std::string_view name;
  std::string_view reference;
};

bool is_control_character(char c) {
  auto byte = static_cast<unsigned char>(c);
  return byte < 0x20 || byte == 0x7F;
}

bool has_control_character(std::string_view text) {
  for (char c : text) {
    if (is_control_character(c)) {
      return true;
    }
  }
  return false;
}

std::string echo(std::string_view text) { return echo_value(text); }

tl::unexpected<OciError> reject(OciError error) {
  return tl::unexpected<OciError>(std::move(error));
}

// Checks every segment after "/v2". Only the last segment may be empty, as
// in "/v2/" or ".../blobs/uploads/". Empty and dot segments are rejected
// because they give one repository several spellings, and a proxy that
// normalises paths would resolve ".." out of the repository.
std::optional<OciError> check_segments(std::string_view rest) {
  while (!rest.empty()) {
    rest.remove_prefix(1); // The '/' before the segment.
    size_t slash = rest.find('/');
    std::string_view segment = rest.substr(0, slash);
    bool last = slash == std::string_view::npos;
    if (segment.empty() && !last) {
      return OciError::name_invalid("empty path segment in the request path");
    }
    if (segment == "." || segment == "..") {
      return OciError::name_invalid("path segment '" + std::string(segment) +
                                    "' is not allowed in the request path");
    }
    rest = last ? std::string_view() : rest.substr(slash);
  }
  return std::nullopt;
}

std::optional<OciError> name_error(std::string_view name) {
  if (auto checked = check_repository_name(name); !checked) {
    return OciError::name_invalid(checked.error().message);
  }
  return std::nullopt;
}

std::optional<OciError> tag_error(std::string_view tag) {
  if (auto checked = check_tag(tag); !checked) {
    return OciError::name_invalid(checked.error().message);
  }
  return std::nullopt;
}

std::optional<OciError> digest_error(std::string_view digest) {
  if (auto checked = check_digest(digest); !checked) {
    return OciError::digest_invalid(checked.error().message);
  }
  return std::nullopt;
}

// The last segments of a path, last first.
struct Tail {
  std::array<std::string_view, 3> segments;
  size_t count = 0;
};

Tail split_tail(std::string_view body) {
  Tail tail;
  std::string_view head = body;
  while (tail.count < tail.segments.size()) {
    size_t slash = head.rfind('/');
    if (slash == std::string_view::npos) {
      tail.segments[tail.count++] = head;
      break;
    }
    tail.segments[tail.count++] = head.substr(slash + 1);
    head = head.substr(0, slash);
  }
  return tail;
}

// Returns what precedes the last `k` segments of `body`, empty when
// nothing does.
std::string_view name_before(std::string_view body, const Tail &tail,
                             size_t k) {
  size_t cut = 0;
  for (size_t i = 0; i < k; ++i) {
    cut += tail.segments[i].size() + 1;
  }
  if (cut > body.size()) {
    return {};
  }
  return body.substr(0, body.size() - cut);
}

// Finds the endpoint from the end of the path, because repository names
// may themselves contain "manifests", "blobs" or "tags" components.
tl::expected<Target, OciError> parse_target(std::string_view rest,
                                            std::string_view path) {
  Target target;
  if (rest.empty() || rest == "/") {
    return target;
  }
  std::string_view body = rest.substr(1);
  if (body == "_catalog") {
    return reject(OciError::unsupported(
        "the catalog is not supported: a pull-through cache lists only "
        "what it happens to hold"));
  }

  Tail tail = split_tail(body);
  const auto &segments = tail.segments;
  if (tail.count >= 2 && segments[1] == "tags" && segments[0] == "list") {
    target.endpoint = Endpoint::TagsList;
    target.name = name_before(body, tail, 2);
  } else if (tail.count >= 2 && segments[1] == "manifests") {
    target.endpoint = Endpoint::Manifest;
    target.name = name_before(body, tail, 2);
    target.reference = segments[0];
  } else if ((tail.count >= 3 && segments[2] == "blobs" &&
              segments[1] == "uploads") ||
             (tail.count >= 2 && segments[1] == "blobs" &&
              segments[0] == "uploads")) {
    return reject(OciError::unsupported(
        "blob uploads are not supported: gatecache is a read-only mirror"));
  } else if (tail.count >= 2 && segments[1] == "blobs") {
    target.endpoint = Endpoint::Blob;
    target.name = name_before(body, tail, 2);
    target.reference = segments[0];
  } else {
    return reject(OciError::name_unknown("unknown path '" + echo(path) +
                                         "' in the registry API"));
  }
  return target;
}

std::optional<OciError> check_reference(const Target &target) {
  if (target.endpoint == Endpoint::Blob) {
    if (target.reference.find(':') == std::string_view::npos) {
      return OciError::digest_invalid("blobs are addressed by digest, not '" +
                                      echo(target.reference) + "'");
    }
    return digest_error(target.reference);
  }
  if (target.endpoint == Endpoint::Manifest) {
    if (target.reference.find(':') != std::string_view::npos) {
      return digest_error(target.reference);
    }
    return tag_error(target.reference);
  }
  return std::nullopt;
}

// Finds the `ns` parameter. Returns nullopt when absent. A repeated `ns`
// is an error, because two parts of the stack could each pick another one.
tl::expected<std::optional<std::string>, OciError>
find_ns(std::string_view query) {
  std::optional<std::string> ns;
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view parameter = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view()
                                          : query.substr(amp + 1);

    size_t equals = parameter.find('=');
    if (parameter.substr(0, equals) != "ns") {
      continue;
    }
    if (ns) {
      return reject(OciError::name_invalid("more than one ns parameter"));
    }
    std::string_view raw = equals == std::string_view::npos
                               ? std::string_view()
                               : parameter.substr(equals + 1);
    auto value = decode_form_value(raw);
    if (!value) {
      return reject(OciError::name_invalid("invalid percent-encoding in ns '" +
                                           echo(raw) + "'"));
    }
    ns = std::move(*value);
  }
  return ns;
}

// Picks the upstream from `ns` or the default. For Base, a request
// without either still succeeds, with an empty upstream.
tl::expected<std::string, OciError> select_upstream(const RouteTable &table,
                                                    std::string_view query,
                                                    Endpoint endpoint) {
  auto ns = find_ns(query);
  if (!ns) {
    return reject(std::move(ns.error()));
  }

  if (!*ns) {
    if (table.default_upstream().empty() && endpoint != Endpoint::Base) {
      return reject(OciError::denied(
          "the request has no ns parameter and no default upstream is "
          "configured: add ?ns=<registry host>, as containerd does for a "
          "mirror"));
    }
    return table.default_upstream();
  }

  auto name = config::parse_registry_host(**ns);
  if (!name) {
    return reject(OciError::name_invalid(
        "invalid ns '" + echo(**ns) + "': " + name.error().message +
        " (expected a registry host such as docker.io or 127.0.0.1:5000)"));
  }
  if (!table.contains(*name)) {
    return reject(
        OciError::denied("upstream '" + echo(*name) + "' is not configured"));
  }
  return std::move(*name);
}

} // namespace

RouteTable RouteTable::from_config(const config::Config &config) {
  RouteTable table;
  for (const auto &[name, upstream] : config.upstreams) {
    table.add_upstream(name, upstream.docker_hub);
  }
  table.set_default_upstream(config.default_upstream);
  return table;
}

void RouteTable::add_upstream(std::string name, bool docker_hub) {
  upstreams_.insert_or_assign(std::move(name), docker_hub);
}

void RouteTable::set_default_upstream(std::string name) {
  default_upstream_ = std::move(name);
}

bool RouteTable::contains(std::string_view name) const {
  return upstreams_.find(name) != upstreams_.end();
}

bool RouteTable::is_docker_hub(std::string_view name) const {
  auto it = upstreams_.find(name);
  return it != upstreams_.end() && it->second;
}

tl::expected<Route, OciError> route_request(const RouteTable &table,
                                            std::string_view method,
                                            std::string_view path,
                                            std::string_view query) {
  if (has_control_character(path) || has_control_character(query)) {
    return reject(OciError::name_invalid(
        "the request target contains a control character"));
  }
  if (path.find('%') != std::string_view::npos) {
    return reject(OciError::name_invalid(
        "percent-encoded request path '" + echo(path) +
        "': repository names, tags and digests never need it"));
  }
  if (path != "/v2" && !path.starts_with("/v2/")) {
    return reject(OciError::name_unknown("unknown path '" + echo(path) +
                                         "': the registry API is under /v2/"));
  }
  if (method != "GET" && method != "HEAD") {
    return reject(OciError::unsupported(
        "method " + echo(method) +
        " is not supported: gatecache is a read-only mirror that serves "
        "GET and HEAD"));
  }

  std::string_view rest = path.substr(3);
  if (auto error = check_segments(rest)) {
    return reject(std::move(*error));
  }
  auto target = parse_target(rest, path);
  if (!target) {
    return reject(std::move(target.error()));
  }
  if (target->endpoint != Endpoint::Base) {
    if (auto error = name_error(target->name)) {
      return reject(std::move(*error));
    }
    if (auto error = check_reference(*target)) {
      return reject(std::move(*error));
    }
  }

  auto upstream = select_upstream(table, query, target->endpoint);
  if (!upstream) {
    return reject(std::move(upstream.error()));
  }

  Route route;
  route.endpoint = target->endpoint;
  route.upstream = std::move(*upstream);
  if (route.endpoint == Endpoint::Base) {
    return route;
  }

  // Docker Hub keeps official images under "library/": "nginx" is
  // "library/nginx". Other registries have no such rule.
  if (table.is_docker_hub(route.upstream) &&
      target->name.find('/') == std::string_view::npos) {
    route.repository = "library/";
  }
  route.repository += target->name;
  if (route.repository.size() > MaxRepositoryNameLength) {
    return reject(OciError::name_invalid(
        "repository name '" + echo(route.repository) + "' is longer than " +
        std::to_string(MaxRepositoryNameLength) + " characters"));
  }
  route.reference = std::string(target->reference);
  route.by_digest = route.reference.find(':') != std::string::npos;
  return route;
}

tl::expected<Route, OciError> route_request(const RouteTable &table,
                                            const front::Request &request) {
  return route_request(table, request.method_name, request.path, request.query);
}

} // namespace gatecache::registry
