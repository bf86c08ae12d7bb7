// Renewal of the server certificate and the TLS contexts of the front.
//
// `CertificateManager` owns the front's SSL_CTX objects, one per
// client-auth mode in use. It reissues the server certificate before it
// expires, when the names change and when another CA became current, then
// builds new contexts and swaps them in. A connection keeps the context it
// started with, because `SSL_new` takes a reference, so a swap drops no
// connection. Every context gets the same session ticket keys, so clients
// resume their sessions across swaps.
//
// Threading: every method runs on the thread of the manager's loop. The
// periodic check and `reload` generate keys, write and fsync files and wait
// for the `DirectoryLock` on a worker thread, then swap the contexts on the
// loop. Only `create`, `provider` and `check` block the calling thread.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <ev.h>
#include <openssl/types.h>

#include "common/error.h"
#include "tls/ca.h"
#include "tls/context.h"

namespace gatecache::tls {

// Settings of the `tls` configuration section that the manager uses.
struct ServerCertificateSettings {
  std::filesystem::path dir;      // `tls.dir`.
  std::vector<std::string> names; // `tls.names`.
  // `tls.server_lifetime`: validity of each issued server certificate.
  std::chrono::seconds lifetime = DefaultServerLifetime;
  // `tls.renew_before`: share of the lifetime left at which the
  // certificate is reissued, in [0, 1].
  double renew_fraction = 1.0 / 3;
};

// Maximum time between two checks of the server certificate.
constexpr std::chrono::seconds MaxCheckInterval = std::chrono::hours(1);

// Returns the period of the manager's checks: a tenth of `lifetime`, at
// least one second and at most `MaxCheckInterval`, so that renewal starts
// within a tenth of the lifetime of the moment it is due.
std::chrono::seconds check_interval(std::chrono::seconds lifetime);

class CertificateManager {
public:
  using Clock = std::chrono::system_clock;
  using ClockSource = std::function<Clock::time_point()>;
  // Same signature as `front::SslCtxProvider`.
  using ContextProvider = std::function<SSL_CTX *()>;

  // Prepares the TLS directory for serving, blocking on disk and key
  // generation: creates the CA when there is none, checks the permissions
  // and owner of every private key, and issues the server certificate when
  // it is missing or due. Call it before the loop runs. `clock` returns the
  // time of the periodic checks; it defaults to the system clock.
  // Errors: those of `ensure_ca`, `check_private_keys` and
  // `ensure_server_certificate`; `Invalid` when a rotation `switch` was
  // interrupted.
  [[nodiscard]] static Result<std::unique_ptr<CertificateManager>>
  create(struct ev_loop *loop, ServerCertificateSettings settings,
         ClockSource clock = {});

  // Stops the timer and waits for a running check to end.
  ~CertificateManager();
  CertificateManager(const CertificateManager &) = delete;
  CertificateManager &operator=(const CertificateManager &) = delete;

  // Returns the provider for listeners with client-auth `mode`: each call
  // returns the current context of that mode, which stays valid until the
  // next swap. The first request for a mode builds its context from the
  // files, blocking on disk, so request every mode before the loop runs.
  // Errors: those of `make_server_context`.
  [[nodiscard]] Result<ContextProvider> provider(ClientAuth mode);

  // Starts the periodic check on the loop, every `check_interval` of the
  // configured lifetime.
  void start();

  // Stops the periodic check. A check already running still swaps.
  void stop();

  // Checks the files at `now` on the calling thread, blocking on disk, key
  // generation and the directory lock. It reissues the server certificate
  // when less than `renew_fraction` of its life remains, the names changed
  // or another CA signed it. It swaps in new contexts when the server
  // certificate or the trust bundle changed, and then returns true. Meant
  // for startup and tests, because the loop uses `check_in_background`.
  // Errors: as `create`, and the current contexts stay.
  [[nodiscard]] Result<bool> check(Clock::time_point now);

  // Runs the check of `check` on a worker thread at the time of the clock
  // source, and swaps on the loop. Errors are logged, and the current
  // contexts stay until a later check succeeds. `done`, when set, runs on
  // the loop afterwards with whether contexts were swapped (false after an
  // error). A request made while a check runs starts another one after it.
  void check_in_background(std::function<void(bool swapped)> done = {});

  // Applies new settings (on SIGHUP): a change of names, lifetime or
  // renewal share takes effect in a check that starts now, which also
  // picks up rotation steps taken since the last check. Client-auth modes
  // stay as requested through `provider`.
  void reload(ServerCertificateSettings settings);

  const ServerCertificateSettings &settings() const { return settings_; }

  // Facts about the server certificate of the current contexts.
  const CertificateInfo &server_certificate() const { return server_; }

  // Returns the current context of `mode`, or null when no provider of
  // that mode was requested.
  SSL_CTX *context(ClientAuth mode) const;

private:
  struct Generation;
  struct Job;
  using Outcome = Result<std::optional<Generation>>;

  // Does the blocking part of a check on the calling thread, under the
  // directory lock. Returns no generation when `job.rebuild` is false and
  // the files still match `job.identity`.
  static Outcome run_job(const Job &job);

  CertificateManager(struct ev_loop *loop, ServerCertificateSettings settings,
                     ClockSource clock, TicketKeys ticket_keys);

  static void on_timer(struct ev_loop *loop, ev_timer *watcher,
                       int events) noexcept;
  static void on_job_done(struct ev_loop *loop, ev_async *watcher,
                          int events) noexcept;

  Job make_job(Clock::time_point now, bool rebuild) const;
  // Swaps in the contexts of a generation and returns true; returns false
  // for no generation or an error. A background check that started
  // before a `check` or `provider` call may apply files older than theirs;
  // the next check corrects that.
  bool apply(Outcome outcome);
  void log_swap(const Generation &generation) const;
  void start_worker();
  void finish_worker();
  void schedule_timer();

  struct ev_loop *loop_;
  ServerCertificateSettings settings_;
  ClockSource clock_;
  TicketKeys ticket_keys_;
  // Identity of the files behind the current contexts: the server
  // certificate and trust bundle PEM text. A check that reads the same
  // text keeps the contexts.
  std::string identity_;
  CertificateInfo server_;
  std::map<ClientAuth, std::shared_ptr<SSL_CTX>> contexts_;

  ev_timer timer_;
  ev_async job_done_;
  bool timer_started_ = false;
  std::thread worker_;
  bool worker_running_ = false;
  bool check_pending_ = false;
  std::vector<std::function<void(bool)>> waiting_;
  std::vector<std::function<void(bool)>> pending_waiting_;
  // The worker's outcome, handed to the loop under `result_mutex_`.
  std::mutex result_mutex_;
  std::unique_ptr<Outcome> result_;
};

} // namespace gatecache::tls
