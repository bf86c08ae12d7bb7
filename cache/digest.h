// Content digests as the OCI image specification defines them:
// `algorithm ":" encoded`, with sha256 (64 lower-case hex) and sha512 (128
// lower-case hex) as the registered algorithms.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/error.h"

namespace gatecache::cache {

enum class DigestAlgorithm { Sha256, Sha512 };

// Returns "sha256" or "sha512".
const char *algorithm_name(DigestAlgorithm algorithm);

// Returns the length in hex characters of a digest of `algorithm`: 64 or 128.
size_t hex_length(DigestAlgorithm algorithm);

struct Digest {
  DigestAlgorithm algorithm = DigestAlgorithm::Sha256;
  std::string hex; // Lower-case hex of the hash.

  // Parses "sha256:<64 hex>" or "sha512:<128 hex>". Upper-case hex, other
  // algorithms, a missing colon and wrong lengths are `Invalid`, with a
  // message that quotes at most the first 80 bytes of `text`.
  static Result<Digest> parse(std::string_view text);

  std::string str() const; // "sha256:<hex>".
  const char *algorithm_name() const;
  bool operator==(const Digest &) const = default;
};

// Hash functor, for `std::unordered_map<Digest, ...>`.
struct DigestHash {
  size_t operator()(const Digest &digest) const noexcept;
};

// Incremental hash for one digest algorithm (OpenSSL EVP). Out of memory
// inside OpenSSL ends the process, as every other allocation failure does.
class Hasher {
public:
  explicit Hasher(DigestAlgorithm algorithm);
  ~Hasher();
  Hasher(const Hasher &) = delete;
  Hasher &operator=(const Hasher &) = delete;

  // Precondition: `finish()` has not been called.
  void update(const void *data, size_t size);
  // Ends the hash and returns it. Call once.
  Digest finish();

private:
  DigestAlgorithm algorithm_;
  void *context_; // EVP_MD_CTX, opaque to keep OpenSSL out of this header.
  bool finished_ = false;
};

// Returns the digest of `bytes` with `algorithm`.
Digest digest_of(std::string_view bytes,
                 DigestAlgorithm algorithm = DigestAlgorithm::Sha256);

} // namespace gatecache::cache

template <> struct std::hash<gatecache::cache::Digest> {
  size_t operator()(const gatecache::cache::Digest &digest) const noexcept {
    return gatecache::cache::DigestHash{}(digest);
  }
};
