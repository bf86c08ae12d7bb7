#include "appliance/upstream/context.h"

namespace gatecache::upstream {

TaskQueue::TaskQueue(struct ev_loop *loop) : loop_(loop) {
  ev_timer_init(&timer_, on_timer, 0, 0);
  timer_.data = this;
}

TaskQueue::~TaskQueue() { clear(); }

void TaskQueue::post(std::function<void()> task) {
  tasks_.push_back(std::move(task));
  arm();
}

void TaskQueue::retire(std::unique_ptr<Retirable> object) {
  retired_.push_back(std::move(object));
  arm();
}

void TaskQueue::clear() {
  ev_timer_stop(loop_, &timer_);
  tasks_.clear();
  // Destructors of retired objects may retire others, so loop until none
  // is left.
  while (!retired_.empty()) {
    auto retired = std::move(retired_);
    retired_.clear();
  }
}

void TaskQueue::arm() {
  if (!ev_is_active(&timer_)) {
    ev_timer_set(&timer_, 0, 0);
    ev_timer_start(loop_, &timer_);
  }
}

void TaskQueue::on_timer(struct ev_loop *, ev_timer *watcher, int) noexcept {
  static_cast<TaskQueue *>(watcher->data)->run();
}

void TaskQueue::run() {
  auto tasks = std::move(tasks_);
  tasks_.clear();
  for (auto &task : tasks) {
    task();
  }
  auto retired = std::move(retired_);
  retired_.clear();
  retired.clear();
  if (!tasks_.empty() || !retired_.empty()) {
    arm();
  }
}

} // namespace gatecache::upstream
