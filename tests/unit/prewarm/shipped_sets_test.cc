// Loads every image set shipped in images/, so a typo in a set file fails
// the build's tests rather than a prewarm job on a gateway.
#include <algorithm>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "appliance/prewarm/image_set.h"

using namespace gatecache::prewarm;

namespace {

std::vector<std::filesystem::path> shipped_set_files() {
  std::vector<std::filesystem::path> files;
  auto dir = std::filesystem::path(GATECACHE_SOURCE_DIR) / "images";
  for (const auto &entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() == ".yaml") {
      files.push_back(entry.path());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

} // namespace

TEST_CASE("shipped image sets all parse", "[prewarm]") {
  auto files = shipped_set_files();
  REQUIRE_FALSE(files.empty());
  for (const auto &file : files) {
    INFO("set file: " << file.string());
    auto set = load_image_set(file.string());
    REQUIRE(set.has_value());
    CHECK(set->name == file.stem().string());
    CHECK_FALSE(set->description.empty());
    CHECK_FALSE(set->images.empty());
    for (const ImageRef &image : set->images) {
      INFO("image: " << image.str());
      CHECK_FALSE(image.platforms.empty());
      // Tags are pinned: a set meant for one release never floats.
      CHECK(image.reference != "latest");
    }
  }
}

TEST_CASE("shipped kubernetes sets list kubeadm images", "[prewarm]") {
  const std::vector<std::string> components = {
      "kube-apiserver", "kube-controller-manager",
      "kube-scheduler", "kube-proxy",
      "pause",          "etcd",
      "coredns/coredns"};
  size_t kubernetes_sets = 0;
  for (const auto &file : shipped_set_files()) {
    if (!file.stem().string().starts_with("kubernetes-")) {
      continue;
    }
    ++kubernetes_sets;
    INFO("set file: " << file.string());
    auto set = load_image_set(file.string());
    REQUIRE(set.has_value());
    std::set<std::string> repositories;
    for (const ImageRef &image : set->images) {
      CHECK(image.registry == "registry.k8s.io");
      repositories.insert(image.repository);
    }
    for (const std::string &component : components) {
      INFO("component: " << component);
      CHECK(repositories.count(component) == 1);
    }
    CHECK(repositories.size() == components.size());
  }
  CHECK(kubernetes_sets > 0);
}
