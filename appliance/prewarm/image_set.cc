// Image references, set files and their JSON form.
//
// yaml-cpp appears only in this file. The set reader walks the document
// once, collects every error with the position yaml-cpp recorded, and
// stops after `MaxReportedErrors`, like the config loader.
#include "appliance/prewarm/image_set.h"

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include "appliance/config/values.h"
#include "appliance/registry/grammar.h"

namespace gatecache::prewarm {
namespace {

// A set file lists tens of images. The limit keeps a wrong path (a disk
// image, /dev/zero) from filling memory.
constexpr size_t MaxSetFileBytes = 1 << 20;
constexpr size_t MaxReportedErrors = 20;
constexpr size_t MaxEchoedValueBytes = 80;

constexpr std::string_view ReferenceForm =
    "an image reference such as \"nginx:1.27\", "
    "\"registry.k8s.io/pause:3.10\" or \"ghcr.io/org/app@sha256:<hex>\"";
constexpr std::string_view PlatformForm =
    "a platform \"os/arch\" or \"os/arch/variant\" in lower case, such as "
    "\"linux/amd64\" or \"linux/arm/v7\"";
constexpr std::string_view SetNameForm =
    "a set name made of letters, digits, '.', '_' and '-'";

bool is_lower_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

bool is_control_character(char c) {
  auto byte = static_cast<unsigned char>(c);
  return byte < 0x20 || byte == 0x7F;
}

// Returns `value` fit for an error message: control characters escaped as
// \xNN and long values cut at a UTF-8 boundary.
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
  for (char c : value) {
    if (is_control_character(c)) {
      static constexpr char hex[] = "0123456789abcdef";
      auto byte = static_cast<unsigned char>(c);
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

Result<void> check_repository(std::string_view name) {
  return registry::check_repository_name(name);
}

using registry::check_digest;
using registry::check_tag;

// True when the first component of a reference names a registry rather
// than a Docker Hub namespace.
bool is_registry_component(std::string_view component) {
  return component.find_first_of(".:") != std::string_view::npos ||
         component.starts_with('[') || component == "localhost";
}

// Reads at most `MaxSetFileBytes` of `path`, retrying interrupted calls.
Result<std::string> read_set_file(const std::string &path) {
  int fd = -1;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    int errnum = errno;
    return fail(errnum == ENOENT ? ErrorCode::NotFound : ErrorCode::Io,
                "cannot read image set " + path + ": " +
                    std::generic_category().message(errnum));
  }

  // O_NONBLOCK above keeps open(2) from waiting on a FIFO, and this check
  // keeps read(2) from one.
  struct stat info = {};
  std::string reason;
  if (::fstat(fd, &info) != 0) {
    reason = std::generic_category().message(errno);
  } else if (!S_ISREG(info.st_mode)) {
    reason = "not a regular file";
  }
  if (!reason.empty()) {
    ::close(fd);
    return fail(ErrorCode::Io, "cannot read image set " + path + ": " + reason);
  }

  std::string text;
  char buffer[16384];
  while (true) {
    ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      int errnum = errno;
      ::close(fd);
      return fail(ErrorCode::Io, "cannot read image set " + path + ": " +
                                     std::generic_category().message(errnum));
    }
    if (n == 0) {
      break;
    }
    if (text.size() + static_cast<size_t>(n) > MaxSetFileBytes) {
      ::close(fd);
      return fail(ErrorCode::Invalid, "cannot read image set " + path +
                                          ": file is larger than 1 MiB");
    }
    text.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
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

std::string position(const YAML::Mark &mark) {
  return "line " + std::to_string(mark.line + 1) + ", column " +
         std::to_string(mark.column + 1);
}

// Reads one set document and collects its errors.
class SetReader {
public:
  explicit SetReader(std::string source) : source_(std::move(source)) {
    set_.source_path = source_;
  }

  Result<ImageSet> read(std::string_view yaml);

private:
  void add_error(const YAML::Mark &mark, std::string_view key,
                 std::string_view message);

  bool should_stop() const { return error_count_ >= MaxReportedErrors; }

  void invalid_value(const YAML::Node &node, std::string_view key,
                     std::string_view what, std::string_view expected);
  void wrong_type(const YAML::Node &node, const YAML::Mark &mark,
                  std::string_view key, std::string_view expected);
  static YAML::Mark mark_of(const YAML::Node &value, const YAML::Node &key);

  void read_root(const YAML::Node &root);
  void read_name(const YAML::Node &key, const YAML::Node &value);
  void read_description(const YAML::Node &key, const YAML::Node &value);
  bool read_platforms(const YAML::Node &key, const YAML::Node &value,
                      std::string_view key_path, std::vector<std::string> &out);
  void read_images(const YAML::Node &key, const YAML::Node &value);
  void read_image_map(const YAML::Node &item, ImageRef &image,
                      bool &has_platforms);
  bool read_reference(const YAML::Node &value, const YAML::Mark &mark,
                      std::string_view key, ImageRef &image);
  void fill_name();

  std::string source_;
  ImageSet set_;
  std::vector<std::string> set_platforms_;
  // True when the set-wide `platforms` was invalid and reported, so images
  // without their own platforms need no second error.
  bool set_platforms_reported_ = false;
  YAML::Mark images_mark_;
  std::vector<std::string> errors_;
  size_t error_count_ = 0;
};

void SetReader::add_error(const YAML::Mark &mark, std::string_view key,
                          std::string_view message) {
  ++error_count_;
  if (errors_.size() >= MaxReportedErrors) {
    return;
  }
  int line = mark.is_null() ? 1 : mark.line + 1;
  int column = mark.is_null() ? 1 : mark.column + 1;
  std::string text = source_ + ":" + std::to_string(line) + ":" +
                     std::to_string(column) + ": ";
  if (!key.empty()) {
    text += "key '";
    text += key;
    text += "': ";
  }
  text += message;
  errors_.push_back(std::move(text));
}

// Points at the value, or at the key when the value is empty, because
// yaml-cpp places an empty value at the next token.
YAML::Mark SetReader::mark_of(const YAML::Node &value, const YAML::Node &key) {
  if (value.IsNull() || value.Mark().is_null()) {
    return key.Mark();
  }
  return value.Mark();
}

void SetReader::invalid_value(const YAML::Node &node, std::string_view key,
                              std::string_view what,
                              std::string_view expected) {
  std::string message(what);
  message += " (value '";
  message += echo(node.Scalar());
  message += "'; expected ";
  message += expected;
  message += ")";
  add_error(node.Mark(), key, message);
}

void SetReader::wrong_type(const YAML::Node &node, const YAML::Mark &mark,
                           std::string_view key, std::string_view expected) {
  std::string message = "wrong type (value is ";
  message += describe_type(node);
  message += "; expected ";
  message += expected;
  message += ")";
  add_error(mark, key, message);
}

void SetReader::read_root(const YAML::Node &root) {
  if (!root.IsMap()) {
    std::string message = "wrong type (value is ";
    message += describe_type(root);
    message += "; expected a map with name, description, platforms and "
               "images)";
    add_error(root.Mark(), "", message);
    return;
  }

  bool images_present = false;
  std::map<std::string, YAML::Mark> seen;
  for (auto it = root.begin(); it != root.end() && !should_stop(); ++it) {
    const YAML::Node &key = it->first;
    const YAML::Node &value = it->second;
    if (!key.IsScalar()) {
      wrong_type(key, key.Mark(), "", "a key name");
      continue;
    }
    const std::string &name = key.Scalar();
    auto [previous, inserted] = seen.emplace(name, key.Mark());
    if (!inserted) {
      add_error(key.Mark(), echo(name),
                "duplicate key (first at " + position(previous->second) + ")");
      continue;
    }

    if (name == "name") {
      read_name(key, value);
    } else if (name == "description") {
      read_description(key, value);
    } else if (name == "platforms") {
      set_platforms_reported_ =
          !read_platforms(key, value, "platforms", set_platforms_);
    } else if (name == "images") {
      images_present = true;
      images_mark_ = mark_of(value, key);
      // Read after the loop, so that a set-wide `platforms` written
      // below the images still applies to them.
    } else {
      add_error(key.Mark(), echo(name),
                "unknown key (expected one of name, description, platforms, "
                "images)");
    }
  }

  if (!images_present) {
    add_error(root.Mark(), "images",
              "missing (expected a list of image references)");
    return;
  }
  for (auto it = root.begin(); it != root.end(); ++it) {
    if (it->first.IsScalar() && it->first.Scalar() == "images") {
      read_images(it->first, it->second);
      break;
    }
  }
}

void SetReader::read_name(const YAML::Node &key, const YAML::Node &value) {
  if (!value.IsScalar()) {
    wrong_type(value, mark_of(value, key), "name", SetNameForm);
    return;
  }
  auto valid = config::check_image_set_name(value.Scalar());
  if (!valid) {
    invalid_value(value, "name", valid.error().message, SetNameForm);
    return;
  }
  set_.name = value.Scalar();
}

void SetReader::read_description(const YAML::Node &key,
                                 const YAML::Node &value) {
  constexpr std::string_view expected = "one line of text";
  if (!value.IsScalar()) {
    wrong_type(value, mark_of(value, key), "description", expected);
    return;
  }
  const std::string &text = value.Scalar();
  if (std::any_of(text.begin(), text.end(), is_control_character)) {
    invalid_value(value, "description", "text contains a control character",
                  expected);
    return;
  }
  set_.description = text;
}

// Reads a non-empty list of distinct platforms into `out`. Returns false
// after reporting an error.
bool SetReader::read_platforms(const YAML::Node &key, const YAML::Node &value,
                               std::string_view key_path,
                               std::vector<std::string> &out) {
  if (!value.IsSequence() || value.size() == 0) {
    std::string expected = "a non-empty list of " + std::string(PlatformForm);
    if (value.IsSequence()) {
      add_error(mark_of(value, key), key_path,
                "empty list (expected " + expected + ")");
    } else {
      wrong_type(value, mark_of(value, key), key_path, expected);
    }
    return false;
  }

  size_t errors_before = error_count_;
  std::vector<std::string> platforms;
  for (const YAML::Node &item : value) {
    if (!item.IsScalar()) {
      wrong_type(item, mark_of(item, key), key_path, PlatformForm);
      continue;
    }
    const std::string &text = item.Scalar();
    auto valid = check_platform(text);
    if (!valid) {
      invalid_value(item, key_path, valid.error().message, PlatformForm);
      continue;
    }
    if (std::find(platforms.begin(), platforms.end(), text) !=
        platforms.end()) {
      invalid_value(item, key_path, "duplicate platform", PlatformForm);
      continue;
    }
    platforms.push_back(text);
  }
  if (error_count_ != errors_before) {
    return false;
  }
  out = std::move(platforms);
  return true;
}

void SetReader::read_images(const YAML::Node &key, const YAML::Node &value) {
  constexpr std::string_view item_form =
      "an image reference, or a map with ref and platforms";
  if (!value.IsSequence() || value.size() == 0) {
    std::string expected = "a non-empty list of image references";
    if (value.IsSequence()) {
      add_error(mark_of(value, key), "images",
                "empty list (expected " + expected + ")");
    } else {
      wrong_type(value, mark_of(value, key), "images", expected);
    }
    return;
  }
  if (value.size() > MaxImagesPerSet) {
    add_error(mark_of(value, key), "images",
              "more than " + std::to_string(MaxImagesPerSet) +
                  " images (expected a smaller set, or several sets)");
    return;
  }

  // Each image once, keyed by its canonical reference.
  std::map<std::string, YAML::Mark> seen;
  for (const YAML::Node &item : value) {
    if (should_stop()) {
      return;
    }
    ImageRef image;
    bool has_platforms = false;
    size_t errors_before = error_count_;
    if (item.IsScalar()) {
      read_reference(item, item.Mark(), "images", image);
    } else if (item.IsMap()) {
      read_image_map(item, image, has_platforms);
    } else {
      wrong_type(item, mark_of(item, key), "images", item_form);
    }
    if (error_count_ != errors_before) {
      continue;
    }

    if (!has_platforms) {
      if (set_platforms_reported_) {
        continue;
      }
      if (set_platforms_.empty()) {
        add_error(item.Mark(), "images",
                  "no platforms for image '" + image.str() +
                      "' (expected platforms in the image entry or at the "
                      "top of the set)");
        continue;
      }
      image.platforms = set_platforms_;
    }
    auto [previous, inserted] = seen.emplace(image.str(), item.Mark());
    if (!inserted) {
      add_error(item.Mark(), "images",
                "duplicate image '" + image.str() + "' (first at " +
                    position(previous->second) + ")");
      continue;
    }
    set_.images.push_back(std::move(image));
  }
}

// Reads an entry {ref, platforms}.
void SetReader::read_image_map(const YAML::Node &item, ImageRef &image,
                               bool &has_platforms) {
  bool ref_present = false;
  std::map<std::string, YAML::Mark> seen;
  for (auto it = item.begin(); it != item.end(); ++it) {
    const YAML::Node &key = it->first;
    const YAML::Node &value = it->second;
    if (!key.IsScalar()) {
      wrong_type(key, key.Mark(), "images", "a key name");
      continue;
    }
    const std::string &name = key.Scalar();
    auto [previous, inserted] = seen.emplace(name, key.Mark());
    if (!inserted) {
      add_error(key.Mark(), "images." + echo(name),
                "duplicate key (first at " + position(previous->second) + ")");
    } else if (name == "ref") {
      ref_present = true;
      if (!value.IsScalar()) {
        wrong_type(value, mark_of(value, key), "images.ref", ReferenceForm);
      } else {
        read_reference(value, value.Mark(), "images.ref", image);
      }
    } else if (name == "platforms") {
      has_platforms =
          read_platforms(key, value, "images.platforms", image.platforms);
    } else {
      add_error(key.Mark(), "images." + echo(name),
                "unknown key (expected one of ref, platforms)");
    }
  }
  if (!ref_present) {
    add_error(item.Mark(), "images.ref",
              "missing (expected " + std::string(ReferenceForm) + ")");
  }
}

bool SetReader::read_reference(const YAML::Node &value, const YAML::Mark &mark,
                               std::string_view key, ImageRef &image) {
  auto parsed = parse_image_reference(value.Scalar());
  if (!parsed) {
    std::string message = parsed.error().message + " (value '" +
                          echo(value.Scalar()) + "'; expected " +
                          std::string(ReferenceForm) + ")";
    add_error(mark, key, message);
    return false;
  }
  image = std::move(*parsed);
  return true;
}

// Uses the file stem as the name when the set gives none.
void SetReader::fill_name() {
  if (!set_.name.empty()) {
    return;
  }
  std::string stem = std::filesystem::path(source_).stem().string();
  if (!config::check_image_set_name(stem)) {
    add_error(YAML::Mark(), "name",
              "missing, and the file name '" + echo(stem) +
                  "' is not a valid set name (expected a name key with " +
                  std::string(SetNameForm) + ")");
    return;
  }
  set_.name = std::move(stem);
}

Result<ImageSet> SetReader::read(std::string_view yaml) {
  std::vector<YAML::Node> documents;
  try {
    documents = YAML::LoadAll(std::string(yaml));
  } catch (const YAML::Exception &error) {
    add_error(error.mark, "", "YAML syntax error: " + error.msg);
  }
  if (documents.size() > 1) {
    add_error(documents[1].Mark(), "",
              "more than one YAML document (expected one)");
  }
  if (error_count_ == 0) {
    read_root(documents.empty() ? YAML::Node() : documents.front());
    fill_name();
  }

  if (error_count_ > 0) {
    std::string message;
    for (const std::string &line : errors_) {
      message += message.empty() ? "" : "\n";
      message += line;
    }
    if (error_count_ > errors_.size() || should_stop()) {
      message += "\n(checking stopped after " +
                 std::to_string(MaxReportedErrors) + " errors)";
    }
    return fail(ErrorCode::Invalid, std::move(message));
  }
  return std::move(set_);
}

// Lists the set names in `images_dir`, sorted, for a "not found" message.
std::string list_sets(const std::string &images_dir) {
  constexpr size_t max_listed = 20;
  std::set<std::string> names;
  std::error_code error;
  for (const auto &entry :
       std::filesystem::directory_iterator(images_dir, error)) {
    if (entry.path().extension() == ".yaml") {
      names.insert(entry.path().stem().string());
    }
  }
  if (names.empty()) {
    return "none";
  }

  std::string text;
  size_t listed = 0;
  for (const std::string &name : names) {
    if (listed++ == max_listed) {
      text += ", ...";
      break;
    }
    text += text.empty() ? "" : ", ";
    text += echo(name);
  }
  return text;
}

} // namespace

std::string ImageRef::str() const {
  return registry + "/" + repository + (by_digest ? "@" : ":") + reference;
}

Result<ImageRef> parse_image_reference(std::string_view text) {
  if (text.empty()) {
    return fail(ErrorCode::Invalid, "empty image reference");
  }
  for (char c : text) {
    if (is_control_character(c) || c == ' ') {
      return fail(ErrorCode::Invalid,
                  "image reference contains a space or control character");
    }
  }
  if (text.find("://") != std::string_view::npos) {
    return fail(ErrorCode::Invalid,
                "a URL instead of an image reference (drop the scheme)");
  }

  ImageRef image;
  std::string_view name = text;
  std::string_view digest;
  size_t at = name.find('@');
  if (at != std::string_view::npos) {
    digest = name.substr(at + 1);
    name = name.substr(0, at);
  }

  // The registry, when there is one, ends at the first '/'.
  std::string_view registry = "docker.io";
  size_t slash = name.find('/');
  if (slash != std::string_view::npos &&
      is_registry_component(name.substr(0, slash))) {
    registry = name.substr(0, slash);
    name = name.substr(slash + 1);
  }
  auto host = config::parse_registry_host(registry);
  if (!host) {
    return fail(ErrorCode::Invalid, "invalid registry '" + echo(registry) +
                                        "': " + host.error().message);
  }
  image.registry = *host == "index.docker.io" ? "docker.io" : *host;

  // After the registry, a ':' can only start the tag.
  std::string_view tag;
  size_t colon = name.rfind(':');
  if (colon != std::string_view::npos) {
    tag = name.substr(colon + 1);
    name = name.substr(0, colon);
    if (auto valid = check_tag(tag); !valid) {
      return tl::unexpected(valid.error());
    }
  }

  image.repository = std::string(name);
  bool docker_hub = image.registry == "docker.io";
  if (docker_hub && name.find('/') == std::string_view::npos) {
    image.repository = "library/" + image.repository;
  }
  if (auto valid = check_repository(image.repository); !valid) {
    return tl::unexpected(valid.error());
  }

  if (at != std::string_view::npos) {
    if (auto valid = check_digest(digest); !valid) {
      return tl::unexpected(valid.error());
    }
    image.reference = std::string(digest);
    image.by_digest = true;
  } else {
    image.reference = tag.empty() ? "latest" : std::string(tag);
  }
  return image;
}

Result<void> check_platform(std::string_view text) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    size_t slash = text.find('/', start);
    parts.push_back(text.substr(start, slash - start));
    if (slash == std::string_view::npos) {
      break;
    }
    start = slash + 1;
  }
  if (parts.size() < 2 || parts.size() > 3) {
    return fail(ErrorCode::Invalid, "platform is not os/arch or "
                                    "os/arch/variant");
  }
  for (std::string_view part : parts) {
    bool valid = !part.empty();
    for (char c : part) {
      valid = valid && (is_lower_alnum(c) || c == '_');
    }
    if (!valid) {
      return fail(ErrorCode::Invalid,
                  "invalid platform part '" + echo(part) +
                      "' (lower-case letters, digits and '_' only)");
    }
  }
  if (parts[0] == "unknown") {
    return fail(ErrorCode::Invalid,
                "unknown/unknown marks attestation manifests, not a platform");
  }
  return {};
}

Result<ImageSet> load_image_set(const std::string &path) {
  auto text = read_set_file(path);
  if (!text) {
    return tl::unexpected(text.error());
  }
  return parse_image_set(*text, path);
}

Result<ImageSet> parse_image_set(std::string_view yaml,
                                 std::string source_name) {
  // yaml-cpp reports errors as exceptions, and node access can throw too.
  try {
    SetReader reader(source_name);
    return reader.read(yaml);
  } catch (const YAML::Exception &error) {
    return fail(ErrorCode::Invalid,
                source_name + ":" + std::to_string(error.mark.line + 1) + ":" +
                    std::to_string(error.mark.column + 1) + ": " + error.msg);
  } catch (const std::exception &error) {
    return fail(ErrorCode::Internal,
                "cannot load image set " + source_name + ": " + error.what());
  }
}

Result<std::string> resolve_set_path(const std::string &name_or_path,
                                     const std::string &images_dir) {
  if (std::any_of(name_or_path.begin(), name_or_path.end(),
                  is_control_character)) {
    return fail(ErrorCode::Invalid, "image set '" + echo(name_or_path) +
                                        "' contains a control character");
  }

  std::string path;
  bool named = false;
  bool is_path = name_or_path.find('/') != std::string::npos ||
                 name_or_path.ends_with(".yaml") ||
                 name_or_path.ends_with(".yml");
  if (name_or_path.starts_with('/')) {
    path = name_or_path;
  } else if (is_path) {
    std::error_code error;
    auto absolute = std::filesystem::absolute(name_or_path, error);
    if (error) {
      return fail(ErrorCode::Io, "cannot resolve image set path '" +
                                     echo(name_or_path) +
                                     "': " + error.message());
    }
    path = absolute.lexically_normal().string();
  } else {
    auto valid = config::check_image_set_name(name_or_path);
    if (!valid) {
      return fail(ErrorCode::Invalid, "invalid image set '" +
                                          echo(name_or_path) +
                                          "': " + valid.error().message);
    }
    path =
        (std::filesystem::path(images_dir) / (name_or_path + ".yaml")).string();
    named = true;
  }

  std::error_code error;
  auto status = std::filesystem::status(path, error);
  if (status.type() == std::filesystem::file_type::regular) {
    return path;
  }
  if (named && status.type() == std::filesystem::file_type::not_found) {
    return fail(ErrorCode::NotFound, "image set '" + name_or_path +
                                         "' not found: no file " + path +
                                         " (sets in " + images_dir + ": " +
                                         list_sets(images_dir) + ")");
  }
  if (status.type() == std::filesystem::file_type::not_found) {
    return fail(ErrorCode::NotFound,
                "image set file " + echo(path) + " not found");
  }
  return fail(ErrorCode::Invalid,
              "image set file " + echo(path) + " is not a regular file");
}

nlohmann::json to_json(const ImageSet &set) {
  nlohmann::json images = nlohmann::json::array();
  for (const ImageRef &image : set.images) {
    images.push_back({{"ref", image.str()}, {"platforms", image.platforms}});
  }
  return {{"name", set.name},
          {"description", set.description},
          {"source_path", set.source_path},
          {"images", std::move(images)}};
}

Result<ImageSet> image_set_from_json(const nlohmann::json &json) {
  auto invalid = [](const std::string &field, const std::string &what) {
    return fail(ErrorCode::Invalid, "image set JSON: " + field + ": " + what);
  };
  // Reads the string `object[key]`, named `field` in errors.
  auto read_string = [&](const nlohmann::json &object, const char *key,
                         const std::string &field, bool required,
                         std::string &out) -> Result<void> {
    auto it = object.find(key);
    if (it == object.end()) {
      return required ? Result<void>(invalid(field, "missing"))
                      : Result<void>();
    }
    if (!it->is_string()) {
      return invalid(field, "not a string");
    }
    out = it->get<std::string>();
    return {};
  };

  if (!json.is_object()) {
    return invalid("(top level)", "not an object");
  }
  ImageSet set;
  if (auto read = read_string(json, "name", "name", true, set.name); !read) {
    return tl::unexpected(read.error());
  }
  if (auto read = read_string(json, "description", "description", false,
                              set.description);
      !read) {
    return tl::unexpected(read.error());
  }
  if (auto read = read_string(json, "source_path", "source_path", false,
                              set.source_path);
      !read) {
    return tl::unexpected(read.error());
  }
  if (auto valid = config::check_image_set_name(set.name); !valid) {
    return invalid("name", valid.error().message);
  }
  if (std::any_of(set.description.begin(), set.description.end(),
                  is_control_character)) {
    return invalid("description", "contains a control character");
  }

  auto images = json.find("images");
  if (images == json.end() || !images->is_array() || images->empty()) {
    return invalid("images", "missing, not an array or empty");
  }
  if (images->size() > MaxImagesPerSet) {
    return invalid("images",
                   "more than " + std::to_string(MaxImagesPerSet) + " images");
  }

  std::set<std::string> seen;
  for (size_t i = 0; i < images->size(); ++i) {
    const nlohmann::json &item = (*images)[i];
    std::string field = "images[" + std::to_string(i) + "]";
    if (!item.is_object()) {
      return invalid(field, "not an object");
    }
    std::string ref;
    if (auto read = read_string(item, "ref", field + ".ref", true, ref);
        !read) {
      return tl::unexpected(read.error());
    }
    auto image = parse_image_reference(ref);
    if (!image) {
      return invalid(field + ".ref", image.error().message);
    }
    if (!seen.insert(image->str()).second) {
      return invalid(field + ".ref", "duplicate image " + image->str());
    }

    auto platforms = item.find("platforms");
    if (platforms == item.end() || !platforms->is_array() ||
        platforms->empty()) {
      return invalid(field + ".platforms", "missing, not an array or empty");
    }
    for (const nlohmann::json &platform : *platforms) {
      if (!platform.is_string()) {
        return invalid(field + ".platforms", "not a list of strings");
      }
      std::string text = platform.get<std::string>();
      if (auto valid = check_platform(text); !valid) {
        return invalid(field + ".platforms", valid.error().message);
      }
      if (std::find(image->platforms.begin(), image->platforms.end(), text) !=
          image->platforms.end()) {
        return invalid(field + ".platforms", "duplicate platform " + text);
      }
      image->platforms.push_back(std::move(text));
    }
    set.images.push_back(std::move(*image));
  }
  return set;
}

} // namespace gatecache::prewarm
