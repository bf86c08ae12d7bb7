// Reading rate-limit headers: a lenient reader of RFC 8941 structured
// field lists and the interpretation of each header form.
#include <string>
#include <utility>
#include <vector>

#include "appliance/scheduler/budget.h"
#include "common/ascii.h"

namespace gatecache::scheduler {

namespace {

// --- A lenient reader of RFC 8941 structured field lists ---

// A bare item of a structured field. Decimals and byte sequences are read
// as `Other`, because no rate-limit field uses them for a value read here.
struct BareItem {
  enum class Kind {
    Boolean,
    Integer,
    String,
    Token,
    Other
  } kind = Kind::Boolean;
  int64_t integer = 0;
  std::string text; // String or token contents.
};

// A list member or a dictionary member with its parameters. `key` is set
// only for a dictionary member written as `key=value` or a bare `key`.
struct Member {
  std::string key;
  BareItem value;
  std::vector<std::pair<std::string, BareItem>> params;

  const BareItem *param(std::string_view name) const {
    for (const auto &[param_name, item] : params) {
      if (param_name == name) {
        return &item;
      }
    }
    return nullptr;
  }

  std::optional<int64_t> integer_param(std::string_view name) const {
    const BareItem *item = param(name);
    if (item == nullptr || item->kind != BareItem::Kind::Integer) {
      return std::nullopt;
    }
    return item->integer;
  }
};

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool is_alpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

// Characters allowed after the first one of a token (RFC 8941 section
// 3.3.4: tchar, ":" and "/").
bool is_token_char(char c) {
  if (is_alpha(c) || is_digit(c)) {
    return true;
  }
  std::string_view extra = "!#$%&'*+-.^_`|~:/";
  return extra.find(c) != std::string_view::npos;
}

// Characters allowed after the first one of a key (RFC 8941 section
// 3.1.2). Upper case, which RFC 8941 forbids, is accepted and folded.
bool is_key_char(char c) {
  return is_alpha(c) || is_digit(c) || c == '_' || c == '-' || c == '.' ||
         c == '*';
}

class FieldReader {
public:
  explicit FieldReader(std::string_view text) : text_(text) {}

  // Reads every member of a list or dictionary. A malformed member is
  // skipped up to the next comma outside a string, so one bad member does
  // not hide the others.
  std::vector<Member> read_members() {
    std::vector<Member> members;
    while (true) {
      skip_spaces();
      if (at_end()) {
        break;
      }
      Member member;
      bool ok = read_member(member);
      skip_spaces();
      if (ok && (at_end() || peek() == ',')) {
        members.push_back(std::move(member));
      } else {
        skip_to_comma();
      }
      if (at_end()) {
        break;
      }
      ++pos_; // The comma.
    }
    return members;
  }

private:
  bool at_end() const { return pos_ >= text_.size(); }

  char peek() const { return text_[pos_]; }

  void skip_spaces() {
    while (!at_end() && (peek() == ' ' || peek() == '\t')) {
      ++pos_;
    }
  }

  void skip_to_comma() {
    bool in_string = false;
    while (!at_end()) {
      char c = peek();
      if (in_string && c == '\\') {
        pos_ += 2;
        continue;
      }
      if (c == '"') {
        in_string = !in_string;
      } else if (c == ',' && !in_string) {
        return;
      }
      ++pos_;
    }
  }

  bool read_member(Member &member) {
    if (!at_end() && (is_alpha(peek()) || peek() == '*')) {
      // A token, or a dictionary key when "=" or ";" follows directly.
      std::string word = read_while(is_token_char);
      if (!at_end() && peek() == '=') {
        ++pos_;
        member.key = lower(word);
        if (!read_bare_item(member.value)) {
          return false;
        }
      } else {
        member.value.kind = BareItem::Kind::Token;
        member.value.text = std::move(word);
      }
    } else if (!read_bare_item(member.value)) {
      return false;
    }
    return read_params(member.params);
  }

  bool read_params(std::vector<std::pair<std::string, BareItem>> &params) {
    while (!at_end() && peek() == ';') {
      ++pos_;
      skip_spaces();
      std::string key = lower(read_while(is_key_char));
      if (key.empty() || !(is_alpha(key[0]) || key[0] == '*')) {
        return false;
      }
      BareItem item; // A parameter without a value is Boolean true.
      if (!at_end() && peek() == '=') {
        ++pos_;
        if (!read_bare_item(item)) {
          return false;
        }
      }
      params.emplace_back(std::move(key), std::move(item));
    }
    return true;
  }

  bool read_bare_item(BareItem &item) {
    if (at_end()) {
      return false;
    }
    char c = peek();
    if (c == '"') {
      item.kind = BareItem::Kind::String;
      return read_string(item.text);
    }
    if (c == '-' || is_digit(c)) {
      return read_number(item);
    }
    if (is_alpha(c) || c == '*') {
      item.kind = BareItem::Kind::Token;
      item.text = read_while(is_token_char);
      return true;
    }
    if (c == ':') {
      return read_byte_sequence(item);
    }
    if (c == '?') {
      ++pos_;
      if (at_end() || (peek() != '0' && peek() != '1')) {
        return false;
      }
      ++pos_;
      item.kind = BareItem::Kind::Boolean;
      return true;
    }
    return false;
  }

  // RFC 8941 section 3.3.1: at most 15 digits. A decimal point makes the
  // item a decimal, which is kept as `Other`.
  bool read_number(BareItem &item) {
    bool negative = peek() == '-';
    if (negative) {
      ++pos_;
    }
    std::string digits = read_while(is_digit);
    if (digits.empty() || digits.size() > 15) {
      return false;
    }
    if (!at_end() && peek() == '.') {
      ++pos_;
      if (read_while(is_digit).empty()) {
        return false;
      }
      item.kind = BareItem::Kind::Other;
      return true;
    }
    int64_t value = 0;
    for (char d : digits) {
      value = value * 10 + (d - '0');
    }
    item.kind = BareItem::Kind::Integer;
    item.integer = negative ? -value : value;
    return true;
  }

  // RFC 8941 section 3.3.5: base64 between colons, such as a partition
  // key `pk=:YWJj:`.
  bool read_byte_sequence(BareItem &item) {
    ++pos_; // The opening colon.
    while (!at_end() && peek() != ':') {
      char c = peek();
      if (!(is_alpha(c) || is_digit(c) || c == '+' || c == '/' || c == '=')) {
        return false;
      }
      ++pos_;
    }
    if (at_end()) {
      return false;
    }
    ++pos_; // The closing colon.
    item.kind = BareItem::Kind::Other;
    return true;
  }

  bool read_string(std::string &out) {
    ++pos_; // The opening quote.
    while (!at_end()) {
      char c = peek();
      ++pos_;
      if (c == '"') {
        return true;
      }
      if (c == '\\') {
        if (at_end() || (peek() != '"' && peek() != '\\')) {
          return false;
        }
        out.push_back(peek());
        ++pos_;
        continue;
      }
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
        return false;
      }
      out.push_back(c);
    }
    return false; // No closing quote.
  }

  std::string read_while(bool (*accept)(char)) {
    size_t start = pos_;
    while (!at_end() && accept(peek())) {
      ++pos_;
    }
    return std::string(text_.substr(start, pos_ - start));
  }

  static std::string lower(std::string text) {
    for (char &c : text) {
      c = to_lower_ascii(c);
    }
    return text;
  }

  std::string_view text_;
  size_t pos_ = 0;
};

// --- Interpreting the rate-limit fields ---

// One quota policy: `100;w=3600` (older forms, no name) or
// `"default";q=100;w=3600` (newest form).
struct Policy {
  std::string name;
  uint64_t quota = 0;
  std::optional<double> window_s;
};

// One item of the newest `ratelimit` form: `"default";r=50;t=30`.
struct RemainingItem {
  std::string name;
  uint64_t remaining = 0;
  std::optional<double> reset_s;
};

// The joined value of every header named `name`, or nullopt when absent.
std::optional<std::string> joined_field(const front::HeaderList &headers,
                                        std::string_view name) {
  std::optional<std::string> value;
  for (const auto &[header_name, header_value] : headers) {
    if (!equals_ignoring_ascii_case(header_name, name)) {
      continue;
    }
    if (value) {
      value->append(", ");
      value->append(header_value);
    } else {
      value = header_value;
    }
  }
  return value;
}

std::vector<Member> read_field(const front::HeaderList &headers,
                               std::string_view name) {
  std::optional<std::string> value = joined_field(headers, name);
  if (!value) {
    return {};
  }
  return FieldReader(*value).read_members();
}

std::optional<uint64_t> as_count(const BareItem &item) {
  if (item.kind != BareItem::Kind::Integer || item.integer < 0) {
    return std::nullopt;
  }
  return static_cast<uint64_t>(item.integer);
}

std::optional<uint64_t> as_limit(const BareItem &item) {
  std::optional<uint64_t> count = as_count(item);
  if (!count || *count == 0) {
    return std::nullopt;
  }
  return count;
}

std::optional<double> as_window(std::optional<int64_t> seconds) {
  if (!seconds || *seconds <= 0) {
    return std::nullopt;
  }
  return static_cast<double>(*seconds);
}

std::optional<double> as_reset(std::optional<int64_t> seconds) {
  if (!seconds || *seconds < 0 ||
      static_cast<double>(*seconds) > MaxResetSeconds) {
    return std::nullopt;
  }
  return static_cast<double>(*seconds);
}

std::optional<double> as_reset(const BareItem &item) {
  if (item.kind != BareItem::Kind::Integer) {
    return std::nullopt;
  }
  return as_reset(std::optional<int64_t>(item.integer));
}

// The name of a newest-form member: a string or a token.
std::optional<std::string> member_name(const Member &member) {
  if (!member.key.empty()) {
    return std::nullopt;
  }
  if (member.value.kind != BareItem::Kind::String &&
      member.value.kind != BareItem::Kind::Token) {
    return std::nullopt;
  }
  return member.value.text;
}

std::vector<Policy> read_policies(const front::HeaderList &headers) {
  std::vector<Policy> policies;
  for (const Member &member : read_field(headers, "ratelimit-policy")) {
    Policy policy;
    policy.window_s = as_window(member.integer_param("w"));
    if (member.key.empty() && as_limit(member.value)) {
      policy.quota = *as_limit(member.value);
    } else if (std::optional<std::string> name = member_name(member)) {
      const BareItem *quota = member.param("q");
      if (quota == nullptr || !as_limit(*quota)) {
        continue;
      }
      // Quota units other than requests ("content-bytes", ...) do not
      // count the requests left.
      const BareItem *unit = member.param("qu");
      if (unit != nullptr && unit->text != "requests") {
        continue;
      }
      policy.name = std::move(*name);
      policy.quota = *as_limit(*quota);
    } else {
      continue;
    }
    policies.push_back(std::move(policy));
  }
  return policies;
}

// Docker Hub and the first IETF drafts: one field per value.
void read_separate_fields(const front::HeaderList &headers,
                          BudgetObservation &observation,
                          std::vector<Policy> &policies) {
  std::vector<Member> limit = read_field(headers, "ratelimit-limit");
  if (!limit.empty() && limit[0].key.empty()) {
    observation.limit = as_limit(limit[0].value);
    observation.window_s = as_window(limit[0].integer_param("w"));
    // Later members of the first drafts list the quota policies:
    // `ratelimit-limit: 10, 10;w=1, 1000;w=3600`.
    for (size_t i = 1; i < limit.size(); ++i) {
      std::optional<uint64_t> quota = as_limit(limit[i].value);
      if (quota && limit[i].key.empty()) {
        policies.push_back(
            {"", *quota, as_window(limit[i].integer_param("w"))});
      }
    }
  }

  std::vector<Member> remaining = read_field(headers, "ratelimit-remaining");
  if (!remaining.empty() && remaining[0].key.empty()) {
    observation.remaining = as_count(remaining[0].value);
  }

  std::vector<Member> reset = read_field(headers, "ratelimit-reset");
  if (!reset.empty() && reset[0].key.empty()) {
    observation.reset_s = as_reset(reset[0].value);
  }
}

// The structured dictionary form `ratelimit: limit=100, remaining=50,
// reset=30` and the newest list form `ratelimit: "default";r=50;t=30`.
void read_combined_field(const front::HeaderList &headers,
                         BudgetObservation &observation,
                         std::optional<RemainingItem> &lowest) {
  for (const Member &member : read_field(headers, "ratelimit")) {
    if (member.key == "limit") {
      if (std::optional<uint64_t> limit = as_limit(member.value)) {
        observation.limit = limit;
      }
    } else if (member.key == "remaining") {
      if (std::optional<uint64_t> remaining = as_count(member.value)) {
        observation.remaining = remaining;
      }
    } else if (member.key == "reset") {
      if (std::optional<double> reset = as_reset(member.value)) {
        observation.reset_s = reset;
      }
    } else if (std::optional<std::string> name = member_name(member)) {
      const BareItem *r = member.param("r");
      std::optional<uint64_t> remaining;
      if (r != nullptr) {
        remaining = as_count(*r);
      }
      if (!remaining) {
        continue;
      }
      if (!lowest || *remaining < lowest->remaining) {
        lowest = RemainingItem{std::move(*name), *remaining,
                               as_reset(member.integer_param("t"))};
      }
    }
  }
}

const Policy *find_policy(const std::vector<Policy> &policies,
                          const BudgetObservation &observation,
                          const std::optional<RemainingItem> &lowest) {
  for (const Policy &policy : policies) {
    if (lowest && !policy.name.empty() && policy.name == lowest->name) {
      return &policy;
    }
  }
  if (lowest) {
    // The newest form names its policy, so no other policy is taken.
    return nullptr;
  }
  for (const Policy &policy : policies) {
    if (observation.limit && policy.quota == *observation.limit) {
      return &policy;
    }
  }
  if (!observation.limit && !policies.empty()) {
    return &policies.front();
  }
  return nullptr;
}

} // namespace

std::optional<BudgetObservation>
parse_budget_headers(const front::HeaderList &headers) {
  BudgetObservation observation;
  std::vector<Policy> policies;
  read_separate_fields(headers, observation, policies);

  std::vector<Policy> policy_field = read_policies(headers);
  policies.insert(policies.end(), policy_field.begin(), policy_field.end());

  std::optional<RemainingItem> lowest;
  read_combined_field(headers, observation, lowest);
  if (lowest) {
    observation.remaining = lowest->remaining;
    if (lowest->reset_s) {
      observation.reset_s = lowest->reset_s;
    }
  }

  if (const Policy *policy = find_policy(policies, observation, lowest)) {
    if (!observation.limit || lowest) {
      observation.limit = policy->quota;
    }
    if (policy->window_s) {
      observation.window_s = policy->window_s;
    }
  }

  if (!observation.limit && !observation.remaining) {
    return std::nullopt;
  }
  return observation;
}

} // namespace gatecache::scheduler
