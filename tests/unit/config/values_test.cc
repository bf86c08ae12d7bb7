#include "appliance/config/values.h"

#include <cstdint>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

using namespace gatecache::config;

TEST_CASE("byte size parses every unit", "[config]") {
  struct Case {
    std::string text;
    uint64_t bytes;
  };

  const std::vector<Case> cases = {
      {"1", 1},
      {"10737418240", 10737418240ULL},
      {"007", 7},
      {"1KiB", 1024},
      {"2 MiB", 2ULL << 20},
      {"50GiB", 50ULL << 30},
      {"3  TiB", 3ULL << 40},
      {"1KB", 1000},
      {"5MB", 5000000},
      {"7 GB", 7000000000ULL},
      {"2TB", 2000000000000ULL},
      {" 4KiB ", 4096},
      {"8388607TiB", 8388607ULL << 40},
      {"9223372036854775807", 9223372036854775807ULL},
  };
  for (const Case &c : cases) {
    INFO("text: '" << c.text << "'");
    auto bytes = parse_byte_size(c.text);
    REQUIRE(bytes.has_value());
    CHECK(*bytes == c.bytes);
  }
}

TEST_CASE("byte size rejects malformed values", "[config]") {
  struct Case {
    std::string text;
    std::string message;
  };

  const std::vector<Case> cases = {
      {"", "invalid size"},
      {"GiB", "invalid size"},
      {"-1", "invalid size"},
      {"+1", "invalid size"},
      {"1.5GiB", "unknown size unit"},
      {"1e9", "unknown size unit"},
      {"0x10", "unknown size unit"},
      {"10 XB", "unknown size unit"},
      {"10gib", "unknown size unit"},
      {"10 mb", "unknown size unit"},
      {"10B", "unknown size unit"},
      {"1 GiB extra", "unknown size unit"},
      {"0", "size must be greater than 0"},
      {"0 GiB", "size must be greater than 0"},
      {"9223372036854775808", "size is too large"},
      {"8388608TiB", "size is too large"},
      {"99999999999999999999", "size is too large"},
  };
  for (const Case &c : cases) {
    INFO("text: '" << c.text << "'");
    auto bytes = parse_byte_size(c.text);
    REQUIRE_FALSE(bytes.has_value());
    CHECK(bytes.error().code == gatecache::ErrorCode::Invalid);
    CHECK(bytes.error().message == c.message);
  }
}

TEST_CASE("duration parses numbers and units", "[config]") {
  struct Case {
    std::string text;
    double seconds;
  };

  const std::vector<Case> cases = {
      {"10", 10},       {"0.5", 0.5}, {"10s", 10},    {"500ms", 0.5},
      {"2m", 120},      {"1h", 3600}, {"1.5 s", 1.5}, {"24h", 86400},
      {"1440m", 86400}, {" 3s ", 3},  {"1ms", 0.001}, {"1d", 86400},
  };
  for (const Case &c : cases) {
    INFO("text: '" << c.text << "'");
    auto seconds = parse_duration(c.text);
    REQUIRE(seconds.has_value());
    CHECK(*seconds == Approx(c.seconds));
  }
}

TEST_CASE("duration rejects malformed values", "[config]") {
  struct Case {
    std::string text;
    std::string message;
  };

  const std::vector<Case> cases = {
      {"", "invalid duration"},
      {"s", "invalid duration"},
      {"-1", "invalid duration"},
      {".5", "invalid duration"},
      {"5.", "invalid duration"},
      {"1.2.3", "invalid duration"},
      {"inf", "invalid duration"},
      {"nan", "invalid duration"},
      {"1e3", "unknown duration unit"},
      {"2d", "duration is too long"},
      {"10 days", "unknown duration unit"},
      {"10 sec", "unknown duration unit"},
      {"0", "duration must be greater than 0"},
      {"0ms", "duration must be greater than 0"},
      {"25h", "duration is too long"},
      {"86401", "duration is too long"},
      {"99999999999999999999999999999999999999h", "duration is too long"},
  };
  for (const Case &c : cases) {
    INFO("text: '" << c.text << "'");
    auto seconds = parse_duration(c.text);
    REQUIRE_FALSE(seconds.has_value());
    CHECK(seconds.error().message == c.message);
  }
}

TEST_CASE("registry host normalises valid hosts", "[config]") {
  struct Case {
    std::string text;
    std::string normalised;
  };

  const std::vector<Case> cases = {
      {"docker.io", "docker.io"},
      {"Docker.IO", "docker.io"},
      {"ghcr.io", "ghcr.io"},
      {"registry.k8s.io", "registry.k8s.io"},
      {"localhost", "localhost"},
      {"localhost:5000", "localhost:5000"},
      {"my-registry.example.com:443", "my-registry.example.com:443"},
      {"127.0.0.1:5000", "127.0.0.1:5000"},
      {"10.1.2.3", "10.1.2.3"},
      {"[::1]:5000", "[::1]:5000"},
      {"[::1]", "[::1]"},
      {"[0:0::1]:05000", "[::1]:5000"},
      {"[FE80::A]:1", "[fe80::a]:1"},
      {"x1.io:65535", "x1.io:65535"},
  };
  for (const Case &c : cases) {
    INFO("text: '" << c.text << "'");
    auto host = parse_registry_host(c.text);
    REQUIRE(host.has_value());
    CHECK(*host == c.normalised);
  }
}

TEST_CASE("registry host rejects malformed hosts", "[config]") {
  struct Case {
    std::string text;
    std::string message;
  };

  const std::vector<Case> cases = {
      {"", "invalid host name"},
      {"docker.io:", "invalid port"},
      {"docker.io:0", "invalid port"},
      {"docker.io:65536", "invalid port"},
      {"docker.io:000443", "invalid port"},
      {"docker.io:+1", "invalid port"},
      {"docker.io:1:2", "invalid port"},
      {"::1", "IPv6 address without brackets"},
      {"fe80::1:5000", "IPv6 address without brackets"},
      {"[::1", "missing ']' after IPv6 address"},
      {"[::1]5000", "unexpected text after ']'"},
      {"[::1]:", "invalid port"},
      {"[1.2.3.4]", "invalid IPv6 address"},
      {"[fe80::1%eth0]", "invalid IPv6 address"},
      {"-docker.io", "invalid host name"},
      {"docker-.io", "invalid host name"},
      {"docker..io", "invalid host name"},
      {"docker.io.", "invalid host name"},
      {"docker_hub.io", "invalid host name"},
      {"*.docker.io", "invalid host name"},
      {"127.1", "invalid host name"},
      {"1.2.3.256", "invalid host name"},
      {"user@docker.io", "invalid host name"},
      {"docker.io/library", "invalid host name"},
      {std::string(64, 'a') + ".io", "invalid host name"},
      {std::string("a\0b", 3), "invalid host name"},
  };
  for (const Case &c : cases) {
    INFO("text: '" << c.text << "'");
    auto host = parse_registry_host(c.text);
    REQUIRE_FALSE(host.has_value());
    CHECK(host.error().message == c.message);
  }
}

TEST_CASE("dns name checks labels and wildcard", "[config]") {
  CHECK(is_dns_name("mirror.example.com"));
  CHECK(is_dns_name("a"));
  CHECK(is_dns_name("xn--bcher-kva.example"));
  CHECK(is_dns_name(std::string(63, 'a') + ".com"));
  CHECK_FALSE(is_dns_name(std::string(64, 'a') + ".com"));
  CHECK_FALSE(is_dns_name(""));
  CHECK_FALSE(is_dns_name("*.example.com"));
  CHECK(is_dns_name("*.example.com", true));
  CHECK_FALSE(is_dns_name("*", true));
  CHECK_FALSE(is_dns_name("*.", true));
  CHECK_FALSE(is_dns_name("a.*.example.com", true));
  CHECK_FALSE(is_dns_name("*a.example.com", true));
  CHECK_FALSE(is_dns_name("10.0.0.1"));
  CHECK(is_dns_name("10.0.0.x1"));
}

TEST_CASE("dns name limits total length", "[config]") {
  // Four labels of 63 characters and three dots make 255 characters.
  std::string label(63, 'a');
  std::string name_253 =
      label + "." + label + "." + label + "." + std::string(61, 'a');
  REQUIRE(name_253.size() == 253);
  CHECK(is_dns_name(name_253));
  CHECK_FALSE(is_dns_name(name_253 + "a"));
}

TEST_CASE("ip address accepts literals only", "[config]") {
  CHECK(is_ip_address("127.0.0.1"));
  CHECK(is_ip_address("::1"));
  CHECK(is_ip_address("::ffff:1.2.3.4"));
  CHECK_FALSE(is_ip_address("127.1"));
  CHECK_FALSE(is_ip_address("010.0.0.1"));
  CHECK_FALSE(is_ip_address("[::1]"));
  CHECK_FALSE(is_ip_address("localhost"));
  CHECK_FALSE(is_ip_address(""));
  CHECK(canonical_ip_address("0:0:0:0:0:0:0:1") == "::1");
  CHECK(canonical_ip_address("FE80::A") == "fe80::a");
  CHECK(canonical_ip_address("10.0.0.1") == "10.0.0.1");
}

TEST_CASE("listen address parses IPv4 and IPv6", "[config]") {
  auto v4 = parse_listen_address("0.0.0.0:443");
  REQUIRE(v4.has_value());
  CHECK(v4->host == "0.0.0.0");
  CHECK(v4->port == 443);
  CHECK(v4->str() == "0.0.0.0:443");

  auto v6 = parse_listen_address("[0:0::1]:5443");
  REQUIRE(v6.has_value());
  CHECK(v6->host == "::1");
  CHECK(v6->port == 5443);
  CHECK(v6->str() == "[::1]:5443");
}

TEST_CASE("listen address rejects malformed values", "[config]") {
  struct Case {
    std::string text;
    std::string message;
  };

  const std::vector<Case> cases = {
      {"127.0.0.1", "missing port"},
      {"127.0.0.1:", "invalid port"},
      {"127.0.0.1:0", "invalid port"},
      {"127.0.0.1:65536", "invalid port"},
      {"127.0.0.1:http", "invalid port"},
      {"localhost:5443", "not an IP address"},
      {":5443", "not an IP address"},
      {"::1:5443", "IPv6 address without brackets"},
      {"[::1]", "missing ']:port' after IPv6 address"},
      {"[::1]:", "invalid port"},
      {"[localhost]:5443", "invalid IPv6 address"},
      {"[fe80::1%eth0]:5443", "invalid IPv6 address"},
  };
  for (const Case &c : cases) {
    INFO("text: '" << c.text << "'");
    auto address = parse_listen_address(c.text);
    REQUIRE_FALSE(address.has_value());
    CHECK(address.error().message == c.message);
  }
}

TEST_CASE("duration applies range bounds", "[config]") {
  const DurationRange lifetime = {MinCertificateLifetimeSeconds,
                                  MaxCertificateLifetimeSeconds, false};
  CHECK(*parse_duration("60", lifetime) == Approx(60));
  CHECK(*parse_duration("825d", lifetime) == Approx(825 * 86400.0));
  CHECK(*parse_duration("90d", lifetime) == Approx(90 * 86400.0));
  CHECK(parse_duration("59s", lifetime).error().message ==
        "duration is shorter than 1m");
  CHECK(parse_duration("826d", lifetime).error().message ==
        "duration is too long");
  CHECK(parse_duration("0", lifetime).error().message ==
        "duration must be greater than 0");

  const DurationRange window = {0, MaxWindowSeconds, true};
  CHECK(*parse_duration("0", window) == 0);
  CHECK(*parse_duration("0s", window) == 0);
  CHECK(*parse_duration("30d", window) == Approx(MaxWindowSeconds));
  CHECK(parse_duration("31d", window).error().message ==
        "duration is too long");
  CHECK(parse_duration("-0", window).error().message == "invalid duration");
}

TEST_CASE("duration formats in largest unit", "[config]") {
  CHECK(format_duration(60) == "1m");
  CHECK(format_duration(90) == "90s");
  CHECK(format_duration(3600) == "1h");
  CHECK(format_duration(86400) == "24h");
  CHECK(format_duration(7 * 86400.0) == "7d");
  CHECK(format_duration(825 * 86400.0) == "825d");
  CHECK(format_duration(0.5) == "0.5s");
}

TEST_CASE("count parses decimal integers", "[config]") {
  CHECK(*parse_count("0") == 0);
  CHECK(*parse_count("1000") == 1000);
  CHECK(*parse_count("4294967295") == 4294967295ULL);
  CHECK(parse_count("").error().message == "invalid number");
  CHECK(parse_count("-1").error().message == "invalid number");
  CHECK(parse_count("+1").error().message == "invalid number");
  CHECK(parse_count("1.0").error().message == "invalid number");
  CHECK(parse_count("0x10").error().message == "invalid number");
  CHECK(parse_count(" 1").error().message == "invalid number");
  CHECK(parse_count("4294967296").error().message == "number is too large");
  CHECK(parse_count("99999999999999999999999").error().message ==
        "number is too large");
}

TEST_CASE("decimal parses plain numbers", "[config]") {
  CHECK(*parse_decimal("0") == 0);
  CHECK(*parse_decimal("0.25") == Approx(0.25));
  CHECK(*parse_decimal("8") == 8);
  CHECK(*parse_decimal("100.0") == 100);
  for (const char *text : {"", ".5", "5.", "-0.5", "+1", "1e3", "inf", "nan",
                           "1.2.3", "0,5", " 1"}) {
    INFO("text: '" << text << "'");
    auto value = parse_decimal(text);
    REQUIRE_FALSE(value.has_value());
    CHECK(value.error().message == "invalid number");
  }
}

TEST_CASE("cidr parses networks and addresses", "[config]") {
  struct Case {
    std::string text;
    std::string network;
    bool ipv6;
  };

  const std::vector<Case> cases = {
      {"10.0.0.0/8", "10.0.0.0/8", false},
      {"10.1.0.0/16", "10.1.0.0/16", false},
      {"192.168.1.7", "192.168.1.7/32", false},
      {"0.0.0.0/0", "0.0.0.0/0", false},
      {"10.1.2.128/25", "10.1.2.128/25", false},
      {"FD00:0::/8", "fd00::/8", true},
      {"2001:db8::1", "2001:db8::1/128", true},
      {"::/0", "::/0", true},
      {"2001:db8:0:0:8000::/65", "2001:db8:0:0:8000::/65", true},
  };
  for (const Case &c : cases) {
    INFO("text: '" << c.text << "'");
    auto cidr = parse_cidr(c.text);
    REQUIRE(cidr.has_value());
    CHECK(cidr->str() == c.network);
    CHECK(cidr->ipv6 == c.ipv6);
  }
}

TEST_CASE("cidr rejects malformed networks", "[config]") {
  struct Case {
    std::string text;
    std::string message;
  };

  const std::vector<Case> cases = {
      {"", "invalid IP address"},
      {"10.0.0/8", "invalid IP address"},
      {"host.example/24", "invalid IP address"},
      {"[::1]/128", "invalid IP address"},
      {"fe80::1%eth0/64", "invalid IP address"},
      {"10.0.0.0/", "invalid prefix length"},
      {"10.0.0.0/-1", "invalid prefix length"},
      {"10.0.0.0/0008", "invalid prefix length"},
      {"10.0.0.0/8/8", "invalid prefix length"},
      {"10.0.0.0/33", "prefix length is larger than 32"},
      {"::/129", "prefix length is larger than 128"},
      {"10.1.2.3/16", "host bits are set (the network is 10.1.0.0/16)"},
      {"10.1.2.129/25", "host bits are set (the network is 10.1.2.128/25)"},
      {"fd00::1/8", "host bits are set (the network is fd00::/8)"},
      {"::ffff:10.0.0.0/104",
       "IPv4-mapped IPv6 address (write the IPv4 network 10.0.0.0/8)"},
      {"::ffff:10.0.0.1",
       "IPv4-mapped IPv6 address (write the IPv4 network 10.0.0.1/32)"},
      // Shorter than /96, so not a mapped network, but with host bits set.
      {"::ffff:0:0/95", "host bits are set (the network is ::fffe:0:0/95)"},
  };
  for (const Case &c : cases) {
    INFO("text: '" << c.text << "'");
    auto cidr = parse_cidr(c.text);
    REQUIRE_FALSE(cidr.has_value());
    CHECK(cidr.error().code == gatecache::ErrorCode::Invalid);
    CHECK(cidr.error().message == c.message);
  }
}

TEST_CASE("loopback address covers 127/8 and ::1", "[config]") {
  CHECK(is_loopback_address("127.0.0.1"));
  CHECK(is_loopback_address("127.255.0.9"));
  CHECK(is_loopback_address("::1"));
  CHECK(is_loopback_address("0::1"));
  CHECK_FALSE(is_loopback_address("128.0.0.1"));
  CHECK_FALSE(is_loopback_address("10.0.0.1"));
  CHECK_FALSE(is_loopback_address("0.0.0.0"));
  CHECK_FALSE(is_loopback_address("::"));
  CHECK_FALSE(is_loopback_address("::ffff:127.0.0.1"));
  CHECK_FALSE(is_loopback_address("localhost"));
}

TEST_CASE("cluster name follows its grammar", "[config]") {
  for (const char *name : {"dev", "prod-eu", "a", "0", "team_1", "x-"}) {
    INFO("name: '" << name << "'");
    CHECK(is_cluster_name(name));
  }
  CHECK(is_cluster_name(std::string(63, 'a')));
  for (const char *name :
       {"", "Dev", "-dev", "_dev", "dev.eu", "dev eu", "dév"}) {
    INFO("name: '" << name << "'");
    CHECK_FALSE(is_cluster_name(name));
  }
  CHECK_FALSE(is_cluster_name(std::string(64, 'a')));
}

TEST_CASE("tag pattern allows tag characters and globs", "[config]") {
  for (const char *pattern :
       {"latest", "v*", "*.*", "v?.*", "*-alpine", "*", "1.2_3-rc"}) {
    INFO("pattern: '" << pattern << "'");
    CHECK(is_tag_pattern(pattern));
  }
  CHECK(is_tag_pattern(std::string(128, '*')));
  for (const char *pattern : {"", "v[0-9]*", "a/b", "a b", "v{1,2}", "ä"}) {
    INFO("pattern: '" << pattern << "'");
    CHECK_FALSE(is_tag_pattern(pattern));
  }
  CHECK_FALSE(is_tag_pattern(std::string(129, 'a')));
}

TEST_CASE("image set name rejects paths and extensions", "[config]") {
  for (const char *name : {"kubernetes-1.31", "flannel", "a_b.c-D", ".x"}) {
    INFO("name: '" << name << "'");
    CHECK(check_image_set_name(name).has_value());
  }

  struct Case {
    std::string text;
    std::string message;
  };

  const std::vector<Case> cases = {
      {"", "empty image set name"},
      {"..", "image set name is '.' or '..'"},
      {".", "image set name is '.' or '..'"},
      {"a/b", "image set name contains a character other than letters, "
              "digits, '.', '_' and '-'"},
      {"a b", "image set name contains a character other than letters, "
              "digits, '.', '_' and '-'"},
      {"k8s.yaml", "image set name ends with a file extension (name the "
                   "set without .yaml, or give an absolute path)"},
      {"k8s.yml", "image set name ends with a file extension (name the "
                  "set without .yaml, or give an absolute path)"},
      {std::string(251, 'a'), "image set name is longer than 250 characters"},
  };
  for (const Case &c : cases) {
    INFO("text: '" << c.text << "'");
    auto valid = check_image_set_name(c.text);
    REQUIRE_FALSE(valid.has_value());
    CHECK(valid.error().message == c.message);
  }
}
