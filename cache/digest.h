// Content digests as the OCI image specification defines them:
// `algorithm ":" encoded`, with sha256 (64 lower-case hex) and sha512 (128
// lower-case hex) as the registered algorithms.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/error.h"

namespace gatecache::cache {

enum class DigestAlgorithm { Sha256, Sha512 };

struct Digest {
  DigestAlgorithm algorithm = DigestAlgorithm::Sha256;
  std::string hex; // Lower-case hex of the hash.

  // Parses "sha256:<64 hex>" or "sha512:<128 hex>". Upper-case hex, other
  // algorithms and wrong lengths are `Invalid`.
  static Result<Digest> parse(std::string_view text);

  std::string str() const; // "sha256:<hex>".
  const char *algorithm_name() const;
  bool operator==(const Digest &) const = default;
};

// Incremental hash for one digest algorithm (OpenSSL EVP).
class Hasher {
public:
  explicit Hasher(DigestAlgorithm algorithm);
  ~Hasher();
  Hasher(const Hasher &) = delete;
  Hasher &operator=(const Hasher &) = delete;

  void update(const void *data, size_t size);
  // Ends the hash and returns it. Call once.
  Digest finish();

private:
  DigestAlgorithm algorithm_;
  void *context_; // EVP_MD_CTX, opaque to keep OpenSSL out of this header.
};

// Returns the digest of `bytes` with `algorithm`.
Digest digest_of(std::string_view bytes,
                 DigestAlgorithm algorithm = DigestAlgorithm::Sha256);

} // namespace gatecache::cache
