// Manual benchmark server of the HTTP front: a listener with a
// self-signed certificate and fixed routes, for h2load and
// `front_bench_client`. Not a test; nothing runs it automatically.
//
//   front_bench_server PORT FILE [ACCESS_LOG]
//
// Routes: /small (2048 bytes from memory), /file (FILE through FileBody),
// /bytes/<n>. ACCESS_LOG is "off" (default), "stderr" or a path. SIGINT or
// SIGTERM stops it gracefully.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include <ev.h>
#include <fcntl.h>
#include <unistd.h>

#include "appliance/front/file_body.h"
#include "appliance/front/listener.h"
#include "common/log.h"
#include "tests/unit/front/test_support.h"

namespace {

using namespace gatecache::front;

class BenchHandler final : public RequestHandler {
public:
  explicit BenchHandler(std::string file_path)
      : file_path_(std::move(file_path)),
        small_(std::make_shared<const std::string>(test::pattern(2048))) {}

  void handle(std::shared_ptr<Exchange> exchange) override {
    const std::string &path = exchange->request().path;
    Response response;
    response.headers.emplace_back("content-type", "application/octet-stream");
    if (path == "/small") {
      response.body = std::make_unique<MemoryBody>(small_);
    } else if (path == "/file") {
      int fd = ::open(file_path_.c_str(), O_RDONLY | O_CLOEXEC);
      off_t size = fd >= 0 ? ::lseek(fd, 0, SEEK_END) : -1;
      auto body = size >= 0 ? FileBody::open(fd, 0, size)
                            : gatecache::fail(gatecache::ErrorCode::Io,
                                              "cannot open " + file_path_);
      if (fd >= 0) {
        ::close(fd);
      }
      if (body) {
        response.body = std::move(*body);
      } else {
        response.status = 500;
      }
    } else if (path.rfind("/bytes/", 0) == 0) {
      response.body = std::make_unique<MemoryBody>(
          test::pattern(std::stoul(path.substr(7))));
    } else {
      response.status = 404;
    }
    exchange->respond(std::move(response));
  }

private:
  std::string file_path_;
  std::shared_ptr<const std::string> small_;
};

struct State {
  std::unique_ptr<Listener> listener;
  ev_signal sigint;
  ev_signal sigterm;
};

void on_signal(struct ev_loop *loop, ev_signal *watcher, int) {
  auto *state = static_cast<State *>(watcher->data);
  ev_signal_stop(loop, &state->sigint);
  ev_signal_stop(loop, &state->sigterm);
  state->listener->shutdown([state] { state->listener.reset(); });
}

} // namespace

int main(int argc, char **argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s PORT FILE [ACCESS_LOG]\n", argv[0]);
    return 2;
  }
  std::string error;
  if (!gatecache::log::init("info", argc > 3 ? argv[3] : "off", error)) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 2;
  }
  std::signal(SIGPIPE, SIG_IGN);

  struct ev_loop *loop = EV_DEFAULT;
  SSL_CTX *ctx = test::make_server_ctx();
  BenchHandler handler(argv[2]);
  auto listener = Listener::open(
      loop, "127.0.0.1", static_cast<uint16_t>(std::atoi(argv[1])),
      [ctx] { return ctx; }, &handler, FrontConfig{});
  if (!listener) {
    std::fprintf(stderr, "%s\n", listener.error().message.c_str());
    return 1;
  }
  State state;
  state.listener = std::move(*listener);
  ev_signal_init(&state.sigint, on_signal, SIGINT);
  ev_signal_init(&state.sigterm, on_signal, SIGTERM);
  state.sigint.data = &state;
  state.sigterm.data = &state;
  ev_signal_start(loop, &state.sigint);
  ev_signal_start(loop, &state.sigterm);
  ev_run(loop, 0);
  SSL_CTX_free(ctx);
  return 0;
}
