#include "cache/digest.h"

#include <string>
#include <unordered_set>

#include <catch2/catch.hpp>

namespace gatecache::cache {
namespace {

const std::string EmptySha256 =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const std::string AbcSha256 =
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
const std::string AbcSha512 =
    "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
    "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f";
const std::string EmptySha512 =
    "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
    "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e";

TEST_CASE("digest parser accepts valid digests", "[cache][digest]") {
  struct Case {
    std::string text;
    DigestAlgorithm algorithm;
    std::string hex;
  };

  const Case cases[] = {
      {"sha256:" + AbcSha256, DigestAlgorithm::Sha256, AbcSha256},
      {"sha256:" + EmptySha256, DigestAlgorithm::Sha256, EmptySha256},
      {"sha512:" + AbcSha512, DigestAlgorithm::Sha512, AbcSha512},
      {"sha256:" + std::string(64, '0'), DigestAlgorithm::Sha256,
       std::string(64, '0')},
  };
  for (const auto &c : cases) {
    INFO("digest " << c.text);
    auto digest = Digest::parse(c.text);
    REQUIRE(digest);
    CHECK(digest->algorithm == c.algorithm);
    CHECK(digest->hex == c.hex);
    CHECK(digest->str() == c.text);
  }
}

TEST_CASE("digest parser rejects malformed digests", "[cache][digest]") {
  std::string upper = AbcSha256;
  upper[0] = 'B';
  const std::string cases[] = {
      "sha256:" + upper,                          // Upper-case hex.
      "SHA256:" + AbcSha256,                      // Upper-case algorithm.
      "sha256:" + AbcSha256.substr(1),            // 63 characters.
      "sha256:" + AbcSha256 + "0",                // 65 characters.
      "sha256:" + AbcSha512,                      // sha512 length for sha256.
      "sha512:" + AbcSha256,                      // sha256 length for sha512.
      "md5:d41d8cd98f00b204e9800998ecf8427e",     // Unknown algorithm.
      "sha384:" + std::string(96, 'a'),           // Unregistered in OCI.
      "sha256" + AbcSha256,                       // Missing colon.
      AbcSha256,                                  // Bare hex.
      "",                                         // Empty.
      "sha256:",                                  // Empty hex.
      ":" + AbcSha256,                            // Empty algorithm.
      "sha256:" + std::string(64, 'g'),           // Not hex.
      " sha256:" + AbcSha256,                     // Leading space.
      "sha256:" + AbcSha256.substr(0, 63) + '\0', // NUL byte.
      "sha256::" + AbcSha256.substr(1),           // Second colon.
  };
  for (const auto &text : cases) {
    INFO("digest '" << text << "'");
    auto digest = Digest::parse(text);
    REQUIRE_FALSE(digest);
    CHECK(digest.error().code == ErrorCode::Invalid);
  }
}

TEST_CASE("digest error quotes bounded input", "[cache][digest]") {
  std::string hostile(100000, 'x');
  hostile[5] = '\n';
  auto digest = Digest::parse(hostile);
  REQUIRE_FALSE(digest);
  CHECK(digest.error().message.size() < 300);
  CHECK(digest.error().message.find('\n') == std::string::npos);
  CHECK(digest.error().message.find("100000 bytes") != std::string::npos);
}

TEST_CASE("hasher matches known vectors", "[cache][digest]") {
  struct Case {
    std::string input;
    DigestAlgorithm algorithm;
    std::string hex;
  };

  const Case cases[] = {
      {"", DigestAlgorithm::Sha256, EmptySha256},
      {"abc", DigestAlgorithm::Sha256, AbcSha256},
      {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
       DigestAlgorithm::Sha256,
       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
      {std::string(1000000, 'a'), DigestAlgorithm::Sha256,
       "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
      {"", DigestAlgorithm::Sha512, EmptySha512},
      {"abc", DigestAlgorithm::Sha512, AbcSha512},
  };
  for (const auto &c : cases) {
    INFO("input of " << c.input.size() << " bytes");
    Digest digest = digest_of(c.input, c.algorithm);
    CHECK(digest.algorithm == c.algorithm);
    CHECK(digest.hex == c.hex);
  }
}

TEST_CASE("hasher combines pieces like one update", "[cache][digest]") {
  std::string input(10007, '\0');
  for (size_t i = 0; i < input.size(); ++i) {
    input[i] = static_cast<char>(i * 31 + 7);
  }
  Hasher hasher(DigestAlgorithm::Sha256);
  for (size_t offset = 0; offset < input.size(); offset += 1000) {
    size_t length = std::min<size_t>(1000, input.size() - offset);
    hasher.update(input.data() + offset, length);
  }
  hasher.update(nullptr, 0);
  CHECK(hasher.finish() == digest_of(input));
}

TEST_CASE("digest hash tells algorithms apart", "[cache][digest]") {
  std::unordered_set<Digest> digests;
  digests.insert(Digest{DigestAlgorithm::Sha256, AbcSha256});
  digests.insert(Digest{DigestAlgorithm::Sha256, EmptySha256});
  digests.insert(Digest{DigestAlgorithm::Sha256, AbcSha256});
  CHECK(digests.size() == 2);
  CHECK(digests.count(Digest{DigestAlgorithm::Sha256, AbcSha256}) == 1);
  CHECK(digests.count(Digest{DigestAlgorithm::Sha512, AbcSha256}) == 0);
}

} // namespace
} // namespace gatecache::cache
