#include "appliance/registry/disk_worker.h"

#include <utility>

namespace gatecache::registry {

DiskWorker::DiskWorker(struct ev_loop *loop, unsigned threads) : loop_(loop) {
  ev_async_init(&async_, &DiskWorker::on_async);
  async_.data = this;
  ev_async_start(loop_, &async_);
  // The async watcher alone must not keep the loop running at shutdown.
  ev_unref(loop_);
  for (unsigned i = 0; i < threads; ++i) {
    threads_.emplace_back([this] { run(); });
  }
}

DiskWorker::~DiskWorker() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto &thread : threads_) {
    thread.join();
  }
  ev_ref(loop_);
  ev_async_stop(loop_, &async_);
}

void DiskWorker::post(std::function<void()> job, std::function<void()> done) {
  {
    std::lock_guard lock(mutex_);
    jobs_.emplace_back(std::move(job), std::move(done));
  }
  wake_.notify_one();
}

size_t DiskWorker::pending() const {
  std::lock_guard lock(mutex_);
  return jobs_.size() + running_ + completions_.size();
}

void DiskWorker::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
    if (jobs_.empty()) {
      return;
    }
    auto [job, done] = std::move(jobs_.front());
    jobs_.pop_front();
    ++running_;
    lock.unlock();
    job();
    lock.lock();
    --running_;
    completions_.push_back(std::move(done));
    ev_async_send(loop_, &async_);
  }
}

void DiskWorker::drain_completions() {
  std::vector<std::function<void()>> ready;
  {
    std::lock_guard lock(mutex_);
    ready.swap(completions_);
  }
  for (auto &done : ready) {
    if (done) {
      done();
    }
  }
}

void DiskWorker::on_async(struct ev_loop *, ev_async *watcher, int) {
  static_cast<DiskWorker *>(watcher->data)->drain_completions();
}

} // namespace gatecache::registry
