#include "cache/digest.h"

#include <algorithm>
#include <cstddef>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>

#include <catch2/catch.hpp>

#ifndef GATECACHE_FIXTURES_DIR
#error "GATECACHE_FIXTURES_DIR must name tests/fixtures/manifests"
#endif

namespace gatecache::cache {
namespace {

// Reads a whole fixture file as bytes, or returns nothing when it cannot be
// opened, so the test reports the path instead of hashing an empty string.
std::optional<std::string> read_fixture(const std::string &name) {
  std::ifstream in(std::string(GATECACHE_FIXTURES_DIR) + "/" + name,
                   std::ios::binary);
  if (!in) {
    return std::nullopt;
  }
  return std::string(std::istreambuf_iterator<char>(in),
                     std::istreambuf_iterator<char>());
}

struct ByteExactFixture {
  const char *file;
  const char *digest;
  size_t size;
};

// The registry bodies whose sha256 is the digest the registry announced,
// as tests/fixtures/manifests/README.md lists them.
const ByteExactFixture ByteExactFixtures[] = {
    {"docker-schema2-manifest-mcr-dotnet-runtime-linux-amd64.json",
     "sha256:2dfb924c56bcd4686574471abdb42134a53e9179947b1c598639f56d97161fdd",
     1160},
    {"oci-artifact-with-artifacttype-and-subject.json",
     "sha256:30cc0c708132298dd05b03e22eab4ecf99aa0ed0ce9c4904c2b5895707381576",
     616},
    {"oci-referrers-index-artifacttype.json",
     "sha256:70a9aadde0b56e4dc849ae4436bebcf019726539bf68143af937e3ab556c5234",
     543},
};

TEST_CASE("digest of byte-exact fixtures matches registry", "[cache][digest]") {
  for (const auto &fixture : ByteExactFixtures) {
    INFO("fixture " << fixture.file);
    auto bytes = read_fixture(fixture.file);
    REQUIRE(bytes);
    CHECK(bytes->size() == fixture.size);
    CHECK(digest_of(*bytes).str() == fixture.digest);
  }
}

TEST_CASE("digest of fixtures agrees with hasher", "[cache][digest]") {
  // Feeding the bytes in odd-sized pieces must give the one-shot digest, as
  // a download hashed on the way in does.
  for (const auto &fixture : ByteExactFixtures) {
    INFO("fixture " << fixture.file);
    auto bytes = read_fixture(fixture.file);
    REQUIRE(bytes);
    Hasher hasher(DigestAlgorithm::Sha256);
    for (size_t offset = 0; offset < bytes->size(); offset += 7) {
      size_t length = std::min<size_t>(7, bytes->size() - offset);
      hasher.update(bytes->data() + offset, length);
    }
    CHECK(hasher.finish().str() == fixture.digest);
  }
}

} // namespace
} // namespace gatecache::cache
