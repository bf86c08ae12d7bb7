// Background re-verification of stored content.
//
// Content is verified once, when it enters the store. Disk faults, a bad
// copy of the state directory or an edit by hand can still change a stored
// file later without changing its size, and the serving path only compares
// sizes. The scrubber re-hashes every stored file on a thread of its own,
// at a bounded read rate, once per interval. A file whose hash no longer
// matches its name is removed together with its index record, so the next
// request for it fetches it again from the upstream.
//
// The time of the last finished pass is kept in the index state under
// "scrub/last_pass", so restarts do not start a pass again early. A new
// store counts as scrubbed when it is first opened, since everything in it
// was verified on the way in.
//
// Threading: the scrubber owns one thread. `start()`, `stop()`,
// `run_now()` and `stats()` may be called from any thread. The damage
// callback runs on the scrubber's thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "cache/blob_store.h"
#include "cache/digest.h"
#include "cache/index.h"

namespace gatecache::cache {

class Scrubber {
public:
  struct Options {
    // Seconds from the end of one pass to the start of the next. Zero
    // disables scheduled passes; `run_now()` still starts one.
    double interval_s = 7 * 86400.0;
    // Maximum bytes read per second, so that a pass does not compete with
    // clients for the disk.
    uint64_t rate_bytes_per_s = 32ULL << 20;
  };

  struct Stats {
    uint64_t passes = 0;       // Passes finished since the start.
    uint64_t files = 0;        // Files re-hashed since the start.
    uint64_t bytes = 0;        // Bytes re-hashed since the start.
    uint64_t damaged = 0;      // Files found damaged and removed.
    int64_t last_pass_end = 0; // Unix seconds; 0 before the first pass.
    bool running = false;      // A pass is in progress.
  };

  // Called after a damaged file and its index record have been removed.
  using DamageCallback = std::function<void(const Digest &)>;

  // `store` and `index` must outlive the scrubber.
  Scrubber(std::shared_ptr<BlobStore> store, Index &index, Options options,
           DamageCallback on_damaged = {});
  // Stops the thread; a pass in progress ends after its current read.
  ~Scrubber();
  Scrubber(const Scrubber &) = delete;
  Scrubber &operator=(const Scrubber &) = delete;

  // Starts the thread. Idempotent.
  void start();
  // Stops and joins the thread. Idempotent.
  void stop();
  // Starts a pass at once, or right after the pass in progress.
  void run_now();

  Stats stats() const;

private:
  // Outcome of re-hashing one file.
  enum class Check { Intact, Damaged, Gone, Stopped };

  void run();
  // Waits until the next pass is due, `run_now()` or `stop()`. Returns
  // false on stop.
  bool wait_for_next_pass();
  void scrub_all();
  Check check_file(const Digest &digest);
  void remove_damaged(const Digest &digest, const Digest &actual, int fd);
  // Sleeps long enough to keep the pass under the read rate. Returns
  // false on stop.
  bool pace();
  int64_t load_last_pass();
  void save_last_pass(int64_t when);

  std::shared_ptr<BlobStore> store_;
  Index &index_;
  Options options_;
  DamageCallback on_damaged_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool requested_ = false;
  Stats stats_;
  // Bytes read in the pass in progress and when it started; scrubber
  // thread only.
  uint64_t pass_bytes_ = 0;
  std::chrono::steady_clock::time_point pass_started_;
  std::thread thread_;
};

} // namespace gatecache::cache
