// Parsing of `WWW-Authenticate` challenges (RFC 9110 section 11.6.1).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/error.h"

namespace gatecache::upstream {

// One challenge: an auth scheme with either a token68 or parameters.
struct AuthChallenge {
  std::string scheme;  // Lower case: "bearer", "basic".
  std::string token68; // Empty unless the challenge carries a token68.
  // Parameters in arrival order, names in lower case, values unquoted.
  std::vector<std::pair<std::string, std::string>> params;

  // Returns the value of parameter `name` (lower case), or nullopt.
  std::optional<std::string> param(std::string_view name) const;
};

// Parses one `WWW-Authenticate` field value, which may hold several
// comma-separated challenges. Quoted strings may contain escaped
// characters and commas. Returns `ErrorCode::Invalid` with the byte offset
// on a syntax error.
[[nodiscard]] Result<std::vector<AuthChallenge>>
parse_challenges(std::string_view value);

// The parameters of the token flow of the Docker registry token
// specification: GET `realm`?service=...&scope=... returns a token.
struct BearerChallenge {
  std::string realm;   // Absolute URL of the token endpoint.
  std::string service; // Empty when the challenge has none.
  std::string scope;   // Space-separated scopes; empty when absent.
};

// Returns the first Bearer challenge with a `realm` among `challenges`, or
// nullopt when there is none (for example only Basic).
std::optional<BearerChallenge>
find_bearer_challenge(const std::vector<AuthChallenge> &challenges);

} // namespace gatecache::upstream
