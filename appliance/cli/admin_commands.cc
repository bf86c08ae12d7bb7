// `gatecache status`, `gatecache prewarm`, `gatecache scrub` and
// `gatecache pulls`: clients of a running daemon's admin socket. The socket
// path comes from `admin.socket` in the configuration file unless --socket
// names one. Results go to stdout and errors to stderr as "gatecache: ...",
// with exit status 1 for a failure and 2 for a configuration or usage error.
#include <chrono>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <unistd.h>

#include "appliance/admin/api.h"
#include "appliance/admin/client.h"
#include "appliance/admin/format.h"
#include "appliance/cli/commands.h"
#include "appliance/config/config.h"
#include "appliance/prewarm/image_set.h"
#include "common/log.h"

namespace gatecache::cli {
namespace {

constexpr int ExitFailure = 1;
constexpr int ExitConfigError = 2;

// Interval between requests for the progress of a prewarm job.
constexpr auto PollInterval = std::chrono::milliseconds(500);

// Options of the admin subcommands, filled by CLI11 before a callback runs.
struct AdminOptions {
  std::string socket;
  bool json = false;
  // `pulls`
  std::string client;
  double since_ago_s = -1;
  size_t limit = 0;
  // `prewarm`
  std::vector<std::string> sets;
  bool no_wait = false;
};

// Prints `message` to stderr and ends the command with `status`.
[[noreturn]] void exit_with(int status, const std::string &message) {
  std::cout.flush();
  std::cerr << "gatecache: " << message << "\n";
  throw CLI::RuntimeError(status);
}

// Loads the configuration, once per command.
class ConfigLoader {
public:
  explicit ConfigLoader(const std::string &path) : path_(path) {}

  const config::Config &get() {
    if (!config_) {
      // The commands print their own results, so only warnings and errors
      // of the libraries reach the log.
      std::string log_error;
      log::init("warn", "off", log_error);
      auto loaded = config::load_config(path_);
      if (!loaded) {
        std::string message = loaded.error().message;
        if (loaded.error().code == ErrorCode::NotFound ||
            loaded.error().code == ErrorCode::Io) {
          message += "; pass --config FILE, or --socket PATH to reach the "
                     "daemon without a configuration file";
        }
        exit_with(ExitConfigError, message);
      }
      config_ = *loaded;
    }
    return *config_;
  }

  const std::string &path() const { return path_; }

private:
  std::string path_;
  std::shared_ptr<const config::Config> config_;
};

std::string socket_path(const AdminOptions &options, ConfigLoader &config) {
  if (!options.socket.empty()) {
    return options.socket;
  }
  const std::string &path = config.get().admin.socket;
  if (path.empty()) {
    exit_with(ExitConfigError,
              "the admin socket is turned off in " + config.path() +
                  " (admin.socket is empty); set admin.socket or pass "
                  "--socket PATH");
  }
  return path;
}

// The raw body of a 2xx response and its parsed JSON.
struct JsonResponse {
  std::string raw;
  nlohmann::json json;
};

JsonResponse request_json(admin::AdminClient &client, const std::string &method,
                          const std::string &target,
                          const std::string &body = "") {
  auto response =
      method == "POST" ? client.post(target, body) : client.get(target);
  if (!response) {
    exit_with(ExitFailure, response.error().message);
  }
  auto json = admin::json_body(method + " " + target, *response);
  if (!json) {
    exit_with(ExitFailure, json.error().message);
  }
  return {std::move(response->body), std::move(*json)};
}

// Prints a body as the daemon sent it, ending with a newline.
void print_raw(const std::string &body) {
  std::cout << body;
  if (body.empty() || body.back() != '\n') {
    std::cout << "\n";
  }
}

double unix_now() {
  return std::chrono::duration<double>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void run_status(const AdminOptions &options, ConfigLoader &config) {
  admin::AdminClient client(socket_path(options, config));
  JsonResponse status = request_json(client, "GET", "/v1/status");
  if (options.json) {
    print_raw(status.raw);
    return;
  }
  std::cout << admin::format_status(status.json);
}

void run_scrub(const AdminOptions &options, ConfigLoader &config) {
  admin::AdminClient client(socket_path(options, config));
  request_json(client, "POST", "/v1/scrub");
  std::cout << "scrub pass requested; `gatecache status` shows when it "
               "runs, and the log lists damaged content it removes\n";
}

void run_pulls(const AdminOptions &options, ConfigLoader &config) {
  std::string query;
  auto add = [&](const std::string &name, const std::string &value) {
    query +=
        (query.empty() ? "?" : "&") + name + "=" + admin::query_escape(value);
  };
  if (!options.client.empty()) {
    add("client", options.client);
  }
  if (options.since_ago_s >= 0) {
    double since = unix_now() - options.since_ago_s;
    add("since", std::to_string(since > 0 ? since : 0));
  }
  if (options.limit > 0) {
    add("limit", std::to_string(options.limit));
  }

  admin::AdminClient client(socket_path(options, config));
  JsonResponse pulls = request_json(client, "GET", "/v1/pulls" + query);
  if (options.json) {
    print_raw(pulls.raw);
    return;
  }
  std::cout << admin::format_pulls(pulls.json);
}

// True when `set` names a file rather than a set in `prewarm.images_dir`,
// by the rule of `prewarm::resolve_set_path()`.
bool is_set_path(const std::string &set) {
  auto ends_with = [&](const char *suffix) { return set.ends_with(suffix); };
  return set.find('/') != std::string::npos || ends_with(".yaml") ||
         ends_with(".yml");
}

nlohmann::json load_sets(const AdminOptions &options, ConfigLoader &config) {
  nlohmann::json sets = nlohmann::json::array();
  for (const auto &set : options.sets) {
    std::string images_dir;
    if (!is_set_path(set)) {
      images_dir = config.get().prewarm.images_dir;
    }
    auto path = prewarm::resolve_set_path(set, images_dir);
    if (!path) {
      exit_with(ExitConfigError, path.error().message);
    }
    auto loaded = prewarm::load_image_set(*path);
    if (!loaded) {
      exit_with(ExitConfigError, loaded.error().message);
    }
    sets.push_back(prewarm::to_json(*loaded));
  }
  return sets;
}

// Polls the job until it finishes, printing progress: one updating line on
// a terminal, else one line per change. Returns the last response.
JsonResponse wait_for_job(admin::AdminClient &client, uint64_t id,
                          bool print_progress) {
  bool terminal = ::isatty(STDOUT_FILENO) == 1;
  std::string target = "/v1/prewarm/" + std::to_string(id);
  std::string last_key;
  if (print_progress && terminal) {
    std::cerr << "Ctrl-C stops waiting; the job keeps running in the "
                 "daemon.\n";
  }
  while (true) {
    JsonResponse job = request_json(client, "GET", target);
    bool finished = admin::prewarm_finished(job.json);
    if (print_progress && terminal) {
      // "\x1b[K" erases the rest of the line. The final report replaces
      // the progress line.
      std::cout << "\r";
      if (!finished) {
        std::cout << admin::format_prewarm_progress(job.json, unix_now());
      }
      std::cout << "\x1b[K" << std::flush;
    } else if (print_progress) {
      std::string key = admin::prewarm_progress_key(job.json);
      if (key != last_key && !finished) {
        std::cout << admin::format_prewarm_progress(job.json, unix_now())
                  << std::endl;
        last_key = key;
      }
    }
    if (finished) {
      return job;
    }
    std::this_thread::sleep_for(PollInterval);
  }
}

void run_prewarm(const AdminOptions &options, ConfigLoader &config) {
  nlohmann::json sets = load_sets(options, config);
  admin::AdminClient client(socket_path(options, config));
  JsonResponse started = request_json(client, "POST", "/v1/prewarm",
                                      nlohmann::json{{"sets", sets}}.dump());
  const auto &id_value = started.json["id"];
  if (!id_value.is_number_unsigned()) {
    exit_with(ExitFailure, "the daemon started a prewarm job but sent no "
                           "job id: " +
                               started.raw);
  }
  auto id = id_value.get<uint64_t>();

  if (options.no_wait) {
    if (options.json) {
      print_raw(started.raw);
    } else {
      std::cout << "prewarm job " << id << " started; `gatecache status` "
                << "shows its progress\n";
    }
    return;
  }

  JsonResponse job = wait_for_job(client, id, !options.json);
  if (options.json) {
    print_raw(job.raw);
  } else {
    std::cout << admin::format_prewarm_result(job.json);
  }
  if (admin::prewarm_has_failures(job.json)) {
    // The failures are listed above.
    std::cout.flush();
    throw CLI::RuntimeError(ExitFailure);
  }
}

// Adds the options every admin subcommand has.
void add_common_options(
    CLI::App *command, std::string &config_path, AdminOptions &options,
    const char *config_help = "Configuration file, read for admin.socket") {
  command->add_option("-c,--config", config_path, config_help)
      ->capture_default_str();
  command
      ->add_option("--socket", options.socket,
                   "Admin socket of the daemon, in place of admin.socket "
                   "from the configuration")
      ->type_name("PATH");
}

} // namespace

void add_admin_commands(CLI::App &app, std::string &config_path) {
  auto options = std::make_shared<AdminOptions>();

  auto *status = app.add_subcommand(
      "status", "Show the upstream budgets, cluster statistics and running "
                "prewarm jobs of the running daemon");
  add_common_options(status, config_path, *options);
  status->add_flag("--json", options->json,
                   "Print the daemon's JSON as it is sent");
  status->callback([options, &config_path] {
    ConfigLoader config(config_path);
    run_status(*options, config);
  });

  auto *prewarm = app.add_subcommand(
      "prewarm", "Fetch the images of image sets into the cache and show "
                 "the progress");
  add_common_options(prewarm, config_path, *options,
                     "Configuration file, read for admin.socket and for "
                     "prewarm.images_dir when a SET is a name");
  prewarm
      ->add_option("SET", options->sets,
                   "Set name in prewarm.images_dir, or a set file path")
      ->required();
  prewarm->add_flag("--no-wait", options->no_wait,
                    "Start the job, print its id and exit");
  prewarm->add_flag("--json", options->json,
                    "Print the final job JSON instead of progress lines");
  prewarm->callback([options, &config_path] {
    ConfigLoader config(config_path);
    run_prewarm(*options, config);
  });

  auto *scrub = app.add_subcommand(
      "scrub", "Hash every stored file again now and remove damaged ones");
  add_common_options(scrub, config_path, *options);
  scrub->callback([options, &config_path] {
    ConfigLoader config(config_path);
    run_scrub(*options, config);
  });

  auto *pulls = app.add_subcommand(
      "pulls", "List recent requests that nodes sent through gatecache");
  add_common_options(pulls, config_path, *options);
  pulls
      ->add_option("--client", options->client,
                   "Only requests from this IP address")
      ->type_name("IP");
  pulls
      ->add_option("--since", options->since_ago_s,
                   "Only requests of the last SECONDS seconds")
      ->type_name("SECONDS")
      ->check(CLI::NonNegativeNumber);
  pulls
      ->add_option("--limit", options->limit,
                   "Return at most N requests, the newest ones (default " +
                       std::to_string(admin::DefaultPullsLimit) + ")")
      ->type_name("N")
      ->check(CLI::Range(size_t{1}, admin::MaxPullsLimit));
  pulls->add_flag("--json", options->json,
                  "Print the daemon's JSON as it is sent");
  pulls->callback([options, &config_path] {
    ConfigLoader config(config_path);
    run_pulls(*options, config);
  });
}

} // namespace gatecache::cli
