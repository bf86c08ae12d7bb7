#include "tls/certificate_manager.h"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <utility>

#include <openssl/ssl.h>
#include <spdlog/fmt/fmt.h>

#include "common/log.h"
#include "tls/ca_files.h"
#include "tls/directory_lock.h"
#include "tls/rotation.h"

namespace gatecache::tls {

struct CertificateManager::Generation {
  std::string identity;
  CertificateInfo server;
  size_t trusted_cas = 0;
  std::map<ClientAuth, std::shared_ptr<SSL_CTX>> contexts;
};

struct CertificateManager::Job {
  ServerCertificateSettings settings;
  std::vector<ClientAuth> modes;
  TicketKeys ticket_keys;
  std::string identity; // Of the current contexts.
  Clock::time_point now;
  // Build contexts even when the files match `identity`.
  bool rebuild = false;
  bool create_ca = false;
};

namespace {

using Clock = std::chrono::system_clock;

Result<std::string> read_whole_file(const std::filesystem::path &path) {
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) {
    return fail(ErrorCode::Io, "failed to read " + path.string());
  }
  return text;
}

// Returns the text that decides whether contexts must be rebuilt: the
// server certificate and the trust bundle.
Result<std::string> read_identity(const TlsPaths &paths,
                                  const std::vector<TrustedCa> &bundle) {
  auto server = read_whole_file(paths.server_cert());
  if (!server) {
    return server;
  }
  auto pem = trust_bundle_pem(bundle);
  if (!pem) {
    return pem;
  }
  return *server + *pem;
}

Result<void> check_not_switching(const TlsPaths &paths) {
  auto phase = read_rotation_phase(paths);
  if (!phase) {
    return tl::unexpected(phase.error());
  }
  if (*phase == RotationPhase::Switching) {
    return fail(ErrorCode::Invalid,
                fmt::format("a CA rotation switch in {} was interrupted, so "
                            "ca.key and ca.crt may not match; run `{}` to "
                            "complete it",
                            paths.dir.string(), next_rotation_command(*phase)));
  }
  return {};
}

// Brings the server certificate up to date on disk. Runs under the
// directory lock.
Result<void> renew_files(const TlsPaths &paths,
                         const ServerCertificateSettings &settings,
                         Clock::time_point now, bool create_ca) {
  if (create_ca) {
    if (auto created = ensure_ca(paths, now); !created) {
      return tl::unexpected(created.error());
    }
  }
  if (auto consistent = check_not_switching(paths); !consistent) {
    return consistent;
  }
  if (auto keys = check_private_keys(paths); !keys) {
    return keys;
  }
  auto issued = ensure_server_certificate(
      paths, settings.names, settings.lifetime, settings.renew_fraction, now);
  if (!issued) {
    return tl::unexpected(issued.error());
  }
  return {};
}

} // namespace

CertificateManager::Outcome CertificateManager::run_job(const Job &job) {
  TlsPaths paths{job.settings.dir};
  auto lock = DirectoryLock::acquire(paths.dir);
  if (!lock) {
    return tl::unexpected(lock.error());
  }
  if (auto renewed = renew_files(paths, job.settings, job.now, job.create_ca);
      !renewed) {
    return tl::unexpected(renewed.error());
  }
  auto bundle = read_trust_bundle(paths);
  if (!bundle) {
    return tl::unexpected(bundle.error());
  }
  auto identity = read_identity(paths, *bundle);
  if (!identity) {
    return tl::unexpected(identity.error());
  }
  if (!job.rebuild && *identity == job.identity) {
    return std::nullopt;
  }

  Generation generation;
  generation.identity = std::move(*identity);
  generation.trusted_cas = bundle->size();
  auto info = read_certificate_info(paths.server_cert());
  if (!info) {
    return tl::unexpected(info.error());
  }
  generation.server = std::move(*info);
  for (ClientAuth mode : job.modes) {
    auto context = make_server_context(paths, {mode, &job.ticket_keys});
    if (!context) {
      return tl::unexpected(context.error());
    }
    generation.contexts.emplace(
        mode, std::shared_ptr<SSL_CTX>(context->release(), SslCtxDeleter{}));
  }
  return generation;
}

std::chrono::seconds check_interval(std::chrono::seconds lifetime) {
  return std::clamp(lifetime / 10, std::chrono::seconds(1), MaxCheckInterval);
}

Result<std::unique_ptr<CertificateManager>>
CertificateManager::create(struct ev_loop *loop,
                           ServerCertificateSettings settings,
                           ClockSource clock) {
  if (!clock) {
    clock = [] { return Clock::now(); };
  }
  auto keys = TicketKeys::generate();
  if (!keys) {
    return tl::unexpected(keys.error());
  }
  std::unique_ptr<CertificateManager> manager(new CertificateManager(
      loop, std::move(settings), std::move(clock), std::move(*keys)));

  Job job = manager->make_job(manager->clock_(), true);
  job.create_ca = true;
  auto outcome = CertificateManager::run_job(job);
  if (!outcome) {
    return tl::unexpected(outcome.error());
  }
  manager->apply(std::move(outcome));
  return manager;
}

CertificateManager::CertificateManager(struct ev_loop *loop,
                                       ServerCertificateSettings settings,
                                       ClockSource clock,
                                       TicketKeys ticket_keys)
    : loop_(loop), settings_(std::move(settings)), clock_(std::move(clock)),
      ticket_keys_(std::move(ticket_keys)) {
  ev_timer_init(&timer_, on_timer, 0., 0.);
  timer_.data = this;
  ev_async_init(&job_done_, on_job_done);
  job_done_.data = this;
  ev_async_start(loop_, &job_done_);
  // The watcher alone must not keep the loop running; a running worker
  // holds a reference of its own.
  ev_unref(loop_);
}

CertificateManager::~CertificateManager() {
  stop();
  if (worker_.joinable()) {
    worker_.join();
    ev_unref(loop_);
  }
  ev_ref(loop_);
  ev_async_stop(loop_, &job_done_);
}

Result<CertificateManager::ContextProvider>
CertificateManager::provider(ClientAuth mode) {
  if (contexts_.count(mode) == 0) {
    // Every mode is rebuilt, so that all contexts come from the same files.
    Job job = make_job(clock_(), true);
    job.modes.push_back(mode);
    auto outcome = run_job(job);
    if (!outcome) {
      return tl::unexpected(outcome.error());
    }
    apply(std::move(outcome));
  }
  return ContextProvider([this, mode]() -> SSL_CTX * { return context(mode); });
}

void CertificateManager::start() {
  if (timer_started_) {
    return;
  }
  timer_started_ = true;
  schedule_timer();
}

void CertificateManager::stop() {
  if (!timer_started_) {
    return;
  }
  timer_started_ = false;
  ev_ref(loop_);
  ev_timer_stop(loop_, &timer_);
}

void CertificateManager::schedule_timer() {
  if (!timer_started_) {
    return;
  }
  if (ev_is_active(&timer_)) {
    ev_ref(loop_);
    ev_timer_stop(loop_, &timer_);
  }
  double seconds =
      static_cast<double>(check_interval(settings_.lifetime).count());
  ev_timer_set(&timer_, seconds, seconds);
  ev_timer_start(loop_, &timer_);
  ev_unref(loop_);
}

Result<bool> CertificateManager::check(Clock::time_point now) {
  auto outcome = run_job(make_job(now, false));
  if (!outcome) {
    return tl::unexpected(outcome.error());
  }
  return apply(std::move(outcome));
}

void CertificateManager::check_in_background(std::function<void(bool)> done) {
  if (worker_running_) {
    check_pending_ = true;
    if (done) {
      pending_waiting_.push_back(std::move(done));
    }
    return;
  }
  if (done) {
    waiting_.push_back(std::move(done));
  }
  start_worker();
}

void CertificateManager::reload(ServerCertificateSettings settings) {
  bool interval_changed = settings.lifetime != settings_.lifetime;
  settings_ = std::move(settings);
  if (interval_changed) {
    schedule_timer();
  }
  check_in_background();
}

SSL_CTX *CertificateManager::context(ClientAuth mode) const {
  auto found = contexts_.find(mode);
  return found != contexts_.end() ? found->second.get() : nullptr;
}

CertificateManager::Job CertificateManager::make_job(Clock::time_point now,
                                                     bool rebuild) const {
  Job job{settings_, {}, ticket_keys_, identity_, now, rebuild, false};
  for (const auto &[mode, context] : contexts_) {
    job.modes.push_back(mode);
  }
  return job;
}

void CertificateManager::start_worker() {
  worker_running_ = true;
  // Keeps the loop running until the outcome is applied.
  ev_ref(loop_);
  Job job = make_job(clock_(), false);
  worker_ = std::thread([this, job = std::move(job)] {
    auto outcome = std::make_unique<Outcome>(run_job(job));
    {
      std::lock_guard<std::mutex> guard(result_mutex_);
      result_ = std::move(outcome);
    }
    ev_async_send(loop_, &job_done_);
  });
}

void CertificateManager::on_timer(struct ev_loop *, ev_timer *watcher,
                                  int) noexcept {
  static_cast<CertificateManager *>(watcher->data)->check_in_background();
}

void CertificateManager::on_job_done(struct ev_loop *, ev_async *watcher,
                                     int) noexcept {
  static_cast<CertificateManager *>(watcher->data)->finish_worker();
}

void CertificateManager::finish_worker() {
  std::unique_ptr<Outcome> outcome;
  {
    std::lock_guard<std::mutex> guard(result_mutex_);
    outcome = std::move(result_);
  }
  if (!outcome) {
    return;
  }
  worker_.join();
  worker_running_ = false;
  ev_unref(loop_);

  bool swapped = false;
  if (!*outcome) {
    GC_LOG(Tls, error,
           "checking the server certificate failed: {}; serving the "
           "current one (serial {}, valid until {}) until a later check "
           "succeeds",
           outcome->error().message, server_.serial,
           format_time(server_.not_after));
  } else {
    swapped = apply(std::move(*outcome));
  }

  auto callbacks = std::move(waiting_);
  waiting_.clear();
  if (check_pending_) {
    check_pending_ = false;
    waiting_ = std::move(pending_waiting_);
    pending_waiting_.clear();
    start_worker();
  }
  for (auto &callback : callbacks) {
    callback(swapped);
  }
}

void CertificateManager::log_swap(const Generation &generation) const {
  const CertificateInfo &server = generation.server;
  if (identity_.empty()) {
    GC_LOG(Tls, info,
           "Serving server certificate serial {} valid until {}, checking "
           "it every {} s",
           server.serial, format_time(server.not_after),
           check_interval(settings_.lifetime).count());
  } else if (server.serial != server_.serial) {
    GC_LOG(Tls, info,
           "Serving server certificate serial {} valid until {}, replacing "
           "serial {} valid until {}; connections already open keep the "
           "old one",
           server.serial, format_time(server.not_after), server_.serial,
           format_time(server_.not_after));
  } else if (generation.identity != identity_) {
    GC_LOG(Tls, info,
           "Reloaded the trust bundle: {} {} client certificates of new "
           "connections",
           generation.trusted_cas,
           generation.trusted_cas == 1 ? "CA verifies" : "CAs verify");
  } else {
    GC_LOG(Tls, debug, "Built TLS contexts for {} client-auth modes",
           generation.contexts.size());
  }
}

bool CertificateManager::apply(Outcome outcome) {
  if (!outcome || !outcome->has_value()) {
    return false;
  }
  Generation &generation = **outcome;
  log_swap(generation);
  identity_ = std::move(generation.identity);
  server_ = std::move(generation.server);
  // Contexts of a mode missing here (a provider requested after the job
  // started) stay until the next check builds them.
  for (auto &[mode, context] : generation.contexts) {
    contexts_[mode] = std::move(context);
  }
  return true;
}

} // namespace gatecache::tls
