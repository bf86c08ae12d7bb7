#include "appliance/server.h"

#include <cerrno>
#include <csignal>
#include <filesystem>
#include <map>
#include <memory>
#include <system_error>
#include <vector>

#include <ev.h>
#include <sys/resource.h>

#include "appliance/admin/api.h"
#include "appliance/admin/server.h"
#include "appliance/config/config.h"
#include "appliance/daemon_status.h"
#include "appliance/front/listener.h"
#include "appliance/notify.h"
#include "appliance/prewarm/image_set.h"
#include "appliance/registry/disk_worker.h"
#include "appliance/registry/prewarmer.h"
#include "appliance/registry/service.h"
#include "appliance/registry/usage.h"
#include "appliance/upstream/client.h"
#include "cache/blob_store.h"
#include "cache/evictor.h"
#include "cache/index.h"
#include "cache/scrubber.h"
#include "common/log.h"
#include "tls/ca.h"
#include "tls/certificate_manager.h"
#include "tls/context.h"

namespace gatecache {

namespace {

// Threads for fsync, rename and LMDB writes. Two let one large commit
// proceed while small index updates continue.
constexpr unsigned DiskWorkerThreads = 2;

// Delay before the first background prewarm, so a restart serves first.
constexpr double FirstPrewarmDelaySeconds = 5;

// Descriptors kept beside the client connections for blob files, upstream
// connections, LMDB, the admin endpoint and logs. An estimate, used only to
// warn at start.
constexpr size_t DescriptorReserve = 1024;

struct Daemon {
  struct ev_loop *loop = nullptr;
  std::string config_path;
  std::shared_ptr<const config::Config> config;
  // The configuration at start. Keys that need a restart keep these values,
  // so a reload reports them against this one, not the last one loaded.
  std::shared_ptr<const config::Config> started_config;
  ServiceNotifier *notifier = nullptr;
  registry::Prewarmer *prewarmer = nullptr;
  registry::RegistryService *service = nullptr;
  registry::Usage *usage = nullptr;
  tls::CertificateManager *certificates = nullptr;
  // The cap on client connections that every listener shares, so that it
  // bounds the process and not each address. Declared before `listeners`
  // to outlive them.
  std::unique_ptr<front::ConnectionLimit> connection_limit;
  std::vector<std::unique_ptr<front::Listener>> listeners;
  std::unique_ptr<admin::AdminServer> admin;
  size_t listeners_open = 0;
  bool stopping = false;
  ev_signal sigterm;
  ev_signal sigint;
  ev_signal sighup;
  ev_prepare log_flush;
  ev_timer prewarm_timer;
};

// Flushes the access log each time the loop is about to wait for events:
// one write for every batch of requests handled in a loop iteration, and
// no line waits longer than the loop stays busy.
void on_loop_idle(struct ev_loop *, ev_prepare *, int) {
  log::flush_access_log();
}

void on_stop_signal(struct ev_loop *loop, ev_signal *watcher, int) {
  auto *daemon = static_cast<Daemon *>(watcher->data);
  if (daemon->stopping) {
    GC_LOG(Main, warn, "second stop signal; exiting now");
    ev_break(loop, EVBREAK_ALL);
    return;
  }
  daemon->stopping = true;
  daemon->notifier->stopping();
  GC_LOG(Main, info, "stopping: no new connections, finishing responses");
  ev_timer_stop(loop, &daemon->prewarm_timer);
  if (daemon->admin) {
    daemon->admin->shutdown();
  }
  daemon->listeners_open = daemon->listeners.size();
  for (auto &listener : daemon->listeners) {
    listener->shutdown([daemon, loop] {
      if (--daemon->listeners_open == 0) {
        ev_break(loop, EVBREAK_ALL);
      }
    });
  }
}

tls::ServerCertificateSettings
certificate_settings(const config::Config &config) {
  tls::ServerCertificateSettings settings;
  settings.dir = config.tls.dir;
  settings.names = config.tls.names;
  settings.lifetime =
      std::chrono::seconds(static_cast<int64_t>(config.tls.server_lifetime_s));
  settings.renew_fraction = config.tls.renew_fraction;
  return settings;
}

tls::ClientAuth client_auth_of(const config::ListenAddress &address) {
  switch (address.client_auth) {
  case config::ListenAddress::ClientAuth::None:
    return tls::ClientAuth::None;
  case config::ListenAddress::ClientAuth::Optional:
    return tls::ClientAuth::Optional;
  case config::ListenAddress::ClientAuth::Required:
    return tls::ClientAuth::Required;
  }
  return tls::ClientAuth::None;
}

// Lists the settings that a reload cannot change, so the log names the
// edits that wait for a restart.
std::vector<std::string>
restart_only_changes(const config::Config &old_config,
                     const config::Config &new_config) {
  std::vector<std::string> changed;
  auto listen_text = [](const config::Config &config) {
    std::string text;
    for (const auto &address : config.listen) {
      text += address.str() + "/" +
              std::to_string(static_cast<int>(address.client_auth)) + " ";
    }
    return text;
  };
  if (listen_text(old_config) != listen_text(new_config)) {
    changed.emplace_back("listen");
  }
  if (old_config.storage.path != new_config.storage.path ||
      old_config.storage.index_map_size_bytes !=
          new_config.storage.index_map_size_bytes ||
      old_config.storage.scrub_interval_s !=
          new_config.storage.scrub_interval_s ||
      old_config.storage.scrub_rate_bytes !=
          new_config.storage.scrub_rate_bytes) {
    changed.emplace_back("storage");
  }
  if (old_config.tls.dir != new_config.tls.dir) {
    changed.emplace_back("tls.dir");
  }
  if (old_config.admin.socket != new_config.admin.socket) {
    changed.emplace_back("admin");
  }
  if (old_config.log.level != new_config.log.level ||
      old_config.log.access_log != new_config.log.access_log) {
    changed.emplace_back("log");
  }
  const config::FrontLimitsConfig &old_front = old_config.front;
  const config::FrontLimitsConfig &new_front = new_config.front;
  if (old_front.max_connections != new_front.max_connections ||
      old_front.handshake_timeout_s != new_front.handshake_timeout_s ||
      old_front.idle_timeout_s != new_front.idle_timeout_s ||
      old_front.header_timeout_s != new_front.header_timeout_s ||
      old_front.graceful_timeout_s != new_front.graceful_timeout_s ||
      old_front.max_concurrent_streams != new_front.max_concurrent_streams ||
      old_front.max_header_bytes != new_front.max_header_bytes) {
    changed.emplace_back("front");
  }
  return changed;
}

void on_reload_signal(struct ev_loop *loop, ev_signal *watcher, int) {
  auto *daemon = static_cast<Daemon *>(watcher->data);
  if (daemon->stopping) {
    return;
  }
  daemon->notifier->reloading();
  GC_LOG(Main, info, "SIGHUP: reloading {}", daemon->config_path);
  auto loaded = config::load_config(daemon->config_path);
  if (!loaded) {
    GC_LOG(Config, error,
           "reload failed, keeping the running configuration: {}",
           loaded.error().message);
    daemon->notifier->ready("serving; the last reload failed");
    return;
  }
  std::shared_ptr<const config::Config> config = *loaded;
  for (const auto &key :
       restart_only_changes(*daemon->started_config, *config)) {
    GC_LOG(Config, warn, "'{}' changed; it takes effect after a restart", key);
  }
  daemon->usage->reload(config);
  daemon->service->reload(config);
  // New names or lifetimes reissue the server certificate in the
  // background; the check also picks up CA rotation steps.
  daemon->certificates->reload(certificate_settings(*config));
  daemon->config = config;
  ev_timer_stop(loop, &daemon->prewarm_timer);
  if (!config->prewarm.sets.empty()) {
    ev_timer_set(&daemon->prewarm_timer, FirstPrewarmDelaySeconds,
                 config->prewarm.interval_s);
    ev_timer_start(loop, &daemon->prewarm_timer);
  }
  GC_LOG(Main, info, "configuration reloaded: {} upstreams, {} clusters",
         config->upstreams.size(), config->clusters.size());
  daemon->notifier->ready("serving");
}

// Loads the configured prewarm sets; a set that fails to load is logged
// and skipped.
std::vector<prewarm::ImageSet>
load_configured_sets(const config::Config &config) {
  std::vector<prewarm::ImageSet> sets;
  for (const auto &name : config.prewarm.sets) {
    auto path = prewarm::resolve_set_path(name, config.prewarm.images_dir);
    if (!path) {
      GC_LOG(Config, error, "prewarm set {}: {}", name, path.error().message);
      continue;
    }
    auto set = prewarm::load_image_set(*path);
    if (!set) {
      GC_LOG(Config, error, "prewarm set {}: {}", name, set.error().message);
      continue;
    }
    sets.push_back(std::move(*set));
  }
  return sets;
}

// Runs the configured sets first shortly after start, then every
// `prewarm.interval` (the timer repeats).
void on_prewarm_timer(struct ev_loop *, ev_timer *timer, int) {
  auto *daemon = static_cast<Daemon *>(timer->data);
  auto sets = load_configured_sets(*daemon->config);
  if (!sets.empty()) {
    daemon->prewarmer->start(std::move(sets), front::Priority::Prewarm);
  }
}

front::FrontConfig front_config_of(const config::Config &config) {
  front::FrontConfig front;
  front.max_connections = config.front.max_connections;
  front.handshake_timeout_s = config.front.handshake_timeout_s;
  front.idle_timeout_s = config.front.idle_timeout_s;
  front.header_timeout_s = config.front.header_timeout_s;
  front.graceful_timeout_s = config.front.graceful_timeout_s;
  front.max_concurrent_streams = config.front.max_concurrent_streams;
  front.max_header_bytes = config.front.max_header_bytes;
  return front;
}

// Warns when the open-file limit would stop accepts (EMFILE) before
// `front.max_connections` does.
void check_descriptor_budget(size_t max_connections) {
  rlimit limit = {};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    GC_LOG(Main, warn, "reading the open-file limit failed: {}",
           errno_message("getrlimit", errno));
    return;
  }
  if (limit.rlim_cur == RLIM_INFINITY ||
      limit.rlim_cur >= max_connections + DescriptorReserve) {
    return;
  }
  GC_LOG(Main, warn,
         "the open-file limit {} leaves fewer than {} descriptors beside "
         "front.max_connections={}, so accepts may fail with EMFILE before "
         "the cap applies. Raise LimitNOFILE= (ulimit -n) or lower "
         "front.max_connections",
         static_cast<uint64_t>(limit.rlim_cur), DescriptorReserve,
         max_connections);
}

Result<void> make_directory(const std::filesystem::path &path) {
  std::error_code error;
  std::filesystem::create_directories(path, error);
  if (error) {
    return fail(ErrorCode::Io,
                "cannot create " + path.string() + ": " + error.message());
  }
  return {};
}

} // namespace

int run_server(const std::string &config_path) {
  auto loaded = config::load_config(config_path);
  if (!loaded) {
    fprintf(stderr, "gatecache: %s\n", loaded.error().message.c_str());
    return 2;
  }
  std::shared_ptr<const config::Config> config = *loaded;
  std::string log_error;
  if (!log::init(config->log.level, config->log.access_log, log_error)) {
    fprintf(stderr, "gatecache: %s\n", log_error.c_str());
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);

  std::filesystem::path state = config->storage.path;
  if (auto made = make_directory(state); !made) {
    GC_LOG(Main, critical, "{}", made.error().message);
    return 1;
  }

  tls::TlsPaths tls_paths{config->tls.dir};
  if (auto made = make_directory(tls_paths.dir); !made) {
    GC_LOG(Main, critical, "{}", made.error().message);
    return 1;
  }

  auto store = cache::BlobStore::open(state);
  if (!store) {
    GC_LOG(Cache, critical, "opening the blob store failed: {}",
           store.error().message);
    return 1;
  }
  auto opened =
      cache::Index::open(state / "index", config->storage.index_map_size_bytes);
  if (!opened) {
    GC_LOG(Cache, critical, "opening the index failed: {}",
           opened.error().message);
    return 1;
  }
  std::shared_ptr<cache::Index> index = std::move(*opened);
  // A crash between a commit and its index record leaves a file that no
  // lookup can reach. Remove such files.
  if (auto swept = cache::remove_orphans(**store, *index); !swept) {
    GC_LOG(Cache, warn, "removing unindexed files failed: {}",
           swept.error().message);
  } else if (swept->files > 0) {
    GC_LOG(Cache, info, "removed {} unindexed files ({} bytes)", swept->files,
           swept->bytes);
  }

  Daemon daemon;
  daemon.loop = ev_default_loop(EVFLAG_AUTO);
  daemon.config_path = config_path;
  daemon.config = config;
  daemon.started_config = config;

  // The CA, key permissions and a current server certificate, before
  // anything listens.
  auto certificates = tls::CertificateManager::create(
      daemon.loop, certificate_settings(*config));
  if (!certificates) {
    GC_LOG(Tls, critical, "preparing TLS in {} failed: {}",
           tls_paths.dir.string(), certificates.error().message);
    return 1;
  }
  daemon.certificates = certificates->get();
  std::map<tls::ClientAuth, tls::CertificateManager::ContextProvider> providers;
  for (const auto &address : config->listen) {
    auto mode = client_auth_of(address);
    if (providers.contains(mode)) {
      continue;
    }
    auto provider = (*certificates)->provider(mode);
    if (!provider) {
      GC_LOG(Tls, critical, "loading the server certificate failed: {}",
             provider.error().message);
      return 1;
    }
    providers.emplace(mode, std::move(*provider));
  }
  GC_LOG(Tls, info, "nodes must trust {} (`gatecache ca export` prints it)",
         tls_paths.ca_cert().string());
  {
    ServiceNotifier notifier(daemon.loop);
    daemon.notifier = &notifier;
    registry::DiskWorker worker(daemon.loop, DiskWorkerThreads);
    upstream::ClientConfig client_config;
    client_config.connect_timeout_s =
        config->upstream_timeouts.connect_timeout_s;
    client_config.response_timeout_s =
        config->upstream_timeouts.response_timeout_s;
    client_config.idle_timeout_s = config->upstream_timeouts.idle_timeout_s;
    client_config.user_agent = std::string("gatecache/") + GATECACHE_VERSION;
    upstream::Client client(daemon.loop, client_config);
    registry::Usage usage(daemon.loop, config, index, worker);
    registry::RegistryService service(daemon.loop, config, *store, index,
                                      client, worker, usage);
    registry::Prewarmer prewarmer(daemon.loop, service, usage, index, worker,
                                  service.pins());
    daemon.prewarmer = &prewarmer;
    daemon.service = &service;
    daemon.usage = &usage;
    prewarmer.load_pins();

    // Fit the store to its bound before serving, sparing pinned content.
    const auto &pins = *service.pins();
    auto evicted = cache::evict_to(
        **store, *index, config->storage.max_size_bytes,
        [&pins](const std::string &digest) { return pins.contains(digest); });
    if (!evicted) {
      GC_LOG(Cache, warn, "evicting content failed: {}",
             evicted.error().message);
    }

    // A manifest the scrubber removes must leave memory too, or it would
    // be served from there but never stored again.
    cache::Scrubber scrubber(
        *store, *index,
        {config->storage.scrub_interval_s, config->storage.scrub_rate_bytes},
        [&service](const cache::Digest &digest) {
          service.content_removed(digest.str());
        });
    scrubber.start();

    front::FrontConfig front_config = front_config_of(*config);
    check_descriptor_budget(front_config.max_connections);
    daemon.connection_limit = std::make_unique<front::ConnectionLimit>(
        daemon.loop, front_config.max_connections);
    for (const auto &address : config->listen) {
      auto listener =
          front::Listener::open(daemon.loop, address.host, address.port,
                                providers.at(client_auth_of(address)), &service,
                                front_config, daemon.connection_limit.get());
      if (!listener) {
        // The message names the failed call and the address.
        GC_LOG(Front, critical, "opening a listener failed: {}",
               listener.error().message);
        return 1;
      }
      daemon.listeners.push_back(std::move(*listener));
    }

    DaemonStatus status(daemon.config, usage, prewarmer,
                        *daemon.connection_limit, scrubber);
    admin::AdminApi admin_api(status);
    if (!config->admin.socket.empty() || !config->admin.listen.empty()) {
      auto admin =
          admin::AdminServer::open(daemon.loop, config->admin, &admin_api);
      if (!admin) {
        GC_LOG(Main, critical, "opening the admin endpoint failed: {}",
               admin.error().message);
        return 1;
      }
      daemon.admin = std::move(*admin);
    }

    ev_signal_init(&daemon.sigterm, on_stop_signal, SIGTERM);
    ev_signal_init(&daemon.sigint, on_stop_signal, SIGINT);
    ev_signal_init(&daemon.sighup, on_reload_signal, SIGHUP);
    for (ev_signal *watcher :
         {&daemon.sigterm, &daemon.sigint, &daemon.sighup}) {
      watcher->data = &daemon;
      ev_signal_start(daemon.loop, watcher);
    }

    ev_prepare_init(&daemon.log_flush, on_loop_idle);
    ev_prepare_start(daemon.loop, &daemon.log_flush);
    ev_unref(daemon.loop);

    ev_timer_init(&daemon.prewarm_timer, on_prewarm_timer,
                  FirstPrewarmDelaySeconds, config->prewarm.interval_s);
    daemon.prewarm_timer.data = &daemon;
    if (!config->prewarm.sets.empty()) {
      ev_timer_start(daemon.loop, &daemon.prewarm_timer);
    }

    (*certificates)->start();
    notifier.ready("serving");
    GC_LOG(Main, info, "gatecache {} ready, state in {}", GATECACHE_VERSION,
           state.string());
    ev_run(daemon.loop, 0);

    ev_ref(daemon.loop);
    ev_prepare_stop(daemon.loop, &daemon.log_flush);
    ev_timer_stop(daemon.loop, &daemon.prewarm_timer);
    log::flush_access_log();
    daemon.listeners.clear();
    daemon.admin.reset();
    (*certificates)->stop();
    usage.persist_all();
    for (ev_signal *watcher :
         {&daemon.sigterm, &daemon.sigint, &daemon.sighup}) {
      ev_signal_stop(daemon.loop, watcher);
    }
  }
  GC_LOG(Main, info, "stopped");
  return 0;
}

} // namespace gatecache
