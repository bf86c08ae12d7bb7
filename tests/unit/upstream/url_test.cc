#include "appliance/upstream/url.h"

#include <string>

#include <catch2/catch.hpp>

using gatecache::ErrorCode;
using gatecache::upstream::encode_query_component;
using gatecache::upstream::parse_url;
using gatecache::upstream::resolve_reference;

TEST_CASE("url parser splits valid urls", "[upstream][url]") {
  struct Case {
    const char *text;
    const char *host;
    int port;
    const char *target;
    const char *authority;
  };

  const Case cases[] = {
      {"https://registry-1.docker.io", "registry-1.docker.io", 443, "/",
       "registry-1.docker.io"},
      {"https://Example.COM:8443/v2/?a=b#frag", "example.com", 8443, "/v2/?a=b",
       "example.com:8443"},
      {"https://[::1]:5000/v2/", "::1", 5000, "/v2/", "[::1]:5000"},
      {"HTTPS://127.0.0.1/x", "127.0.0.1", 443, "/x", "127.0.0.1"},
      {"https://host:/a/./b/../c", "host", 443, "/a/c", "host"},
      {"https://host?q", "host", 443, "/?q", "host"},
      {"https://host/a b\xc3\xa9", "host", 443, "/a%20b%C3%A9", "host"},
  };
  for (const Case &c : cases) {
    CAPTURE(c.text);
    auto url = parse_url(c.text);
    REQUIRE(url);
    CHECK(url->host == c.host);
    CHECK(url->port == c.port);
    CHECK(url->target() == c.target);
    CHECK(url->authority() == c.authority);
  }
}

TEST_CASE("url parser marks ip literals", "[upstream][url]") {
  CHECK(parse_url("https://[2001:db8::1]/")->is_ip_literal());
  CHECK(parse_url("https://192.0.2.1/")->is_ip_literal());
  CHECK_FALSE(parse_url("https://registry.example/")->is_ip_literal());
}

TEST_CASE("url parser rejects invalid urls", "[upstream][url]") {
  const char *cases[] = {
      "http://registry.example/",
      "ftp://registry.example/",
      "registry.example/v2/",
      "/v2/",
      "https://",
      "https:///path",
      "https://host:0/",
      "https://host:65536/",
      "https://host:12ab/",
      "https://user:pass@host/",
      "https://[::1/",
      "https://[zz::1]/",
      "https://[::1]x/",
      "https://ho st/",
      "https://host/a\r\nInjected: 1",
      "https://host/?a=\x01",
  };
  for (const char *text : cases) {
    CAPTURE(text);
    auto url = parse_url(text);
    REQUIRE_FALSE(url);
    CHECK(url.error().code == ErrorCode::Invalid);
  }
}

// The normal examples of RFC 3986 section 5.4.1, on an https base, plus
// the registry cases: a CDN redirect and a relative blob location.
TEST_CASE("url resolution follows rfc 3986", "[upstream][url]") {
  auto base = parse_url("https://a/b/c/d;p?q");
  REQUIRE(base);

  struct Case {
    const char *reference;
    const char *expected;
  };

  const Case cases[] = {
      {"g", "https://a/b/c/g"},
      {"./g", "https://a/b/c/g"},
      {"g/", "https://a/b/c/g/"},
      {"/g", "https://a/g"},
      {"//g", "https://g/"},
      {"?y", "https://a/b/c/d;p?y"},
      {"g?y", "https://a/b/c/g?y"},
      {"#s", "https://a/b/c/d;p?q"},
      {"g#s", "https://a/b/c/g"},
      {";x", "https://a/b/c/;x"},
      {"g;x", "https://a/b/c/g;x"},
      {"", "https://a/b/c/d;p?q"},
      {".", "https://a/b/c/"},
      {"./", "https://a/b/c/"},
      {"..", "https://a/b/"},
      {"../", "https://a/b/"},
      {"../g", "https://a/b/g"},
      {"../..", "https://a/"},
      {"../../", "https://a/"},
      {"../../g", "https://a/g"},
      {"../../../g", "https://a/g"},
      {"/./g", "https://a/g"},
      {"/../g", "https://a/g"},
      {"g.", "https://a/b/c/g."},
      {"..g", "https://a/b/c/..g"},
      {"./../g", "https://a/b/g"},
      {"g/./h", "https://a/b/c/g/h"},
      {"g/../h", "https://a/b/c/h"},
      {"https://cdn.example/blob?sig=1%2B2",
       "https://cdn.example/blob?sig=1%2B2"},
      {"//cdn.example:8443/p", "https://cdn.example:8443/p"},
  };
  for (const Case &c : cases) {
    CAPTURE(c.reference);
    auto url = resolve_reference(*base, c.reference);
    REQUIRE(url);
    CHECK(url->str() == c.expected);
  }
}

TEST_CASE("url resolution rejects non-https targets", "[upstream][url]") {
  auto base = parse_url("https://registry.example/v2/");
  REQUIRE(base);
  for (const char *reference :
       {"http://cdn.example/blob", "ftp://cdn.example/", "/a\nb"}) {
    CAPTURE(reference);
    auto url = resolve_reference(*base, reference);
    REQUIRE_FALSE(url);
    CHECK(url.error().code == ErrorCode::Invalid);
  }
}

TEST_CASE("url redaction drops the query", "[upstream][url]") {
  auto url = parse_url("https://cdn.example:8443/blob?X-Signature=secret");
  REQUIRE(url);
  CHECK(url->redacted() == "https://cdn.example:8443/blob");
  CHECK(url->origin() == "https://cdn.example:8443");
}

TEST_CASE("query encoding keeps unreserved bytes", "[upstream][url]") {
  CHECK(encode_query_component("repository:library/nginx:pull") ==
        "repository%3Alibrary%2Fnginx%3Apull");
  CHECK(encode_query_component("a-b.c_d~e") == "a-b.c_d~e");
  CHECK(encode_query_component("a b&c=d") == "a%20b%26c%3Dd");
}
