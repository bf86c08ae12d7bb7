#include "appliance/server.h"

#include <csignal>
#include <filesystem>
#include <memory>
#include <system_error>
#include <vector>

#include <ev.h>
#include <systemd/sd-daemon.h>

#include "appliance/config/config.h"
#include "appliance/front/listener.h"
#include "appliance/registry/disk_worker.h"
#include "appliance/registry/service.h"
#include "appliance/upstream/client.h"
#include "cache/blob_store.h"
#include "cache/evictor.h"
#include "cache/index.h"
#include "common/log.h"
#include "tls/ca.h"
#include "tls/context.h"

namespace gatecache {

namespace {

// Threads for fsync, rename and LMDB writes. Two let one large commit
// proceed while small index updates continue.
constexpr unsigned DiskWorkerThreads = 2;

struct Daemon {
  struct ev_loop *loop = nullptr;
  std::vector<std::unique_ptr<front::Listener>> listeners;
  size_t listeners_open = 0;
  bool stopping = false;
  ev_signal sigterm;
  ev_signal sigint;
  ev_signal sighup;
  ev_prepare log_flush;
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
  sd_notify(0, "STOPPING=1");
  GC_LOG(Main, info, "stopping: no new connections, finishing responses");
  daemon->listeners_open = daemon->listeners.size();
  for (auto &listener : daemon->listeners) {
    listener->shutdown([daemon, loop] {
      if (--daemon->listeners_open == 0) {
        ev_break(loop, EVBREAK_ALL);
      }
    });
  }
}

void on_reload_signal(struct ev_loop *, ev_signal *, int) {
  // TODO: reload upstreams, clusters and TLS names on SIGHUP.
  GC_LOG(Main, warn,
         "SIGHUP received; configuration reload is not "
         "supported yet, restart to apply changes");
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
  auto ca = tls::ensure_ca(tls_paths);
  if (!ca) {
    GC_LOG(Tls, critical, "preparing the internal CA failed: {}",
           ca.error().message);
    return 1;
  }
  auto issued = tls::ensure_server_certificate(tls_paths, config->tls.names);
  if (!issued) {
    GC_LOG(Tls, critical, "issuing the server certificate failed: {}",
           issued.error().message);
    return 1;
  }
  auto server_context = tls::make_server_context(tls_paths);
  if (!server_context) {
    GC_LOG(Tls, critical, "loading the server certificate failed: {}",
           server_context.error().message);
    return 1;
  }
  std::shared_ptr<SSL_CTX> ssl_context(server_context->release(),
                                       tls::SslCtxDeleter{});
  GC_LOG(Tls, info, "nodes must trust {}", tls_paths.ca_cert().string());

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
  // lookup can reach. Remove such files, then fit the store to its bound.
  if (auto swept = cache::remove_orphans(**store, *index); !swept) {
    GC_LOG(Cache, warn, "removing unindexed files failed: {}",
           swept.error().message);
  } else if (swept->files > 0) {
    GC_LOG(Cache, info, "removed {} unindexed files ({} bytes)", swept->files,
           swept->bytes);
  }
  auto evicted =
      cache::evict_to(**store, *index, config->storage.max_size_bytes,
                      [](const std::string &) { return false; });
  if (!evicted) {
    GC_LOG(Cache, warn, "evicting content failed: {}", evicted.error().message);
  }

  Daemon daemon;
  daemon.loop = ev_default_loop(EVFLAG_AUTO);
  {
    registry::DiskWorker worker(daemon.loop, DiskWorkerThreads);
    upstream::ClientConfig client_config;
    client_config.connect_timeout_s =
        config->upstream_timeouts.connect_timeout_s;
    client_config.response_timeout_s =
        config->upstream_timeouts.response_timeout_s;
    client_config.idle_timeout_s = config->upstream_timeouts.idle_timeout_s;
    client_config.user_agent = std::string("gatecache/") + GATECACHE_VERSION;
    upstream::Client client(daemon.loop, client_config);
    registry::RegistryService service(daemon.loop, config, *store, index,
                                      client, worker);

    front::FrontConfig front_config;
    for (const auto &address : config->listen) {
      auto listener = front::Listener::open(
          daemon.loop, address.host, address.port,
          [ssl_context] { return ssl_context.get(); }, &service, front_config);
      if (!listener) {
        GC_LOG(Front, critical, "listening on {} failed: {}", address.str(),
               listener.error().message);
        return 1;
      }
      daemon.listeners.push_back(std::move(*listener));
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

    sd_notify(0, "READY=1");
    GC_LOG(Main, info, "gatecache {} ready, state in {}", GATECACHE_VERSION,
           state.string());
    ev_run(daemon.loop, 0);

    ev_ref(daemon.loop);
    ev_prepare_stop(daemon.loop, &daemon.log_flush);
    log::flush_access_log();
    daemon.listeners.clear();
    for (ev_signal *watcher :
         {&daemon.sigterm, &daemon.sigint, &daemon.sighup}) {
      ev_signal_stop(daemon.loop, watcher);
    }
  }
  GC_LOG(Main, info, "stopped");
  return 0;
}

} // namespace gatecache
