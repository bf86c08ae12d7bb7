#include "appliance/registry/media_type.h"

#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "appliance/registry/schema1.h"

using gatecache::ErrorCode;
using gatecache::registry::acceptable;
using gatecache::registry::check_manifest_media_type;
using gatecache::registry::is_manifest_media_type;
using gatecache::registry::media_type_essence;
using gatecache::registry::parse_accept;
using gatecache::registry::same_media_type;
using gatecache::registry::Schema1SignedMediaType;

namespace {

const std::string OciIndex = "application/vnd.oci.image.index.v1+json";
const std::string OciManifest = "application/vnd.oci.image.manifest.v1+json";
const std::string Schema2 =
    "application/vnd.docker.distribution.manifest.v2+json";

bool accepts(const std::string &accept, const std::string &media_type) {
  return acceptable(parse_accept(accept), media_type);
}

} // namespace

TEST_CASE("media_type_essence drops parameters and case") {
  CHECK(media_type_essence(OciIndex) == OciIndex);
  CHECK(media_type_essence(OciIndex + "; charset=utf-8") == OciIndex);
  CHECK(media_type_essence("  Application/VND.OCI.Image.Index.v1+JSON ;q=1") ==
        OciIndex);
  CHECK(media_type_essence("") == "");
  CHECK(media_type_essence(";charset=utf-8") == "");
}

TEST_CASE("same_media_type ignores parameters on both sides") {
  CHECK(same_media_type(OciIndex + "; charset=utf-8", OciIndex));
  CHECK(same_media_type(OciIndex, "APPLICATION/vnd.oci.image.index.v1+json"));
  CHECK_FALSE(same_media_type(OciIndex, OciManifest));
}

TEST_CASE("parse_accept reads ranges and weights") {
  auto ranges = parse_accept(OciIndex + ";q=0, " + Schema2 +
                             " ; Q=0.5 , */*;level=1, , text/*;q=1.000");
  REQUIRE(ranges.size() == 4);
  CHECK(ranges[0].media_range == OciIndex);
  CHECK(ranges[0].quality == 0);
  CHECK(ranges[1].media_range == Schema2);
  CHECK(ranges[1].quality == 500);
  CHECK(ranges[2].media_range == "*/*");
  CHECK(ranges[2].quality == 1000);
  CHECK(ranges[3].media_range == "text/*");
  CHECK(ranges[3].quality == 1000);
}

TEST_CASE("parse_accept counts malformed weights as 1") {
  for (const char *weight : {"q=", "q=2", "q=1.5", "q=0.1234", "q=abc", "q=-0",
                             "q=.5", "q=1.0001"}) {
    auto ranges = parse_accept(OciIndex + ";" + weight);
    REQUIRE(ranges.size() == 1);
    CHECK(ranges[0].quality == 1000);
  }
  for (const char *weight : {"q=0", "q=0.", "q=0.0", "q=0.000"}) {
    auto ranges = parse_accept(OciIndex + ";" + weight);
    REQUIRE(ranges.size() == 1);
    CHECK(ranges[0].quality == 0);
  }
  CHECK(parse_accept(OciIndex + ";q=0.001")[0].quality == 1);
  CHECK(parse_accept(OciIndex + ";q=1.")[0].quality == 1000);
}

TEST_CASE("acceptable allows every type without Accept") {
  CHECK(accepts("", OciIndex));
  CHECK(accepts(" , ", OciIndex));
}

TEST_CASE("acceptable matches exact types and wildcards") {
  CHECK(accepts(OciIndex, OciIndex));
  CHECK(accepts("*/*", OciIndex));
  CHECK(accepts("application/*", OciIndex));
  CHECK_FALSE(accepts("text/*", OciIndex));
  CHECK_FALSE(accepts(Schema2, OciIndex));
  CHECK_FALSE(accepts("application/vnd.oci.image.index", OciIndex));
}

TEST_CASE("acceptable ignores parameters and case on both sides") {
  CHECK(accepts(OciIndex, OciIndex + "; charset=utf-8"));
  CHECK(accepts(OciIndex + "; charset=utf-8", OciIndex));
  CHECK(accepts("Application/VND.OCI.IMAGE.INDEX.V1+JSON", OciIndex));
  CHECK(accepts(OciIndex, "application/VND.oci.image.index.v1+json"));
}

TEST_CASE("acceptable rejects a type with q=0") {
  CHECK_FALSE(accepts(OciIndex + ";q=0, " + Schema2, OciIndex));
  CHECK(accepts(OciIndex + ";q=0, " + Schema2, Schema2));
  CHECK_FALSE(accepts(OciIndex + "; q=0.000", OciIndex));
  CHECK(accepts(OciIndex + "; q=0.001", OciIndex));
}

TEST_CASE("acceptable lets the most specific range decide") {
  // An excluded type stays excluded under a wildcard.
  CHECK_FALSE(accepts(OciIndex + ";q=0, */*", OciIndex));
  CHECK(accepts(OciIndex + ";q=0, */*", Schema2));
  // A listed type is allowed although wildcards are excluded.
  CHECK(accepts("*/*;q=0, " + OciIndex, OciIndex));
  CHECK_FALSE(accepts("*/*;q=0, " + OciIndex, Schema2));
  CHECK_FALSE(accepts("application/*;q=0, */*", OciIndex));
  CHECK(accepts("application/*;q=0, */*", "text/plain"));
  CHECK(accepts("application/*, */*;q=0", OciIndex));
}

TEST_CASE("is_manifest_media_type knows the manifest types") {
  for (const char *type :
       {"application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws"}) {
    CHECK(is_manifest_media_type(type));
  }
  for (const char *type :
       {"text/html", "application/json", "application/octet-stream", ""}) {
    CHECK_FALSE(is_manifest_media_type(type));
  }
}

TEST_CASE("check_manifest_media_type accepts a matching mediaType") {
  std::string body =
      R"({"schemaVersion":2,"mediaType":")" + OciIndex + R"(","manifests":[]})";
  auto checked = check_manifest_media_type(OciIndex, body);
  REQUIRE(checked);
  CHECK(*checked == OciIndex);

  checked = check_manifest_media_type(OciIndex + "; charset=utf-8", body);
  REQUIRE(checked);
  CHECK(*checked == OciIndex);
}

TEST_CASE("check_manifest_media_type accepts a body without mediaType") {
  std::string body = R"({"schemaVersion":2,"config":{},"layers":[]})";
  auto checked = check_manifest_media_type("Application/VND.OCI.Image."
                                           "Manifest.v1+JSON",
                                           body);
  REQUIRE(checked);
  CHECK(*checked == OciManifest);

  checked = check_manifest_media_type(Schema1SignedMediaType,
                                      R"({"schemaVersion":1,"fsLayers":[]})");
  REQUIRE(checked);
  CHECK(*checked == Schema1SignedMediaType);
}

TEST_CASE("check_manifest_media_type rejects a type the body contradicts") {
  // An image manifest without mediaType, as umoci writes them, served as an
  // index, and the reverse.
  std::string image = R"({"schemaVersion":2,"config":{},"layers":[]})";
  auto checked = check_manifest_media_type(OciIndex, image);
  REQUIRE_FALSE(checked);
  CHECK(checked.error().message ==
        "the manifest has no manifests list, so it is not a " +
            std::string(OciIndex));

  std::string index = R"({"schemaVersion":2,"manifests":[]})";
  checked = check_manifest_media_type(OciManifest, index);
  REQUIRE_FALSE(checked);
  CHECK(checked.error().message ==
        "the manifest has no config object, so it is not a " +
            std::string(OciManifest));

  checked = check_manifest_media_type(
      OciIndex, R"({"schemaVersion":2,"manifests":[],"config":{}})");
  CHECK_FALSE(checked);
  checked = check_manifest_media_type(
      OciManifest, R"({"schemaVersion":1,"config":{},"layers":[]})");
  CHECK_FALSE(checked);
  checked = check_manifest_media_type(Schema1SignedMediaType, image);
  CHECK_FALSE(checked);
}

TEST_CASE("check_manifest_media_type needs mediaType for Docker types") {
  auto checked = check_manifest_media_type(
      "application/vnd.docker.distribution.manifest.v2+json",
      R"({"schemaVersion":2,"config":{},"layers":[]})");
  REQUIRE_FALSE(checked);
  CHECK(checked.error().message.find("needs a mediaType field") !=
        std::string::npos);

  checked = check_manifest_media_type(
      "application/vnd.docker.distribution.manifest.v2+json",
      R"({"schemaVersion":2,"mediaType":"application/vnd.docker.)"
      R"(distribution.manifest.v2+json","config":{},"layers":[]})");
  CHECK(checked);
}

TEST_CASE("check_manifest_media_type rejects a type that is no manifest") {
  std::string body = R"({"schemaVersion":2,"mediaType":")" + OciIndex + R"("})";
  for (const char *type :
       {"text/html", "application/json", "application/octet-stream"}) {
    auto checked = check_manifest_media_type(type, body);
    REQUIRE_FALSE(checked);
    CHECK(checked.error().code == ErrorCode::Invalid);
    CHECK(checked.error().message.find(type) != std::string::npos);
  }
}

TEST_CASE("check_manifest_media_type rejects a differing mediaType") {
  std::string body = R"({"schemaVersion":2,"mediaType":")" + OciIndex + R"("})";
  auto checked = check_manifest_media_type(Schema2, body);
  REQUIRE_FALSE(checked);
  CHECK(checked.error().code == ErrorCode::Invalid);
  CHECK(checked.error().message.find(Schema2) != std::string::npos);
  CHECK(checked.error().message.find(OciIndex) != std::string::npos);
}

TEST_CASE("check_manifest_media_type rejects bodies that are no manifest") {
  for (const char *body :
       {"<html></html>", "", "[]", "\"text\"", R"({"mediaType":2})"}) {
    auto checked = check_manifest_media_type(OciIndex, body);
    CHECK_FALSE(checked);
  }
}
