// The `status`, `prewarm` and `pulls` subcommands run in-process against
// a real admin server with `AdminApi` over a `FakeSource`.
#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include <catch2/catch.hpp>

#include "appliance/admin/format.h"
#include "appliance/cli/commands.h"
#include "tests/unit/admin/test_support.h"

namespace gatecache::admin {
namespace {

using nlohmann::json;
using test::FakeSource;
using test::ServerFixture;

struct CommandResult {
  int exit_status = 0;
  std::string out;
  std::string err;
};

// Runs `gatecache ARGS...` with the admin subcommands and captures what
// they print.
CommandResult run_command(std::vector<std::string> args) {
  CLI::App app{"gatecache"};
  app.require_subcommand(1);
  std::string config_path = "/nonexistent/gatecache.yaml";
  cli::add_admin_commands(app, config_path);

  std::vector<char *> argv;
  std::string program = "gatecache";
  argv.push_back(program.data());
  for (auto &arg : args) {
    argv.push_back(arg.data());
  }

  std::ostringstream out;
  std::ostringstream err;
  auto *old_out = std::cout.rdbuf(out.rdbuf());
  auto *old_err = std::cerr.rdbuf(err.rdbuf());
  CommandResult result;
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::ParseError &e) {
    result.exit_status = app.exit(e, out, err);
  }
  std::cout.rdbuf(old_out);
  std::cerr.rdbuf(old_err);
  result.out = out.str();
  result.err = err.str();
  return result;
}

// A real server with `AdminApi` over a `FakeSource`.
struct ApiFixture {
  FakeSource source;
  AdminApi api{source};
  ServerFixture server{api, {}, false};
};

void write_file(const std::string &path, const std::string &text) {
  std::ofstream file(path);
  file << text;
}

constexpr const char *SetYaml = R"(name: test-set
platforms: [linux/amd64]
images:
  - docker.io/library/busybox:1.36
)";

json job_step(const char *state, int done, const char *image_state,
              const char *error = nullptr) {
  json image = {{"ref", "docker.io/library/busybox:1.36"},
                {"state", image_state},
                {"bytes", done * 2048}};
  if (error != nullptr) {
    image["error"] = error;
  }
  return {{"id", 1},
          {"sets", {"test-set"}},
          {"state", state},
          {"images_total", 1},
          {"images_done", done},
          {"bytes", done * 2048},
          {"counted", done},
          {"errors", json::array()},
          {"waiting_until", nullptr},
          {"images", {image}}};
}

TEST_CASE("status command prints tables", "[admin][cli]") {
  ApiFixture fixture;

  auto result =
      run_command({"status", "--socket", fixture.server.socket_path()});

  CHECK(result.exit_status == 0);
  CHECK(result.err.empty());
  CHECK(result.out == format_status(test::example_status()));
}

TEST_CASE("status command prints raw JSON", "[admin][cli]") {
  ApiFixture fixture;

  auto result = run_command(
      {"status", "--json", "--socket", fixture.server.socket_path()});

  CHECK(result.exit_status == 0);
  CHECK(json::parse(result.out) == test::example_status());
}

TEST_CASE("status command reports missing daemon", "[admin][cli]") {
  test::TempDir dir;
  std::string path = dir.path() + "/admin.sock";

  auto result = run_command({"status", "--socket", path});

  CHECK(result.exit_status == 1);
  CHECK(result.err == "gatecache: cannot connect to " + path +
                          ": No such file or directory; is gatecache "
                          "running? (systemctl status gatecache)\n");
}

TEST_CASE("status command reads socket from config", "[admin][cli]") {
  ApiFixture fixture;
  test::TempDir dir;
  std::string config = dir.path() + "/gatecache.yaml";

  SECTION("admin.socket set") {
    write_file(config, "upstreams: {docker.io: {}}\nadmin:\n  socket: " +
                           fixture.server.socket_path() + "\n");
    auto result = run_command({"status", "--json", "-c", config});
    CHECK(result.exit_status == 0);
    CHECK(result.err.empty());
  }

  SECTION("admin.socket turned off") {
    write_file(config, "upstreams: {docker.io: {}}\nadmin:\n  socket: \"\"\n");
    auto result = run_command({"status", "--config", config});
    CHECK(result.exit_status == 2);
    CHECK(result.err.find("admin.socket is empty") != std::string::npos);
  }

  SECTION("config missing") {
    auto result = run_command({"status", "--config", dir.path() + "/none"});
    CHECK(result.exit_status == 2);
    CHECK(result.err.find("--socket PATH") != std::string::npos);
  }
}

TEST_CASE("pulls command passes filters", "[admin][cli]") {
  ApiFixture fixture;
  double before = std::chrono::duration<double>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();

  auto result =
      run_command({"pulls", "--client", "10.0.0.5", "--since", "300", "--limit",
                   "7", "--socket", fixture.server.socket_path()});

  CHECK(result.exit_status == 0);
  CHECK(result.out.find("library/busybox") != std::string::npos);
  fixture.server.loop().call([&] {
    CHECK(fixture.source.pulls_client == "10.0.0.5");
    CHECK(fixture.source.pulls_since >= before - 301);
    CHECK(fixture.source.pulls_since <= before - 299 + 60);
    CHECK(fixture.source.pulls_limit == 7);
  });
}

TEST_CASE("pulls command prints raw JSON", "[admin][cli]") {
  ApiFixture fixture;

  auto result = run_command(
      {"pulls", "--json", "--socket", fixture.server.socket_path()});

  CHECK(result.exit_status == 0);
  CHECK(json::parse(result.out)["pulls"][0]["client"] == "10.0.0.5");
}

TEST_CASE("pulls command reports bad client", "[admin][cli]") {
  ApiFixture fixture;

  auto result = run_command({"pulls", "--client", "node-1", "--socket",
                             fixture.server.socket_path()});

  CHECK(result.exit_status == 1);
  CHECK(result.err.find("invalid client 'node-1'") != std::string::npos);
}

TEST_CASE("prewarm command waits for job", "[admin][cli]") {
  ApiFixture fixture;
  test::TempDir dir;
  std::string set_path = dir.path() + "/test-set.yaml";
  write_file(set_path, SetYaml);
  fixture.server.loop().call([&] {
    fixture.source.job_sequence = {
        job_step("running", 0, "running"),
        job_step("running", 0, "running"),
        job_step("done", 1, "done"),
    };
  });

  auto result = run_command(
      {"prewarm", set_path, "--socket", fixture.server.socket_path()});

  CHECK(result.exit_status == 0);
  // The unchanged second step prints no second progress line.
  CHECK(result.out ==
        "prewarm 1 (test-set): running, 0/1 images, 0 B, 0 counted "
        "requests\n"
        "prewarm 1 (test-set) done: 1/1 images, 2.0 KiB, 1 counted "
        "requests\n");
  fixture.server.loop().call([&] {
    REQUIRE(fixture.source.started.size() == 1);
    const json &set = fixture.source.started[0][0];
    CHECK(set["name"] == "test-set");
    CHECK(set["images"][0]["ref"] == "docker.io/library/busybox:1.36");
  });
}

TEST_CASE("prewarm command lists failed images", "[admin][cli]") {
  ApiFixture fixture;
  test::TempDir dir;
  std::string set_path = dir.path() + "/test-set.yaml";
  write_file(set_path, SetYaml);
  fixture.server.loop().call([&] {
    fixture.source.job_sequence = {
        job_step("failed", 1, "failed", "manifest unknown")};
  });

  auto result = run_command(
      {"prewarm", set_path, "--socket", fixture.server.socket_path()});

  CHECK(result.exit_status == 1);
  CHECK(result.out.find("  failed: docker.io/library/busybox:1.36: "
                        "manifest unknown\n") != std::string::npos);
}

TEST_CASE("prewarm command resolves set name", "[admin][cli]") {
  ApiFixture fixture;
  test::TempDir dir;
  write_file(dir.path() + "/test-set.yaml", SetYaml);
  std::string config = dir.path() + "/gatecache.yaml";
  write_file(config, "upstreams: {docker.io: {}}\nprewarm:\n  images_dir: " +
                         dir.path() + "\nadmin:\n  socket: " +
                         fixture.server.socket_path() + "\n");

  SECTION("known name") {
    auto result =
        run_command({"prewarm", "test-set", "--no-wait", "-c", config});
    CHECK(result.exit_status == 0);
    CHECK(result.out == "prewarm job 1 started; `gatecache status` shows its "
                        "progress\n");
  }

  SECTION("unknown name") {
    auto result = run_command({"prewarm", "other", "-c", config});
    CHECK(result.exit_status == 2);
    CHECK(result.err.find("other") != std::string::npos);
    fixture.server.loop().call([&] { CHECK(fixture.source.started.empty()); });
  }
}

TEST_CASE("prewarm command prints final JSON", "[admin][cli]") {
  ApiFixture fixture;
  test::TempDir dir;
  std::string set_path = dir.path() + "/test-set.yaml";
  write_file(set_path, SetYaml);
  fixture.server.loop().call(
      [&] { fixture.source.job_sequence = {job_step("done", 1, "done")}; });

  auto result = run_command({"prewarm", set_path, "--json", "--socket",
                             fixture.server.socket_path()});

  CHECK(result.exit_status == 0);
  CHECK(json::parse(result.out) == job_step("done", 1, "done"));
}

TEST_CASE("prewarm command rejects invalid set", "[admin][cli]") {
  ApiFixture fixture;
  test::TempDir dir;
  std::string set_path = dir.path() + "/bad.yaml";
  write_file(set_path, "images:\n  - 'not a reference'\n");

  auto result = run_command(
      {"prewarm", set_path, "--socket", fixture.server.socket_path()});

  CHECK(result.exit_status == 2);
  CHECK(result.err.find(set_path) != std::string::npos);
}

} // namespace
} // namespace gatecache::admin
