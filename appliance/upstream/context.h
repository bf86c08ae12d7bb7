// State shared by the parts of one upstream `Client`: the loop, the
// configuration, the resolver, the TLS contexts and deferred work.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include <ev.h>

#include "appliance/upstream/client.h"
#include "appliance/upstream/resolver.h"
#include "appliance/upstream/tls_context.h"

namespace gatecache::upstream {

// Base of objects whose destruction waits for `TaskQueue`, because a
// caller further up the stack may still use them when they are retired.
class Retirable {
public:
  virtual ~Retirable() = default;
};

// Runs work on a later iteration of the loop. Library callbacks (nghttp2,
// http-parser, OpenSSL reads) call into the user's handler, which may start
// or cancel requests. Deferred follow-up work never re-enters the code that
// is still on the stack.
class TaskQueue {
public:
  explicit TaskQueue(struct ev_loop *loop);
  ~TaskQueue();
  TaskQueue(const TaskQueue &) = delete;
  TaskQueue &operator=(const TaskQueue &) = delete;

  // Runs `task` on a later loop iteration, never inside this call. Tasks
  // run in the order they were posted.
  void post(std::function<void()> task);

  // Destroys `object` on a later loop iteration.
  void retire(std::unique_ptr<Retirable> object);

  // Drops every pending task and destroys every retired object now.
  void clear();

private:
  static void on_timer(struct ev_loop *loop, ev_timer *watcher,
                       int revents) noexcept;
  void arm();
  void run();

  struct ev_loop *loop_;
  ev_timer timer_;
  std::vector<std::function<void()>> tasks_;
  std::vector<std::unique_ptr<Retirable>> retired_;
};

struct ClientContext {
  explicit ClientContext(struct ev_loop *loop_in, ClientConfig config_in)
      : loop(loop_in), config(std::move(config_in)), resolver(loop_in),
        tasks(loop_in) {}

  struct ev_loop *loop;
  ClientConfig config;
  Resolver resolver;
  TlsContextCache tls;
  TaskQueue tasks;
  uint64_t next_connection_id = 1;
  ResponseObserver observer;
};

} // namespace gatecache::upstream
