// Reads the YAML config file into `Config` and validates every value.
//
// yaml-cpp appears only in this file. The loader walks the document once,
// in file order, with one table of known keys per map, and collects every
// error with the position yaml-cpp recorded for the offending node. It
// then fills the defaults that depend on other keys (tls.dir, urls,
// default_upstream) and checks the rules that span keys.
#include <array>
#include <cerrno>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <fstream>
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
constexpr std::string_view DurationForm =
    "seconds as a number, or a number with a unit ms, s, m or h, at most 24h";
constexpr std::string_view RegistryHostForm =
    "a registry host as image references name it: a DNS name, an IPv4 "
    "address or a bracketed IPv6 address, with an optional port";

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
  void read_byte_size(const Entry &entry, uint64_t &out);
  void read_duration(const Entry &entry, double &out);
  void read_absolute_path(const Entry &entry, std::string &out);

  bool read_root(const YAML::Node &root);
  void read_listen(const Entry &entry);
  void read_storage(const Entry &entry);
  void read_storage_path(const Entry &entry);
  void read_storage_max_size(const Entry &entry);
  void read_storage_index_map_size(const Entry &entry);
  void read_tls(const Entry &entry);
  void read_tls_names(const Entry &entry);
  void read_tls_dir(const Entry &entry);
  void read_upstreams(const Entry &entry);
  void read_upstream_entries(const Entry &entry);
  void read_upstream(const Entry &entry, const std::string &name);
  void read_upstream_url(const Entry &entry);
  void read_upstream_ca_file(const Entry &entry);
  void read_default_upstream(const Entry &entry);
  void read_upstream_timeouts(const Entry &entry);
  void read_connect_timeout(const Entry &entry);
  void read_response_timeout(const Entry &entry);
  void read_idle_timeout(const Entry &entry);
  void read_log(const Entry &entry);
  void read_log_level(const Entry &entry);
  void read_log_access_log(const Entry &entry);

  void finish(const YAML::Node &root);

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

void Loader::read_duration(const Entry &entry, double &out) {
  std::string text;
  if (!read_scalar(entry, DurationForm, text)) {
    return;
  }
  auto seconds = parse_duration(text);
  if (!seconds) {
    invalid_value(entry, seconds.error().message, DurationForm);
    return;
  }
  out = *seconds;
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
      {"log", &Loader::read_log},
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

void Loader::read_listen(const Entry &entry) {
  constexpr std::string_view expected =
      "\"address:port\" with an IPv4 address or a bracketed IPv6 address "
      "and a port from 1 to 65535";
  listen_present_ = true;
  if (!read_list(entry, "a list of " + std::string(expected))) {
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
    auto address = parse_listen_address(text);
    if (!address) {
      invalid_value(child, address.error().message, expected);
      continue;
    }
    for (const ListenAddress &other : config_.listen) {
      if (other.host == address->host && other.port == address->port) {
        invalid_value(child, "duplicate address", expected);
      }
    }
    config_.listen.push_back(std::move(*address));
  }
}

void Loader::read_storage(const Entry &entry) {
  static constexpr Field fields[] = {
      {"path", &Loader::read_storage_path},
      {"max_size", &Loader::read_storage_max_size},
      {"index_map_size", &Loader::read_storage_index_map_size},
  };
  read_map(entry, fields);
}

void Loader::read_storage_path(const Entry &entry) {
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

void Loader::read_tls(const Entry &entry) {
  static constexpr Field fields[] = {
      {"names", &Loader::read_tls_names},
      {"dir", &Loader::read_tls_dir},
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
    child.value = it->second;
    read_upstream(child, *name);
  }
}

void Loader::read_upstream(const Entry &entry, const std::string &name) {
  static constexpr Field fields[] = {
      {"url", &Loader::read_upstream_url},
      {"ca_file", &Loader::read_upstream_ca_file},
  };

  UpstreamConfig &upstream = config_.upstreams[name];
  upstream.name = name;
  upstream.docker_hub = name == "docker.io";
  if (!entry.value.IsNull() && !entry.value.IsMap()) {
    wrong_type(entry, "a map with url and ca_file, or nothing");
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
