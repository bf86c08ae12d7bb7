// The name, tag and digest grammar of the OCI distribution specification,
// shared by request routing and image references in prewarm sets.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "common/error.h"

namespace gatecache::registry {

inline constexpr size_t MaxRepositoryNameLength = 255;
inline constexpr size_t MaxTagLength = 128;

// Each returns `Invalid` with a message that quotes the value (cut and
// with control characters escaped) and the rule it breaks.

// Components matching [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*, joined by '/',
// at most `MaxRepositoryNameLength` characters.
Result<void> check_repository_name(std::string_view name);

// [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}. A tag shaped like "sha256-<hex>"
// (the referrers tag schema) is a valid tag.
Result<void> check_tag(std::string_view tag);

// The digests the cache can verify: sha256 with 64 and sha512 with 128
// lower-case hex digits, as `cache::Digest::parse()` accepts them.
Result<void> check_digest(std::string_view digest);

// `text` cut to 128 bytes, with control characters written as \xNN, for
// echoing client input in error messages.
std::string echo_value(std::string_view text);

} // namespace gatecache::registry
