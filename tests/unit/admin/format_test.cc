#include "appliance/admin/format.h"

#include <string>

#include <catch2/catch.hpp>

#include "tests/unit/admin/test_support.h"

namespace gatecache::admin {
namespace {

using nlohmann::json;

// Returns the line of `text` that starts with `prefix`, or "".
std::string line_starting(const std::string &text, const std::string &prefix) {
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    std::string line = text.substr(start, end - start);
    if (line.rfind(prefix, 0) == 0) {
      return line;
    }
    if (end == std::string::npos) {
      break;
    }
    start = end + 1;
  }
  return "";
}

TEST_CASE("duration keeps two largest units", "[admin][format]") {
  CHECK(format_duration(0) == "0s");
  CHECK(format_duration(-5) == "0s");
  CHECK(format_duration(45.9) == "45s");
  CHECK(format_duration(60) == "1m");
  CHECK(format_duration(725) == "12m5s");
  CHECK(format_duration(3600) == "1h");
  CHECK(format_duration(7800) == "2h10m");
  CHECK(format_duration(7805) == "2h10m");
  CHECK(format_duration(21600) == "6h");
  CHECK(format_duration(273600) == "3d4h");
}

TEST_CASE("bytes use binary units", "[admin][format]") {
  CHECK(format_bytes(0) == "0 B");
  CHECK(format_bytes(512) == "512 B");
  CHECK(format_bytes(1536) == "1.5 KiB");
  CHECK(format_bytes(123456) == "120.6 KiB");
  CHECK(format_bytes(5.0 * 1024 * 1024 * 1024) == "5.0 GiB");
}

TEST_CASE("time prints as UTC", "[admin][format]") {
  CHECK(format_time(1765000000.9) == "2025-12-06T05:46:40Z");
}

TEST_CASE("status shows upstream budget", "[admin][format]") {
  std::string out = format_status(test::example_status());

  CHECK(out.rfind("gatecache 0.1.0, up 2h46m, status at "
                  "2025-12-06T05:46:40Z\n",
                  0) == 0);
  std::string header = line_starting(out, "UPSTREAM");
  CHECK(header ==
        "UPSTREAM   SOURCE   LIMIT  REMAINING  WINDOW  RESET IN   EXHAUSTS  "
        "QUEUED N/R/P  IN FLIGHT  STALE  THROTTLED");
  // Reset at now + 3599.5 s, exhaustion at now + 1199.5 s.
  CHECK(line_starting(out, "docker.io") ==
        "docker.io  headers    100         76      6h    59m59s  in 19m59s  "
        "       0/0/3          1      4          0");
}

TEST_CASE("status shows clusters and jobs", "[admin][format]") {
  std::string out = format_status(test::example_status());

  CHECK(line_starting(out, "CLUSTER") ==
        "CLUSTER  WEIGHT  REQUESTS  COUNTED  HITS  REVALIDATED  MISSES  "
        "STALE  REFUSED");
  CHECK(line_starting(out, "dev") ==
        "dev           1       900       12   800           50      30      "
        "2        1");
  CHECK(line_starting(out, "denied") == "denied (client in no cluster): 3");
  CHECK(line_starting(out, "PREWARM") ==
        "PREWARM  SETS             STATE    IMAGES      BYTES  COUNTED");
  CHECK(line_starting(out, "      1") ==
        "      1  kubernetes-1.31  running     3/8  120.6 KiB        4");
}

TEST_CASE("status prints unknown values as dash", "[admin][format]") {
  json status = test::example_status();
  json &upstream = status["upstreams"][0];
  upstream["limit"] = nullptr;
  upstream["remaining"] = nullptr;
  upstream["reset_at"] = nullptr;
  upstream["exhaust_at"] = nullptr;
  upstream.erase("queued");
  upstream.erase("window_s");

  std::string line = line_starting(format_status(status), "docker.io");

  CHECK(line == "docker.io  headers      -          -       -         -  "
                "       -             -          1      4          0");
}

TEST_CASE("status notes throttled upstream", "[admin][format]") {
  json status = test::example_status();
  status["upstreams"][0]["blocked_until"] = 1765000720.5;

  std::string out = format_status(status);

  CHECK(out.find("docker.io: throttled by the upstream; no counted request "
                 "before 2025-12-06T05:58:40Z (in 12m)\n") !=
        std::string::npos);
}

TEST_CASE("status skips finished jobs", "[admin][format]") {
  json status = test::example_status();
  status["prewarm"][0]["state"] = "done";
  status.erase("clusters");
  status["upstreams"] = json::array();

  std::string out = format_status(status);

  CHECK(out.find("no prewarm job running\n") != std::string::npos);
  CHECK(out.find("no cluster reported\n") != std::string::npos);
  CHECK(out.find("no upstream reported\n") != std::string::npos);
}

TEST_CASE("status shows scrub passes", "[admin][format]") {
  json status = test::example_status();
  status["scrub"] = {{"passes", 3},
                     {"files", 10},
                     {"bytes", 4096},
                     {"damaged", 1},
                     {"last_pass_end", 1765000000},
                     {"running", false},
                     {"next_pass_at", 1765604800}};

  std::string out = format_status(status);

  CHECK(out.find("scrub: 3 passes since start, 1 damaged files removed, "
                 "next pass 2025-12-13T05:46:40Z\n") != std::string::npos);

  status["scrub"]["running"] = true;
  CHECK(format_status(status).find(
            "1 damaged files removed, a pass is running\n") !=
        std::string::npos);
}

TEST_CASE("pulls table shortens digests", "[admin][format]") {
  json pulls = json::parse(R"({"pulls": [
    {"time": 1765000000.1, "client": "10.0.0.5", "cluster": "dev",
     "ns": "docker.io", "repository": "library/busybox",
     "reference": "latest", "kind": "manifest", "status": 200,
     "cache": "hit"},
    {"time": 1765000001, "client": "fd00::5", "cluster": null,
     "ns": "ghcr.io", "repository": "a/b",
     "reference": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
     "kind": "blob", "status": 200, "cache": "miss"}]})");

  std::string out = format_pulls(pulls);

  CHECK(line_starting(out, "TIME") ==
        "TIME                  CLIENT    CLUSTER  UPSTREAM   REPOSITORY       "
        "REFERENCE            KIND      STATUS  CACHE");
  CHECK(line_starting(out, "2025-12-06T05:46:40Z") ==
        "2025-12-06T05:46:40Z  10.0.0.5  dev      docker.io  library/busybox  "
        "latest               manifest     200  hit");
  CHECK(line_starting(out, "2025-12-06T05:46:41Z") ==
        "2025-12-06T05:46:41Z  fd00::5   -        ghcr.io    a/b              "
        "sha256:0123456789ab  blob         200  miss");
}

TEST_CASE("pulls table reports none", "[admin][format]") {
  CHECK(format_pulls(json::parse(R"({"pulls": []})")) == "no pulls recorded\n");
  CHECK(format_pulls(json::object()) == "no pulls recorded\n");
}

json running_job() {
  return json::parse(R"({"id": 3, "sets": ["kubernetes-1.31", "flannel"],
    "state": "running", "images_total": 8, "images_done": 3,
    "bytes": 123456, "counted": 4, "errors": [], "waiting_until": null,
    "images": [
      {"ref": "registry.k8s.io/pause:3.10", "state": "done", "bytes": 1},
      {"ref": "registry.k8s.io/etcd:3.5.15-0", "state": "failed",
       "bytes": 0, "error": "manifest unknown"},
      {"ref": "registry.k8s.io/coredns/coredns:v1.11.3", "state": "queued",
       "bytes": 0}]})");
}

TEST_CASE("prewarm progress line", "[admin][format]") {
  json job = running_job();

  CHECK(format_prewarm_progress(job, 1765000000) ==
        "prewarm 3 (kubernetes-1.31, flannel): running, 3/8 images, "
        "120.6 KiB, 4 counted requests, 1 failed");

  job["waiting_until"] = 1765000750;
  CHECK(format_prewarm_progress(job, 1765000000) ==
        "prewarm 3 (kubernetes-1.31, flannel): running, 3/8 images, "
        "120.6 KiB, 4 counted requests, 1 failed, waiting for budget "
        "(12m30s left)");
}

TEST_CASE("prewarm progress key ignores countdown", "[admin][format]") {
  json job = running_job();
  job["waiting_until"] = 1765000750;
  std::string waiting = prewarm_progress_key(job);
  json more = job;
  more["images_done"] = 4;

  CHECK(prewarm_progress_key(job) == waiting);
  CHECK(prewarm_progress_key(more) != waiting);
  CHECK(format_prewarm_progress(job, 1765000000) !=
        format_prewarm_progress(job, 1765000001));
}

TEST_CASE("prewarm job states", "[admin][format]") {
  json job = running_job();
  CHECK_FALSE(prewarm_finished(job));
  CHECK(prewarm_has_failures(job));

  job["state"] = "done";
  job["images"][1]["state"] = "done";
  CHECK(prewarm_finished(job));
  CHECK_FALSE(prewarm_has_failures(job));

  job["errors"] = {"set flannel: registry unreachable"};
  CHECK(prewarm_has_failures(job));

  job["errors"] = json::array();
  job["state"] = "failed";
  CHECK(prewarm_finished(job));
  CHECK(prewarm_has_failures(job));
}

TEST_CASE("prewarm result lists failures", "[admin][format]") {
  json job = running_job();
  job["state"] = "failed";
  job["images_done"] = 8;
  job["errors"] = {"set flannel: registry unreachable",
                   "registry.k8s.io/etcd:3.5.15-0: manifest unknown"};

  CHECK(format_prewarm_result(job) ==
        "prewarm 3 (kubernetes-1.31, flannel) failed: 8/8 images, "
        "120.6 KiB, 4 counted requests, 1 failed\n"
        "  failed: registry.k8s.io/etcd:3.5.15-0: manifest unknown\n"
        "  error: set flannel: registry unreachable\n");
}

} // namespace
} // namespace gatecache::admin
