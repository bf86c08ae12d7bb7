#include "appliance/registry/media_type.h"

#include <array>
#include <optional>

#include <nlohmann/json.hpp>

#include "appliance/registry/schema1.h"
#include "common/ascii.h"

namespace gatecache::registry {

namespace {

constexpr std::string_view Whitespace = " \t";

std::string_view trim(std::string_view text) {
  size_t first = text.find_first_not_of(Whitespace);
  if (first == std::string_view::npos) {
    return {};
  }
  size_t last = text.find_last_not_of(Whitespace);
  return text.substr(first, last - first + 1);
}

// Parses an RFC 9110 qvalue ("0" ["." 0*3DIGIT] / "1" ["." 0*3("0")]) into
// thousandths.
std::optional<int> parse_qvalue(std::string_view text) {
  if (text.empty() || text.size() > 5 || (text[0] != '0' && text[0] != '1')) {
    return std::nullopt;
  }
  int whole = text[0] - '0';
  if (text.size() == 1) {
    return whole * 1000;
  }
  if (text[1] != '.') {
    return std::nullopt;
  }
  int fraction = 0;
  int scale = 100;
  for (char c : text.substr(2)) {
    if (c < '0' || c > '9') {
      return std::nullopt;
    }
    fraction += (c - '0') * scale;
    scale /= 10;
  }
  if (whole == 1 && fraction != 0) {
    return std::nullopt;
  }
  return whole * 1000 + fraction;
}

// Returns the `q` weight among the parameters that follow a media range
// (";a=b;q=0.5"), 1000 when there is none or it is malformed.
int quality_of(std::string_view parameters) {
  int quality = 1000;
  while (!parameters.empty()) {
    size_t semicolon = parameters.find(';');
    std::string_view parameter = trim(parameters.substr(0, semicolon));
    parameters = semicolon == std::string_view::npos
                     ? std::string_view()
                     : parameters.substr(semicolon + 1);
    size_t equals = parameter.find('=');
    if (equals == std::string_view::npos ||
        !equals_ignoring_ascii_case(trim(parameter.substr(0, equals)), "q")) {
      continue;
    }
    if (auto parsed = parse_qvalue(trim(parameter.substr(equals + 1)))) {
      quality = *parsed;
    }
  }
  return quality;
}

// Returns how specifically `range` matches `essence`: 3 for the same type,
// 2 for `type/*`, 1 for `*/*` and 0 for no match.
int match_specificity(std::string_view range, std::string_view essence) {
  if (range == essence) {
    return 3;
  }
  if (range == "*/*") {
    return 1;
  }
  size_t slash = essence.find('/');
  if (slash != std::string_view::npos && range.size() == slash + 2 &&
      range.back() == '*' &&
      range.substr(0, slash + 1) == essence.substr(0, slash + 1)) {
    return 2;
  }
  return 0;
}

} // namespace

std::string media_type_essence(std::string_view media_type) {
  std::string_view essence = trim(media_type.substr(0, media_type.find(';')));
  std::string lowered(essence);
  for (char &c : lowered) {
    c = to_lower_ascii(c);
  }
  return lowered;
}

namespace {

// Checks that the document has the fields of the type its Content-Type
// names, so that a type which the document contradicts is never stored.
// An index lists `manifests`, an image manifest has a `config` object, and
// schema 1 has `schemaVersion` 1 and `fsLayers`. OCI documents without a
// `mediaType` field can be distinguished only this way.
Result<void> check_manifest_shape(const std::string &essence,
                                  const nlohmann::json &document) {
  bool has_manifests = document.contains("manifests");
  bool has_config = document.contains("config");
  auto version = document.find("schemaVersion");
  int schema_version = version != document.end() && version->is_number_integer()
                           ? version->get<int>()
                           : 0;
  std::string problem;
  if (essence == OciIndexMediaType || essence == DockerManifestListMediaType) {
    if (!has_manifests || !document["manifests"].is_array()) {
      problem = "has no manifests list";
    } else if (has_config) {
      problem = "has a config, which only image manifests have";
    }
  } else if (essence == OciManifestMediaType ||
             essence == DockerManifestMediaType) {
    if (!has_config || !document["config"].is_object()) {
      problem = "has no config object";
    } else if (has_manifests) {
      problem = "has a manifests list, which only indexes have";
    }
  } else if (schema_version != 1 || !document.contains("fsLayers")) {
    problem = "has no schemaVersion 1 with fsLayers";
  }
  if (problem.empty() && essence != DockerSchema1MediaType &&
      essence != Schema1SignedMediaType && schema_version != 2) {
    problem = "has no schemaVersion 2";
  }
  if (!problem.empty()) {
    return fail(ErrorCode::Invalid,
                "the manifest " + problem + ", so it is not a " + essence);
  }
  return {};
}

} // namespace

bool same_media_type(std::string_view a, std::string_view b) {
  return media_type_essence(a) == media_type_essence(b);
}

std::vector<AcceptRange> parse_accept(std::string_view accept) {
  std::vector<AcceptRange> ranges;
  while (!accept.empty()) {
    size_t comma = accept.find(',');
    std::string_view item = accept.substr(0, comma);
    accept = comma == std::string_view::npos ? std::string_view()
                                             : accept.substr(comma + 1);
    size_t semicolon = item.find(';');
    AcceptRange range;
    range.media_range = media_type_essence(item);
    if (range.media_range.empty()) {
      continue;
    }
    if (semicolon != std::string_view::npos) {
      range.quality = quality_of(item.substr(semicolon + 1));
    }
    ranges.push_back(std::move(range));
  }
  return ranges;
}

bool acceptable(const std::vector<AcceptRange> &accepted,
                std::string_view media_type) {
  if (accepted.empty()) {
    return true;
  }
  std::string essence = media_type_essence(media_type);
  int best_specificity = 0;
  int quality = 0;
  for (const auto &range : accepted) {
    int specificity = match_specificity(range.media_range, essence);
    // When ranges of equal specificity match, the first one counts.
    if (specificity > best_specificity) {
      best_specificity = specificity;
      quality = range.quality;
    }
  }
  return best_specificity > 0 && quality > 0;
}

bool is_manifest_media_type(std::string_view essence) {
  static constexpr std::array<std::string_view, 6> Known = {
      OciManifestMediaType,    OciIndexMediaType,
      DockerManifestMediaType, DockerManifestListMediaType,
      DockerSchema1MediaType,  Schema1SignedMediaType,
  };
  for (auto known : Known) {
    if (essence == known) {
      return true;
    }
  }
  return false;
}

Result<std::string> check_manifest_media_type(std::string_view content_type,
                                              std::string_view body) {
  std::string essence = media_type_essence(content_type);
  if (!is_manifest_media_type(essence)) {
    return fail(ErrorCode::Invalid, "Content-Type '" +
                                        std::string(content_type) +
                                        "' is not a manifest media type");
  }
  auto document = nlohmann::json::parse(body, nullptr, false);
  if (document.is_discarded() || !document.is_object()) {
    return fail(ErrorCode::Invalid, "the manifest is not a JSON object");
  }
  auto field = document.find("mediaType");
  if (field != document.end()) {
    if (!field->is_string()) {
      return fail(ErrorCode::Invalid,
                  "the manifest's mediaType field is not a string");
    }
    const auto &declared = field->get_ref<const std::string &>();
    if (media_type_essence(declared) != essence) {
      return fail(ErrorCode::Invalid, "Content-Type '" +
                                          std::string(content_type) +
                                          "' differs from the manifest's "
                                          "mediaType '" +
                                          declared + "'");
    }
  } else if (essence == DockerManifestMediaType ||
             essence == DockerManifestListMediaType) {
    // Docker's schema 2 specification requires the field, and only OCI
    // documents may leave it out.
    return fail(ErrorCode::Invalid, "Content-Type '" +
                                        std::string(content_type) +
                                        "' needs a mediaType field, which "
                                        "the manifest lacks");
  }
  if (auto shape = check_manifest_shape(essence, document); !shape) {
    return tl::unexpected(shape.error());
  }
  return essence;
}

} // namespace gatecache::registry
