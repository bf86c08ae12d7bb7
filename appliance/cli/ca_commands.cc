// `gatecache ca ...`: the internal CA from the command line. Every command
// reads `tls` from the configuration file, and those that change files
// hold the TLS directory's lock, so they never interleave with a running
// daemon's renewal. A running daemon applies the changes at its next check
// or on SIGHUP.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/fmt/fmt.h>

#include "appliance/cli/commands.h"
#include "appliance/config/config.h"
#include "common/log.h"
#include "tls/ca.h"
#include "tls/certificate_manager.h"
#include "tls/client_certificate.h"
#include "tls/directory_lock.h"
#include "tls/openssl_ptr.h"
#include "tls/pem_file.h"
#include "tls/rotation.h"

namespace gatecache::cli {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::system_clock;

// Exit statuses, as `check-config` and `serve` use them.
constexpr int ExitFailure = 1;
constexpr int ExitConfigError = 2;

constexpr int MaxClientDays = 3650;

// Options of the `ca` subcommands, filled by CLI11 before a callback runs.
struct CaOptions {
  bool force = false;
  bool json = false;
  std::string cluster;
  std::string out;
  int days = 365;
};

// Prints `message` to stderr and ends the command with `status`.
[[noreturn]] void exit_with(int status, const std::string &message) {
  std::fprintf(stderr, "gatecache: %s\n", message.c_str());
  throw CLI::RuntimeError(status);
}

std::shared_ptr<const config::Config> load(const std::string &config_path) {
  // The commands print their own results, so only warnings and errors of
  // the library reach the log.
  std::string log_error;
  log::init("warn", "off", log_error);
  auto config = config::load_config(config_path);
  if (!config) {
    exit_with(ExitConfigError, config.error().message);
  }
  return *config;
}

tls::TlsPaths paths_of(const config::Config &config) {
  return tls::TlsPaths{config.tls.dir};
}

std::chrono::seconds server_lifetime(const config::Config &config) {
  return std::chrono::seconds(
      static_cast<int64_t>(std::llround(config.tls.server_lifetime_s)));
}

tls::DirectoryLock lock(const tls::TlsPaths &paths) {
  auto locked = tls::DirectoryLock::acquire(paths.dir);
  if (!locked) {
    exit_with(ExitFailure, locked.error().message);
  }
  return std::move(*locked);
}

template <typename T> T value_or_exit(Result<T> result) {
  if (!result) {
    exit_with(ExitFailure, result.error().message);
  }
  return std::move(*result);
}

void exit_on_error(const Result<void> &result) {
  if (!result) {
    exit_with(ExitFailure, result.error().message);
  }
}

std::string format_time(Clock::time_point when) {
  std::time_t seconds = Clock::to_time_t(when);
  std::tm parts{};
  gmtime_r(&seconds, &parts);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &parts);
  return text;
}

// Whole days from `now` to `when`, negative once `when` passed.
int64_t days_left(Clock::time_point when, Clock::time_point now) {
  return std::chrono::floor<std::chrono::hours>(when - now).count() / 24;
}

std::string validity(const tls::CertificateInfo &info, Clock::time_point now) {
  int64_t days = days_left(info.not_after, now);
  return fmt::format("{} to {} ({})", format_time(info.not_before),
                     format_time(info.not_after),
                     days >= 0 ? fmt::format("{} days left", days)
                               : std::string("expired"));
}

// Tells the operator when a running daemon applies a change.
void print_daemon_note(const config::Config &config) {
  auto interval = tls::check_interval(server_lifetime(config));
  std::printf("A running gatecache applies this at its next check (every "
              "%lld s) or on SIGHUP.\n",
              static_cast<long long>(interval.count()));
}

// Ends the command while an interrupted rotation switch leaves `ca.key`
// and `ca.crt` possibly mismatched.
void exit_if_switching(const tls::TlsPaths &paths) {
  auto phase = value_or_exit(tls::read_rotation_phase(paths));
  if (phase == tls::RotationPhase::Switching) {
    exit_with(ExitFailure, "a CA rotation switch in " + paths.dir.string() +
                               " was interrupted; run `" +
                               tls::next_rotation_command(phase) +
                               "` to complete it");
  }
}

void run_init(const std::string &config_path) {
  auto config = load(config_path);
  tls::TlsPaths paths = paths_of(*config);
  auto directory_lock = lock(paths);
  bool created = value_or_exit(tls::ensure_ca(paths));
  auto info = value_or_exit(tls::read_certificate_info(paths.ca_cert()));
  if (!created) {
    std::printf("CA already exists at %s, fingerprint %s\n",
                paths.ca_cert().c_str(), info.sha256_fingerprint.c_str());
    return;
  }
  std::printf("Created CA at %s\n  subject: %s\n  SHA-256 fingerprint: %s\n"
              "  valid: %s\n"
              "Nodes must trust it: install the output of `gatecache ca "
              "export` on each node.\n",
              paths.ca_cert().c_str(), info.subject.c_str(),
              info.sha256_fingerprint.c_str(),
              validity(info, Clock::now()).c_str());
}

void run_issue_server(const std::string &config_path,
                      const CaOptions &options) {
  auto config = load(config_path);
  tls::TlsPaths paths = paths_of(*config);
  auto directory_lock = lock(paths);
  exit_if_switching(paths);
  exit_on_error(tls::check_private_keys(paths));
  // A share of 1 reissues whatever the remaining lifetime.
  double share = options.force ? 1.0 : config->tls.renew_fraction;
  bool issued = value_or_exit(tls::ensure_server_certificate(
      paths, config->tls.names, server_lifetime(*config), share));
  auto info = value_or_exit(tls::read_certificate_info(paths.server_cert()));
  Clock::time_point now = Clock::now();
  if (!issued) {
    std::printf("Server certificate %s is current: serial %s, valid %s. Use "
                "--force to reissue it now.\n",
                paths.server_cert().c_str(), info.serial.c_str(),
                validity(info, now).c_str());
    return;
  }
  std::printf("Issued server certificate %s\n  names: %s\n  serial: %s\n"
              "  valid: %s\n",
              paths.server_cert().c_str(),
              fmt::format("{}", fmt::join(info.sans, ", ")).c_str(),
              info.serial.c_str(), validity(info, now).c_str());
  print_daemon_note(*config);
}

// Warns when no cluster of the configuration accepts `name`.
void warn_unknown_client(const config::Config &config,
                         const std::string &name) {
  if (config.clusters.empty()) {
    return;
  }
  for (const config::ClusterConfig &cluster : config.clusters) {
    for (const std::string &client : cluster.client_names) {
      if (client == name) {
        return;
      }
    }
  }
  std::fprintf(stderr,
               "gatecache: warning: no cluster in %s lists client name "
               "\"%s\"; add it to clusters.<name>.client_names\n",
               config.source_path.c_str(), name.c_str());
}

void run_issue_client(const std::string &config_path,
                      const CaOptions &options) {
  auto config = load(config_path);
  tls::TlsPaths paths = paths_of(*config);
  exit_on_error(tls::check_client_name(options.cluster));
  fs::path out = options.out.empty() ? paths.clients_dir() / options.cluster
                                     : fs::path(options.out);
  auto directory_lock = lock(paths);
  exit_if_switching(paths);
  auto files = value_or_exit(tls::issue_client_certificate(
      paths, options.cluster, out, std::chrono::hours(24) * options.days));
  std::printf("Issued client certificate CN=%s, valid until %s\n"
              "  key: %s\n  certificate: %s\n  CA bundle: %s\n"
              "In containerd's hosts.toml of the cluster's nodes:\n"
              "  ca = \"%s\"\n  client = [[\"%s\", \"%s\"]]\n",
              options.cluster.c_str(), format_time(files.not_after).c_str(),
              files.key.c_str(), files.cert.c_str(), files.bundle.c_str(),
              files.bundle.c_str(), files.cert.c_str(), files.key.c_str());
  warn_unknown_client(*config, options.cluster);
}

// Facts that `ca show` prints.
struct Status {
  struct Ca {
    tls::CaRole role;
    fs::path path;
    tls::CertificateInfo info;
  };

  std::vector<Ca> cas;
  std::optional<tls::CertificateInfo> server;
  std::string server_signer; // Role of the CA that issued it, or "unknown".
  tls::RotationPhase phase = tls::RotationPhase::Idle;
};

std::string signer_of(const fs::path &leaf,
                      const std::vector<tls::TrustedCa> &bundle) {
  auto certificate = tls::read_certificate(leaf);
  if (!certificate) {
    return "unknown";
  }
  for (const tls::TrustedCa &ca : bundle) {
    tls::X509StorePtr store(X509_STORE_new());
    tls::X509StoreCtxPtr context(X509_STORE_CTX_new());
    bool verified =
        store && context &&
        X509_STORE_add_cert(store.get(), ca.certificate.get()) == 1 &&
        X509_STORE_CTX_init(context.get(), store.get(), certificate->get(),
                            nullptr) == 1 &&
        X509_verify_cert(context.get()) == 1;
    if (verified) {
      return tls::to_string(ca.role);
    }
  }
  tls::take_openssl_errors();
  return "unknown";
}

Status read_status(const tls::TlsPaths &paths) {
  Status status;
  auto bundle = value_or_exit(tls::read_trust_bundle(paths));
  for (const tls::TrustedCa &ca : bundle) {
    status.cas.push_back(
        {ca.role, ca.path, value_or_exit(tls::read_certificate_info(ca.path))});
  }
  if (fs::exists(paths.server_cert())) {
    status.server =
        value_or_exit(tls::read_certificate_info(paths.server_cert()));
    status.server_signer = signer_of(paths.server_cert(), bundle);
  }
  status.phase = value_or_exit(tls::read_rotation_phase(paths));
  return status;
}

nlohmann::json certificate_json(const tls::CertificateInfo &info,
                                const fs::path &path, Clock::time_point now) {
  return {
      {"path", path.string()},
      {"subject", info.subject},
      {"issuer", info.issuer},
      {"sans", info.sans},
      {"serial", info.serial},
      {"sha256_fingerprint", info.sha256_fingerprint},
      {"not_before", format_time(info.not_before)},
      {"not_after", format_time(info.not_after)},
      {"days_left", days_left(info.not_after, now)},
  };
}

void print_status_json(const Status &status, const tls::TlsPaths &paths) {
  Clock::time_point now = Clock::now();
  nlohmann::json document;
  document["cas"] = nlohmann::json::array();
  for (const Status::Ca &ca : status.cas) {
    nlohmann::json entry = certificate_json(ca.info, ca.path, now);
    entry["role"] = tls::to_string(ca.role);
    document["cas"].push_back(std::move(entry));
  }
  if (status.server) {
    document["server"] =
        certificate_json(*status.server, paths.server_cert(), now);
    document["server"]["signed_by"] = status.server_signer;
  } else {
    document["server"] = nullptr;
  }
  document["rotation"] = {
      {"phase", tls::to_string(status.phase)},
      {"next_step", tls::next_rotation_command(status.phase)},
  };
  std::printf("%s\n", document.dump(2).c_str());
}

void print_status_text(const Status &status, const tls::TlsPaths &paths) {
  Clock::time_point now = Clock::now();
  for (const Status::Ca &ca : status.cas) {
    std::printf("CA (%s): %s\n  file: %s\n  SHA-256 fingerprint: %s\n"
                "  valid: %s\n",
                tls::to_string(ca.role), ca.info.subject.c_str(),
                ca.path.c_str(), ca.info.sha256_fingerprint.c_str(),
                validity(ca.info, now).c_str());
  }
  if (!status.server) {
    std::printf("Server certificate: none at %s; `gatecache ca "
                "issue-server` or the daemon's start issues one\n",
                paths.server_cert().c_str());
  } else {
    const tls::CertificateInfo &info = *status.server;
    std::printf("Server certificate: %s\n  file: %s\n  names: %s\n"
                "  serial: %s\n  SHA-256 fingerprint: %s\n  valid: %s\n"
                "  signed by: %s CA\n",
                info.subject.c_str(), paths.server_cert().c_str(),
                fmt::format("{}", fmt::join(info.sans, ", ")).c_str(),
                info.serial.c_str(), info.sha256_fingerprint.c_str(),
                validity(info, now).c_str(), status.server_signer.c_str());
  }
  if (status.phase == tls::RotationPhase::Idle) {
    std::printf("CA rotation: none in progress\n");
  } else {
    std::printf("CA rotation: %s; next step: %s\n",
                tls::to_string(status.phase),
                tls::next_rotation_command(status.phase).c_str());
  }
}

void run_show(const std::string &config_path, const CaOptions &options) {
  auto config = load(config_path);
  tls::TlsPaths paths = paths_of(*config);
  // Reading needs no lock: every file is replaced by an atomic rename.
  Status status = read_status(paths);
  if (options.json) {
    print_status_json(status, paths);
  } else {
    print_status_text(status, paths);
  }
}

void run_export(const std::string &config_path, const CaOptions &options) {
  auto config = load(config_path);
  tls::TlsPaths paths = paths_of(*config);
  auto bundle = value_or_exit(tls::read_trust_bundle(paths));
  std::string pem = value_or_exit(tls::trust_bundle_pem(bundle));
  if (options.out.empty()) {
    std::fwrite(pem.data(), 1, pem.size(), stdout);
    return;
  }
  exit_on_error(tls::write_file_atomic(options.out, pem, 0644,
                                       tls::ExistingFile::Replace));
  std::fprintf(stderr, "Wrote %zu CA certificate%s to %s\n", bundle.size(),
               bundle.size() == 1 ? "" : "s", options.out.c_str());
}

void run_rotate_begin(const std::string &config_path) {
  auto config = load(config_path);
  tls::TlsPaths paths = paths_of(*config);
  auto directory_lock = lock(paths);
  auto next = value_or_exit(tls::begin_rotation(paths));
  std::printf("Created the next CA at %s\n  subject: %s\n"
              "  SHA-256 fingerprint: %s\n"
              "The exported bundle now contains the current and the next CA. "
              "Install the output of `gatecache ca export` on every node, "
              "then run `gatecache ca rotate switch`.\n",
              paths.ca_next_cert().c_str(), next.subject.c_str(),
              next.sha256_fingerprint.c_str());
  print_daemon_note(*config);
}

void run_rotate_switch(const std::string &config_path) {
  auto config = load(config_path);
  tls::TlsPaths paths = paths_of(*config);
  auto directory_lock = lock(paths);
  auto server = value_or_exit(
      tls::switch_rotation(paths, config->tls.names, server_lifetime(*config)));
  std::printf("The next CA is now current; the previous CA stays trusted as "
              "%s.\nIssued server certificate serial %s from the new CA, "
              "valid until %s.\n"
              "Reissue client certificates with `gatecache ca "
              "issue-client`, then run `gatecache ca rotate finish`.\n",
              paths.ca_previous_cert().c_str(), server.serial.c_str(),
              format_time(server.not_after).c_str());
  print_daemon_note(*config);
}

void run_rotate_finish(const std::string &config_path) {
  auto config = load(config_path);
  tls::TlsPaths paths = paths_of(*config);
  auto directory_lock = lock(paths);
  auto stale = value_or_exit(tls::finish_rotation(paths));
  std::printf("Removed the previous CA; the bundle contains the current CA "
              "only. Install the output of `gatecache ca export` on every "
              "node.\n");
  for (const fs::path &cert : stale) {
    std::fprintf(stderr,
                 "gatecache: warning: %s was issued by the removed CA and "
                 "is no longer accepted; reissue it with `gatecache ca "
                 "issue-client`\n",
                 cert.c_str());
  }
  print_daemon_note(*config);
}

void add_rotate_commands(CLI::App &ca, std::string &config_path) {
  auto *rotate = ca.add_subcommand(
      "rotate", "Replace the CA in three steps without breaking nodes");
  rotate->require_subcommand(1);
  rotate
      ->add_subcommand("begin", "Create the next CA, which the exported "
                                "bundle then contains")
      ->callback([&config_path] { run_rotate_begin(config_path); });
  rotate
      ->add_subcommand("switch",
                       "Make the next CA current and reissue the server "
                       "certificate; the old CA stays trusted")
      ->callback([&config_path] { run_rotate_switch(config_path); });
  rotate->add_subcommand("finish", "Remove the previous CA from the bundle")
      ->callback([&config_path] { run_rotate_finish(config_path); });
}

} // namespace

void add_ca_commands(CLI::App &app, std::string &config_path) {
  // Shared by the callbacks, which run after parsing ends.
  static CaOptions options;

  auto *ca = app.add_subcommand("ca", "Manage the internal CA, the server "
                                      "certificate and client certificates");
  ca->require_subcommand(1);
  ca->add_option("-c,--config", config_path, "Configuration file")
      ->capture_default_str();
  // Subcommands inherit this, so `-c` may follow them too.
  ca->fallthrough();

  ca->add_subcommand("init", "Create the CA unless one exists")
      ->callback([&config_path] { run_init(config_path); });

  auto *issue_server = ca->add_subcommand(
      "issue-server", "Issue the server certificate for tls.names when it is "
                      "missing, due or outdated");
  issue_server->add_flag("--force", options.force,
                         "Reissue even when the certificate is current");
  issue_server->callback(
      [&config_path] { run_issue_server(config_path, options); });

  auto *issue_client = ca->add_subcommand(
      "issue-client", "Issue a client certificate for mutual TLS");
  issue_client
      ->add_option("--cluster", options.cluster,
                   "Client name, the certificate's common name")
      ->required();
  issue_client->add_option("--out", options.out,
                           "Directory for client.key, client.crt and ca.crt "
                           "(default: <tls.dir>/clients/<NAME>)");
  issue_client->add_option("--days", options.days, "Validity in days")
      ->check(CLI::Range(1, MaxClientDays))
      ->capture_default_str();
  issue_client->callback(
      [&config_path] { run_issue_client(config_path, options); });

  auto *show = ca->add_subcommand(
      "show", "Print the CAs, the server certificate and the rotation step");
  show->add_flag("--json", options.json, "Print JSON");
  show->callback([&config_path] { run_show(config_path, options); });

  auto *export_bundle =
      ca->add_subcommand("export", "Print the CA bundle that nodes must trust");
  export_bundle->add_option("--out", options.out,
                            "Write the bundle to this file instead");
  export_bundle->callback([&config_path] { run_export(config_path, options); });

  add_rotate_commands(*ca, config_path);
}

} // namespace gatecache::cli
