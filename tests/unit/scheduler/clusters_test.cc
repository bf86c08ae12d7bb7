#include "appliance/scheduler/clusters.h"

#include <optional>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

using gatecache::config::Cidr;
using gatecache::config::ClusterConfig;
using gatecache::scheduler::ClusterMap;

namespace {

ClusterConfig cluster(std::string name, std::vector<Cidr> sources,
                      std::vector<std::string> client_names = {},
                      unsigned weight = 1) {
  ClusterConfig config;
  config.name = std::move(name);
  config.sources = std::move(sources);
  config.client_names = std::move(client_names);
  config.weight = weight;
  return config;
}

Cidr v4(std::string address, unsigned prefix_length) {
  return Cidr{std::move(address), prefix_length, false};
}

Cidr v6(std::string address, unsigned prefix_length) {
  return Cidr{std::move(address), prefix_length, true};
}

// dev: 10.1.0.0/16 and fd00:1::/32; prod: 10.0.0.0/8 and 10.1.2.0/24,
// 2001:db8::/32, and a single host 192.0.2.7; lab: 192.0.2.0/24.
ClusterMap sample_map() {
  return ClusterMap({
      cluster("dev", {v4("10.1.0.0", 16), v6("fd00:1::", 32)}, {"dev"}, 3),
      cluster("prod",
              {v4("10.0.0.0", 8), v4("10.1.2.0", 24), v6("2001:db8::", 32),
               v4("192.0.2.7", 32)},
              {"prod", "prod-nodes"}, 1),
      cluster("lab", {v4("192.0.2.0", 24)}, {}, 2),
  });
}

} // namespace

TEST_CASE("clusters default to one cluster", "[scheduler][clusters]") {
  ClusterMap map({});
  REQUIRE(map.size() == 1);
  CHECK(map.names() == std::vector<std::string>{"default"});
  CHECK(map.weights() == std::vector<unsigned>{1});
  CHECK(map.classify("203.0.113.9:443", "") == size_t{0});
  CHECK(map.classify("[::1]:5443", "someone") == size_t{0});
  CHECK(map.classify("garbage", "") == size_t{0});
}

TEST_CASE("clusters keep names and weights", "[scheduler][clusters]") {
  ClusterMap map = sample_map();
  REQUIRE(map.size() == 3);
  CHECK(map.names() == std::vector<std::string>{"dev", "prod", "lab"});
  CHECK(map.weights() == std::vector<unsigned>{3, 1, 2});
}

TEST_CASE("clusters match longest prefix", "[scheduler][clusters]") {
  ClusterMap map = sample_map();

  struct Case {
    std::string peer;
    std::optional<size_t> cluster;
  };

  const std::vector<Case> cases = {
      // IPv4: /16 of dev inside /8 of prod, and /24 of prod inside dev.
      {"10.1.0.5:40000", 0},
      {"10.1.255.255:1", 0},
      {"10.1.2.3:40000", 1},
      {"10.2.0.1:40000", 1},
      {"10.255.255.255:1", 1},
      {"192.0.2.7:1", 1},
      {"192.0.2.8:1", 2},
      {"11.0.0.1:40000", std::nullopt},
      {"9.255.255.255:1", std::nullopt},
      // IPv6.
      {"[fd00:1::9]:40000", 0},
      {"[fd00:1:ffff:ffff::1]:1", 0},
      {"[fd00:2::9]:40000", std::nullopt},
      {"[2001:db8:1::1]:443", 1},
      {"[2001:db9::1]:443", std::nullopt},
      {"[::1]:5443", std::nullopt},
      // IPv4-mapped IPv6 peers match IPv4 networks.
      {"[::ffff:10.1.0.5]:40000", 0},
      {"[::ffff:10.3.0.5]:40000", 1},
      {"[::ffff:192.0.2.9]:1", 2},
      {"[::ffff:11.0.0.1]:1", std::nullopt},
      // A zone is dropped; bare addresses are accepted.
      {"[fd00:1::9%eth0]:1", 0},
      {"10.1.0.5", 0},
      {"fd00:1::9", 0},
      // Not addresses.
      {"", std::nullopt},
      {"[fd00:1::9:1", std::nullopt},
      {"host.example:443", std::nullopt},
      {"10.1.0:443", std::nullopt},
      {"10.1.0.5.6:443", std::nullopt},
      {"[10.1.0.5]:443", 0},
      {std::string(100, '1') + ":1", std::nullopt},
  };
  for (const Case &c : cases) {
    INFO("peer " << c.peer);
    CHECK(map.classify(c.peer, "") == c.cluster);
  }
}

TEST_CASE("clusters match partial byte prefixes", "[scheduler][clusters]") {
  ClusterMap map({
      cluster("a", {v4("172.16.0.0", 12)}),
      cluster("b", {v6("fd00::", 7)}),
      cluster("all", {v4("0.0.0.0", 0)}),
  });
  CHECK(map.classify("172.16.0.1:1", "") == size_t{0});
  CHECK(map.classify("172.31.255.255:1", "") == size_t{0});
  CHECK(map.classify("172.32.0.1:1", "") == size_t{2});
  CHECK(map.classify("[fc00::1]:1", "") == size_t{1});
  CHECK(map.classify("[fdff::1]:1", "") == size_t{1});
  CHECK(map.classify("[fe00::1]:1", "") == std::nullopt);
  CHECK(map.classify("8.8.8.8:53", "") == size_t{2});
}

TEST_CASE("clusters prefer client name", "[scheduler][clusters]") {
  ClusterMap map = sample_map();
  // The address belongs to dev, the certificate name to prod.
  CHECK(map.classify("10.1.0.5:40000", "prod-nodes") == size_t{1});
  CHECK(map.classify("10.1.0.5:40000", "prod") == size_t{1});
  // An unknown or empty name falls back to the address.
  CHECK(map.classify("10.1.0.5:40000", "stranger") == size_t{0});
  CHECK(map.classify("10.1.0.5:40000", "") == size_t{0});
  // Names match exactly.
  CHECK(map.classify("11.0.0.1:1", "Prod") == std::nullopt);
  CHECK(map.classify("11.0.0.1:1", "dev") == size_t{0});
}

TEST_CASE("clusters skip bad sources", "[scheduler][clusters]") {
  ClusterMap map({
      cluster("a",
              {v4("not-an-address", 8), v4("10.0.0.0", 40), v4("10.0.0.0", 8)}),
  });
  CHECK(map.classify("10.9.9.9:1", "") == size_t{0});
  CHECK(map.classify("11.9.9.9:1", "") == std::nullopt);
}
