// Tests of the loader for the keys of client certificates, certificate
// lifetime, freshness, budgets, clusters, the scheduler, prewarm and the
// admin endpoint.
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "appliance/config/config.h"
#include "tests/unit/config/test_support.h"

using gatecache::ErrorCode;
using gatecache::config::Config;
using gatecache::config::ListenAddress;
using gatecache::config::test::check_errors;
using gatecache::config::test::ErrorCase;
using gatecache::config::test::load_text;
using gatecache::config::test::TempDir;

namespace {

const std::string up = "upstreams:\n  docker.io:\n";

} // namespace

TEST_CASE("config loader reads new keys", "[config]") {
  TempDir dir;
  auto loaded = load_text(dir, R"(
listen:
  - "127.0.0.1:5443"
  - {address: "10.0.0.1:5443", client_certificates: required}
  - address: "[::1]:6443"
    client_certificates: optional
  - {address: "10.0.0.1:7443", client_certificates: none}
tls:
  server_lifetime: 30d
  renew_before: 0.25
upstreams:
  docker.io:
    freshness:
      - {tags: latest, window: 5m}
      - {tags: "v*.*", window: 6h}
      - {tags: pinned, window: 0}
    default_freshness: 15m
    budget:
      limit: 100
      window: 6h
      counted: [manifest_get, blob_get]
  quay.io:
    budget: {counted: []}
clusters:
  dev:
    sources: [10.1.0.0/16, "FD00:1::/32", 192.168.5.9]
    weight: 3
  prod:
    sources: ["10.2.0.0/16"]
    client_names: [prod-nodes, prod-ci]
    weight: 1000
  lab:
scheduler:
  reserve: 0.1
  max_wait: 45s
  max_in_flight: 16
  low_budget: 0.3
  max_stretch: 2.5
prewarm:
  sets: [kubernetes-1.31, /etc/gatecache/sets/extra.yaml]
  images_dir: /srv/images/
  interval: 1d
admin:
  socket: /run/gatecache/admin.sock
  listen: ["127.0.0.1:9090", "[::1]:9090"]
)");
  REQUIRE(loaded.result.has_value());
  const Config &config = **loaded.result;

  REQUIRE(config.listen.size() == 4);
  CHECK(config.listen[0].str() == "127.0.0.1:5443");
  CHECK(config.listen[0].client_auth == ListenAddress::ClientAuth::None);
  CHECK(config.listen[1].str() == "10.0.0.1:5443");
  CHECK(config.listen[1].client_auth == ListenAddress::ClientAuth::Required);
  CHECK(config.listen[2].str() == "[::1]:6443");
  CHECK(config.listen[2].client_auth == ListenAddress::ClientAuth::Optional);
  CHECK(config.listen[3].client_auth == ListenAddress::ClientAuth::None);

  CHECK(config.tls.server_lifetime_s == Approx(30 * 86400.0));
  CHECK(config.tls.renew_fraction == Approx(0.25));

  const auto &hub = config.upstreams.at("docker.io");
  REQUIRE(hub.freshness.size() == 3);
  CHECK(hub.freshness[0].pattern == "latest");
  CHECK(hub.freshness[0].window_s == Approx(300));
  CHECK(hub.freshness[1].pattern == "v*.*");
  CHECK(hub.freshness[1].window_s == Approx(21600));
  CHECK(hub.freshness[2].pattern == "pinned");
  CHECK(hub.freshness[2].window_s == 0);
  CHECK(hub.default_freshness_s == Approx(900));
  CHECK(hub.budget.limit == 100);
  CHECK(hub.budget.window_s == Approx(21600));
  CHECK(hub.budget.counted.manifest_get);
  CHECK_FALSE(hub.budget.counted.manifest_head);
  CHECK(hub.budget.counted.blob_get);
  const auto &quay = config.upstreams.at("quay.io");
  CHECK_FALSE(quay.budget.counted.manifest_get);
  CHECK_FALSE(quay.budget.counted.manifest_head);
  CHECK_FALSE(quay.budget.counted.blob_get);

  REQUIRE(config.clusters.size() == 3);
  const auto &dev = config.clusters[0];
  CHECK(dev.name == "dev");
  REQUIRE(dev.sources.size() == 3);
  CHECK(dev.sources[0].str() == "10.1.0.0/16");
  CHECK_FALSE(dev.sources[0].ipv6);
  CHECK(dev.sources[1].str() == "fd00:1::/32");
  CHECK(dev.sources[1].ipv6);
  CHECK(dev.sources[2].str() == "192.168.5.9/32");
  CHECK(dev.client_names == std::vector<std::string>{"dev"});
  CHECK(dev.weight == 3);
  const auto &prod = config.clusters[1];
  CHECK(prod.name == "prod");
  CHECK(prod.client_names == std::vector<std::string>{"prod-nodes", "prod-ci"});
  CHECK(prod.weight == 1000);
  const auto &lab = config.clusters[2];
  CHECK(lab.name == "lab");
  CHECK(lab.sources.empty());
  CHECK(lab.client_names == std::vector<std::string>{"lab"});
  CHECK(lab.weight == 1);

  CHECK(config.scheduler.reserve_fraction == Approx(0.1));
  CHECK(config.scheduler.max_wait_s == Approx(45));
  CHECK(config.scheduler.max_in_flight == 16);
  CHECK(config.scheduler.low_budget_fraction == Approx(0.3));
  CHECK(config.scheduler.max_stretch == Approx(2.5));

  CHECK(config.prewarm.sets ==
        std::vector<std::string>{"kubernetes-1.31",
                                 "/etc/gatecache/sets/extra.yaml"});
  CHECK(config.prewarm.images_dir == "/srv/images");
  CHECK(config.prewarm.interval_s == Approx(86400));

  CHECK(config.admin.socket == "/run/gatecache/admin.sock");
  REQUIRE(config.admin.listen.size() == 2);
  CHECK(config.admin.listen[0].str() == "127.0.0.1:9090");
  CHECK(config.admin.listen[1].str() == "[::1]:9090");
}

TEST_CASE("config loader fills new defaults", "[config]") {
  TempDir dir;
  auto loaded = load_text(dir, "storage: {path: /srv/gc}\n" + up);
  REQUIRE(loaded.result.has_value());
  const Config &config = **loaded.result;

  CHECK(config.listen[0].client_auth == ListenAddress::ClientAuth::None);
  CHECK(config.tls.server_lifetime_s == Approx(90 * 86400.0));
  CHECK(config.tls.renew_fraction == Approx(1.0 / 3));
  const auto &hub = config.upstreams.at("docker.io");
  CHECK(hub.freshness.empty());
  CHECK(hub.default_freshness_s == Approx(600));
  CHECK(hub.budget.limit == 0);
  CHECK(hub.budget.window_s == Approx(21600));
  CHECK(hub.budget.counted.manifest_get);
  CHECK_FALSE(hub.budget.counted.manifest_head);
  CHECK_FALSE(hub.budget.counted.blob_get);
  CHECK(config.clusters.empty());
  CHECK(config.scheduler.reserve_fraction == Approx(0.2));
  CHECK(config.scheduler.max_wait_s == Approx(20));
  CHECK(config.scheduler.max_in_flight == 8);
  CHECK(config.scheduler.low_budget_fraction == Approx(0.5));
  CHECK(config.scheduler.max_stretch == Approx(8));
  CHECK(config.prewarm.sets.empty());
  CHECK(config.prewarm.images_dir == "/usr/share/gatecache/images");
  CHECK(config.prewarm.interval_s == Approx(21600));
  CHECK(config.admin.socket == "/srv/gc/admin.sock");
  CHECK(config.admin.listen.empty());
}

TEST_CASE("config loader accepts empty new sections", "[config]") {
  TempDir dir;
  auto loaded = load_text(dir, up + "clusters:\nscheduler:\nadmin:\n"
                                    "  listen: []\nprewarm:\n  sets: []\n");
  REQUIRE(loaded.result.has_value());
  CHECK((*loaded.result)->clusters.empty());
  CHECK((*loaded.result)->admin.listen.empty());
  CHECK((*loaded.result)->prewarm.sets.empty());
}

TEST_CASE("config loader turns admin socket off", "[config]") {
  TempDir dir;
  auto loaded = load_text(dir, up + "admin: {socket: \"\"}\n");
  REQUIRE(loaded.result.has_value());
  CHECK((*loaded.result)->admin.socket.empty());
}

TEST_CASE("config loader reads duration limits", "[config]") {
  TempDir dir;
  auto loaded = load_text(dir, up + "tls: {server_lifetime: 60s}\n"
                                    "prewarm: {interval: 7d}\n");
  REQUIRE(loaded.result.has_value());
  CHECK((*loaded.result)->tls.server_lifetime_s == Approx(60));
  CHECK((*loaded.result)->prewarm.interval_s == Approx(7 * 86400.0));

  auto longest = load_text(dir, up + "tls: {server_lifetime: 825d}\n"
                                     "prewarm: {interval: 1m}\n");
  REQUIRE(longest.result.has_value());
  CHECK((*longest.result)->tls.server_lifetime_s == Approx(825 * 86400.0));
  CHECK((*longest.result)->prewarm.interval_s == Approx(60));
}

TEST_CASE("config loader accepts scheduler edge values", "[config]") {
  TempDir dir;
  auto loaded = load_text(dir, up + "scheduler: {reserve: 0.9, low_budget: 1, "
                                    "max_in_flight: 1024, max_stretch: 100}\n");
  REQUIRE(loaded.result.has_value());
  CHECK((*loaded.result)->scheduler.reserve_fraction == Approx(0.9));
  CHECK((*loaded.result)->scheduler.low_budget_fraction == Approx(1));
  CHECK((*loaded.result)->scheduler.max_in_flight == 1024);

  auto zero = load_text(dir, up + "scheduler: {reserve: 0, low_budget: 0, "
                                  "max_in_flight: 1, max_stretch: 1}\n");
  REQUIRE(zero.result.has_value());
  CHECK((*zero.result)->scheduler.reserve_fraction == 0);
  CHECK((*zero.result)->scheduler.max_stretch == Approx(1));
}

TEST_CASE("config loader accepts overlapping clusters", "[config]") {
  TempDir dir;
  auto loaded = load_text(dir, up + "clusters:\n"
                                    "  all: {sources: [10.0.0.0/8]}\n"
                                    "  dev: {sources: [10.1.0.0/16]}\n");
  REQUIRE(loaded.result.has_value());
  CHECK((*loaded.result)->clusters.size() == 2);
}

TEST_CASE("config loader rejects bad listen maps", "[config]") {
  check_errors({
      {up + "listen:\n  - {address: \"127.0.0.1:5443\", client_certificates: "
            "always}\n",
       "4:54: key 'listen.client_certificates': unknown client certificate "
       "mode (value 'always'; expected none, optional or required)"},
      {up + "listen:\n  - {client_certificates: required}\n",
       "4:5: key 'listen.address': missing (expected \"address:port\" with "
       "an IPv4 address or a bracketed IPv6 address and a port from 1 to "
       "65535)"},
      {up + "listen:\n  - {address: \"127.0.0.1:5443\", port: 1}\n",
       "4:33: key 'listen.port': unknown key (expected one of address, "
       "client_certificates)"},
      {up + "listen:\n  - {address: localhost:5443}\n",
       "4:15: key 'listen.address': not an IP address (value "
       "'localhost:5443'; expected \"address:port\" with an IPv4 address or "
       "a bracketed IPv6 address and a port from 1 to 65535)"},
      {up + "listen:\n  - \"127.0.0.1:5443\"\n  - {address: "
            "\"127.0.0.1:5443\"}\n",
       "5:15: key 'listen.address': duplicate of the earlier entry at line "
       "4, column 5 (value '127.0.0.1:5443'; expected each address and port "
       "listed once)"},
      {up + "listen:\n  - {address: \"127.0.0.1:5443\"}\n  - "
            "\"127.0.0.1:5443\"\n",
       "5:5: key 'listen': duplicate of the earlier entry at line 4, column "
       "15 (value '127.0.0.1:5443'; expected each address and port listed "
       "once)"},
      {up + "listen:\n  - [\"127.0.0.1:5443\"]\n",
       "4:5: key 'listen': wrong type (value is a list; expected "
       "\"address:port\" with an IPv4 address or a bracketed IPv6 address "
       "and a port from 1 to 65535, or a map with address and "
       "client_certificates)"},
      {up + "listen:\n  - {address: \"127.0.0.1:5443\", "
            "client_certificates: [required]}\n",
       "4:54: key 'listen.client_certificates': wrong type (value is a "
       "list; expected none, optional or required)"},
  });
}

TEST_CASE("config loader rejects overlapping listens", "[config]") {
  check_errors({
      // The wildcard after a specific address of its family.
      {up + "listen: [\"127.0.0.1:16443\", \"0.0.0.0:16443\"]\n",
       "3:29: key 'listen': overlaps the earlier entry at line 3, column 10: "
       "0.0.0.0 covers every IPv4 address (value '0.0.0.0:16443'; expected "
       "either 0.0.0.0 or specific IPv4 addresses on port 16443)"},
      // The wildcard before a specific address of its family.
      {up + "listen: [\"0.0.0.0:16443\", \"10.1.2.3:16443\"]\n",
       "3:27: key 'listen': overlaps the earlier entry at line 3, column 10: "
       "0.0.0.0 already covers every IPv4 address (value '10.1.2.3:16443'; "
       "expected either 0.0.0.0 or specific IPv4 addresses on port 16443)"},
      {up + "listen: [\"[::]:5443\", \"[::1]:5443\"]\n",
       "3:23: key 'listen': overlaps the earlier entry at line 3, column 10: "
       "[::] already covers every IPv6 address (value '[::1]:5443'; "
       "expected either [::] or specific IPv6 addresses on port 5443)"},
      // The IPv6 wildcard in a non-canonical form.
      {up + "listen: [\"[fd00::1]:5443\", \"[0:0::0]:5443\"]\n",
       "3:28: key 'listen': overlaps the earlier entry at line 3, column 10: "
       "[::] covers every IPv6 address (value '[0:0::0]:5443'; expected "
       "either [::] or specific IPv6 addresses on port 5443)"},
      // The map form points at the address.
      {up + "listen:\n  - {address: \"0.0.0.0:5443\"}\n  - "
            "\"127.0.0.1:5443\"\n",
       "5:5: key 'listen': overlaps the earlier entry at line 4, column 15: "
       "0.0.0.0 already covers every IPv4 address (value '127.0.0.1:5443'; "
       "expected either 0.0.0.0 or specific IPv4 addresses on port 5443)"},
  });
}

TEST_CASE("config loader accepts disjoint listens", "[config]") {
  const std::vector<std::string> lists = {
      // IPv6 sockets are bound with IPV6_V6ONLY, so the two wildcards
      // coexist, and each coexists with specific addresses of the other
      // family.
      "[\"0.0.0.0:5443\", \"[::]:5443\"]",
      "[\"0.0.0.0:5443\", \"[::1]:5443\"]",
      "[\"127.0.0.1:5443\", \"[::]:5443\"]",
      // A wildcard on another port.
      "[\"0.0.0.0:5443\", \"127.0.0.1:5444\"]",
      "[\"[::]:5443\", \"[::1]:5444\"]",
      // Specific addresses of one family on one port.
      "[\"127.0.0.1:5443\", \"127.0.0.2:5443\"]",
  };
  TempDir dir;
  for (const std::string &list : lists) {
    INFO("listen: " << list);
    auto loaded = load_text(dir, up + "listen: " + list + "\n");
    REQUIRE(loaded.result.has_value());
    CHECK((*loaded.result)->listen.size() == 2);
  }
}

TEST_CASE("config loader rejects bad tls lifetimes", "[config]") {
  const std::string lifetime_form =
      "expected seconds as a number, or a number with a unit ms, s, m, h or "
      "d, from 1m to 825d)";
  const std::string renew_form =
      "expected a share of the lifetime greater than 0 and less than 1, "
      "such as 0.33)";
  check_errors({
      {up + "tls:\n  server_lifetime: 59s\n",
       "4:20: key 'tls.server_lifetime': duration is shorter than 1m (value "
       "'59s'; " +
           lifetime_form},
      {up + "tls:\n  server_lifetime: 826d\n",
       "4:20: key 'tls.server_lifetime': duration is too long (value "
       "'826d'; " +
           lifetime_form},
      {up + "tls:\n  server_lifetime: 90 days\n",
       "4:20: key 'tls.server_lifetime': unknown duration unit (value '90 "
       "days'; " +
           lifetime_form},
      {up + "tls:\n  server_lifetime: [90d]\n",
       "4:20: key 'tls.server_lifetime': wrong type (value is a list; " +
           lifetime_form},
      {up + "tls:\n  renew_before: 0\n",
       "4:17: key 'tls.renew_before': number is out of range (value '0'; " +
           renew_form},
      {up + "tls:\n  renew_before: 1\n",
       "4:17: key 'tls.renew_before': number is out of range (value '1'; " +
           renew_form},
      {up + "tls:\n  renew_before: 1.5\n",
       "4:17: key 'tls.renew_before': number is out of range (value '1.5'; " +
           renew_form},
      {up + "tls:\n  renew_before: 1/3\n",
       "4:17: key 'tls.renew_before': invalid number (value '1/3'; " +
           renew_form},
      {up + "tls:\n  renew_before: -0.5\n",
       "4:17: key 'tls.renew_before': invalid number (value '-0.5'; " +
           renew_form},
      {up + "tls:\n  renew_before:\n",
       "4:3: key 'tls.renew_before': wrong type (value is empty; " +
           renew_form},
  });
}

TEST_CASE("config loader rejects bad freshness rules", "[config]") {
  const std::string hub = "upstreams:\n  docker.io:\n";
  const std::string window_form =
      "expected seconds as a number, or a number with a unit ms, s, m, h or "
      "d, from 0 to 30d)";
  const std::string tags_form =
      "expected a tag glob of 1 to 128 characters: letters, digits, '_', "
      "'.', '-', '*' for any run and '?' for one character)";
  check_errors({
      {hub + "    freshness: {tags: latest, window: 5m}\n",
       "3:16: key 'upstreams.docker.io.freshness': wrong type (value is a "
       "map; expected a list of a map with tags (a glob such as \"v*\") and "
       "window (a duration))"},
      {hub + "    freshness: [latest]\n",
       "3:17: key 'upstreams.docker.io.freshness': wrong type (value is a "
       "string; expected a map with tags (a glob such as \"v*\") and window "
       "(a duration))"},
      {hub + "    freshness:\n      - {tags: latest}\n",
       "4:9: key 'upstreams.docker.io.freshness.window': missing (" +
           window_form},
      {hub + "    freshness:\n      - {window: 5m}\n",
       "4:9: key 'upstreams.docker.io.freshness.tags': missing (expected a "
       "tag glob such as \"latest\" or \"v*\")"},
      {hub + "    freshness:\n      - {tags: \"v[0-9]*\", window: 5m}\n",
       "4:16: key 'upstreams.docker.io.freshness.tags': invalid tag pattern "
       "(value 'v[0-9]*'; " +
           tags_form},
      {hub + "    freshness:\n      - {tags: \"\", window: 5m}\n",
       "4:16: key 'upstreams.docker.io.freshness.tags': invalid tag pattern "
       "(value ''; " +
           tags_form},
      {hub + "    freshness:\n      - {tags: latest, window: 31d}\n",
       "4:32: key 'upstreams.docker.io.freshness.window': duration is too "
       "long (value '31d'; " +
           window_form},
      {hub + "    freshness:\n      - {tags: latest, window: soon}\n",
       "4:32: key 'upstreams.docker.io.freshness.window': invalid duration "
       "(value 'soon'; " +
           window_form},
      {hub + "    freshness:\n      - {tags: latest, window: 5m, ttl: 1}\n",
       "4:36: key 'upstreams.docker.io.freshness.ttl': unknown key (expected "
       "one of tags, window)"},
      {hub + "    freshness:\n      - {tags: \"v*\", window: 5m}\n"
             "      - {tags: \"v*\", window: 1h}\n",
       "5:16: key 'upstreams.docker.io.freshness.tags': duplicate tag pattern "
       "'v*' (first at line 4, column 16; the first matching rule applies, "
       "so this one never would)"},
      {hub + "    default_freshness: -1m\n",
       "3:24: key 'upstreams.docker.io.default_freshness': invalid duration "
       "(value '-1m'; " +
           window_form},
      {hub + "    default_freshness: 60d\n",
       "3:24: key 'upstreams.docker.io.default_freshness': duration is too "
       "long (value '60d'; " +
           window_form},
  });
}

TEST_CASE("config loader rejects bad budgets", "[config]") {
  const std::string hub = "upstreams:\n  docker.io:\n";
  const std::string limit_form =
      "expected a number of requests per window, 0 for no budget unless the "
      "upstream announces one)";
  const std::string counted_form =
      "expected manifest_get, manifest_head or blob_get)";
  check_errors({
      {hub + "    budget: 100\n",
       "3:13: key 'upstreams.docker.io.budget': wrong type (value is a "
       "string; expected a map)"},
      {hub + "    budget: {limit: -1}\n",
       "3:21: key 'upstreams.docker.io.budget.limit': invalid number (value "
       "'-1'; " +
           limit_form},
      {hub + "    budget: {limit: 1e3}\n",
       "3:21: key 'upstreams.docker.io.budget.limit': invalid number (value "
       "'1e3'; " +
           limit_form},
      {hub + "    budget: {limit: 5000000000}\n",
       "3:21: key 'upstreams.docker.io.budget.limit': number is too large "
       "(value '5000000000'; " +
           limit_form},
      {hub + "    budget: {window: 0}\n",
       "3:22: key 'upstreams.docker.io.budget.window': duration must be "
       "greater than 0 (value '0'; expected seconds as a number, or a number "
       "with a unit ms, s, m, h or d, at most 30d)"},
      {hub + "    budget: {counted: manifest_get}\n",
       "3:23: key 'upstreams.docker.io.budget.counted': wrong type (value is "
       "a string; expected a list of manifest_get, manifest_head and "
       "blob_get, or [] for none)"},
      {hub + "    budget: {counted: [manifest_put]}\n",
       "3:24: key 'upstreams.docker.io.budget.counted': unknown request kind "
       "(value 'manifest_put'; " +
           counted_form},
      {hub + "    budget: {counted: [blob_get, blob_get]}\n",
       "3:34: key 'upstreams.docker.io.budget.counted': duplicate request "
       "kind (value 'blob_get'; " +
           counted_form},
      {hub + "    budget: {counted: [[blob_get]]}\n",
       "3:24: key 'upstreams.docker.io.budget.counted': wrong type (value is "
       "a list; " +
           counted_form},
      {hub + "    budget: {limit: 10, rate: 1}\n",
       "3:25: key 'upstreams.docker.io.budget.rate': unknown key (expected "
       "one of limit, window, counted)"},
  });
}

TEST_CASE("config loader rejects bad clusters", "[config]") {
  const std::string name_form =
      "expected a cluster name of 1 to 63 characters: lower-case letters, "
      "digits, '_' and '-', starting with a letter or digit";
  const std::string source_form =
      "expected an IP network \"address/prefix\" with no host bits set, or a "
      "single IP address)";
  check_errors({
      {up + "clusters: [dev]\n",
       "3:11: key 'clusters': wrong type (value is a list; expected a map "
       "from cluster name to its settings)"},
      {up + "clusters:\n  Dev: {sources: [10.0.0.0/8]}\n",
       "4:3: key 'clusters.Dev': invalid cluster name (value 'Dev'; " +
           name_form + ")"},
      {up + "clusters:\n  -dev:\n",
       "4:3: key 'clusters.-dev': invalid cluster name (value '-dev'; " +
           name_form + ")"},
      {up + "clusters:\n  " + std::string(64, 'a') + ":\n",
       "4:3: key 'clusters." + std::string(64, 'a') +
           "': invalid cluster name (value '" + std::string(64, 'a') + "'; " +
           name_form + ")"},
      {up + "clusters:\n  default: {sources: [10.0.0.0/8]}\n",
       "4:3: key 'clusters.default': reserved cluster name (value 'default'; " +
           name_form + ", other than default)"},
      {up + "clusters:\n  dev:\n  dev:\n",
       "5:3: key 'clusters.dev': duplicate key (first at line 4, column 3)"},
      {up + "clusters:\n  dev: [10.0.0.0/8]\n",
       "4:8: key 'clusters.dev': wrong type (value is a list; expected a map "
       "with sources, client_names and weight, or nothing)"},
      {up + "clusters:\n  dev: {sources: 10.0.0.0/8}\n",
       "4:18: key 'clusters.dev.sources': wrong type (value is a string; "
       "expected a list of IP networks and addresses)"},
      {up + "clusters:\n  dev: {sources: []}\n",
       "4:18: key 'clusters.dev.sources': empty list (expected a list of IP "
       "networks and addresses)"},
      {up + "clusters:\n  dev: {sources: [10.1.2.3/16]}\n",
       "4:19: key 'clusters.dev.sources': host bits are set (the network is "
       "10.1.0.0/16) (value '10.1.2.3/16'; " +
           source_form},
      {up + "clusters:\n  dev: {sources: [gateway.lan]}\n",
       "4:19: key 'clusters.dev.sources': invalid IP address (value "
       "'gateway.lan'; " +
           source_form},
      {up + "clusters:\n  dev: {sources: [10.0.0.0/33]}\n",
       "4:19: key 'clusters.dev.sources': prefix length is larger than 32 "
       "(value '10.0.0.0/33'; " +
           source_form},
      {up + "clusters:\n  dev: {sources: [\"::ffff:10.0.0.0/104\"]}\n",
       "4:19: key 'clusters.dev.sources': IPv4-mapped IPv6 address (write "
       "the IPv4 network 10.0.0.0/8) (value '::ffff:10.0.0.0/104'; " +
           source_form},
      {up + "clusters:\n  dev: {sources: [10.0.0.0/8, 10.0.0.0/8]}\n",
       "4:31: key 'clusters.dev.sources': duplicate network (10.0.0.0/8, "
       "first at line 4, column 19) (value '10.0.0.0/8'; " +
           source_form},
      {up + "clusters:\n  dev: {sources: [\"fd00::/8\"]}\n"
            "  prod: {sources: [\"FD00:0::/8\"]}\n",
       "5:20: key 'clusters.prod.sources': network is also a source of "
       "cluster 'dev' (fd00::/8, first at line 4, column 19) (value "
       "'FD00:0::/8'; " +
           source_form},
      {up + "clusters:\n  dev: {sources: [10.0.0.5]}\n"
            "  prod: {sources: [10.0.0.5/32]}\n",
       "5:20: key 'clusters.prod.sources': network is also a source of "
       "cluster 'dev' (10.0.0.5/32, first at line 4, column 19) (value "
       "'10.0.0.5/32'; " +
           source_form},
      {up + "clusters:\n  dev: {client_names: []}\n",
       "4:3: key 'clusters.dev': cluster has no sources and no client names, "
       "so no client can belong to it (expected at least one of either)"},
      {up + "clusters:\n  dev: {client_names: dev}\n",
       "4:23: key 'clusters.dev.client_names': wrong type (value is a "
       "string; expected a list of client certificate common names, or [] "
       "for none)"},
      {up + "clusters:\n  dev: {client_names: [\"\"]}\n",
       "4:24: key 'clusters.dev.client_names': invalid client name (value "
       "''; expected a client certificate common name of 1 to 64 characters "
       "with no control characters)"},
      {up + "clusters:\n  dev: {client_names: [" + std::string(65, 'n') +
           "]}\n",
       "4:24: key 'clusters.dev.client_names': invalid client name (value '" +
           std::string(65, 'n') +
           "'; expected a client certificate common name of 1 to 64 "
           "characters with no control characters)"},
      {up + "clusters:\n  dev: {client_names: [a, a]}\n",
       "4:27: key 'clusters.dev.client_names': duplicate client name (value "
       "'a', first at line 4, column 24; expected a name no other cluster "
       "uses, set with client_names)"},
      {up + "clusters:\n  dev:\n  prod: {client_names: [dev]}\n",
       "5:25: key 'clusters.prod.client_names': client name also belongs to "
       "cluster 'dev' (value 'dev', first at line 4, column 3; expected a "
       "name no other cluster uses, set with client_names)"},
      {up + "clusters:\n  prod: {client_names: [dev]}\n  dev:\n",
       "5:3: key 'clusters.dev.client_names': client name also belongs to "
       "cluster 'prod' (value 'dev', first at line 4, column 25; expected a "
       "name no other cluster uses, set with client_names)"},
      {up + "clusters:\n  dev: {weight: 0}\n",
       "4:17: key 'clusters.dev.weight': number is out of range (value '0'; "
       "expected an integer from 1 to 1000)"},
      {up + "clusters:\n  dev: {weight: 1001}\n",
       "4:17: key 'clusters.dev.weight': number is out of range (value "
       "'1001'; expected an integer from 1 to 1000)"},
      {up + "clusters:\n  dev: {weight: 1.5}\n",
       "4:17: key 'clusters.dev.weight': invalid number (value '1.5'; "
       "expected an integer from 1 to 1000)"},
      {up + "clusters:\n  dev: {priority: 1}\n",
       "4:9: key 'clusters.dev.priority': unknown key (expected one of "
       "sources, client_names, weight)"},
  });
}

TEST_CASE("config loader rejects bad scheduler values", "[config]") {
  check_errors({
      {up + "scheduler:\n  reserve: 0.95\n",
       "4:12: key 'scheduler.reserve': number is out of range (value '0.95'; "
       "expected a share of the limit from 0 to 0.9)"},
      {up + "scheduler:\n  reserve: 20%\n",
       "4:12: key 'scheduler.reserve': invalid number (value '20%'; expected "
       "a share of the limit from 0 to 0.9)"},
      {up + "scheduler:\n  max_wait: 0\n",
       "4:13: key 'scheduler.max_wait': duration must be greater than 0 "
       "(value '0'; expected seconds as a number, or a number with a unit "
       "ms, s, m, h or d, at most 24h)"},
      {up + "scheduler:\n  max_in_flight: 0\n",
       "4:18: key 'scheduler.max_in_flight': number is out of range (value "
       "'0'; expected an integer from 1 to 1024)"},
      {up + "scheduler:\n  max_in_flight: 1025\n",
       "4:18: key 'scheduler.max_in_flight': number is out of range (value "
       "'1025'; expected an integer from 1 to 1024)"},
      {up + "scheduler:\n  low_budget: 1.1\n",
       "4:15: key 'scheduler.low_budget': number is out of range (value "
       "'1.1'; expected a share of the limit from 0 to 1)"},
      {up + "scheduler:\n  max_stretch: 0.5\n",
       "4:16: key 'scheduler.max_stretch': number is out of range (value "
       "'0.5'; expected a factor from 1 to 100)"},
      {up + "scheduler:\n  max_stretch: 101\n",
       "4:16: key 'scheduler.max_stretch': number is out of range (value "
       "'101'; expected a factor from 1 to 100)"},
      {up + "scheduler:\n  reserve: 0.4\n  low_budget: 0.3\n",
       "5:15: key 'scheduler.low_budget': scheduler.low_budget 0.3 is below "
       "scheduler.reserve 0.4 (expected low_budget at least as large as "
       "reserve)"},
      {up + "scheduler:\n  reserve: 0.6\n",
       "4:12: key 'scheduler.reserve': scheduler.low_budget 0.5 is below "
       "scheduler.reserve 0.6 (expected low_budget at least as large as "
       "reserve)"},
      {up + "scheduler:\n  low_budget: 0.1\n",
       "4:15: key 'scheduler.low_budget': scheduler.low_budget 0.1 is below "
       "scheduler.reserve 0.2 (expected low_budget at least as large as "
       "reserve)"},
      {up + "scheduler:\n  fairness: wfq\n",
       "4:3: key 'scheduler.fairness': unknown key (expected one of reserve, "
       "max_wait, max_in_flight, low_budget, max_stretch)"},
  });
}

TEST_CASE("config loader rejects bad prewarm values", "[config]") {
  const std::string set_form =
      "expected an image set name (a file in prewarm.images_dir without "
      ".yaml) or an absolute path to a set file)";
  const std::string interval_form =
      "expected seconds as a number, or a number with a unit ms, s, m, h or "
      "d, from 1m to 7d)";
  check_errors({
      {up + "prewarm:\n  sets: kubernetes-1.31\n",
       "4:9: key 'prewarm.sets': wrong type (value is a string; expected a "
       "list of image set names and paths)"},
      {up + "prewarm:\n  sets: [kubernetes-1.31.yaml]\n",
       "4:10: key 'prewarm.sets': image set name ends with a file extension "
       "(name the set without .yaml, or give an absolute path) (value "
       "'kubernetes-1.31.yaml'; " +
           set_form},
      {up + "prewarm:\n  sets: [sets/k8s]\n",
       "4:10: key 'prewarm.sets': image set name contains a character other "
       "than letters, digits, '.', '_' and '-' (value 'sets/k8s'; " +
           set_form},
      {up + "prewarm:\n  sets: [\"..\"]\n",
       "4:10: key 'prewarm.sets': image set name is '.' or '..' (value '..'; " +
           set_form},
      {up + "prewarm:\n  sets: [\"\"]\n",
       "4:10: key 'prewarm.sets': empty image set name (value ''; " + set_form},
      {up + "prewarm:\n  sets: [/etc/gatecache/sets/]\n",
       "4:10: key 'prewarm.sets': path names a directory (value "
       "'/etc/gatecache/sets/'; " +
           set_form},
      {up + "prewarm:\n  sets: [flannel, flannel]\n",
       "4:19: key 'prewarm.sets': duplicate image set (first at line 4, "
       "column 10) (value 'flannel'; " +
           set_form},
      {up + "prewarm:\n  images_dir: images\n",
       "4:15: key 'prewarm.images_dir': relative path (value 'images'; "
       "expected an absolute path)"},
      {up + "prewarm:\n  interval: 30s\n",
       "4:13: key 'prewarm.interval': duration is shorter than 1m (value "
       "'30s'; " +
           interval_form},
      {up + "prewarm:\n  interval: 8d\n",
       "4:13: key 'prewarm.interval': duration is too long (value '8d'; " +
           interval_form},
      {up + "prewarm:\n  set: [flannel]\n",
       "4:3: key 'prewarm.set': unknown key (expected one of sets, "
       "images_dir, interval)"},
  });
}

TEST_CASE("config loader rejects bad admin values", "[config]") {
  const std::string socket_form =
      "expected an absolute path of at most 107 bytes, or \"\" to turn the "
      "socket off)";
  const std::string listen_form =
      "expected \"address:port\" with a loopback address (127.0.0.0/8 or "
      "[::1]) and a port from 1 to 65535)";
  const std::string long_path = "/" + std::string(107, 's');
  check_errors({
      {up + "admin:\n  socket: admin.sock\n",
       "4:11: key 'admin.socket': relative path (value 'admin.sock'; " +
           socket_form},
      {up + "admin:\n  socket: /run/gatecache/\n",
       "4:11: key 'admin.socket': path names a directory (value "
       "'/run/gatecache/'; " +
           socket_form},
      {up + "admin:\n  socket: " + long_path + "\n",
       "4:11: key 'admin.socket': path is too long for a Unix socket (value "
       "'" +
           long_path.substr(0, 80) + "...'; " + socket_form},
      {up + "admin:\n  socket:\n",
       "4:3: key 'admin.socket': wrong type (value is empty; " + socket_form},
      {"storage:\n  path: " + long_path + "\n" + up,
       "2:9: key 'admin.socket': the default path '" +
           (long_path + "/admin.sock").substr(0, 80) +
           "...' is too long for a Unix socket (expected admin.socket set to "
           "an absolute path of at most 107 bytes, or a shorter "
           "storage.path)"},
      {up + "admin:\n  listen: \"127.0.0.1:9090\"\n",
       "4:11: key 'admin.listen': wrong type (value is a string; expected a "
       "list of \"address:port\" with a loopback address (127.0.0.0/8 or "
       "[::1]) and a port from 1 to 65535)"},
      {up + "admin:\n  listen: [\"0.0.0.0:9090\"]\n",
       "4:12: key 'admin.listen': not a loopback address (value "
       "'0.0.0.0:9090'; " +
           listen_form},
      {up + "admin:\n  listen: [\"10.0.0.1:9090\"]\n",
       "4:12: key 'admin.listen': not a loopback address (value "
       "'10.0.0.1:9090'; " +
           listen_form},
      {up + "admin:\n  listen: [\"[::]:9090\"]\n",
       "4:12: key 'admin.listen': not a loopback address (value "
       "'[::]:9090'; " +
           listen_form},
      {up + "admin:\n  listen: [\"localhost:9090\"]\n",
       "4:12: key 'admin.listen': not an IP address (value "
       "'localhost:9090'; " +
           listen_form},
      {up + "admin:\n  listen: [\"127.0.0.1:9090\", \"127.0.0.1:9090\"]\n",
       "4:30: key 'admin.listen': duplicate of the earlier entry at line 4, "
       "column 12 (value '127.0.0.1:9090'; expected each address and port "
       "listed once)"},
      {up + "admin:\n  listen: [\"127.0.0.1:5443\"]\n",
       "4:12: key 'admin.listen': address is also served by listen entry "
       "'127.0.0.1:5443' (value '127.0.0.1:5443'; expected an address and "
       "port the registry does not listen on)"},
      {up + "listen: [\"0.0.0.0:9090\"]\nadmin:\n  listen: "
            "[\"127.0.0.2:9090\"]\n",
       "5:12: key 'admin.listen': address is also served by listen entry "
       "'0.0.0.0:9090' (value '127.0.0.2:9090'; expected an address and "
       "port the registry does not listen on)"},
      {up + "listen: [\"[::]:9090\"]\nadmin:\n  listen: [\"[::1]:9090\"]\n",
       "5:12: key 'admin.listen': address is also served by listen entry "
       "'[::]:9090' (value '[::1]:9090'; expected an address and port the "
       "registry does not listen on)"},
      {up + "admin:\n  port: 9090\n",
       "4:3: key 'admin.port': unknown key (expected one of socket, "
       "listen)"},
  });
}

TEST_CASE("config loader allows admin beside wildcard", "[config]") {
  TempDir dir;
  // 0.0.0.0 covers IPv4 only, so [::1] on the same port is free.
  auto loaded = load_text(dir, up + "listen: [\"0.0.0.0:9090\"]\n"
                                    "admin: {listen: [\"[::1]:9090\"]}\n");
  REQUIRE(loaded.result.has_value());
  CHECK((*loaded.result)->admin.listen.size() == 1);
}

TEST_CASE("config loader reads example scheduling keys", "[config]") {
  auto result = gatecache::config::load_config(
      std::string(GATECACHE_SOURCE_DIR) +
      "/appliance/config/gatecache.example.yaml");
  REQUIRE(result.has_value());
  const Config &config = **result;

  // The example starts on loopback with no clusters.
  for (const ListenAddress &address : config.listen) {
    INFO("listen: " << address.str());
    CHECK((address.host == "127.0.0.1" || address.host == "::1"));
  }
  CHECK(config.clusters.empty());
  CHECK(config.prewarm.sets.empty());

  const auto &hub = config.upstreams.at("docker.io");
  REQUIRE(hub.freshness.size() == 3);
  CHECK(hub.freshness[0].pattern == "latest");
  CHECK(hub.freshness[0].window_s == Approx(300));
  CHECK(hub.freshness[1].pattern == "v*.*");
  CHECK(hub.freshness[1].window_s == Approx(6 * 3600));
  CHECK(hub.freshness[2].pattern == "*.*");
  CHECK(hub.freshness[2].window_s == Approx(6 * 3600));
  CHECK(config.admin.socket == config.storage.path + "/admin.sock");
}
