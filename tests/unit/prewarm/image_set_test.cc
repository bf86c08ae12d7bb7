#include "appliance/prewarm/image_set.h"

#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "tests/unit/config/test_support.h"

using gatecache::ErrorCode;
using gatecache::config::test::TempDir;
using namespace gatecache::prewarm;

namespace {

const std::string sha256 =
    "sha256:" + std::string(32, 'a') + std::string(32, '0');
const std::string sha512 = "sha512:" + std::string(128, 'f');

// Changes the working directory for one test and restores it.
class WorkingDirectory {
public:
  explicit WorkingDirectory(const std::string &path) {
    char buffer[4096];
    REQUIRE(::getcwd(buffer, sizeof(buffer)) != nullptr);
    previous_ = buffer;
    REQUIRE(::chdir(path.c_str()) == 0);
  }

  ~WorkingDirectory() { (void)::chdir(previous_.c_str()); }

  WorkingDirectory(const WorkingDirectory &) = delete;
  WorkingDirectory &operator=(const WorkingDirectory &) = delete;

private:
  std::string previous_;
};

} // namespace

TEST_CASE("image reference normalises docker forms", "[prewarm]") {
  struct Case {
    std::string text;
    std::string registry;
    std::string repository;
    std::string reference;
    bool by_digest;
  };

  const std::vector<Case> cases = {
      {"nginx", "docker.io", "library/nginx", "latest", false},
      {"nginx:1.27", "docker.io", "library/nginx", "1.27", false},
      {"library/nginx", "docker.io", "library/nginx", "latest", false},
      {"user/app:v1", "docker.io", "user/app", "v1", false},
      {"docker.io/nginx", "docker.io", "library/nginx", "latest", false},
      {"index.docker.io/library/nginx:1", "docker.io", "library/nginx", "1",
       false},
      {"Docker.IO/flannel/flannel:v0.26.1", "docker.io", "flannel/flannel",
       "v0.26.1", false},
      {"ghcr.io/a/b:1", "ghcr.io", "a/b", "1", false},
      {"ghcr.io/a", "ghcr.io", "a", "latest", false},
      {"registry.k8s.io/pause:3.10", "registry.k8s.io", "pause", "3.10", false},
      {"registry.k8s.io/coredns/coredns:v1.11.3", "registry.k8s.io",
       "coredns/coredns", "v1.11.3", false},
      {"a/b@" + sha256, "docker.io", "a/b", sha256, true},
      {"quay.io/x/y@" + sha512, "quay.io", "x/y", sha512, true},
      {"nginx:1.27@" + sha256, "docker.io", "library/nginx", sha256, true},
      {"127.0.0.1:5000/x:y", "127.0.0.1:5000", "x", "y", false},
      {"[::1]:5000/x:y", "[::1]:5000", "x", "y", false},
      {"[0:0::1]:5000/x/y:z", "[::1]:5000", "x/y", "z", false},
      {"localhost/x", "localhost", "x", "latest", false},
      {"localhost:5000/x", "localhost:5000", "x", "latest", false},
      {"registry:5000/team/app", "registry:5000", "team/app", "latest", false},
      // No '/', so "localhost" is a Docker Hub name and 5000 its tag.
      {"localhost:5000", "docker.io", "library/localhost", "5000", false},
      {"a/b__c.d-e--f:TAG_1.x", "docker.io", "a/b__c.d-e--f", "TAG_1.x", false},
  };
  for (const Case &c : cases) {
    INFO("text: '" << c.text << "'");
    auto image = parse_image_reference(c.text);
    REQUIRE(image.has_value());
    CHECK(image->registry == c.registry);
    CHECK(image->repository == c.repository);
    CHECK(image->reference == c.reference);
    CHECK(image->by_digest == c.by_digest);
    CHECK(image->platforms.empty());
  }
}

TEST_CASE("image reference formats canonical text", "[prewarm]") {
  CHECK(parse_image_reference("nginx")->str() ==
        "docker.io/library/nginx:latest");
  CHECK(parse_image_reference("a/b@" + sha256)->str() ==
        "docker.io/a/b@" + sha256);
  CHECK(parse_image_reference("[::1]:5000/x:y")->str() == "[::1]:5000/x:y");
  // The canonical text parses back to the same reference.
  auto image = parse_image_reference("Registry.K8s.io/pause:3.10");
  REQUIRE(image.has_value());
  auto again = parse_image_reference(image->str());
  REQUIRE(again.has_value());
  CHECK(again->str() == image->str());
}

TEST_CASE("image reference rejects malformed text", "[prewarm]") {
  struct Case {
    std::string text;
    std::string message;
  };

  const std::string bad_name = "invalid repository name '";
  const std::vector<Case> cases = {
      {"", "empty image reference"},
      {" nginx", "image reference contains a space or control character"},
      {"nginx\n", "image reference contains a space or control character"},
      {"https://ghcr.io/a/b",
       "a URL instead of an image reference (drop the scheme)"},
      {"Nginx", "repository name 'library/Nginx' must be lower case"},
      {"ghcr.io/Org/app", "repository name 'Org/app' must be lower case"},
      {"nginx:", "invalid tag '': tags must match "
                 "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"},
      {"nginx:-rc", "invalid tag '-rc': tags must match "
                    "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"},
      {"nginx:" + std::string(129, 't'),
       "invalid tag '" + std::string(128, 't') +
           "...': tags must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"},
      {"a//b", bad_name + "a//b': components must match "
                          "[a-z0-9]+((.|_|__|-+)[a-z0-9]+)*"},
      {"a/b/", bad_name + "a/b/': components must match "
                          "[a-z0-9]+((.|_|__|-+)[a-z0-9]+)*"},
      {"a/-b", bad_name + "a/-b': components must match "
                          "[a-z0-9]+((.|_|__|-+)[a-z0-9]+)*"},
      {"a/b___c", bad_name + "a/b___c': components must match "
                             "[a-z0-9]+((.|_|__|-+)[a-z0-9]+)*"},
      {"ghcr.io/", "missing repository name"},
      {"ghcr.io/" + std::string(256, 'a'),
       "repository name is longer than 255 characters"},
      {"a/b@sha256:abc", "invalid digest 'sha256:abc': expected "
                         "sha256:<64 lower-case hex digits> or "
                         "sha512:<128 lower-case hex digits>"},
      {"a/b@md5:" + std::string(32, 'a'),
       "invalid digest 'md5:" + std::string(32, 'a') +
           "': expected sha256:<64 lower-case hex digits> or "
           "sha512:<128 lower-case hex digits>"},
      {"a/b@SHA256:" + std::string(64, 'A'),
       "invalid digest 'SHA256:" + std::string(64, 'A') +
           "': expected sha256:<64 lower-case hex digits> or "
           "sha512:<128 lower-case hex digits>"},
      {"a/b@", "invalid digest '': expected sha256:<64 lower-case hex "
               "digits> or sha512:<128 lower-case hex digits>"},
      {"ghcr.io:99999/a", "invalid registry 'ghcr.io:99999': invalid port"},
      {"[::1/x", "invalid registry '[::1': missing ']' after IPv6 address"},
      {"bad_host.example/x", "invalid registry 'bad_host.example': invalid "
                             "host name"},
  };
  for (const Case &c : cases) {
    INFO("text: '" << c.text << "'");
    auto image = parse_image_reference(c.text);
    REQUIRE_FALSE(image.has_value());
    CHECK(image.error().code == ErrorCode::Invalid);
    CHECK(image.error().message == c.message);
  }
}

TEST_CASE("platform accepts os arch variant", "[prewarm]") {
  for (const char *text : {"linux/amd64", "linux/arm64/v8", "linux/arm/v7",
                           "linux/ppc64le", "windows/amd64", "linux/386"}) {
    INFO("platform: '" << text << "'");
    CHECK(check_platform(text).has_value());
  }

  struct Case {
    std::string text;
    std::string message;
  };

  const std::vector<Case> cases = {
      {"linux", "platform is not os/arch or os/arch/variant"},
      {"linux/arm/v7/x", "platform is not os/arch or os/arch/variant"},
      {"linux//v7", "invalid platform part '' (lower-case letters, digits "
                    "and '_' only)"},
      {"Linux/amd64", "invalid platform part 'Linux' (lower-case letters, "
                      "digits and '_' only)"},
      {"linux/amd-64", "invalid platform part 'amd-64' (lower-case letters, "
                       "digits and '_' only)"},
      {"unknown/unknown",
       "unknown/unknown marks attestation manifests, not a platform"},
  };
  for (const Case &c : cases) {
    INFO("platform: '" << c.text << "'");
    auto valid = check_platform(c.text);
    REQUIRE_FALSE(valid.has_value());
    CHECK(valid.error().message == c.message);
  }
}

TEST_CASE("image set reads names and platforms", "[prewarm]") {
  auto set = parse_image_set(R"(
name: kubernetes-1.31
description: Images a kubeadm node pulls at first boot
platforms: [linux/amd64, linux/arm64]
images:
  - registry.k8s.io/pause:3.10
  - ref: registry.k8s.io/etcd:3.5.15-0
    platforms: [linux/amd64]
  - {ref: "docker.io/flannel/flannel:v0.26.1"}
)",
                             "/srv/sets/k8s.yaml");
  REQUIRE(set.has_value());
  CHECK(set->name == "kubernetes-1.31");
  CHECK(set->description == "Images a kubeadm node pulls at first boot");
  CHECK(set->source_path == "/srv/sets/k8s.yaml");
  REQUIRE(set->images.size() == 3);
  const std::vector<std::string> both = {"linux/amd64", "linux/arm64"};
  CHECK(set->images[0].str() == "registry.k8s.io/pause:3.10");
  CHECK(set->images[0].platforms == both);
  CHECK(set->images[1].str() == "registry.k8s.io/etcd:3.5.15-0");
  CHECK(set->images[1].platforms == std::vector<std::string>{"linux/amd64"});
  CHECK(set->images[2].str() == "docker.io/flannel/flannel:v0.26.1");
  CHECK(set->images[2].platforms == both);
}

TEST_CASE("image set defaults name to stem", "[prewarm]") {
  auto set = parse_image_set("platforms: [linux/amd64]\nimages: [busybox]\n",
                             "/srv/sets/flannel-0.26.yaml");
  REQUIRE(set.has_value());
  CHECK(set->name == "flannel-0.26");
  CHECK(set->description.empty());
}

TEST_CASE("image set applies later platforms", "[prewarm]") {
  // `platforms` below `images` still applies to every image.
  auto set = parse_image_set("images: [busybox]\nplatforms: [linux/arm64]\n",
                             "s.yaml");
  REQUIRE(set.has_value());
  CHECK(set->images[0].platforms == std::vector<std::string>{"linux/arm64"});
}

TEST_CASE("image set reports errors with position", "[prewarm]") {
  struct Case {
    std::string yaml;
    std::string message; // Without the "s.yaml:" prefix.
  };

  const std::string head = "platforms: [linux/amd64]\n";
  const std::string reference_form =
      "expected an image reference such as \"nginx:1.27\", "
      "\"registry.k8s.io/pause:3.10\" or \"ghcr.io/org/app@sha256:<hex>\")";
  const std::string platform_form =
      "expected a platform \"os/arch\" or \"os/arch/variant\" in lower "
      "case, such as \"linux/amd64\" or \"linux/arm/v7\")";
  const std::vector<Case> cases = {
      {"", "1:1: wrong type (value is empty; expected a map with name, "
           "description, platforms and images)"},
      {"- busybox\n", "1:1: wrong type (value is a list; expected a map with "
                      "name, description, platforms and images)"},
      {head, "1:1: key 'images': missing (expected a list of image "
             "references)"},
      {head + "images: []\n",
       "2:9: key 'images': empty list (expected a non-empty list of image "
       "references)"},
      {head + "images: busybox\n",
       "2:9: key 'images': wrong type (value is a string; expected a "
       "non-empty list of image references)"},
      {head + "images:\n  - [busybox]\n",
       "3:5: key 'images': wrong type (value is a list; expected an image "
       "reference, or a map with ref and platforms)"},
      {head + "images: [Busybox]\n",
       "2:10: key 'images': repository name 'library/Busybox' must be lower "
       "case (value 'Busybox'; " +
           reference_form},
      {head + "images:\n  - {platforms: [linux/amd64]}\n",
       "3:5: key 'images.ref': missing (" + reference_form},
      {head + "images:\n  - {ref: [busybox]}\n",
       "3:11: key 'images.ref': wrong type (value is a list; " +
           reference_form},
      {head + "images:\n  - {ref: busybox, tag: x}\n",
       "3:20: key 'images.tag': unknown key (expected one of ref, "
       "platforms)"},
      {head + "images:\n  - {ref: busybox, ref: nginx}\n",
       "3:20: key 'images.ref': duplicate key (first at line 3, column 6)"},
      {head + "images:\n  - {ref: busybox, platforms: []}\n",
       "3:31: key 'images.platforms': empty list (expected a non-empty list "
       "of a platform \"os/arch\" or \"os/arch/variant\" in lower case, such "
       "as \"linux/amd64\" or \"linux/arm/v7\")"},
      {head + "images:\n  - {ref: busybox, platforms: [amd64]}\n",
       "3:32: key 'images.platforms': platform is not os/arch or "
       "os/arch/variant (value 'amd64'; " +
           platform_form},
      {head + "images: [busybox, docker.io/library/busybox:latest]\n",
       "2:19: key 'images': duplicate image "
       "'docker.io/library/busybox:latest' (first at line 2, column 10)"},
      {"images: [busybox]\n",
       "1:10: key 'images': no platforms for image "
       "'docker.io/library/busybox:latest' (expected platforms in the image "
       "entry or at the top of the set)"},
      {"platforms: linux/amd64\nimages: [busybox]\n",
       "1:12: key 'platforms': wrong type (value is a string; expected a "
       "non-empty list of a platform \"os/arch\" or \"os/arch/variant\" in "
       "lower case, such as \"linux/amd64\" or \"linux/arm/v7\")"},
      {"platforms: [linux/amd64, linux/amd64]\nimages: [busybox]\n",
       "1:26: key 'platforms': duplicate platform (value 'linux/amd64'; " +
           platform_form},
      {"platforms: [unknown/unknown]\nimages: [busybox]\n",
       "1:13: key 'platforms': unknown/unknown marks attestation manifests, "
       "not a platform (value 'unknown/unknown'; " +
           platform_form},
      {head + "name: k8s/1.31\nimages: [busybox]\n",
       "2:7: key 'name': image set name contains a character other than "
       "letters, digits, '.', '_' and '-' (value 'k8s/1.31'; expected a set "
       "name made of letters, digits, '.', '_' and '-')"},
      {head + "name: [a]\nimages: [busybox]\n",
       "2:7: key 'name': wrong type (value is a list; expected a set name "
       "made of letters, digits, '.', '_' and '-')"},
      {head + "description: \"a\\tb\"\nimages: [busybox]\n",
       "2:14: key 'description': text contains a control character (value "
       "'a\\x09b'; expected one line of text)"},
      {head + "images: [busybox]\ntags: [x]\n",
       "3:1: key 'tags': unknown key (expected one of name, description, "
       "platforms, images)"},
      {head + "images: [busybox]\nimages: [nginx]\n",
       "3:1: key 'images': duplicate key (first at line 2, column 1)"},
      {head + "images: [busybox\n",
       "3:1: YAML syntax error: end of sequence flow not found"},
      {head + "images: [busybox]\n---\nimages: [nginx]\n",
       "4:1: more than one YAML document (expected one)"},
  };
  for (const Case &c : cases) {
    INFO("yaml:\n" << c.yaml);
    auto set = parse_image_set(c.yaml, "s.yaml");
    REQUIRE_FALSE(set.has_value());
    CHECK(set.error().code == ErrorCode::Invalid);
    CHECK(set.error().message == "s.yaml:" + c.message);
  }
}

TEST_CASE("image set needs a valid name", "[prewarm]") {
  auto set = parse_image_set("platforms: [linux/amd64]\nimages: [busybox]\n",
                             "/srv/my sets.yaml");
  REQUIRE_FALSE(set.has_value());
  CHECK(set.error().message ==
        "/srv/my sets.yaml:1:1: key 'name': missing, and the file name 'my "
        "sets' is not a valid set name (expected a name key with a set name "
        "made of letters, digits, '.', '_' and '-')");
}

TEST_CASE("image set caps reported errors", "[prewarm]") {
  std::string yaml = "platforms: [linux/amd64]\nimages:\n";
  for (int i = 0; i < 30; ++i) {
    yaml += "  - Bad" + std::to_string(i) + "\n";
  }
  auto set = parse_image_set(yaml, "s.yaml");
  REQUIRE_FALSE(set.has_value());
  const std::string &message = set.error().message;
  size_t lines = 1;
  for (char c : message) {
    lines += c == '\n' ? 1 : 0;
  }
  CHECK(lines == 21);
  CHECK(message.ends_with("\n(checking stopped after 20 errors)"));
}

TEST_CASE("image set file reads from disk", "[prewarm]") {
  TempDir dir;
  std::string path = dir.write("flannel.yaml",
                               "platforms: [linux/amd64]\nimages: [busybox]\n");
  auto set = load_image_set(path);
  REQUIRE(set.has_value());
  CHECK(set->name == "flannel");
  CHECK(set->source_path == path);

  auto missing = load_image_set(dir.path() + "/absent.yaml");
  REQUIRE_FALSE(missing.has_value());
  CHECK(missing.error().code == ErrorCode::NotFound);
  CHECK(missing.error().message == "cannot read image set " + dir.path() +
                                       "/absent.yaml: No such file or "
                                       "directory");

  auto directory = load_image_set(dir.path());
  REQUIRE_FALSE(directory.has_value());
  CHECK(directory.error().code == ErrorCode::Io);
  CHECK(directory.error().message ==
        "cannot read image set " + dir.path() + ": not a regular file");

  std::string large = dir.write(
      "large.yaml", "images: []\n#" + std::string(1 << 20, 'x') + "\n");
  auto oversized = load_image_set(large);
  REQUIRE_FALSE(oversized.has_value());
  CHECK(oversized.error().message ==
        "cannot read image set " + large + ": file is larger than 1 MiB");

  std::string bad = dir.write("bad.yaml", "images: [busybox]\n");
  auto invalid = load_image_set(bad);
  REQUIRE_FALSE(invalid.has_value());
  CHECK(invalid.error().message.starts_with(bad + ":1:10: key 'images'"));
}

TEST_CASE("set path resolves names and paths", "[prewarm]") {
  TempDir dir;
  std::string k8s = dir.write("kubernetes-1.31.yaml", "images: []\n");
  dir.write("flannel.yaml", "images: []\n");
  dir.write("notes.txt", "not a set\n");

  auto named = resolve_set_path("kubernetes-1.31", dir.path());
  REQUIRE(named.has_value());
  CHECK(*named == k8s);

  auto absolute = resolve_set_path(k8s, "/nonexistent");
  REQUIRE(absolute.has_value());
  CHECK(*absolute == k8s);

  {
    WorkingDirectory cwd(dir.path());
    auto relative = resolve_set_path("flannel.yaml", "/nonexistent");
    REQUIRE(relative.has_value());
    CHECK(*relative == dir.path() + "/flannel.yaml");
    auto dotted = resolve_set_path("./flannel.yaml", "/nonexistent");
    REQUIRE(dotted.has_value());
    CHECK(*dotted == dir.path() + "/flannel.yaml");
  }

  auto missing = resolve_set_path("calico", dir.path());
  REQUIRE_FALSE(missing.has_value());
  CHECK(missing.error().code == ErrorCode::NotFound);
  CHECK(missing.error().message == "image set 'calico' not found: no file " +
                                       dir.path() + "/calico.yaml (sets in " +
                                       dir.path() +
                                       ": flannel, kubernetes-1.31)");

  auto empty_dir = resolve_set_path("calico", dir.path() + "/none");
  REQUIRE_FALSE(empty_dir.has_value());
  CHECK_THAT(empty_dir.error().message,
             Catch::Matchers::EndsWith("/none: none)"));

  auto missing_path = resolve_set_path(dir.path() + "/x.yaml", dir.path());
  REQUIRE_FALSE(missing_path.has_value());
  CHECK(missing_path.error().code == ErrorCode::NotFound);
  CHECK(missing_path.error().message ==
        "image set file " + dir.path() + "/x.yaml not found");

  auto directory = resolve_set_path(dir.path(), dir.path());
  REQUIRE_FALSE(directory.has_value());
  CHECK(directory.error().code == ErrorCode::Invalid);
  CHECK(directory.error().message ==
        "image set file " + dir.path() + " is not a regular file");

  auto bad_name = resolve_set_path("my set", dir.path());
  REQUIRE_FALSE(bad_name.has_value());
  CHECK(bad_name.error().code == ErrorCode::Invalid);
  CHECK(bad_name.error().message ==
        "invalid image set 'my set': image set name contains a character "
        "other than letters, digits, '.', '_' and '-'");

  auto dots = resolve_set_path("..", dir.path());
  REQUIRE_FALSE(dots.has_value());
  CHECK(dots.error().message ==
        "invalid image set '..': image set name is '.' or '..'");

  auto control = resolve_set_path("a\x1b", dir.path());
  REQUIRE_FALSE(control.has_value());
  CHECK(control.error().message ==
        "image set 'a\\x1b' contains a control character");
}

TEST_CASE("image set json round trips", "[prewarm]") {
  auto set = parse_image_set(R"(
name: mixed
description: Two registries
platforms: [linux/amd64]
images:
  - nginx:1.27
  - ref: "[::1]:5000/x@)" + sha256 +
                                 R"("
    platforms: [linux/arm64/v8, linux/amd64]
)",
                             "/srv/mixed.yaml");
  REQUIRE(set.has_value());

  nlohmann::json json = to_json(*set);
  CHECK(json["name"] == "mixed");
  CHECK(json["description"] == "Two registries");
  CHECK(json["source_path"] == "/srv/mixed.yaml");
  CHECK(json["images"][0]["ref"] == "docker.io/library/nginx:1.27");
  CHECK(json["images"][1]["ref"] == "[::1]:5000/x@" + sha256);
  CHECK(json["images"][1]["platforms"] ==
        nlohmann::json({"linux/arm64/v8", "linux/amd64"}));

  // Through text, as the admin endpoint sends it.
  auto back = image_set_from_json(nlohmann::json::parse(json.dump()));
  REQUIRE(back.has_value());
  CHECK(back->name == set->name);
  CHECK(back->description == set->description);
  CHECK(back->source_path == set->source_path);
  REQUIRE(back->images.size() == 2);
  for (size_t i = 0; i < 2; ++i) {
    INFO("image " << i);
    CHECK(back->images[i].str() == set->images[i].str());
    CHECK(back->images[i].registry == set->images[i].registry);
    CHECK(back->images[i].repository == set->images[i].repository);
    CHECK(back->images[i].by_digest == set->images[i].by_digest);
    CHECK(back->images[i].platforms == set->images[i].platforms);
  }

  // description and source_path may be left out.
  auto minimal = image_set_from_json(nlohmann::json::parse(
      R"({"name": "m", "images": [{"ref": "a", "platforms": ["linux/s390x"]}]})"));
  REQUIRE(minimal.has_value());
  CHECK(minimal->description.empty());
  CHECK(minimal->images[0].str() == "docker.io/library/a:latest");
}

TEST_CASE("image set json rejects bad fields", "[prewarm]") {
  struct Case {
    std::string json;
    std::string message;
  };

  const std::string image = R"({"ref": "a", "platforms": ["linux/amd64"]})";
  const std::vector<Case> cases = {
      {"[]", "(top level): not an object"},
      {R"({"images": [)" + image + "]}", "name: missing"},
      {R"({"name": 1, "images": [)" + image + "]}", "name: not a string"},
      {R"({"name": "a b", "images": [)" + image + "]}",
       "name: image set name contains a character other than letters, "
       "digits, '.', '_' and '-'"},
      {R"({"name": "s", "description": 5, "images": [)" + image + "]}",
       "description: not a string"},
      {R"({"name": "s", "description": "a\nb", "images": [)" + image + "]}",
       "description: contains a control character"},
      {R"({"name": "s", "source_path": [], "images": [)" + image + "]}",
       "source_path: not a string"},
      {R"({"name": "s"})", "images: missing, not an array or empty"},
      {R"({"name": "s", "images": {}})",
       "images: missing, not an array or empty"},
      {R"({"name": "s", "images": []})",
       "images: missing, not an array or empty"},
      {R"({"name": "s", "images": ["a"]})", "images[0]: not an object"},
      {R"({"name": "s", "images": [{"platforms": ["linux/amd64"]}]})",
       "images[0].ref: missing"},
      {R"({"name": "s", "images": [{"ref": 1, "platforms": ["linux/amd64"]}]})",
       "images[0].ref: not a string"},
      {R"({"name": "s", "images": [{"ref": "A", "platforms": ["linux/amd64"]}]})",
       "images[0].ref: repository name 'library/A' must be lower case"},
      {R"({"name": "s", "images": [)" + image + "," + image + "]}",
       "images[1].ref: duplicate image docker.io/library/a:latest"},
      {R"({"name": "s", "images": [{"ref": "a"}]})",
       "images[0].platforms: missing, not an array or empty"},
      {R"({"name": "s", "images": [{"ref": "a", "platforms": []}]})",
       "images[0].platforms: missing, not an array or empty"},
      {R"({"name": "s", "images": [{"ref": "a", "platforms": [1]}]})",
       "images[0].platforms: not a list of strings"},
      {R"({"name": "s", "images": [{"ref": "a", "platforms": ["x"]}]})",
       "images[0].platforms: platform is not os/arch or os/arch/variant"},
      {R"({"name": "s", "images": [{"ref": "a", "platforms":)"
       R"( ["linux/amd64", "linux/amd64"]}]})",
       "images[0].platforms: duplicate platform linux/amd64"},
  };
  for (const Case &c : cases) {
    INFO("json: " << c.json);
    auto set = image_set_from_json(nlohmann::json::parse(c.json));
    REQUIRE_FALSE(set.has_value());
    CHECK(set.error().code == ErrorCode::Invalid);
    CHECK(set.error().message == "image set JSON: " + c.message);
  }
}
