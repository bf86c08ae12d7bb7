#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <vector>

#include <catch2/catch.hpp>

#include "appliance/config/config.h"
#include "tests/unit/config/test_support.h"

using gatecache::ErrorCode;
using gatecache::config::Config;
using gatecache::config::load_config;
using gatecache::config::test::load_text;
using gatecache::config::test::TempDir;

TEST_CASE("config loader reads every key", "[config]") {
  TempDir dir;
  std::string ca_file =
      dir.write("ca.pem", "-----BEGIN CERTIFICATE-----\nnot parsed here\n"
                          "-----END CERTIFICATE-----\n");
  auto loaded = load_text(dir, R"(
listen:
  - "0.0.0.0:443"
  - "[0:0::1]:8443"
storage:
  path: /srv/gatecache/
  max_size: 200 GiB
  index_map_size: 2GB
  scrub_interval: 30d
  scrub_rate: 100 MiB
tls:
  names: [Mirror.Example.com, "*.lan.example", 10.0.0.1, "::FFFF:1.2.3.4"]
  dir: /etc/gatecache/tls
upstreams:
  docker.io:
  Ghcr.IO: {url: "HTTPS://Ghcr.IO/"}
  "[::1]:5000": ~
  127.0.0.1:5000:
    ca_file: )" + ca_file + R"(
default_upstream: Docker.io
upstream_timeouts: {connect: 500ms, response: 2m, idle: 1.5}
log: {level: debug, access_log: /var/log/gatecache/access.log}
)");
  REQUIRE(loaded.result.has_value());
  const Config &config = **loaded.result;

  CHECK(config.source_path == loaded.path);
  REQUIRE(config.listen.size() == 2);
  CHECK(config.listen[0].host == "0.0.0.0");
  CHECK(config.listen[0].port == 443);
  CHECK(config.listen[1].host == "::1");
  CHECK(config.listen[1].port == 8443);
  CHECK(config.listen[1].str() == "[::1]:8443");

  CHECK(config.storage.path == "/srv/gatecache");
  CHECK(config.storage.max_size_bytes == 200ULL << 30);
  CHECK(config.storage.index_map_size_bytes == 2000000000ULL);
  CHECK(config.storage.scrub_interval_s == 30 * 86400.0);
  CHECK(config.storage.scrub_rate_bytes == 100ULL << 20);

  const std::vector<std::string> names = {"mirror.example.com", "*.lan.example",
                                          "10.0.0.1", "::ffff:1.2.3.4"};
  CHECK(config.tls.names == names);
  CHECK(config.tls.dir == "/etc/gatecache/tls");

  REQUIRE(config.upstreams.size() == 4);
  const auto &hub = config.upstreams.at("docker.io");
  CHECK(hub.name == "docker.io");
  CHECK(hub.url == "https://registry-1.docker.io");
  CHECK(hub.docker_hub);
  CHECK(hub.ca_file.empty());
  const auto &ghcr = config.upstreams.at("ghcr.io");
  CHECK(ghcr.url == "https://ghcr.io");
  CHECK_FALSE(ghcr.docker_hub);
  const auto &v6 = config.upstreams.at("[::1]:5000");
  CHECK(v6.url == "https://[::1]:5000");
  const auto &local = config.upstreams.at("127.0.0.1:5000");
  CHECK(local.url == "https://127.0.0.1:5000");
  CHECK(local.ca_file == ca_file);

  CHECK(config.default_upstream == "docker.io");
  CHECK(config.upstream_timeouts.connect_timeout_s == Approx(0.5));
  CHECK(config.upstream_timeouts.response_timeout_s == Approx(120));
  CHECK(config.upstream_timeouts.idle_timeout_s == Approx(1.5));
  CHECK(config.log.level == "debug");
  CHECK(config.log.access_log == "/var/log/gatecache/access.log");
}

TEST_CASE("config loader reads shipped example", "[config]") {
  auto result = load_config(std::string(GATECACHE_SOURCE_DIR) +
                            "/appliance/config/gatecache.example.yaml");
  REQUIRE(result.has_value());
  const Config &config = **result;
  CHECK_FALSE(config.upstreams.empty());
  CHECK(config.upstreams.count(config.default_upstream) == 1);
}

TEST_CASE("config loader fills defaults", "[config]") {
  TempDir dir;
  auto loaded = load_text(dir, "upstreams:\n  docker.io:\n");
  REQUIRE(loaded.result.has_value());
  const Config &config = **loaded.result;

  REQUIRE(config.listen.size() == 2);
  CHECK(config.listen[0].str() == "127.0.0.1:5443");
  CHECK(config.listen[1].str() == "[::1]:5443");
  CHECK(config.storage.path == "/var/lib/gatecache");
  CHECK(config.storage.max_size_bytes == 50ULL << 30);
  CHECK(config.storage.index_map_size_bytes == 1ULL << 30);
  CHECK(config.storage.scrub_interval_s == 7 * 86400.0);
  CHECK(config.storage.scrub_rate_bytes == 32ULL << 20);
  const std::vector<std::string> names = {"localhost", "127.0.0.1", "::1"};
  CHECK(config.tls.names == names);
  CHECK(config.tls.dir == "/var/lib/gatecache/tls");
  CHECK(config.upstreams.at("docker.io").url == "https://registry-1.docker.io");
  CHECK(config.upstreams.at("docker.io").docker_hub);
  CHECK(config.default_upstream == "docker.io");
  CHECK(config.upstream_timeouts.connect_timeout_s == Approx(10));
  CHECK(config.upstream_timeouts.response_timeout_s == Approx(30));
  CHECK(config.upstream_timeouts.idle_timeout_s == Approx(60));
  CHECK(config.log.level == "info");
  CHECK(config.log.access_log == "stderr");
}

TEST_CASE("config loader derives tls dir", "[config]") {
  TempDir dir;
  auto loaded =
      load_text(dir, "storage: {path: /srv/gc/}\nupstreams: {ghcr.io: }\n");
  REQUIRE(loaded.result.has_value());
  CHECK((*loaded.result)->tls.dir == "/srv/gc/tls");
}

TEST_CASE("config loader accepts empty sections", "[config]") {
  TempDir dir;
  auto loaded = load_text(dir, "storage:\ntls:\nlog:\nupstream_timeouts:\n"
                               "upstreams:\n  quay.io: {}\n");
  REQUIRE(loaded.result.has_value());
  CHECK((*loaded.result)->storage.path == "/var/lib/gatecache");
  CHECK((*loaded.result)->upstreams.at("quay.io").url == "https://quay.io");
}

TEST_CASE("config loader defaults only upstream", "[config]") {
  TempDir dir;
  auto single = load_text(dir, "upstreams:\n  ghcr.io:\n");
  REQUIRE(single.result.has_value());
  CHECK((*single.result)->default_upstream == "ghcr.io");

  auto pair = load_text(dir, "upstreams:\n  ghcr.io:\n  quay.io:\n");
  REQUIRE(pair.result.has_value());
  CHECK((*pair.result)->default_upstream.empty());
}

TEST_CASE("config loader keeps docker hub flag", "[config]") {
  TempDir dir;
  auto loaded = load_text(
      dir, "upstreams:\n  docker.io: {url: https://hub.example.com:8443}\n"
           "  quay.io:\n");
  REQUIRE(loaded.result.has_value());
  const auto &hub = (*loaded.result)->upstreams.at("docker.io");
  CHECK(hub.docker_hub);
  CHECK(hub.url == "https://hub.example.com:8443");
  CHECK_FALSE((*loaded.result)->upstreams.at("quay.io").docker_hub);
}

TEST_CASE("config loader reports errors with position", "[config]") {
  struct Case {
    std::string yaml;
    std::string message; // Without the "<path>:" prefix.
  };

  const std::string up = "upstreams:\n  docker.io:\n";
  const std::vector<Case> cases = {
      // Unknown keys.
      {up + "listne: []\n",
       "3:1: key 'listne': unknown key (expected one of listen, storage, tls, "
       "upstreams, default_upstream, upstream_timeouts, front, log, "
       "clusters, scheduler, prewarm, admin)"},
      {up + "storage:\n  size: 1\n",
       "4:3: key 'storage.size': unknown key (expected one of path, "
       "max_size, index_map_size, scrub_interval, scrub_rate)"},
      {"upstreams:\n  docker.io: {mirror: x}\n",
       "2:15: key 'upstreams.docker.io.mirror': unknown key (expected one of "
       "url, ca_file, freshness, default_freshness, budget)"},
      {up + "log: {level: info, format: json}\n",
       "3:20: key 'log.format': unknown key (expected one of level, "
       "access_log)"},
      // Wrong types.
      {up + "storage: [1, 2]\n",
       "3:10: key 'storage': wrong type (value is a list; expected a map)"},
      {up + "listen: \"127.0.0.1:5443\"\n",
       "3:9: key 'listen': wrong type (value is a string; expected a list of "
       "\"address:port\" with an IPv4 address or a bracketed IPv6 address "
       "and a port from 1 to 65535)"},
      {up + "storage:\n  path: {a: 1}\n",
       "4:9: key 'storage.path': wrong type (value is a map; expected an "
       "absolute path)"},
      {up + "log:\n  level:\n",
       "4:3: key 'log.level': wrong type (value is empty; expected debug, "
       "info, warn or error)"},
      {"upstreams: [docker.io]\n",
       "1:12: key 'upstreams': wrong type (value is a list; expected a map "
       "from registry host to its settings)"},
      {"upstreams:\n  docker.io: https://x\n",
       "2:14: key 'upstreams.docker.io': wrong type (value is a string; "
       "expected a map with url, ca_file, freshness, default_freshness and "
       "budget, or nothing)"},
      {"- a\n- b\n",
       "1:1: wrong type (value is a list; expected a map of settings)"},
      // Bad values.
      {up + "listen: [\"127.0.0.1:0\"]\n",
       "3:10: key 'listen': invalid port (value '127.0.0.1:0'; expected "
       "\"address:port\" with an IPv4 address or a bracketed IPv6 address "
       "and a port from 1 to 65535)"},
      {up + "listen:\n  - localhost:5443\n",
       "4:5: key 'listen': not an IP address (value 'localhost:5443'; "
       "expected \"address:port\" with an IPv4 address or a bracketed IPv6 "
       "address and a port from 1 to 65535)"},
      {up + "listen: [\"[::1]:5443\", \"[::1]:5443\"]\n",
       "3:24: key 'listen': duplicate of the earlier entry at line 3, column "
       "10 (value '[::1]:5443'; expected each address and port listed "
       "once)"},
      // Addresses are compared in canonical form.
      {up + "listen: [\"[0::1]:5443\", \"[::1]:5443\"]\n",
       "3:25: key 'listen': duplicate of the earlier entry at line 3, column "
       "10 (value '[::1]:5443'; expected each address and port listed "
       "once)"},
      {up + "listen: []\n",
       "3:9: key 'listen': empty list (expected a list of \"address:port\" "
       "with an IPv4 address or a bracketed IPv6 address and a port from 1 "
       "to 65535)"},
      {up + "storage:\n  max_size: 10 XB\n",
       "4:13: key 'storage.max_size': unknown size unit (value '10 XB'; "
       "expected an integer number of bytes, optionally with a unit KiB, "
       "MiB, GiB, TiB, KB, MB, GB or TB)"},
      {up + "storage:\n  max_size: 0\n",
       "4:13: key 'storage.max_size': size must be greater than 0 (value "
       "'0'; expected an integer number of bytes, optionally with a unit "
       "KiB, MiB, GiB, TiB, KB, MB, GB or TB)"},
      {up + "storage:\n  index_map_size: 4096\n",
       "4:19: key 'storage.index_map_size': index map size is below 1 MiB "
       "(value '4096'; expected an integer number of bytes, optionally with "
       "a unit KiB, MiB, GiB, TiB, KB, MB, GB or TB, at least 1 MiB)"},
      {up + "storage:\n  scrub_interval: 400d\n",
       "4:19: key 'storage.scrub_interval': duration is too long (value "
       "'400d'; expected seconds as a number, or a number with a unit ms, "
       "s, m, h or d, from 0 to 365d)"},
      {up + "storage:\n  scrub_rate: 0\n",
       "4:15: key 'storage.scrub_rate': size must be greater than 0 (value "
       "'0'; expected an integer number of bytes, optionally with a unit "
       "KiB, MiB, GiB, TiB, KB, MB, GB or TB)"},
      {up + "storage:\n  scrub_rate: 1\n",
       "4:15: key 'storage.scrub_rate': scrub rate is below 64 KiB per "
       "second (value '1'; expected an integer number of bytes, optionally "
       "with a unit KiB, MiB, GiB, TiB, KB, MB, GB or TB, at least 64 "
       "KiB)"},
      {up + "storage:\n  path: var/lib/gatecache\n",
       "4:9: key 'storage.path': relative path (value 'var/lib/gatecache'; "
       "expected an absolute path)"},
      {up + "tls:\n  dir: tls\n",
       "4:8: key 'tls.dir': relative path (value 'tls'; expected an absolute "
       "path)"},
      {up + "tls:\n  names: [localhost, -bad.example]\n",
       "4:22: key 'tls.names': invalid name (value '-bad.example'; expected "
       "a DNS name, optionally starting with \"*.\", or an IP address)"},
      {up + "tls:\n  names: [a.example, A.example]\n",
       "4:22: key 'tls.names': duplicate name (value 'A.example'; expected a "
       "DNS name, optionally starting with \"*.\", or an IP address)"},
      {up + "upstream_timeouts:\n  connect: 10 days\n",
       "4:12: key 'upstream_timeouts.connect': unknown duration unit (value "
       "'10 days'; expected seconds as a number, or a number with a unit "
       "ms, s, m, h or d, at most 24h)"},
      {up + "upstream_timeouts:\n  idle: -5\n",
       "4:9: key 'upstream_timeouts.idle': invalid duration (value '-5'; "
       "expected seconds as a number, or a number with a unit ms, s, m, h "
       "or d, at most 24h)"},
      {up + "upstream_timeouts:\n  response: 0s\n",
       "4:13: key 'upstream_timeouts.response': duration must be greater "
       "than 0 (value '0s'; expected seconds as a number, or a number with "
       "a unit ms, s, m, h or d, at most 24h)"},
      {up + "log:\n  level: verbose\n",
       "4:10: key 'log.level': unknown log level (value 'verbose'; expected "
       "debug, info, warn or error)"},
      {up + "log:\n  access_log: access.log\n",
       "4:15: key 'log.access_log': relative path (value 'access.log'; "
       "expected stderr, off or an absolute path)"},
      // Upstreams.
      {"upstreams:\n  docker.io:\n  registry_1.example:\n",
       "3:3: key 'upstreams.registry_1.example': invalid host name (value "
       "'registry_1.example'; expected a registry host as image references "
       "name it: a DNS name, an IPv4 address or a bracketed IPv6 address, "
       "with an optional port)"},
      {"upstreams:\n  \"https://ghcr.io\":\n",
       "2:3: key 'upstreams.https://ghcr.io': a URL instead of a registry "
       "host (value 'https://ghcr.io'; expected a registry host as image "
       "references name it: a DNS name, an IPv4 address or a bracketed IPv6 "
       "address, with an optional port)"},
      {"upstreams:\n  ghcr.io:5000000:\n",
       "2:3: key 'upstreams.ghcr.io:5000000': invalid port (value "
       "'ghcr.io:5000000'; expected a registry host as image references "
       "name it: a DNS name, an IPv4 address or a bracketed IPv6 address, "
       "with an optional port)"},
      {"upstreams:\n  docker.io:\n  Docker.IO:\n",
       "3:3: key 'upstreams.Docker.IO': duplicate upstream (same as the key "
       "at line 2, column 3)"},
      {"upstreams:\n  ghcr.io: {url: \"http://ghcr.io\"}\n",
       "2:18: key 'upstreams.ghcr.io.url': not an https URL (value "
       "'http://ghcr.io'; expected \"https://host\" or "
       "\"https://host:port\", with no path)"},
      {"upstreams:\n  ghcr.io:\n    url: https://ghcr.io/v2/\n",
       "3:10: key 'upstreams.ghcr.io.url': URL has a path, query or fragment "
       "(value 'https://ghcr.io/v2/'; expected \"https://host\" or "
       "\"https://host:port\", with no path)"},
      {"upstreams:\n  ghcr.io:\n    url: https://ghcr.io?x=1\n",
       "3:10: key 'upstreams.ghcr.io.url': URL has a path, query or fragment "
       "(value 'https://ghcr.io?x=1'; expected \"https://host\" or "
       "\"https://host:port\", with no path)"},
      {"upstreams:\n  ghcr.io:\n    url: https://user:pw@ghcr.io\n",
       "3:10: key 'upstreams.ghcr.io.url': user information in the URL is "
       "not supported (value 'https://user:pw@ghcr.io'; expected "
       "\"https://host\" or \"https://host:port\", with no path)"},
      {"upstreams:\n  ghcr.io:\n    url: https://\n",
       "3:10: key 'upstreams.ghcr.io.url': invalid host in URL: invalid host "
       "name (value 'https://'; expected \"https://host\" or "
       "\"https://host:port\", with no path)"},
      {"upstreams:\n  ghcr.io:\n    ca_file: certs/ca.pem\n",
       "3:14: key 'upstreams.ghcr.io.ca_file': relative path (value "
       "'certs/ca.pem'; expected an absolute path)"},
      {"upstreams:\n  ghcr.io:\n  quay.io:\ndefault_upstream: docker.io\n",
       "4:19: key 'default_upstream': not a configured upstream (value "
       "'docker.io'; expected one of the upstreams keys: ghcr.io, quay.io)"},
      {"upstreams:\n  ghcr_io:\ndefault_upstream: ghcr_io\n",
       "2:3: key 'upstreams.ghcr_io': invalid host name (value 'ghcr_io'; "
       "expected a registry host as image references name it: a DNS name, "
       "an IPv4 address or a bracketed IPv6 address, with an optional "
       "port)"},
      {"upstreams:\n  ghcr.io:\ndefault_upstream: \"\"\n",
       "3:19: key 'default_upstream': empty upstream name (value ''; "
       "expected a key of upstreams)"},
      {"listen: [\"127.0.0.1:5443\"]\n",
       "1:1: key 'upstreams': missing (expected a map of at least one "
       "registry host, as \"docker.io:\")"},
      {"", "1:1: key 'upstreams': missing (expected a map of at least one "
           "registry host, as \"docker.io:\")"},
      {"upstreams: {}\n",
       "1:12: key 'upstreams': no upstream configured (expected at least one "
       "registry host, as \"docker.io:\")"},
      {"upstreams:\n",
       "1:1: key 'upstreams': no upstream configured (expected at least one "
       "registry host, as \"docker.io:\")"},
      // Repeated keys.
      {up + "log: {level: info}\nlog: {level: warn}\n",
       "4:1: key 'log': duplicate key (first at line 3, column 1)"},
      {up + "storage:\n  path: /a\n  path: /b\n",
       "5:3: key 'storage.path': duplicate key (first at line 4, column 3)"},
      // YAML itself.
      {up + "listen: [\"127.0.0.1:5443\"\n",
       "4:1: YAML syntax error: end of sequence flow not found"},
      {"upstreams: docker.io: x\n",
       "1:21: YAML syntax error: illegal map value"},
      {"\tupstreams:\n", "1:11: YAML syntax error: illegal map value"},
      {up + "---\nupstreams:\n  ghcr.io:\n",
       "4:1: more than one YAML document (expected one)"},
      {up + "log: *missing\n",
       "3:6: YAML syntax error: the referenced anchor is not defined"},
  };

  TempDir dir;
  for (const Case &c : cases) {
    INFO("yaml:\n" << c.yaml);
    auto loaded = load_text(dir, c.yaml);
    REQUIRE_FALSE(loaded.result.has_value());
    CHECK(loaded.result.error().code == ErrorCode::Invalid);
    CHECK(loaded.result.error().message == loaded.path + ":" + c.message);
  }
}

TEST_CASE("config loader rejects ca_file without PEM", "[config]") {
  TempDir dir;
  std::string not_pem = dir.write("ca.cnf", "[req]\nprompt = no\n");
  auto loaded =
      load_text(dir, "upstreams:\n  ghcr.io:\n    ca_file: " + not_pem + "\n");
  REQUIRE_FALSE(loaded.result.has_value());
  CHECK(loaded.result.error().code == gatecache::ErrorCode::Invalid);
  CHECK_THAT(loaded.result.error().message,
             Catch::Matchers::Contains("no PEM certificate in the CA file"));
}

TEST_CASE("config loader rejects missing ca_file", "[config]") {
  TempDir dir;
  std::string missing = dir.path() + "/missing.pem";
  auto loaded =
      load_text(dir, "upstreams:\n  ghcr.io:\n    ca_file: " + missing + "\n");
  REQUIRE_FALSE(loaded.result.has_value());
  CHECK(loaded.result.error().message ==
        loaded.path +
            ":3:14: key 'upstreams.ghcr.io.ca_file': cannot read CA file: "
            "No such file or directory (value '" +
            missing + "'; expected a readable PEM file)");
}

TEST_CASE("config loader rejects ca_file directory", "[config]") {
  TempDir dir;
  auto loaded = load_text(
      dir, "upstreams:\n  ghcr.io:\n    ca_file: " + dir.path() + "\n");
  REQUIRE_FALSE(loaded.result.has_value());
  CHECK(loaded.result.error().message ==
        loaded.path +
            ":3:14: key 'upstreams.ghcr.io.ca_file': cannot read CA file: "
            "not a regular file (value '" +
            dir.path() + "'; expected a readable PEM file)");
}

TEST_CASE("config loader reports missing file", "[config]") {
  TempDir dir;
  std::string path = dir.path() + "/absent.yaml";
  auto result = load_config(path);
  REQUIRE_FALSE(result.has_value());
  CHECK(result.error().code == ErrorCode::NotFound);
  CHECK(result.error().message ==
        "cannot read config " + path + ": No such file or directory");
}

TEST_CASE("config loader rejects directory path", "[config]") {
  TempDir dir;
  auto result = load_config(dir.path());
  REQUIRE_FALSE(result.has_value());
  CHECK(result.error().code == ErrorCode::Io);
  CHECK(result.error().message ==
        "cannot read config " + dir.path() + ": Is a directory");
}

TEST_CASE("config loader rejects oversized file", "[config]") {
  TempDir dir;
  std::string text = "upstreams:\n  docker.io:\n";
  text += "#" + std::string(1 << 20, 'x') + "\n";
  auto loaded = load_text(dir, text);
  REQUIRE_FALSE(loaded.result.has_value());
  CHECK(loaded.result.error().message ==
        "cannot read config " + loaded.path + ": file is larger than 1 MiB");
}

TEST_CASE("config loader escapes echoed values", "[config]") {
  TempDir dir;
  auto loaded =
      load_text(dir, "upstreams:\n  docker.io:\nlog:\n  level: \"a\\eb\"\n");
  REQUIRE_FALSE(loaded.result.has_value());
  CHECK(loaded.result.error().message ==
        loaded.path + ":4:10: key 'log.level': unknown log level (value "
                      "'a\\x1bb'; expected debug, info, warn or error)");
}

TEST_CASE("config loader cuts long values", "[config]") {
  TempDir dir;
  auto loaded = load_text(dir, "upstreams:\n  docker.io:\nlog:\n  level: " +
                                   std::string(100, 'v') + "\n");
  REQUIRE_FALSE(loaded.result.has_value());
  CHECK(loaded.result.error().message ==
        loaded.path + ":4:10: key 'log.level': unknown log level (value '" +
            std::string(80, 'v') +
            "...'; expected debug, info, warn or error)");
}

TEST_CASE("config loader reports every error", "[config]") {
  TempDir dir;
  auto loaded = load_text(dir, "storage:\n  path: rel\nlog:\n  level: x\n");
  REQUIRE_FALSE(loaded.result.has_value());
  const std::string &path = loaded.path;
  CHECK(loaded.result.error().message ==
        path +
            ":2:9: key 'storage.path': relative path (value 'rel'; "
            "expected an absolute path)\n" +
            path +
            ":4:10: key 'log.level': unknown log level (value 'x'; "
            "expected debug, info, warn or error)\n" +
            path +
            ":1:1: key 'upstreams': missing (expected a map of at "
            "least one registry host, as \"docker.io:\")");
}

TEST_CASE("config loader caps reported errors", "[config]") {
  TempDir dir;
  std::string text = "upstreams:\n  docker.io:\n";
  for (int i = 0; i < 25; ++i) {
    text += "unknown" + std::to_string(i) + ": 1\n";
  }
  auto loaded = load_text(dir, text);
  REQUIRE_FALSE(loaded.result.has_value());
  const std::string &message = loaded.result.error().message;
  size_t lines = 1;
  for (char c : message) {
    lines += c == '\n' ? 1 : 0;
  }
  CHECK(lines == 21);
  CHECK(message.ends_with("\n(checking stopped after 20 errors)"));
}

TEST_CASE("config loader stops on repeated aliases", "[config]") {
  TempDir dir;
  // One map with many unknown keys, referred to by many upstreams.
  std::string text = "upstreams:\n  a.example: &settings {";
  for (int i = 0; i < 2000; ++i) {
    text += "k" + std::to_string(i) + ": 1, ";
  }
  text += "url: https://a.example}\n";
  for (int i = 0; i < 2000; ++i) {
    text += "  u" + std::to_string(i) + ".example: *settings\n";
  }
  auto loaded = load_text(dir, text);
  REQUIRE_FALSE(loaded.result.has_value());
  CHECK(loaded.result.error().message.ends_with(
      "\n(checking stopped after 20 errors)"));
}

TEST_CASE("config loader survives deep nesting", "[config]") {
  TempDir dir;
  std::string text =
      "upstreams:\n  docker.io:\nlog: " + std::string(100000, '[') +
      std::string(100000, ']') + "\n";
  auto loaded = load_text(dir, text);
  REQUIRE_FALSE(loaded.result.has_value());
  CHECK(loaded.result.error().code == ErrorCode::Invalid);
  CHECK(loaded.result.error().message.starts_with(loaded.path + ":3:"));
}
