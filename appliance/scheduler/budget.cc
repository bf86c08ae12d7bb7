#include "appliance/scheduler/budget.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <ctime>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace gatecache::scheduler {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool is_alpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

// --- HTTP-date (RFC 9110 section 5.6.7) ---

constexpr std::array<std::string_view, 12> MonthNames = {
    "Jan", "Feb", "Mar", "Apr", "May", "Jun",
    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
constexpr std::array<std::string_view, 7> DayNames = {
    "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
constexpr std::array<std::string_view, 7> LongDayNames = {
    "Monday", "Tuesday",  "Wednesday", "Thursday",
    "Friday", "Saturday", "Sunday"};

// A cursor over an HTTP-date that reads fixed-width pieces.
class DateReader {
public:
  explicit DateReader(std::string_view text) : text_(text) {}

  bool literal(std::string_view expected) {
    if (text_.substr(pos_, expected.size()) != expected) {
      return false;
    }
    pos_ += expected.size();
    return true;
  }

  bool digits(size_t count, int &value) {
    if (pos_ + count > text_.size()) {
      return false;
    }
    value = 0;
    for (size_t i = 0; i < count; ++i) {
      char c = text_[pos_ + i];
      if (!is_digit(c)) {
        return false;
      }
      value = value * 10 + (c - '0');
    }
    pos_ += count;
    return true;
  }

  template <size_t N>
  bool one_of(const std::array<std::string_view, N> &names, int *index) {
    for (size_t i = 0; i < N; ++i) {
      // Long day names share their first three letters with short ones,
      // so a match must not be followed by more letters.
      std::string_view name = names[i];
      if (text_.substr(pos_, name.size()) == name &&
          (pos_ + name.size() >= text_.size() ||
           !is_alpha(text_[pos_ + name.size()]))) {
        pos_ += name.size();
        if (index != nullptr) {
          *index = static_cast<int>(i);
        }
        return true;
      }
    }
    return false;
  }

  // time-of-day = hour ":" minute ":" second, two digits each.
  bool time_of_day(std::tm &tm) {
    return digits(2, tm.tm_hour) && literal(":") && digits(2, tm.tm_min) &&
           literal(":") && digits(2, tm.tm_sec);
  }

  bool done() const { return pos_ == text_.size(); }

private:
  std::string_view text_;
  size_t pos_ = 0;
};

bool is_leap_year(int year) {
  return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

// Checks the ranges that timegm(3) would silently normalise.
bool valid_date(const std::tm &tm) {
  constexpr std::array<int, 12> DaysInMonth = {31, 28, 31, 30, 31, 30,
                                               31, 31, 30, 31, 30, 31};
  int year = tm.tm_year + 1900;
  int days = DaysInMonth[static_cast<size_t>(tm.tm_mon)];
  if (tm.tm_mon == 1 && is_leap_year(year)) {
    days = 29;
  }
  // A leap second (60) is allowed, as in IMF dates.
  return year >= 1970 && tm.tm_mday >= 1 && tm.tm_mday <= days &&
         tm.tm_hour <= 23 && tm.tm_min <= 59 && tm.tm_sec <= 60;
}

// IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT".
bool read_imf_fixdate(std::string_view text, std::tm &tm) {
  DateReader reader(text);
  int year = 0;
  if (!(reader.one_of(DayNames, nullptr) && reader.literal(", ") &&
        reader.digits(2, tm.tm_mday) && reader.literal(" ") &&
        reader.one_of(MonthNames, &tm.tm_mon) && reader.literal(" ") &&
        reader.digits(4, year) && reader.literal(" ") &&
        reader.time_of_day(tm) && reader.literal(" GMT") && reader.done())) {
    return false;
  }
  tm.tm_year = year - 1900;
  return true;
}

// Obsolete RFC 850 form: "Sunday, 06-Nov-94 08:49:37 GMT". RFC 9110 reads
// a two-digit year that would lie more than 50 years ahead as the
// previous century.
bool read_rfc850_date(std::string_view text, double now_unix, std::tm &tm) {
  DateReader reader(text);
  int short_year = 0;
  if (!(reader.one_of(LongDayNames, nullptr) && reader.literal(", ") &&
        reader.digits(2, tm.tm_mday) && reader.literal("-") &&
        reader.one_of(MonthNames, &tm.tm_mon) && reader.literal("-") &&
        reader.digits(2, short_year) && reader.literal(" ") &&
        reader.time_of_day(tm) && reader.literal(" GMT") && reader.done())) {
    return false;
  }
  std::time_t now = static_cast<std::time_t>(now_unix);
  std::tm now_tm{};
  gmtime_r(&now, &now_tm);
  int this_year = now_tm.tm_year + 1900;
  int year = this_year - this_year % 100 + short_year;
  if (year > this_year + 50) {
    year -= 100;
  }
  tm.tm_year = year - 1900;
  return true;
}

// Obsolete asctime form: "Sun Nov  6 08:49:37 1994".
bool read_asctime_date(std::string_view text, std::tm &tm) {
  DateReader reader(text);
  int year = 0;
  if (!(reader.one_of(DayNames, nullptr) && reader.literal(" ") &&
        reader.one_of(MonthNames, &tm.tm_mon) && reader.literal(" "))) {
    return false;
  }
  if (reader.literal(" ")) {
    if (!reader.digits(1, tm.tm_mday)) {
      return false;
    }
  } else if (!reader.digits(2, tm.tm_mday)) {
    return false;
  }
  if (!(reader.literal(" ") && reader.time_of_day(tm) && reader.literal(" ") &&
        reader.digits(4, year) && reader.done())) {
    return false;
  }
  tm.tm_year = year - 1900;
  return true;
}

std::optional<double> parse_http_date(std::string_view text, double now_unix) {
  std::tm tm{};
  if (!read_imf_fixdate(text, tm)) {
    tm = std::tm{};
    if (!read_rfc850_date(text, now_unix, tm)) {
      tm = std::tm{};
      if (!read_asctime_date(text, tm)) {
        return std::nullopt;
      }
    }
  }
  if (!valid_date(tm)) {
    return std::nullopt;
  }
  return static_cast<double>(timegm(&tm));
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) {
    text.remove_prefix(1);
  }
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) {
    text.remove_suffix(1);
  }
  return text;
}

// --- JSON members of BudgetState ---

bool read_time(const nlohmann::json &object, const char *name, double &out) {
  auto it = object.find(name);
  if (it == object.end() || !it->is_number()) {
    return false;
  }
  double value = it->get<double>();
  if (!std::isfinite(value) || value < 0) {
    return false;
  }
  out = value;
  return true;
}

bool read_count(const nlohmann::json &object, const char *name, uint64_t &out) {
  auto it = object.find(name);
  if (it == object.end() || !it->is_number_unsigned()) {
    return false;
  }
  out = it->get<uint64_t>();
  return true;
}

} // namespace

std::optional<double> parse_retry_after(std::string_view value,
                                        double now_unix) {
  value = trim(value);
  if (value.empty()) {
    return std::nullopt;
  }
  if (std::all_of(value.begin(), value.end(), is_digit)) {
    if (value.size() > 15) {
      return std::nullopt;
    }
    double seconds = 0;
    for (char c : value) {
      seconds = seconds * 10 + (c - '0');
    }
    if (seconds > MaxResetSeconds) {
      return std::nullopt;
    }
    return seconds;
  }
  std::optional<double> date = parse_http_date(value, now_unix);
  if (!date) {
    return std::nullopt;
  }
  double seconds = std::max(0.0, *date - now_unix);
  if (seconds > MaxResetSeconds) {
    return std::nullopt;
  }
  return seconds;
}

const char *to_string(BudgetState::Source source) {
  switch (source) {
  case BudgetState::Source::None:
    return "none";
  case BudgetState::Source::Config:
    return "config";
  case BudgetState::Source::Headers:
    return "headers";
  }
  return "none";
}

std::string BudgetState::to_json() const {
  nlohmann::json object = {
      {"version", 1},
      {"limit", limit},
      {"remaining", remaining},
      {"window_s", window_s},
      {"source", to_string(source)},
      {"observed_at", observed_at},
      {"reset_at", reset_at},
      {"blocked_until", blocked_until},
      {"spends", spends},
  };
  return object.dump();
}

std::optional<BudgetState> BudgetState::from_json(std::string_view text) {
  nlohmann::json object = nlohmann::json::parse(text, nullptr, false);
  if (object.is_discarded() || !object.is_object()) {
    return std::nullopt;
  }
  auto version = object.find("version");
  if (version == object.end() || !version->is_number_unsigned() ||
      version->get<uint64_t>() != 1) {
    return std::nullopt;
  }

  BudgetState state;
  if (!read_count(object, "limit", state.limit) ||
      !read_count(object, "remaining", state.remaining) ||
      !read_time(object, "window_s", state.window_s) ||
      !read_time(object, "observed_at", state.observed_at) ||
      !read_time(object, "reset_at", state.reset_at) ||
      !read_time(object, "blocked_until", state.blocked_until)) {
    return std::nullopt;
  }
  if (state.limit != 0 && state.remaining > state.limit) {
    return std::nullopt;
  }

  auto source = object.find("source");
  if (source == object.end() || !source->is_string()) {
    return std::nullopt;
  }
  const std::string &source_name = source->get_ref<const std::string &>();
  if (source_name == "none") {
    state.source = Source::None;
  } else if (source_name == "config") {
    state.source = Source::Config;
  } else if (source_name == "headers") {
    state.source = Source::Headers;
  } else {
    return std::nullopt;
  }

  auto spends = object.find("spends");
  if (spends == object.end() || !spends->is_array()) {
    return std::nullopt;
  }
  std::vector<double> times;
  times.reserve(spends->size());
  for (const nlohmann::json &spend : *spends) {
    if (!spend.is_number()) {
      return std::nullopt;
    }
    double time = spend.get<double>();
    if (!std::isfinite(time) || time < 0) {
      return std::nullopt;
    }
    times.push_back(time);
  }
  std::sort(times.begin(), times.end());
  size_t skip = times.size() > MaxSpends ? times.size() - MaxSpends : 0;
  state.spends.assign(times.begin() + static_cast<std::ptrdiff_t>(skip),
                      times.end());
  return state;
}

double BudgetState::expected_reset_at(double now) const {
  if (reset_at > 0) {
    return reset_at;
  }
  if (window_s <= 0) {
    return 0;
  }
  auto oldest = std::upper_bound(spends.begin(), spends.end(), now - window_s);
  if (oldest != spends.end()) {
    return *oldest + window_s;
  }
  if (observed_at <= 0) {
    return 0;
  }
  return observed_at + window_s;
}

size_t BudgetState::spends_since(double since) const {
  auto first = std::upper_bound(spends.begin(), spends.end(), since);
  return static_cast<size_t>(spends.end() - first);
}

} // namespace gatecache::scheduler
