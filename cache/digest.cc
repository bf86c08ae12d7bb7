#include "cache/digest.h"

#include <array>
#include <cassert>
#include <cstdlib>

#include <openssl/err.h>
#include <openssl/evp.h>

#include "common/log.h"

namespace gatecache::cache {

namespace {

constexpr std::string_view Sha256Name = "sha256";
constexpr std::string_view Sha512Name = "sha512";

// Digests come from request paths and upstream headers, so an error message
// quotes a bounded, printable prefix of them.
constexpr size_t MaxQuotedBytes = 80;

std::string quote(std::string_view text) {
  std::string out = "'";
  size_t quoted_length = std::min(text.size(), MaxQuotedBytes);
  for (size_t i = 0; i < quoted_length; ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out += static_cast<char>(c);
      continue;
    }
    constexpr char Hex[] = "0123456789abcdef";
    out += "\\x";
    out += Hex[c >> 4];
    out += Hex[c & 0xf];
  }
  out += "'";
  if (quoted_length < text.size()) {
    out += "... (" + std::to_string(text.size()) + " bytes)";
  }
  return out;
}

bool is_lower_hex(std::string_view text) {
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}

[[noreturn]] void die_openssl(const char *what) {
  char buffer[256];
  ERR_error_string_n(ERR_get_error(), buffer, sizeof(buffer));
  GC_LOG(Cache, critical, "{} failed: {}", what, buffer);
  std::abort();
}

// Fetching the implementation once avoids the provider lookup and its lock
// that `EVP_sha256()` costs on every `EVP_DigestInit_ex` in OpenSSL 3.
const EVP_MD *message_digest(DigestAlgorithm algorithm) {
  static const EVP_MD *sha256 = EVP_MD_fetch(nullptr, "SHA2-256", nullptr);
  static const EVP_MD *sha512 = EVP_MD_fetch(nullptr, "SHA2-512", nullptr);
  const EVP_MD *md = algorithm == DigestAlgorithm::Sha256 ? sha256 : sha512;
  if (md == nullptr) {
    die_openssl("EVP_MD_fetch");
  }
  return md;
}

} // namespace

const char *algorithm_name(DigestAlgorithm algorithm) {
  return algorithm == DigestAlgorithm::Sha256 ? Sha256Name.data()
                                              : Sha512Name.data();
}

size_t hex_length(DigestAlgorithm algorithm) {
  return algorithm == DigestAlgorithm::Sha256 ? 64 : 128;
}

Result<Digest> Digest::parse(std::string_view text) {
  size_t colon = text.find(':');
  if (colon == std::string_view::npos) {
    return fail(ErrorCode::Invalid,
                "invalid digest " + quote(text) +
                    ": expected 'algorithm:hex', the colon is missing");
  }

  std::string_view name = text.substr(0, colon);
  std::string_view hex = text.substr(colon + 1);
  Digest digest;
  if (name == Sha256Name) {
    digest.algorithm = DigestAlgorithm::Sha256;
  } else if (name == Sha512Name) {
    digest.algorithm = DigestAlgorithm::Sha512;
  } else {
    return fail(ErrorCode::Invalid,
                "invalid digest " + quote(text) +
                    ": unsupported algorithm, expected sha256 or sha512");
  }

  size_t expected_length = hex_length(digest.algorithm);
  if (hex.size() != expected_length) {
    return fail(ErrorCode::Invalid,
                "invalid digest " + quote(text) + ": expected " +
                    std::to_string(expected_length) + " hex characters, got " +
                    std::to_string(hex.size()));
  }
  // The OCI image specification allows only lower-case hex for sha256 and
  // sha512, so an upper-case digest names nothing this store can hold.
  if (!is_lower_hex(hex)) {
    return fail(ErrorCode::Invalid, "invalid digest " + quote(text) +
                                        ": the hash must be lower-case hex");
  }

  digest.hex = hex;
  return digest;
}

std::string Digest::str() const {
  std::string out = cache::algorithm_name(algorithm);
  out += ':';
  out += hex;
  return out;
}

const char *Digest::algorithm_name() const {
  return cache::algorithm_name(algorithm);
}

size_t DigestHash::operator()(const Digest &digest) const noexcept {
  // The hex is already uniformly distributed, so its first 16 characters
  // are as good a hash as any.
  size_t value = 0;
  for (size_t i = 0; i < digest.hex.size() && i < 16; ++i) {
    char c = digest.hex[i];
    value =
        (value << 4) | static_cast<size_t>(c <= '9' ? c - '0' : c - 'a' + 10);
  }
  return value ^ static_cast<size_t>(digest.algorithm);
}

Hasher::Hasher(DigestAlgorithm algorithm)
    : algorithm_(algorithm), context_(EVP_MD_CTX_new()) {
  if (context_ == nullptr) {
    die_openssl("EVP_MD_CTX_new");
  }
  auto *context = static_cast<EVP_MD_CTX *>(context_);
  if (EVP_DigestInit_ex(context, message_digest(algorithm), nullptr) != 1) {
    die_openssl("EVP_DigestInit_ex");
  }
}

Hasher::~Hasher() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX *>(context_)); }

void Hasher::update(const void *data, size_t size) {
  assert(!finished_);
  if (size == 0) {
    return;
  }
  auto *context = static_cast<EVP_MD_CTX *>(context_);
  if (EVP_DigestUpdate(context, data, size) != 1) {
    die_openssl("EVP_DigestUpdate");
  }
}

Digest Hasher::finish() {
  assert(!finished_);
  finished_ = true;

  std::array<unsigned char, EVP_MAX_MD_SIZE> hash;
  unsigned int length = 0;
  auto *context = static_cast<EVP_MD_CTX *>(context_);
  if (EVP_DigestFinal_ex(context, hash.data(), &length) != 1) {
    die_openssl("EVP_DigestFinal_ex");
  }

  constexpr char Hex[] = "0123456789abcdef";
  Digest digest;
  digest.algorithm = algorithm_;
  digest.hex.resize(size_t{length} * 2);
  for (unsigned int i = 0; i < length; ++i) {
    digest.hex[2 * i] = Hex[hash[i] >> 4];
    digest.hex[2 * i + 1] = Hex[hash[i] & 0xf];
  }
  return digest;
}

Digest digest_of(std::string_view bytes, DigestAlgorithm algorithm) {
  Hasher hasher(algorithm);
  hasher.update(bytes.data(), bytes.size());
  return hasher.finish();
}

} // namespace gatecache::cache
