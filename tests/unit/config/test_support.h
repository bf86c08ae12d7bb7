// Helpers of the config loader tests: a temporary directory and loading
// a config written into it.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include <catch2/catch.hpp>

#include "appliance/config/config.h"

namespace gatecache::config::test {

// A directory under $TMPDIR (or /tmp) that is removed with its contents.
class TempDir {
public:
  TempDir() {
    const char *base = std::getenv("TMPDIR");
    std::string pattern = std::string(base != nullptr ? base : "/tmp") +
                          "/gatecache-config-test-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) {
      FAIL("mkdtemp failed for " << pattern);
    }
    path_ = pattern;
  }

  ~TempDir() {
    std::error_code error;
    std::filesystem::remove_all(path_, error);
  }

  TempDir(const TempDir &) = delete;
  TempDir &operator=(const TempDir &) = delete;

  const std::string &path() const { return path_; }

  // Writes `text` to `name` in the directory and returns the full path.
  std::string write(const std::string &name, const std::string &text) const {
    std::string file = path_ + "/" + name;
    std::ofstream out(file, std::ios::binary);
    out << text;
    out.close();
    REQUIRE(out.good());
    return file;
  }

private:
  std::string path_;
};

struct Loaded {
  std::string path;
  gatecache::Result<std::shared_ptr<const Config>> result;
};

inline Loaded load_text(const TempDir &dir, const std::string &text) {
  std::string path = dir.write("gatecache.yaml", text);
  return {path, load_config(path)};
}

// A config text and the error the loader must report for it.
struct ErrorCase {
  std::string yaml;
  std::string message; // Without the "<path>:" prefix.
};

// Loads each case and checks that it fails as `Invalid` with its message.
inline void check_errors(const std::vector<ErrorCase> &cases) {
  TempDir dir;
  for (const ErrorCase &c : cases) {
    INFO("yaml:\n" << c.yaml);
    auto loaded = load_text(dir, c.yaml);
    REQUIRE_FALSE(loaded.result.has_value());
    CHECK(loaded.result.error().code == ErrorCode::Invalid);
    CHECK(loaded.result.error().message == loaded.path + ":" + c.message);
  }
}

} // namespace gatecache::config::test
