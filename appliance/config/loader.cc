// Reads the YAML config file into `Config` and validates every value.
//
// yaml-cpp appears only in this file. The loader walks the document once,
// in file order, with one table of known keys per map, and collects every
// error with the position yaml-cpp recorded for the offending node. It
// then fills the defaults that depend on other keys (tls.dir, urls,
// default_upstream, admin.socket) and checks the rules that span keys.
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include "appliance/config/config.h"
#include "appliance/config/values.h"

namespace gatecache::config {
namespace {

// A config file is a few kilobytes. The limit keeps a wrong path (a disk
// image, /dev/zero) from filling memory.
constexpr size_t MaxConfigBytes = 1 << 20;
constexpr size_t MaxReportedErrors = 20;
constexpr size_t MaxEchoedValueBytes = 80;

constexpr std::string_view SizeForm =
    "an integer number of bytes, optionally with a unit KiB, MiB, GiB, TiB, "
    "KB, MB, GB or TB";
constexpr std::string_view ListenForm =
    "\"address:port\" with an IPv4 address or a bracketed IPv6 address "
    "and a port from 1 to 65535";
constexpr std::string_view RegistryHostForm =
    "a registry host as image references name it: a DNS name, an IPv4 "
    "address or a bracketed IPv6 address, with an optional port";
constexpr std::string_view ClusterNameForm =
    "a cluster name of 1 to 63 characters: lower-case letters, digits, '_' "
    "and '-', starting with a letter or digit";

// Maximum length of a client certificate name, the upper bound RFC 5280
// (appendix A.1, ub-common-name) sets for a subject common name.
constexpr size_t MaxClientNameLength = 64;

// Maximum length of a Unix socket path: sockaddr_un.sun_path has 108 bytes on
// Linux, one of them for the terminating NUL.
constexpr size_t MaxSocketPathLength = 107;

// Text of the expected form of a duration within `range`.
std::string duration_form(const DurationRange &range) {
  std::string text =
      "seconds as a number, or a number with a unit ms, s, m, h or d";
  if (range.allow_zero) {
    text += ", from 0 to " + format_duration(range.max_seconds);
  } else if (range.min_seconds > 0) {
    text += ", from " + format_duration(range.min_seconds) + " to " +
            format_duration(range.max_seconds);
  } else {
    text += ", at most " + format_duration(range.max_seconds);
  }
  return text;
}

// Formats a share or factor read from the config, as "0.25".
std::string format_number(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%g", value);
  return buffer;
}

std::string position(const YAML::Mark &mark) {
  return "line " + std::to_string(mark.line + 1) + ", column " +
         std::to_string(mark.column + 1);
}

std::string system_message(int errnum) {
  return std::generic_category().message(errnum);
}

// Reads at most `MaxConfigBytes` of `path`, retrying interrupted calls.
Result<std::string> read_config_file(const std::string &path) {
  int fd = -1;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    int errnum = errno;
    return fail(errnum == ENOENT ? ErrorCode::NotFound : ErrorCode::Io,
                "cannot read config " + path + ": " + system_message(errnum));
  }

  std::string text;
  char buffer[16384];
  int errnum = 0;
  while (true) {
    ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      errnum = errno;
      break;
    }
    if (n == 0) {
      break;
    }
    if (text.size() + static_cast<size_t>(n) > MaxConfigBytes) {
      ::close(fd);
      return fail(ErrorCode::Invalid,
                  "cannot read config " + path + ": file is larger than 1 MiB");
    }
    text.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);

  if (errnum != 0) {
    return fail(ErrorCode::Io,
                "cannot read config " + path + ": " + system_message(errnum));
  }
  return text;
}

// Returns `value` fit for an error message: control characters escaped as
// \xNN, so a hostile file cannot send terminal escapes to the operator,
// and long values cut at a UTF-8 boundary.
std::string echo(std::string_view value) {
  bool cut = value.size() > MaxEchoedValueBytes;
  if (cut) {
    size_t end = MaxEchoedValueBytes;
    while (end > 0 && (static_cast<unsigned char>(value[end]) & 0xC0) == 0x80) {
      --end;
    }
    value = value.substr(0, end);
  }

  std::string text;
  text.reserve(value.size() + 3);
  for (char c : value) {
    auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7F) {
      static constexpr char hex[] = "0123456789abcdef";
      text += "\\x";
      text += hex[byte >> 4];
      text += hex[byte & 0xF];
    } else {
      text += c;
    }
  }
  if (cut) {
    text += "...";
  }
  return text;
}

std::string_view describe_type(const YAML::Node &node) {
  switch (node.Type()) {
  case YAML::NodeType::Null:
  case YAML::NodeType::Undefined:
    return "empty";
  case YAML::NodeType::Scalar:
    return "a string";
  case YAML::NodeType::Sequence:
    return "a list";
  case YAML::NodeType::Map:
    return "a map";
  }
  return "unknown";
}

bool has_control_character(std::string_view text) {
  for (char c : text) {
    auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7F) {
      return true;
    }
  }
  return false;
}

// Removes trailing slashes except the one of "/", so that joining
// "<storage.path>/tls" never produces "//".
std::string strip_trailing_slashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') {
    path.pop_back();
  }
  return path;
}

// Opens `path` to prove the daemon can read it. Returns an empty string on
// success, or the reason.
std::string check_readable_file(const std::string &path) {
  // O_NONBLOCK keeps open(2) from waiting on a FIFO.
  int fd = -1;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    return system_message(errno);
  }
  struct stat info = {};
  std::string reason;
  if (::fstat(fd, &info) != 0) {
    reason = system_message(errno);
  } else if (!S_ISREG(info.st_mode)) {
    reason = "not a regular file";
  }
  ::close(fd);
  return reason;
}

// Returns true when the file at `path` has a PEM certificate block, the
// form OpenSSL loads CA files in. Reads at most the first 1 MiB.
bool contains_pem_certificate(const std::string &path) {
  std::ifstream file(path, std::ios::binary);
  std::string text(1 << 20, '\0');
  file.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(file.gcount()));
  return text.find("-----BEGIN CERTIFICATE-----") != std::string::npos;
}

class Loader {
public:
  explicit Loader(const std::string &path) : path_(path) {
    config_.source_path = path;
  }

  Result<std::shared_ptr<const Config>> load(const std::string &text);

private:
  // One key and its value inside a map.
  struct Entry {
    std::string key; // Full dotted key, as "storage.max_size".
    YAML::Node name;
    YAML::Node value;
  };

  using Handler = void (Loader::*)(const Entry &);

  struct Field {
    std::string_view name;
    Handler handler;
  };

  void add_error(const YAML::Mark &mark, std::string_view key,
                 std::string_view message);
  bool should_stop();
  void invalid_value(const Entry &entry, std::string_view what,
                     std::string_view expected);
  void wrong_type(const Entry &entry, std::string_view expected);
  static YAML::Mark value_mark(const Entry &entry);

  bool read_scalar(const Entry &entry, std::string_view expected,
                   std::string &out);
  bool read_list(const Entry &entry, std::string_view expected);
  void read_map(const Entry &entry, std::span<const Field> fields);
  bool read_list_or_empty(const Entry &entry, std::string_view expected);
  bool require_key(const Entry &entry, std::string_view name,
                   std::string_view expected);
  void read_byte_size(const Entry &entry, uint64_t &out);
  void read_duration(const Entry &entry, double &out,
                     const DurationRange &range = {});
  void read_absolute_path(const Entry &entry, std::string &out);
  std::optional<uint64_t> read_integer(const Entry &entry, uint64_t min,
                                       uint64_t max, std::string_view expected);
  std::optional<double> read_number(const Entry &entry, double min, double max,
                                    std::string_view expected);
  bool parse_listen_value(
      const Entry &entry,
      const std::vector<std::pair<ListenAddress, YAML::Mark>> &existing,
      std::string_view expected, ListenAddress &out);

  bool read_root(const YAML::Node &root);
  void read_listen(const Entry &entry);
  bool read_listen_map(const Entry &entry, ListenAddress &out);
  void read_listen_address(const Entry &entry);
  void read_listen_client_certificates(const Entry &entry);
  void read_storage(const Entry &entry);
  void read_storage_path(const Entry &entry);
  void read_storage_max_size(const Entry &entry);
  void read_storage_index_map_size(const Entry &entry);
  void read_storage_scrub_interval(const Entry &entry);
  void read_storage_scrub_rate(const Entry &entry);
  void read_tls(const Entry &entry);
  void read_tls_names(const Entry &entry);
  void read_tls_dir(const Entry &entry);
  void read_tls_server_lifetime(const Entry &entry);
  void read_tls_renew_before(const Entry &entry);
  void read_upstreams(const Entry &entry);
  void read_upstream_entries(const Entry &entry);
  void read_upstream(const Entry &entry, const std::string &name);
  void read_upstream_url(const Entry &entry);
  void read_upstream_ca_file(const Entry &entry);
  void read_upstream_freshness(const Entry &entry);
  void read_freshness_tags(const Entry &entry);
  void read_freshness_window(const Entry &entry);
  void read_upstream_default_freshness(const Entry &entry);
  void read_upstream_budget(const Entry &entry);
  void read_budget_limit(const Entry &entry);
  void read_budget_window(const Entry &entry);
  void read_budget_counted(const Entry &entry);
  void read_default_upstream(const Entry &entry);
  void read_upstream_timeouts(const Entry &entry);
  void read_connect_timeout(const Entry &entry);
  void read_response_timeout(const Entry &entry);
  void read_idle_timeout(const Entry &entry);
  void read_front(const Entry &entry);
  void read_front_max_connections(const Entry &entry);
  void read_front_handshake_timeout(const Entry &entry);
  void read_front_idle_timeout(const Entry &entry);
  void read_front_header_timeout(const Entry &entry);
  void read_front_graceful_timeout(const Entry &entry);
  void read_front_max_concurrent_streams(const Entry &entry);
  void read_front_max_header_bytes(const Entry &entry);
  void read_log(const Entry &entry);
  void read_log_level(const Entry &entry);
  void read_log_access_log(const Entry &entry);
  void read_clusters(const Entry &entry);
  void read_cluster(const Entry &entry, const std::string &name);
  void read_cluster_sources(const Entry &entry);
  void read_cluster_client_names(const Entry &entry);
  void read_cluster_weight(const Entry &entry);
  void check_client_name(const Entry &entry, const std::string &name);
  void read_scheduler(const Entry &entry);
  void read_scheduler_reserve(const Entry &entry);
  void read_scheduler_max_wait(const Entry &entry);
  void read_scheduler_max_in_flight(const Entry &entry);
  void read_scheduler_low_budget(const Entry &entry);
  void read_scheduler_max_stretch(const Entry &entry);
  void read_prewarm(const Entry &entry);
  void read_prewarm_sets(const Entry &entry);
  void read_prewarm_images_dir(const Entry &entry);
  void read_prewarm_interval(const Entry &entry);
  void read_admin(const Entry &entry);
  void read_admin_socket(const Entry &entry);
  void read_admin_listen(const Entry &entry);

  void finish(const YAML::Node &root);
  void finish_admin();
  void check_scheduler_shares();

  std::string path_;
  Config config_;
  std::vector<std::string> errors_;
  size_t error_count_ = 0;
  bool stopped_ = false;

  bool listen_present_ = false;
  bool upstreams_present_ = false;
  // True once `upstreams` had entries or a wrong type, which were then
  // reported one by one, so "no upstream configured" would only repeat it.
  bool upstreams_reported_ = false;
  // Errors found inside `upstreams`. When there are any, the check of
  // default_upstream against the keys is skipped, because it could only
  // repeat them.
  size_t upstream_errors_ = 0;
  YAML::Mark upstreams_mark_;
  UpstreamConfig *current_upstream_ = nullptr;
  // Marks of the upstream keys, to point duplicate keys at the first one.
  std::map<std::string, YAML::Mark> upstream_marks_;
  std::string default_upstream_text_;
  YAML::Mark default_upstream_mark_;
  YAML::Mark storage_path_mark_;

  // The `listen` entry being read in its map form, and where its address
  // was written.
  ListenAddress *current_listen_ = nullptr;
  YAML::Mark current_listen_mark_;
  // Each `listen` address with where it was written, to point a duplicate
  // at the first entry.
  std::vector<std::pair<ListenAddress, YAML::Mark>> listen_marks_;

  // The freshness rule being read, and where its `tags` value is.
  FreshnessRule *current_rule_ = nullptr;
  YAML::Mark current_rule_tags_mark_;

  // The cluster being read, and whether it had a `client_names` key.
  ClusterConfig *current_cluster_ = nullptr;
  bool client_names_present_ = false;
  // Clusters, sources and client names seen so far: the cluster that has
  // each and where, to report one claimed twice.
  std::map<std::string, YAML::Mark> cluster_marks_;
  std::map<std::string, std::pair<std::string, YAML::Mark>> source_owners_;
  std::map<std::string, std::pair<std::string, YAML::Mark>> client_name_owners_;

  std::optional<YAML::Mark> reserve_mark_;
  std::optional<YAML::Mark> low_budget_mark_;

  bool admin_socket_present_ = false;
  // Each `admin.listen` address with where it was written, for the check
  // against `listen` once both are known.
  std::vector<std::pair<ListenAddress, YAML::Mark>> admin_listen_marks_;
};

void Loader::add_error(const YAML::Mark &mark, std::string_view key,
                       std::string_view message) {
  ++error_count_;
  if (errors_.size() >= MaxReportedErrors) {
    return;
  }
  int line = mark.is_null() ? 1 : mark.line + 1;
  int column = mark.is_null() ? 1 : mark.column + 1;
  std::string text =
      path_ + ":" + std::to_string(line) + ":" + std::to_string(column) + ": ";
  if (!key.empty()) {
    text += "key '";
    text += key;
    text += "': ";
  }
  text += message;
  errors_.push_back(std::move(text));
}

// Returns true once `MaxReportedErrors` errors were found, so loops stop
// early. Aliases let a small file refer to one large map many times, and
// checking each copy would only find the same errors again.
bool Loader::should_stop() {
  stopped_ = stopped_ || error_count_ >= MaxReportedErrors;
  return stopped_;
}

// Points at the value, or at the key when the value is empty, because
// yaml-cpp places an empty value at the next token, often a line below.
YAML::Mark Loader::value_mark(const Entry &entry) {
  if (entry.value.IsNull() || entry.value.Mark().is_null()) {
    return entry.name.Mark();
  }
  return entry.value.Mark();
}

void Loader::invalid_value(const Entry &entry, std::string_view what,
                           std::string_view expected) {
  std::string message(what);
  message += " (value '";
  message += echo(entry.value.Scalar());
  message += "'; expected ";
  message += expected;
  message += ")";
  add_error(value_mark(entry), entry.key, message);
}

void Loader::wrong_type(const Entry &entry, std::string_view expected) {
  std::string message = "wrong type (value is ";
  message += describe_type(entry.value);
  message += "; expected ";
  message += expected;
  message += ")";
  add_error(value_mark(entry), entry.key, message);
}

bool Loader::read_scalar(const Entry &entry, std::string_view expected,
                         std::string &out) {
  if (!entry.value.IsScalar()) {
    wrong_type(entry, expected);
    return false;
  }
  out = entry.value.Scalar();
  return true;
}

bool Loader::read_list(const Entry &entry, std::string_view expected) {
  if (!entry.value.IsSequence()) {
    wrong_type(entry, expected);
    return false;
  }
  if (entry.value.size() == 0) {
    add_error(value_mark(entry), entry.key,
              "empty list (expected " + std::string(expected) + ")");
    return false;
  }
  return true;
}

// Like `read_list`, but an empty list is valid, for keys where it means
// "none" rather than a forgotten value.
bool Loader::read_list_or_empty(const Entry &entry, std::string_view expected) {
  if (!entry.value.IsSequence()) {
    wrong_type(entry, expected);
    return false;
  }
  return true;
}

// Reports `name` as missing when the map `entry.value` lacks it. Returns
// true when the key is present or the value is no map, which `read_map`
// reported already.
bool Loader::require_key(const Entry &entry, std::string_view name,
                         std::string_view expected) {
  if (!entry.value.IsMap()) {
    return true;
  }
  for (auto it = entry.value.begin(); it != entry.value.end(); ++it) {
    if (it->first.IsScalar() && it->first.Scalar() == name) {
      return true;
    }
  }
  add_error(entry.value.Mark(), entry.key + "." + std::string(name),
            "missing (expected " + std::string(expected) + ")");
  return false;
}

// Calls the handler of each key of the map `entry.value`. An empty value
// counts as an empty map, so a section whose keys are all commented out
// is valid. Unknown and repeated keys are errors. yaml-cpp 0.7 keeps both
// copies of a repeated key, and silently using one would hide a typo.
void Loader::read_map(const Entry &entry, std::span<const Field> fields) {
  if (entry.value.IsNull()) {
    return;
  }
  if (!entry.value.IsMap()) {
    wrong_type(entry, "a map");
    return;
  }

  std::map<std::string, YAML::Mark> seen;
  for (auto it = entry.value.begin(); it != entry.value.end(); ++it) {
    if (should_stop()) {
      return;
    }
    Entry child{entry.key, it->first, it->second};
    if (!it->first.IsScalar()) {
      child.value = it->first;
      wrong_type(child, "a key name");
      continue;
    }

    const std::string &name = it->first.Scalar();
    child.key = entry.key.empty() ? echo(name) : entry.key + "." + echo(name);
    auto [previous, inserted] = seen.emplace(name, it->first.Mark());
    if (!inserted) {
      add_error(it->first.Mark(), child.key,
                "duplicate key (first at line " +
                    std::to_string(previous->second.line + 1) + ", column " +
                    std::to_string(previous->second.column + 1) + ")");
      continue;
    }

    const Field *field = nullptr;
    for (const Field &candidate : fields) {
      if (candidate.name == name) {
        field = &candidate;
      }
    }
    if (field == nullptr) {
      std::string known;
      for (const Field &candidate : fields) {
        known += known.empty() ? "" : ", ";
        known += candidate.name;
      }
      add_error(it->first.Mark(), child.key,
                "unknown key (expected one of " + known + ")");
      continue;
    }
    (this->*field->handler)(child);
  }
}

void Loader::read_byte_size(const Entry &entry, uint64_t &out) {
  std::string text;
  if (!read_scalar(entry, SizeForm, text)) {
    return;
  }
  auto size = parse_byte_size(text);
  if (!size) {
    invalid_value(entry, size.error().message, SizeForm);
    return;
  }
  out = *size;
}

void Loader::read_duration(const Entry &entry, double &out,
                           const DurationRange &range) {
  std::string expected = duration_form(range);
  std::string text;
  if (!read_scalar(entry, expected, text)) {
    return;
  }
  auto seconds = parse_duration(text, range);
  if (!seconds) {
    invalid_value(entry, seconds.error().message, expected);
    return;
  }
  out = *seconds;
}

// Reads an integer from `min` to `max`. Returns nothing after reporting an
// error.
std::optional<uint64_t> Loader::read_integer(const Entry &entry, uint64_t min,
                                             uint64_t max,
                                             std::string_view expected) {
  std::string text;
  if (!read_scalar(entry, expected, text)) {
    return std::nullopt;
  }
  auto value = parse_count(text);
  if (!value) {
    invalid_value(entry, value.error().message, expected);
    return std::nullopt;
  }
  if (*value < min || *value > max) {
    invalid_value(entry, "number is out of range", expected);
    return std::nullopt;
  }
  return *value;
}

// Reads a decimal number from `min` to `max`, both inclusive. Returns
// nothing after reporting an error.
std::optional<double> Loader::read_number(const Entry &entry, double min,
                                          double max,
                                          std::string_view expected) {
  std::string text;
  if (!read_scalar(entry, expected, text)) {
    return std::nullopt;
  }
  auto value = parse_decimal(text);
  if (!value) {
    invalid_value(entry, value.error().message, expected);
    return std::nullopt;
  }
  if (*value < min || *value > max) {
    invalid_value(entry, "number is out of range", expected);
    return std::nullopt;
  }
  return *value;
}

// Relative paths are rejected rather than resolved, because the daemon's
// working directory under systemd is "/" and would silently change their
// meaning.
void Loader::read_absolute_path(const Entry &entry, std::string &out) {
  constexpr std::string_view expected = "an absolute path";
  std::string text;
  if (!read_scalar(entry, expected, text)) {
    return;
  }
  if (has_control_character(text)) {
    invalid_value(entry, "path contains a control character", expected);
    return;
  }
  if (!text.starts_with('/')) {
    invalid_value(entry, "relative path", expected);
    return;
  }
  out = strip_trailing_slashes(std::move(text));
}

// Returns false when the document is not a map, so nothing more can be
// checked.
bool Loader::read_root(const YAML::Node &root) {
  static constexpr Field fields[] = {
      {"listen", &Loader::read_listen},
      {"storage", &Loader::read_storage},
      {"tls", &Loader::read_tls},
      {"upstreams", &Loader::read_upstreams},
      {"default_upstream", &Loader::read_default_upstream},
      {"upstream_timeouts", &Loader::read_upstream_timeouts},
      {"front", &Loader::read_front},
      {"log", &Loader::read_log},
      {"clusters", &Loader::read_clusters},
      {"scheduler", &Loader::read_scheduler},
      {"prewarm", &Loader::read_prewarm},
      {"admin", &Loader::read_admin},
  };

  if (!root.IsNull() && !root.IsMap()) {
    std::string message = "wrong type (value is ";
    message += describe_type(root);
    message += "; expected a map of settings)";
    add_error(root.Mark(), "", message);
    return false;
  }
  read_map(Entry{"", root, root}, fields);
  return true;
}

// Returns the wildcard address ("0.0.0.0" or "::") that makes `first` and
// `second` bind the same sockets, or an empty view when they can coexist.
// Both are in canonical form. Linux rejects a listening socket on a port
// where the wildcard of the same family already listens, and the reverse,
// with EADDRINUSE even under SO_REUSEADDR. IPv6 sockets are bound with
// IPV6_V6ONLY, so "[::]:p" and "0.0.0.0:p" coexist.
std::string_view overlapping_wildcard(const ListenAddress &first,
                                      const ListenAddress &second) {
  if (first.port != second.port || first.host == second.host) {
    return {};
  }
  bool first_ipv6 = first.host.find(':') != std::string::npos;
  bool second_ipv6 = second.host.find(':') != std::string::npos;
  if (first_ipv6 != second_ipv6) {
    return {};
  }
  std::string_view wildcard = first_ipv6 ? "::" : "0.0.0.0";
  if (first.host == wildcard || second.host == wildcard) {
    return wildcard;
  }
  return {};
}

// Parses the "address:port" scalar `entry.value` into `out`, keeping its
// `client_auth`. Returns false after reporting a wrong type, a bad address,
// or one that repeats or overlaps an address in `existing`, which contains
// each earlier address with where it was written.
bool Loader::parse_listen_value(
    const Entry &entry,
    const std::vector<std::pair<ListenAddress, YAML::Mark>> &existing,
    std::string_view expected, ListenAddress &out) {
  std::string text;
  if (!read_scalar(entry, expected, text)) {
    return false;
  }
  auto address = parse_listen_address(text);
  if (!address) {
    invalid_value(entry, address.error().message, expected);
    return false;
  }
  // Addresses are compared in canonical form, so "[0::1]:5443" is a
  // duplicate of "[::1]:5443".
  for (const auto &[other, mark] : existing) {
    if (other.host == address->host && other.port == address->port) {
      invalid_value(entry,
                    "duplicate of the earlier entry at " + position(mark),
                    "each address and port listed once");
      return false;
    }
  }
  for (const auto &[other, mark] : existing) {
    std::string_view wildcard = overlapping_wildcard(other, *address);
    if (wildcard.empty()) {
      continue;
    }
    bool ipv6 = wildcard == "::";
    std::string wildcard_text = ipv6 ? "[::]" : "0.0.0.0";
    std::string family = ipv6 ? "IPv6" : "IPv4";
    std::string covers =
        other.host == wildcard ? " already covers every " : " covers every ";
    invalid_value(entry,
                  "overlaps the earlier entry at " + position(mark) + ": " +
                      wildcard_text + covers + family + " address",
                  "either " + wildcard_text + " or specific " + family +
                      " addresses on port " + std::to_string(address->port));
    return false;
  }
  out.host = std::move(address->host);
  out.port = address->port;
  return true;
}

void Loader::read_listen(const Entry &entry) {
  const std::string item_form =
      std::string(ListenForm) +
      ", or a map with address and client_certificates";
  listen_present_ = true;
  if (!read_list(entry, "a list of " + std::string(ListenForm))) {
    return;
  }

  for (const YAML::Node &item : entry.value) {
    if (should_stop()) {
      return;
    }
    Entry child{entry.key, entry.name, item};
    ListenAddress address;
    bool valid = false;
    YAML::Mark mark = value_mark(child);
    if (item.IsMap()) {
      valid = read_listen_map(child, address);
      mark = current_listen_mark_;
    } else if (item.IsScalar()) {
      valid = parse_listen_value(child, listen_marks_, ListenForm, address);
    } else {
      wrong_type(child, item_form);
    }
    if (valid) {
      listen_marks_.emplace_back(address, mark);
      config_.listen.push_back(std::move(address));
    }
  }
}

// Reads the map form {address, client_certificates} of a `listen` entry.
bool Loader::read_listen_map(const Entry &entry, ListenAddress &out) {
  static constexpr Field fields[] = {
      {"address", &Loader::read_listen_address},
      {"client_certificates", &Loader::read_listen_client_certificates},
  };
  size_t errors_before = error_count_;
  current_listen_ = &out;
  read_map(entry, fields);
  current_listen_ = nullptr;
  require_key(entry, "address", ListenForm);
  return error_count_ == errors_before;
}

void Loader::read_listen_address(const Entry &entry) {
  current_listen_mark_ = value_mark(entry);
  parse_listen_value(entry, listen_marks_, ListenForm, *current_listen_);
}

void Loader::read_listen_client_certificates(const Entry &entry) {
  constexpr std::string_view expected = "none, optional or required";
  std::string text;
  if (!read_scalar(entry, expected, text)) {
    return;
  }
  if (text == "none") {
    current_listen_->client_auth = ListenAddress::ClientAuth::None;
  } else if (text == "optional") {
    current_listen_->client_auth = ListenAddress::ClientAuth::Optional;
  } else if (text == "required") {
    current_listen_->client_auth = ListenAddress::ClientAuth::Required;
  } else {
    invalid_value(entry, "unknown client certificate mode", expected);
  }
}

void Loader::read_storage(const Entry &entry) {
  static constexpr Field fields[] = {
      {"path", &Loader::read_storage_path},
      {"max_size", &Loader::read_storage_max_size},
      {"index_map_size", &Loader::read_storage_index_map_size},
      {"scrub_interval", &Loader::read_storage_scrub_interval},
      {"scrub_rate", &Loader::read_storage_scrub_rate},
  };
  read_map(entry, fields);
}

void Loader::read_storage_path(const Entry &entry) {
  storage_path_mark_ = value_mark(entry);
  read_absolute_path(entry, config_.storage.path);
}

void Loader::read_storage_max_size(const Entry &entry) {
  read_byte_size(entry, config_.storage.max_size_bytes);
}

void Loader::read_storage_index_map_size(const Entry &entry) {
  // LMDB needs a few pages for its metadata and the tree roots. 1 MiB is
  // a floor against typos ("1" meant as 1 GiB), not a recommended size.
  constexpr uint64_t min_bytes = 1 << 20;
  uint64_t size = config_.storage.index_map_size_bytes;
  read_byte_size(entry, size);
  if (size < min_bytes) {
    invalid_value(entry, "index map size is below 1 MiB",
                  std::string(SizeForm) + ", at least 1 MiB");
    return;
  }
  config_.storage.index_map_size_bytes = size;
}

void Loader::read_storage_scrub_interval(const Entry &entry) {
  // A year is far beyond any useful interval, so a larger value is a typo.
  constexpr double max_seconds = 365 * 86400.0;
  read_duration(entry, config_.storage.scrub_interval_s,
                {0, max_seconds, true});
}

void Loader::read_storage_scrub_rate(const Entry &entry) {
  // Below 64 KiB per second a pass over a store of a few hundred GiB would
  // take months, which only a typo in the unit explains.
  constexpr uint64_t min_bytes = 64 << 10;
  uint64_t rate = config_.storage.scrub_rate_bytes;
  read_byte_size(entry, rate);
  if (rate < min_bytes) {
    invalid_value(entry, "scrub rate is below 64 KiB per second",
                  std::string(SizeForm) + ", at least 64 KiB");
    return;
  }
  config_.storage.scrub_rate_bytes = rate;
}

void Loader::read_tls(const Entry &entry) {
  static constexpr Field fields[] = {
      {"names", &Loader::read_tls_names},
      {"dir", &Loader::read_tls_dir},
      {"server_lifetime", &Loader::read_tls_server_lifetime},
      {"renew_before", &Loader::read_tls_renew_before},
  };
  read_map(entry, fields);
}

void Loader::read_tls_names(const Entry &entry) {
  constexpr std::string_view expected =
      "a DNS name, optionally starting with \"*.\", or an IP address";
  config_.tls.names.clear();
  if (!read_list(entry, "a list of DNS names and IP addresses")) {
    return;
  }

  for (const YAML::Node &item : entry.value) {
    if (should_stop()) {
      return;
    }
    Entry child{entry.key, entry.name, item};
    std::string text;
    if (!read_scalar(child, expected, text)) {
      continue;
    }
    std::string name;
    if (is_ip_address(text)) {
      name = canonical_ip_address(text);
    } else if (is_dns_name(text, true)) {
      name = text;
      for (char &c : name) {
        c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
      }
    } else {
      invalid_value(child, "invalid name", expected);
      continue;
    }
    for (const std::string &other : config_.tls.names) {
      if (other == name) {
        invalid_value(child, "duplicate name", expected);
      }
    }
    config_.tls.names.push_back(std::move(name));
  }
}

void Loader::read_tls_dir(const Entry &entry) {
  read_absolute_path(entry, config_.tls.dir);
}

void Loader::read_tls_server_lifetime(const Entry &entry) {
  read_duration(
      entry, config_.tls.server_lifetime_s,
      {MinCertificateLifetimeSeconds, MaxCertificateLifetimeSeconds, false});
}

void Loader::read_tls_renew_before(const Entry &entry) {
  constexpr std::string_view expected =
      "a share of the lifetime greater than 0 and less than 1, such as 0.33";
  auto fraction = read_number(entry, 0, 1, expected);
  if (!fraction) {
    return;
  }
  // 0 would renew only after expiry and 1 at every start.
  if (*fraction == 0 || *fraction == 1) {
    invalid_value(entry, "number is out of range", expected);
    return;
  }
  config_.tls.renew_fraction = *fraction;
}

void Loader::read_upstreams(const Entry &entry) {
  size_t errors_before = error_count_;
  read_upstream_entries(entry);
  upstream_errors_ = error_count_ - errors_before;
}

void Loader::read_upstream_entries(const Entry &entry) {
  upstreams_present_ = true;
  upstreams_mark_ = value_mark(entry);
  if (entry.value.IsNull()) {
    return;
  }
  upstreams_reported_ = entry.value.size() > 0 || !entry.value.IsMap();
  if (!entry.value.IsMap()) {
    wrong_type(entry, "a map from registry host to its settings");
    return;
  }

  for (auto it = entry.value.begin(); it != entry.value.end(); ++it) {
    if (should_stop()) {
      return;
    }
    Entry child{entry.key, it->first, it->first};
    std::string text;
    if (!read_scalar(child, RegistryHostForm, text)) {
      continue;
    }
    child.key = entry.key + "." + echo(text);
    if (text.find("://") != std::string::npos) {
      invalid_value(child, "a URL instead of a registry host",
                    RegistryHostForm);
      continue;
    }
    auto name = parse_registry_host(text);
    if (!name) {
      invalid_value(child, name.error().message, RegistryHostForm);
      continue;
    }

    auto [previous, inserted] =
        upstream_marks_.emplace(*name, it->first.Mark());
    if (!inserted) {
      add_error(it->first.Mark(), child.key,
                "duplicate upstream (same as the key at line " +
                    std::to_string(previous->second.line + 1) + ", column " +
                    std::to_string(previous->second.column + 1) + ")");
      continue;
    }
    read_upstream(Entry{child.key, it->first, it->second}, *name);
  }
}

void Loader::read_upstream(const Entry &entry, const std::string &name) {
  static constexpr Field fields[] = {
      {"url", &Loader::read_upstream_url},
      {"ca_file", &Loader::read_upstream_ca_file},
      {"freshness", &Loader::read_upstream_freshness},
      {"default_freshness", &Loader::read_upstream_default_freshness},
      {"budget", &Loader::read_upstream_budget},
  };

  UpstreamConfig &upstream = config_.upstreams[name];
  upstream.name = name;
  upstream.docker_hub = name == "docker.io";
  if (!entry.value.IsNull() && !entry.value.IsMap()) {
    wrong_type(entry, "a map with url, ca_file, freshness, default_freshness "
                      "and budget, or nothing");
    return;
  }
  current_upstream_ = &upstream;
  read_map(entry, fields);
  current_upstream_ = nullptr;
}

void Loader::read_upstream_url(const Entry &entry) {
  constexpr std::string_view expected =
      "\"https://host\" or \"https://host:port\", with no path";
  std::string text;
  if (!read_scalar(entry, expected, text)) {
    return;
  }

  // The scheme is case-insensitive (RFC 3986, section 3.1).
  constexpr std::string_view scheme = "https://";
  std::string_view rest = text;
  bool https = rest.size() >= scheme.size();
  for (size_t i = 0; https && i < scheme.size(); ++i) {
    char c = rest[i];
    c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    https = c == scheme[i];
  }
  if (!https) {
    invalid_value(entry, "not an https URL", expected);
    return;
  }
  rest.remove_prefix(scheme.size());

  size_t end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, end);
  std::string_view tail =
      end == std::string_view::npos ? std::string_view() : rest.substr(end);
  if (authority.find('@') != std::string_view::npos) {
    invalid_value(entry, "user information in the URL is not supported",
                  expected);
    return;
  }
  if (!tail.empty() && tail != "/") {
    invalid_value(entry, "URL has a path, query or fragment", expected);
    return;
  }
  auto host = parse_registry_host(authority);
  if (!host) {
    invalid_value(entry, "invalid host in URL: " + host.error().message,
                  expected);
    return;
  }
  current_upstream_->url = "https://" + *host;
}

void Loader::read_upstream_ca_file(const Entry &entry) {
  std::string path;
  read_absolute_path(entry, path);
  if (path.empty()) {
    return;
  }
  std::string reason = check_readable_file(path);
  if (!reason.empty()) {
    invalid_value(entry, "cannot read CA file: " + reason,
                  "a readable PEM file");
    return;
  }
  if (!contains_pem_certificate(path)) {
    invalid_value(entry, "no PEM certificate in the CA file",
                  "a file with at least one -----BEGIN CERTIFICATE----- block");
    return;
  }
  current_upstream_->ca_file = std::move(path);
}

// Reads the freshness rules in file order, which is the order they are
// tried in. A pattern written twice is an error, because the second rule
// could never apply.
void Loader::read_upstream_freshness(const Entry &entry) {
  constexpr std::string_view rule_form =
      "a map with tags (a glob such as \"v*\") and window (a duration)";
  if (!read_list_or_empty(entry,
                          std::string("a list of ") + std::string(rule_form))) {
    return;
  }

  static constexpr Field fields[] = {
      {"tags", &Loader::read_freshness_tags},
      {"window", &Loader::read_freshness_window},
  };
  std::vector<FreshnessRule> &rules = current_upstream_->freshness;
  std::map<std::string, YAML::Mark> patterns;
  rules.clear();
  for (const YAML::Node &item : entry.value) {
    if (should_stop()) {
      return;
    }
    Entry child{entry.key, entry.name, item};
    if (!item.IsMap()) {
      wrong_type(child, rule_form);
      continue;
    }

    FreshnessRule rule;
    size_t errors_before = error_count_;
    current_rule_ = &rule;
    read_map(child, fields);
    current_rule_ = nullptr;
    require_key(child, "tags", "a tag glob such as \"latest\" or \"v*\"");
    require_key(child, "window", duration_form({0, MaxWindowSeconds, true}));
    if (error_count_ != errors_before) {
      continue;
    }

    auto [previous, inserted] =
        patterns.emplace(rule.pattern, current_rule_tags_mark_);
    if (!inserted) {
      add_error(current_rule_tags_mark_, entry.key + ".tags",
                "duplicate tag pattern '" + echo(rule.pattern) +
                    "' (first at " + position(previous->second) +
                    "; the first matching rule applies, so this one never "
                    "would)");
      continue;
    }
    rules.push_back(std::move(rule));
  }
}

void Loader::read_freshness_tags(const Entry &entry) {
  constexpr std::string_view expected =
      "a tag glob of 1 to 128 characters: letters, digits, '_', '.', '-', "
      "'*' for any run and '?' for one character";
  std::string text;
  if (!read_scalar(entry, expected, text)) {
    return;
  }
  if (!is_tag_pattern(text)) {
    invalid_value(entry, "invalid tag pattern", expected);
    return;
  }
  current_rule_tags_mark_ = value_mark(entry);
  current_rule_->pattern = std::move(text);
}

void Loader::read_freshness_window(const Entry &entry) {
  read_duration(entry, current_rule_->window_s, {0, MaxWindowSeconds, true});
}

void Loader::read_upstream_default_freshness(const Entry &entry) {
  read_duration(entry, current_upstream_->default_freshness_s,
                {0, MaxWindowSeconds, true});
}

void Loader::read_upstream_budget(const Entry &entry) {
  static constexpr Field fields[] = {
      {"limit", &Loader::read_budget_limit},
      {"window", &Loader::read_budget_window},
      {"counted", &Loader::read_budget_counted},
  };
  read_map(entry, fields);
}

void Loader::read_budget_limit(const Entry &entry) {
  constexpr std::string_view expected =
      "a number of requests per window, 0 for no budget unless the "
      "upstream announces one";
  auto limit = read_integer(entry, 0, UINT32_MAX, expected);
  if (limit) {
    current_upstream_->budget.limit = *limit;
  }
}

void Loader::read_budget_window(const Entry &entry) {
  read_duration(entry, current_upstream_->budget.window_s,
                {0, MaxWindowSeconds, false});
}

// An empty list is valid and means that no request counts.
void Loader::read_budget_counted(const Entry &entry) {
  constexpr std::string_view expected = "manifest_get, manifest_head or "
                                        "blob_get";
  if (!read_list_or_empty(entry, "a list of manifest_get, manifest_head and "
                                 "blob_get, or [] for none")) {
    return;
  }

  CountedRequests counted{false, false, false};
  for (const YAML::Node &item : entry.value) {
    if (should_stop()) {
      return;
    }
    Entry child{entry.key, entry.name, item};
    std::string text;
    if (!read_scalar(child, expected, text)) {
      continue;
    }
    bool *flag = nullptr;
    if (text == "manifest_get") {
      flag = &counted.manifest_get;
    } else if (text == "manifest_head") {
      flag = &counted.manifest_head;
    } else if (text == "blob_get") {
      flag = &counted.blob_get;
    } else {
      invalid_value(child, "unknown request kind", expected);
      continue;
    }
    if (*flag) {
      invalid_value(child, "duplicate request kind", expected);
      continue;
    }
    *flag = true;
  }
  current_upstream_->budget.counted = counted;
}

void Loader::read_default_upstream(const Entry &entry) {
  if (!read_scalar(entry, RegistryHostForm, default_upstream_text_)) {
    return;
  }
  default_upstream_mark_ = value_mark(entry);
  // An empty string would read as "no default", so it must be written as
  // a missing key instead.
  if (default_upstream_text_.empty()) {
    invalid_value(entry, "empty upstream name", "a key of upstreams");
  }
}

void Loader::read_upstream_timeouts(const Entry &entry) {
  static constexpr Field fields[] = {
      {"connect", &Loader::read_connect_timeout},
      {"response", &Loader::read_response_timeout},
      {"idle", &Loader::read_idle_timeout},
  };
  read_map(entry, fields);
}

void Loader::read_connect_timeout(const Entry &entry) {
  read_duration(entry, config_.upstream_timeouts.connect_timeout_s);
}

void Loader::read_response_timeout(const Entry &entry) {
  read_duration(entry, config_.upstream_timeouts.response_timeout_s);
}

void Loader::read_idle_timeout(const Entry &entry) {
  read_duration(entry, config_.upstream_timeouts.idle_timeout_s);
}

void Loader::read_front(const Entry &entry) {
  static constexpr Field fields[] = {
      {"max_connections", &Loader::read_front_max_connections},
      {"handshake_timeout", &Loader::read_front_handshake_timeout},
      {"idle_timeout", &Loader::read_front_idle_timeout},
      {"header_timeout", &Loader::read_front_header_timeout},
      {"graceful_timeout", &Loader::read_front_graceful_timeout},
      {"max_concurrent_streams", &Loader::read_front_max_concurrent_streams},
      {"max_header_bytes", &Loader::read_front_max_header_bytes},
  };
  read_map(entry, fields);
}

void Loader::read_front_max_connections(const Entry &entry) {
  auto count =
      read_integer(entry, 1, UINT32_MAX,
                   "an integer from 1 to " + std::to_string(UINT32_MAX));
  if (count) {
    config_.front.max_connections = *count;
  }
}

void Loader::read_front_handshake_timeout(const Entry &entry) {
  read_duration(entry, config_.front.handshake_timeout_s);
}

void Loader::read_front_idle_timeout(const Entry &entry) {
  read_duration(entry, config_.front.idle_timeout_s);
}

void Loader::read_front_header_timeout(const Entry &entry) {
  read_duration(entry, config_.front.header_timeout_s);
}

void Loader::read_front_graceful_timeout(const Entry &entry) {
  read_duration(entry, config_.front.graceful_timeout_s);
}

void Loader::read_front_max_concurrent_streams(const Entry &entry) {
  // HTTP/2 stream identifiers have 31 bits, so a larger value could never
  // apply.
  constexpr uint64_t max_streams = (1ULL << 31) - 1;
  auto count =
      read_integer(entry, 1, max_streams,
                   "an integer from 1 to " + std::to_string(max_streams));
  if (count) {
    config_.front.max_concurrent_streams = static_cast<uint32_t>(*count);
  }
}

void Loader::read_front_max_header_bytes(const Entry &entry) {
  // The minimum is a floor against typos ("64" meant as 64 KiB), not a
  // recommended size. The maximum guards against the opposite typo ("64MB"
  // meant as "64KB") and keeps the value inside the 32 bits of HTTP/2's
  // SETTINGS_MAX_HEADER_LIST_SIZE.
  constexpr uint64_t min_bytes = 4 << 10;
  constexpr uint64_t max_bytes = 1 << 20;
  uint64_t size = config_.front.max_header_bytes;
  read_byte_size(entry, size);
  if (size < min_bytes || size > max_bytes) {
    invalid_value(entry, "request head limit is out of range",
                  std::string(SizeForm) + ", from 4 KiB to 1 MiB");
    return;
  }
  config_.front.max_header_bytes = size;
}

void Loader::read_log(const Entry &entry) {
  static constexpr Field fields[] = {
      {"level", &Loader::read_log_level},
      {"access_log", &Loader::read_log_access_log},
  };
  read_map(entry, fields);
}

void Loader::read_log_level(const Entry &entry) {
  constexpr std::string_view expected = "debug, info, warn or error";
  std::string text;
  if (!read_scalar(entry, expected, text)) {
    return;
  }
  if (text != "debug" && text != "info" && text != "warn" && text != "error") {
    invalid_value(entry, "unknown log level", expected);
    return;
  }
  config_.log.level = std::move(text);
}

void Loader::read_log_access_log(const Entry &entry) {
  constexpr std::string_view expected = "stderr, off or an absolute path";
  std::string text;
  if (!read_scalar(entry, expected, text)) {
    return;
  }
  if (text == "stderr" || text == "off") {
    config_.log.access_log = std::move(text);
    return;
  }
  if (has_control_character(text)) {
    invalid_value(entry, "path contains a control character", expected);
    return;
  }
  if (!text.starts_with('/')) {
    invalid_value(entry, "relative path", expected);
    return;
  }
  config_.log.access_log = strip_trailing_slashes(std::move(text));
}

void Loader::read_clusters(const Entry &entry) {
  if (entry.value.IsNull()) {
    return;
  }
  if (!entry.value.IsMap()) {
    wrong_type(entry, "a map from cluster name to its settings");
    return;
  }

  for (auto it = entry.value.begin(); it != entry.value.end(); ++it) {
    if (should_stop()) {
      return;
    }
    Entry child{entry.key, it->first, it->first};
    std::string name;
    if (!read_scalar(child, ClusterNameForm, name)) {
      continue;
    }
    child.key = entry.key + "." + echo(name);
    if (!is_cluster_name(name)) {
      invalid_value(child, "invalid cluster name", ClusterNameForm);
      continue;
    }
    // With no clusters configured every client is in a cluster named
    // "default"; a configured one of that name would read as the same.
    if (name == "default") {
      invalid_value(child, "reserved cluster name",
                    std::string(ClusterNameForm) + ", other than default");
      continue;
    }
    auto [previous, inserted] = cluster_marks_.emplace(name, it->first.Mark());
    if (!inserted) {
      add_error(it->first.Mark(), child.key,
                "duplicate key (first at " + position(previous->second) + ")");
      continue;
    }
    // A new Entry, because assigning to child.value would rebind the key
    // node it shares with child.name (yaml-cpp assigns through handles).
    read_cluster(Entry{child.key, it->first, it->second}, name);
  }
}

// Reads one cluster. An empty value is valid: the cluster is then named by
// client certificates whose common name is the cluster name.
void Loader::read_cluster(const Entry &entry, const std::string &name) {
  static constexpr Field fields[] = {
      {"sources", &Loader::read_cluster_sources},
      {"client_names", &Loader::read_cluster_client_names},
      {"weight", &Loader::read_cluster_weight},
  };
  if (!entry.value.IsNull() && !entry.value.IsMap()) {
    wrong_type(entry, "a map with sources, client_names and weight, or "
                      "nothing");
    return;
  }

  ClusterConfig cluster;
  cluster.name = name;
  size_t errors_before = error_count_;
  current_cluster_ = &cluster;
  client_names_present_ = false;
  read_map(entry, fields);
  if (!client_names_present_) {
    Entry name_entry{entry.key + ".client_names", entry.name, entry.name};
    check_client_name(name_entry, name);
    cluster.client_names.push_back(name);
  }
  current_cluster_ = nullptr;

  if (error_count_ == errors_before && cluster.sources.empty() &&
      cluster.client_names.empty()) {
    add_error(entry.name.Mark(), entry.key,
              "cluster has no sources and no client names, so no client "
              "can belong to it (expected at least one of either)");
  }
  config_.clusters.push_back(std::move(cluster));
}

// Reads `sources`. The same network in two clusters is an error, because
// a client from it could belong to either. Networks that only overlap are
// valid: the longest prefix wins.
void Loader::read_cluster_sources(const Entry &entry) {
  constexpr std::string_view expected =
      "an IP network \"address/prefix\" with no host bits set, or a single "
      "IP address";
  if (!read_list(entry, "a list of IP networks and addresses")) {
    return;
  }

  for (const YAML::Node &item : entry.value) {
    if (should_stop()) {
      return;
    }
    Entry child{entry.key, entry.name, item};
    std::string text;
    if (!read_scalar(child, expected, text)) {
      continue;
    }
    auto cidr = parse_cidr(text);
    if (!cidr) {
      invalid_value(child, cidr.error().message, expected);
      continue;
    }
    auto [previous, inserted] = source_owners_.emplace(
        cidr->str(), std::make_pair(current_cluster_->name, value_mark(child)));
    if (!inserted) {
      const auto &[owner, mark] = previous->second;
      std::string where =
          owner == current_cluster_->name
              ? "duplicate network"
              : "network is also a source of cluster '" + owner + "'";
      invalid_value(child,
                    where + " (" + cidr->str() + ", first at " +
                        position(mark) + ")",
                    expected);
      continue;
    }
    current_cluster_->sources.push_back(std::move(*cidr));
  }
}

// Reads `client_names`. An empty list is valid: the cluster is then named
// by its sources alone.
void Loader::read_cluster_client_names(const Entry &entry) {
  client_names_present_ = true;
  if (!read_list_or_empty(entry, "a list of client certificate common "
                                 "names, or [] for none")) {
    return;
  }

  for (const YAML::Node &item : entry.value) {
    if (should_stop()) {
      return;
    }
    Entry child{entry.key, entry.name, item};
    std::string name;
    if (!read_scalar(child, "a client certificate common name", name)) {
      continue;
    }
    size_t errors_before = error_count_;
    check_client_name(child, name);
    if (error_count_ == errors_before) {
      current_cluster_->client_names.push_back(std::move(name));
    }
  }
}

// Checks one client name of the current cluster and records it. A name
// in two clusters is an error, because a certificate must identify one.
void Loader::check_client_name(const Entry &entry, const std::string &name) {
  constexpr std::string_view expected =
      "a client certificate common name of 1 to 64 characters with no "
      "control characters";
  if (name.empty() || name.size() > MaxClientNameLength ||
      has_control_character(name)) {
    add_error(value_mark(entry), entry.key,
              "invalid client name (value '" + echo(name) + "'; expected " +
                  std::string(expected) + ")");
    return;
  }
  auto [previous, inserted] = client_name_owners_.emplace(
      name, std::make_pair(current_cluster_->name, value_mark(entry)));
  if (inserted) {
    return;
  }
  const auto &[owner, mark] = previous->second;
  std::string what =
      owner == current_cluster_->name
          ? "duplicate client name"
          : "client name also belongs to cluster '" + owner + "'";
  add_error(value_mark(entry), entry.key,
            what + " (value '" + echo(name) + "', first at " + position(mark) +
                "; expected a name no other cluster uses, set with "
                "client_names)");
}

void Loader::read_cluster_weight(const Entry &entry) {
  auto weight = read_integer(entry, 1, 1000, "an integer from 1 to 1000");
  if (weight) {
    current_cluster_->weight = static_cast<unsigned>(*weight);
  }
}

void Loader::read_scheduler(const Entry &entry) {
  static constexpr Field fields[] = {
      {"reserve", &Loader::read_scheduler_reserve},
      {"max_wait", &Loader::read_scheduler_max_wait},
      {"max_in_flight", &Loader::read_scheduler_max_in_flight},
      {"low_budget", &Loader::read_scheduler_low_budget},
      {"max_stretch", &Loader::read_scheduler_max_stretch},
  };
  read_map(entry, fields);
}

void Loader::read_scheduler_reserve(const Entry &entry) {
  // A reserve of the whole limit would leave nothing for revalidation.
  auto share = read_number(entry, 0, 0.9, "a share of the limit from 0 to 0.9");
  if (share) {
    config_.scheduler.reserve_fraction = *share;
    reserve_mark_ = value_mark(entry);
  }
}

void Loader::read_scheduler_max_wait(const Entry &entry) {
  read_duration(entry, config_.scheduler.max_wait_s);
}

void Loader::read_scheduler_max_in_flight(const Entry &entry) {
  auto count = read_integer(entry, 1, 1024, "an integer from 1 to 1024");
  if (count) {
    config_.scheduler.max_in_flight = static_cast<unsigned>(*count);
  }
}

void Loader::read_scheduler_low_budget(const Entry &entry) {
  auto share = read_number(entry, 0, 1, "a share of the limit from 0 to 1");
  if (share) {
    config_.scheduler.low_budget_fraction = *share;
    low_budget_mark_ = value_mark(entry);
  }
}

void Loader::read_scheduler_max_stretch(const Entry &entry) {
  auto factor = read_number(entry, 1, 100, "a factor from 1 to 100");
  if (factor) {
    config_.scheduler.max_stretch = *factor;
  }
}

void Loader::read_prewarm(const Entry &entry) {
  static constexpr Field fields[] = {
      {"sets", &Loader::read_prewarm_sets},
      {"images_dir", &Loader::read_prewarm_images_dir},
      {"interval", &Loader::read_prewarm_interval},
  };
  read_map(entry, fields);
}

// Reads `sets`: names resolved in `images_dir` when a set is loaded, or
// absolute paths. The files are not read here, so a set added later needs
// no config change.
void Loader::read_prewarm_sets(const Entry &entry) {
  constexpr std::string_view expected =
      "an image set name (a file in prewarm.images_dir without .yaml) or "
      "an absolute path to a set file";
  if (!read_list_or_empty(entry, "a list of image set names and paths")) {
    return;
  }

  std::map<std::string, YAML::Mark> seen;
  for (const YAML::Node &item : entry.value) {
    if (should_stop()) {
      return;
    }
    Entry child{entry.key, entry.name, item};
    std::string text;
    if (!read_scalar(child, expected, text)) {
      continue;
    }
    if (text.starts_with('/')) {
      if (has_control_character(text)) {
        invalid_value(child, "path contains a control character", expected);
        continue;
      }
      if (text.ends_with('/')) {
        invalid_value(child, "path names a directory", expected);
        continue;
      }
    } else if (auto valid = check_image_set_name(text); !valid) {
      invalid_value(child, valid.error().message, expected);
      continue;
    }
    auto [previous, inserted] = seen.emplace(text, value_mark(child));
    if (!inserted) {
      invalid_value(child,
                    "duplicate image set (first at " +
                        position(previous->second) + ")",
                    expected);
      continue;
    }
    config_.prewarm.sets.push_back(std::move(text));
  }
}

void Loader::read_prewarm_images_dir(const Entry &entry) {
  read_absolute_path(entry, config_.prewarm.images_dir);
}

void Loader::read_prewarm_interval(const Entry &entry) {
  read_duration(entry, config_.prewarm.interval_s,
                {MinPrewarmIntervalSeconds, MaxPrewarmIntervalSeconds, false});
}

void Loader::read_admin(const Entry &entry) {
  static constexpr Field fields[] = {
      {"socket", &Loader::read_admin_socket},
      {"listen", &Loader::read_admin_listen},
  };
  read_map(entry, fields);
}

void Loader::read_admin_socket(const Entry &entry) {
  constexpr std::string_view expected =
      "an absolute path of at most 107 bytes, or \"\" to turn the socket off";
  std::string text;
  if (!read_scalar(entry, expected, text)) {
    return;
  }
  admin_socket_present_ = true;
  if (text.empty()) {
    config_.admin.socket.clear();
    return;
  }
  if (has_control_character(text)) {
    invalid_value(entry, "path contains a control character", expected);
    return;
  }
  if (!text.starts_with('/')) {
    invalid_value(entry, "relative path", expected);
    return;
  }
  if (text.ends_with('/')) {
    invalid_value(entry, "path names a directory", expected);
    return;
  }
  if (text.size() > MaxSocketPathLength) {
    invalid_value(entry, "path is too long for a Unix socket", expected);
    return;
  }
  config_.admin.socket = std::move(text);
}

// Reads `admin.listen`. Only loopback addresses are valid, because the
// admin endpoint has no authentication.
void Loader::read_admin_listen(const Entry &entry) {
  constexpr std::string_view expected =
      "\"address:port\" with a loopback address (127.0.0.0/8 or [::1]) and "
      "a port from 1 to 65535";
  if (!read_list_or_empty(entry, "a list of " + std::string(expected))) {
    return;
  }

  config_.admin.listen.clear();
  admin_listen_marks_.clear();
  for (const YAML::Node &item : entry.value) {
    if (should_stop()) {
      return;
    }
    Entry child{entry.key, entry.name, item};
    ListenAddress address;
    if (!parse_listen_value(child, admin_listen_marks_, expected, address)) {
      continue;
    }
    if (!is_loopback_address(address.host)) {
      invalid_value(child, "not a loopback address", expected);
      continue;
    }
    admin_listen_marks_.emplace_back(address, value_mark(child));
    config_.admin.listen.push_back(std::move(address));
  }
}

// Fills the default admin socket and checks that no admin address is one
// the registry listens on.
void Loader::finish_admin() {
  if (!admin_socket_present_) {
    config_.admin.socket =
        (std::filesystem::path(config_.storage.path) / "admin.sock").string();
    if (config_.admin.socket.size() > MaxSocketPathLength) {
      add_error(storage_path_mark_, "admin.socket",
                "the default path '" + echo(config_.admin.socket) +
                    "' is too long for a Unix socket (expected admin.socket "
                    "set to an absolute path of at most 107 bytes, or a "
                    "shorter storage.path)");
    }
  }

  for (const auto &[admin, mark] : admin_listen_marks_) {
    for (const ListenAddress &registry : config_.listen) {
      bool any_ipv4 = registry.host == "0.0.0.0" &&
                      admin.host.find(':') == std::string::npos;
      bool any = registry.host == "::" || any_ipv4;
      if (registry.port == admin.port && (registry.host == admin.host || any)) {
        add_error(mark, "admin.listen",
                  "address is also served by listen entry '" + registry.str() +
                      "' (value '" + admin.str() +
                      "'; expected an address and port the registry does "
                      "not listen on)");
      }
    }
  }
}

// Checks that `low_budget` is at least `reserve`. Freshness windows
// stretch from 1 at the low_budget share to max_stretch at the reserve
// share, so a low_budget below the reserve leaves no range to stretch over.
void Loader::check_scheduler_shares() {
  const SchedulerConfig &scheduler = config_.scheduler;
  if (scheduler.low_budget_fraction >= scheduler.reserve_fraction) {
    return;
  }
  std::string message = "scheduler.low_budget " +
                        format_number(scheduler.low_budget_fraction) +
                        " is below scheduler.reserve " +
                        format_number(scheduler.reserve_fraction) +
                        " (expected low_budget at least as large as reserve)";
  if (low_budget_mark_) {
    add_error(*low_budget_mark_, "scheduler.low_budget", message);
  } else if (reserve_mark_) {
    add_error(*reserve_mark_, "scheduler.reserve", message);
  }
}

// Fills the defaults that depend on other keys and checks the rules that
// span several keys.
void Loader::finish(const YAML::Node &root) {
  if (!listen_present_) {
    config_.listen = {{"127.0.0.1", 5443}, {"::1", 5443}};
  }
  if (config_.tls.dir.empty()) {
    config_.tls.dir =
        (std::filesystem::path(config_.storage.path) / "tls").string();
  }

  for (auto &[name, upstream] : config_.upstreams) {
    if (upstream.url.empty()) {
      upstream.url = upstream.docker_hub ? "https://registry-1.docker.io"
                                         : "https://" + name;
    }
  }

  if (config_.upstreams.empty() && !upstreams_reported_) {
    YAML::Mark mark = upstreams_present_ ? upstreams_mark_ : root.Mark();
    add_error(mark, "upstreams",
              upstreams_present_
                  ? "no upstream configured (expected at least one "
                    "registry host, as \"docker.io:\")"
                  : "missing (expected a map of at least one registry "
                    "host, as \"docker.io:\")");
  }

  if (!default_upstream_text_.empty() && upstream_errors_ == 0) {
    auto name = parse_registry_host(default_upstream_text_);
    std::string known;
    for (const auto &[key, upstream] : config_.upstreams) {
      known += known.empty() ? "" : ", ";
      known += key;
    }
    if (!name || config_.upstreams.count(*name) == 0) {
      add_error(default_upstream_mark_, "default_upstream",
                "not a configured upstream (value '" +
                    echo(default_upstream_text_) +
                    "'; expected one of the upstreams keys: " + known + ")");
    } else {
      config_.default_upstream = *name;
    }
  } else if (config_.upstreams.size() == 1) {
    config_.default_upstream = config_.upstreams.begin()->first;
  }

  finish_admin();
  check_scheduler_shares();
}

Result<std::shared_ptr<const Config>> Loader::load(const std::string &text) {
  std::vector<YAML::Node> documents;
  try {
    documents = YAML::LoadAll(text);
  } catch (const YAML::Exception &error) {
    add_error(error.mark, "", "YAML syntax error: " + error.msg);
  }

  YAML::Node root;
  if (documents.size() > 1) {
    add_error(documents[1].Mark(), "",
              "more than one YAML document (expected one)");
  }
  if (!documents.empty()) {
    root = documents.front();
  }
  if (error_count_ == 0 && read_root(root)) {
    finish(root);
  }

  if (error_count_ > 0) {
    std::string message;
    for (const std::string &line : errors_) {
      message += message.empty() ? "" : "\n";
      message += line;
    }
    if (stopped_) {
      message += "\n(checking stopped after " +
                 std::to_string(MaxReportedErrors) + " errors)";
    }
    return fail(ErrorCode::Invalid, std::move(message));
  }
  return std::make_shared<const Config>(std::move(config_));
}

} // namespace

Result<std::shared_ptr<const Config>> load_config(const std::string &path) {
  auto text = read_config_file(path);
  if (!text) {
    return tl::unexpected(text.error());
  }

  // yaml-cpp reports errors as exceptions, and node access can throw too.
  // Nothing may escape to the caller, which may be a reload on the loop.
  try {
    Loader loader(path);
    return loader.load(*text);
  } catch (const YAML::Exception &error) {
    return fail(ErrorCode::Invalid,
                path + ":" + std::to_string(error.mark.line + 1) + ":" +
                    std::to_string(error.mark.column + 1) + ": " + error.msg);
  } catch (const std::exception &error) {
    return fail(ErrorCode::Internal,
                "cannot load config " + path + ": " + error.what());
  }
}

} // namespace gatecache::config
