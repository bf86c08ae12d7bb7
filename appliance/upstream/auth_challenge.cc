#include "appliance/upstream/auth_challenge.h"

#include <cctype>

namespace gatecache::upstream {

namespace {

// tchar of RFC 9110 section 5.6.2.
bool is_tchar(char c) {
  if (std::isalnum(static_cast<unsigned char>(c))) {
    return true;
  }
  switch (c) {
  case '!':
  case '#':
  case '$':
  case '%':
  case '&':
  case '\'':
  case '*':
  case '+':
  case '-':
  case '.':
  case '^':
  case '_':
  case '`':
  case '|':
  case '~':
    return true;
  default:
    return false;
  }
}

// token68 characters of RFC 9110 section 11.2, before the trailing '='s.
bool is_token68_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' ||
         c == '_' || c == '~' || c == '+' || c == '/';
}

std::string to_lower(std::string_view text) {
  std::string out(text);
  for (char &c : out) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

class ChallengeParser {
public:
  explicit ChallengeParser(std::string_view text) : text_(text) {}

  Result<std::vector<AuthChallenge>> parse() {
    std::vector<AuthChallenge> challenges;
    while (true) {
      skip_list_separators();
      if (at_end()) {
        break;
      }
      std::string_view scheme = read_token();
      if (scheme.empty()) {
        return syntax_error("expected an auth scheme");
      }
      AuthChallenge challenge;
      challenge.scheme = to_lower(scheme);
      if (!at_end() && !is_space(peek()) && peek() != ',') {
        return syntax_error("expected a space after the auth scheme");
      }
      skip_spaces();
      if (try_read_token68(challenge)) {
        challenges.push_back(std::move(challenge));
        continue;
      }
      if (auto params = read_params(challenge); !params) {
        return tl::unexpected(params.error());
      }
      challenges.push_back(std::move(challenge));
    }
    return challenges;
  }

private:
  bool at_end() const { return pos_ >= text_.size(); }

  char peek() const { return text_[pos_]; }

  static bool is_space(char c) { return c == ' ' || c == '\t'; }

  void skip_spaces() {
    while (!at_end() && is_space(peek())) {
      ++pos_;
    }
  }

  void skip_list_separators() {
    while (!at_end() && (is_space(peek()) || peek() == ',')) {
      ++pos_;
    }
  }

  std::string_view read_token() {
    size_t start = pos_;
    while (!at_end() && is_tchar(peek())) {
      ++pos_;
    }
    return text_.substr(start, pos_ - start);
  }

  // Reads a token68 when the text at the cursor is one whole list element,
  // as in "Basic dXNlcjpwYXNz==". A parameter ("realm=x") is not one
  // because a value follows its '='.
  bool try_read_token68(AuthChallenge &challenge) {
    size_t end = pos_;
    while (end < text_.size() && is_token68_char(text_[end])) {
      ++end;
    }
    if (end == pos_) {
      return false;
    }
    while (end < text_.size() && text_[end] == '=') {
      ++end;
    }
    size_t after = end;
    while (after < text_.size() && is_space(text_[after])) {
      ++after;
    }
    if (after < text_.size() && text_[after] != ',') {
      return false;
    }
    challenge.token68 = std::string(text_.substr(pos_, end - pos_));
    pos_ = after;
    return true;
  }

  Result<std::string> read_quoted_string() {
    std::string value;
    ++pos_;
    while (!at_end()) {
      char c = text_[pos_++];
      if (c == '"') {
        return value;
      }
      if (c == '\\') {
        if (at_end()) {
          break;
        }
        c = text_[pos_++];
      }
      value.push_back(c);
    }
    return syntax_error("unterminated quoted string");
  }

  // Reads `#auth-param` until the next challenge starts: a token that is not
  // followed by '=' is the next challenge's scheme.
  Result<void> read_params(AuthChallenge &challenge) {
    while (true) {
      skip_list_separators();
      if (at_end()) {
        return {};
      }
      size_t start = pos_;
      std::string_view name = read_token();
      if (name.empty()) {
        return syntax_error("expected a parameter name");
      }
      skip_spaces();
      if (at_end() || peek() != '=') {
        pos_ = start;
        return {};
      }
      ++pos_;
      skip_spaces();
      std::string value;
      if (!at_end() && peek() == '"') {
        auto quoted = read_quoted_string();
        if (!quoted) {
          return tl::unexpected(quoted.error());
        }
        value = std::move(*quoted);
      } else {
        value = std::string(read_token());
        if (value.empty()) {
          return syntax_error("expected a parameter value");
        }
      }
      challenge.params.emplace_back(to_lower(name), std::move(value));
      skip_spaces();
      if (!at_end() && peek() != ',') {
        return syntax_error("expected ',' after a parameter");
      }
    }
  }

  tl::unexpected<Error> syntax_error(const char *what) const {
    return fail(ErrorCode::Invalid, "invalid WWW-Authenticate value at byte " +
                                        std::to_string(pos_) + ": " + what);
  }

  std::string_view text_;
  size_t pos_ = 0;
};

} // namespace

std::optional<std::string> AuthChallenge::param(std::string_view name) const {
  for (const auto &[key, value] : params) {
    if (key == name) {
      return value;
    }
  }
  return std::nullopt;
}

Result<std::vector<AuthChallenge>> parse_challenges(std::string_view value) {
  return ChallengeParser(value).parse();
}

std::optional<BearerChallenge>
find_bearer_challenge(const std::vector<AuthChallenge> &challenges) {
  for (const AuthChallenge &challenge : challenges) {
    if (challenge.scheme != "bearer") {
      continue;
    }
    std::optional<std::string> realm = challenge.param("realm");
    if (!realm || realm->empty()) {
      continue;
    }
    BearerChallenge bearer;
    bearer.realm = std::move(*realm);
    bearer.service = challenge.param("service").value_or("");
    bearer.scope = challenge.param("scope").value_or("");
    return bearer;
  }
  return std::nullopt;
}

} // namespace gatecache::upstream
