// Tests of the loader for the `front` section: connection cap, timeouts
// and request limits of the listeners that serve the nodes.
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "appliance/config/config.h"
#include "appliance/front/front_config.h"
#include "tests/unit/config/test_support.h"

using gatecache::ErrorCode;
using gatecache::config::Config;
using gatecache::config::test::check_errors;
using gatecache::config::test::ErrorCase;
using gatecache::config::test::load_text;
using gatecache::config::test::TempDir;

namespace {

const std::string up = "upstreams:\n  docker.io:\n";

const std::string DurationForm =
    "seconds as a number, or a number with a unit ms, s, m, h or d, at most "
    "24h";

const std::string SizeForm =
    "an integer number of bytes, optionally with a unit KiB, MiB, GiB, TiB, "
    "KB, MB, GB or TB, from 4 KiB to 1 MiB";

} // namespace

TEST_CASE("config loader reads front keys", "[config]") {
  TempDir dir;
  auto loaded = load_text(dir, up + R"(
front:
  max_connections: 500
  handshake_timeout: 5s
  idle_timeout: 10m
  header_timeout: 1500ms
  graceful_timeout: 1m
  max_concurrent_streams: 100
  max_header_bytes: 32KiB
)");
  REQUIRE(loaded.result.has_value());
  const Config &config = **loaded.result;
  CHECK(config.front.max_connections == 500);
  CHECK(config.front.handshake_timeout_s == Approx(5));
  CHECK(config.front.idle_timeout_s == Approx(600));
  CHECK(config.front.header_timeout_s == Approx(1.5));
  CHECK(config.front.graceful_timeout_s == Approx(60));
  CHECK(config.front.max_concurrent_streams == 100);
  CHECK(config.front.max_header_bytes == 32 * 1024);
}

TEST_CASE("config loader fills front defaults", "[config]") {
  TempDir dir;
  for (const std::string &yaml : {up, up + "front:\n", up + "front: {}\n"}) {
    INFO("yaml:\n" << yaml);
    auto loaded = load_text(dir, yaml);
    REQUIRE(loaded.result.has_value());
    const Config &config = **loaded.result;
    CHECK(config.front.max_connections == 10000);
    CHECK(config.front.handshake_timeout_s == Approx(10));
    CHECK(config.front.idle_timeout_s == Approx(120));
    CHECK(config.front.header_timeout_s == Approx(30));
    CHECK(config.front.graceful_timeout_s == Approx(30));
    CHECK(config.front.max_concurrent_streams == 256);
    CHECK(config.front.max_header_bytes == 64 * 1024);
  }
}

// The daemon copies the section into `front::FrontConfig`, so a file
// without it must give the listeners the values they have without config.
TEST_CASE("front defaults match listener defaults", "[config]") {
  gatecache::config::FrontLimitsConfig loaded;
  gatecache::front::FrontConfig listener;
  CHECK(loaded.max_connections == listener.max_connections);
  CHECK(loaded.handshake_timeout_s == listener.handshake_timeout_s);
  CHECK(loaded.idle_timeout_s == listener.idle_timeout_s);
  CHECK(loaded.header_timeout_s == listener.header_timeout_s);
  CHECK(loaded.graceful_timeout_s == listener.graceful_timeout_s);
  CHECK(loaded.max_concurrent_streams == listener.max_concurrent_streams);
  CHECK(loaded.max_header_bytes == listener.max_header_bytes);
}

TEST_CASE("config loader accepts front edge values", "[config]") {
  TempDir dir;
  auto low = load_text(dir, up + R"(
front:
  max_connections: 1
  handshake_timeout: 1ms
  idle_timeout: 1ms
  header_timeout: 1ms
  graceful_timeout: 1ms
  max_concurrent_streams: 1
  max_header_bytes: 4096
)");
  REQUIRE(low.result.has_value());
  const Config &min = **low.result;
  CHECK(min.front.max_connections == 1);
  CHECK(min.front.handshake_timeout_s == Approx(0.001));
  CHECK(min.front.idle_timeout_s == Approx(0.001));
  CHECK(min.front.header_timeout_s == Approx(0.001));
  CHECK(min.front.graceful_timeout_s == Approx(0.001));
  CHECK(min.front.max_concurrent_streams == 1);
  CHECK(min.front.max_header_bytes == 4096);

  auto high = load_text(dir, up + R"(
front:
  max_connections: 4294967295
  handshake_timeout: 24h
  idle_timeout: 1d
  header_timeout: 86400
  graceful_timeout: 24h
  max_concurrent_streams: 2147483647
  max_header_bytes: 1 MiB
)");
  REQUIRE(high.result.has_value());
  const Config &max = **high.result;
  CHECK(max.front.max_connections == 4294967295ULL);
  CHECK(max.front.handshake_timeout_s == Approx(86400));
  CHECK(max.front.idle_timeout_s == Approx(86400));
  CHECK(max.front.header_timeout_s == Approx(86400));
  CHECK(max.front.graceful_timeout_s == Approx(86400));
  CHECK(max.front.max_concurrent_streams == 2147483647U);
  CHECK(max.front.max_header_bytes == 1024 * 1024);

  auto decimal = load_text(dir, up + "front: {max_header_bytes: 8KB}\n");
  REQUIRE(decimal.result.has_value());
  CHECK((*decimal.result)->front.max_header_bytes == 8000);
}

TEST_CASE("config loader rejects bad front values", "[config]") {
  check_errors({
      {up + "front:\n  max_conns: 10\n",
       "4:3: key 'front.max_conns': unknown key (expected one of "
       "max_connections, handshake_timeout, idle_timeout, header_timeout, "
       "graceful_timeout, max_concurrent_streams, max_header_bytes)"},
      {up + "front: [max_connections]\n",
       "3:8: key 'front': wrong type (value is a list; expected a map)"},
      {up + "front:\n  max_connections: 0\n",
       "4:20: key 'front.max_connections': number is out of range (value "
       "'0'; expected an integer from 1 to 4294967295)"},
      {up + "front:\n  max_connections: 4294967296\n",
       "4:20: key 'front.max_connections': number is too large (value "
       "'4294967296'; expected an integer from 1 to 4294967295)"},
      {up + "front:\n  max_connections: -5\n",
       "4:20: key 'front.max_connections': invalid number (value '-5'; "
       "expected an integer from 1 to 4294967295)"},
      {up + "front:\n  max_connections: 10k\n",
       "4:20: key 'front.max_connections': invalid number (value '10k'; "
       "expected an integer from 1 to 4294967295)"},
      {up + "front:\n  max_connections: [1]\n",
       "4:20: key 'front.max_connections': wrong type (value is a list; "
       "expected an integer from 1 to 4294967295)"},
      {up + "front:\n  handshake_timeout: 0\n",
       "4:22: key 'front.handshake_timeout': duration must be greater than "
       "0 (value '0'; expected " +
           DurationForm + ")"},
      {up + "front:\n  idle_timeout: 2d\n",
       "4:17: key 'front.idle_timeout': duration is too long (value '2d'; "
       "expected " +
           DurationForm + ")"},
      {up + "front:\n  header_timeout: -1s\n",
       "4:19: key 'front.header_timeout': invalid duration (value '-1s'; "
       "expected " +
           DurationForm + ")"},
      {up + "front:\n  graceful_timeout: 30 sec\n",
       "4:21: key 'front.graceful_timeout': unknown duration unit (value "
       "'30 sec'; expected " +
           DurationForm + ")"},
      {up + "front:\n  graceful_timeout: {s: 30}\n",
       "4:21: key 'front.graceful_timeout': wrong type (value is a map; "
       "expected " +
           DurationForm + ")"},
      {up + "front:\n  max_concurrent_streams: 0\n",
       "4:27: key 'front.max_concurrent_streams': number is out of range "
       "(value '0'; expected an integer from 1 to 2147483647)"},
      {up + "front:\n  max_concurrent_streams: 2147483648\n",
       "4:27: key 'front.max_concurrent_streams': number is out of range "
       "(value '2147483648'; expected an integer from 1 to 2147483647)"},
      {up + "front:\n  max_header_bytes: 4095\n",
       "4:21: key 'front.max_header_bytes': request head limit is out of "
       "range (value '4095'; expected " +
           SizeForm + ")"},
      {up + "front:\n  max_header_bytes: 2MiB\n",
       "4:21: key 'front.max_header_bytes': request head limit is out of "
       "range (value '2MiB'; expected " +
           SizeForm + ")"},
      {up + "front:\n  max_header_bytes: 64kb\n",
       "4:21: key 'front.max_header_bytes': unknown size unit (value "
       "'64kb'; expected an integer number of bytes, optionally with a "
       "unit KiB, MiB, GiB, TiB, KB, MB, GB or TB)"},
      {up + "front:\n  max_header_bytes: 0\n",
       "4:21: key 'front.max_header_bytes': size must be greater than 0 "
       "(value '0'; expected an integer number of bytes, optionally with a "
       "unit KiB, MiB, GiB, TiB, KB, MB, GB or TB)"},
  });
}

TEST_CASE("config loader reads example front keys", "[config]") {
  auto result = gatecache::config::load_config(
      std::string(GATECACHE_SOURCE_DIR) +
      "/appliance/config/gatecache.example.yaml");
  REQUIRE(result.has_value());
  const Config &config = **result;
  // The example shows the defaults.
  gatecache::config::FrontLimitsConfig defaults;
  CHECK(config.front.max_connections == defaults.max_connections);
  CHECK(config.front.handshake_timeout_s == defaults.handshake_timeout_s);
  CHECK(config.front.idle_timeout_s == defaults.idle_timeout_s);
  CHECK(config.front.header_timeout_s == defaults.header_timeout_s);
  CHECK(config.front.graceful_timeout_s == defaults.graceful_timeout_s);
  CHECK(config.front.max_concurrent_streams == defaults.max_concurrent_streams);
  CHECK(config.front.max_header_bytes == defaults.max_header_bytes);
}

TEST_CASE("config loader reads packaged front keys", "[config]") {
  auto result = gatecache::config::load_config(
      std::string(GATECACHE_SOURCE_DIR) + "/systemd/gatecache.yaml");
  REQUIRE(result.has_value());
  CHECK((*result)->front.max_connections == 10000);
}
