// Threads that run blocking storage work (fsync, rename, LMDB writes) off
// the event loop and hand each result back to the loop.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <ev.h>

namespace gatecache::registry {

class DiskWorker {
public:
  // Starts `threads` worker threads. `loop` is where completions run.
  DiskWorker(struct ev_loop *loop, unsigned threads);
  // Finishes queued jobs, then joins the threads. Completions not yet run
  // are dropped.
  ~DiskWorker();
  DiskWorker(const DiskWorker &) = delete;
  DiskWorker &operator=(const DiskWorker &) = delete;

  // Runs `job` on a worker thread, then `done` on the loop thread. `job`
  // must not touch loop-owned state; `done` may.
  void post(std::function<void()> job, std::function<void()> done);

  // Jobs queued or running, for tests and metrics.
  size_t pending() const;

private:
  static void on_async(struct ev_loop *loop, ev_async *watcher, int revents);
  void run();
  void drain_completions();

  struct ev_loop *loop_;
  ev_async async_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::pair<std::function<void()>, std::function<void()>>> jobs_;
  std::vector<std::function<void()>> completions_;
  std::vector<std::thread> threads_;
  size_t running_ = 0;
  bool stopping_ = false;
};

} // namespace gatecache::registry
