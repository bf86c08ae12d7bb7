#include "appliance/registry/internal_exchange.h"

#include <utility>

namespace gatecache::registry {

namespace {

// Bytes taken from the body per call, like one network write.
constexpr size_t ChunkBytes = 256 * 1024;

} // namespace

std::string InternalResult::header(const std::string &name) const {
  for (const auto &[key, value] : headers) {
    if (key == name) {
      return value;
    }
  }
  return {};
}

std::shared_ptr<InternalExchange>
InternalExchange::create(front::Request request, size_t keep_body_limit,
                         Callback done) {
  return std::shared_ptr<InternalExchange>(new InternalExchange(
      std::move(request), keep_body_limit, std::move(done)));
}

InternalExchange::InternalExchange(front::Request request,
                                   size_t keep_body_limit, Callback done)
    : Exchange(std::move(request)), keep_body_limit_(keep_body_limit),
      done_(std::move(done)) {}

void InternalExchange::respond(front::Response response) {
  if (responded_) {
    return;
  }
  responded_ = true;
  response_ = std::move(response);
  result_.status = response_.status;
  result_.headers = response_.headers;
  if (!response_.body || request().method == front::Method::Head) {
    finish();
    return;
  }
  // The body wakes the exchange when a running download has more bytes.
  // The callback keeps only a weak pointer, because the body lives inside
  // this object.
  std::weak_ptr<front::Exchange> weak = weak_from_this();
  response_.body->set_wakeup([weak] {
    if (auto self = weak.lock()) {
      static_cast<InternalExchange &>(*self).pump();
    }
  });
  pump();
}

void InternalExchange::pump() {
  // Keep this alive while it may finish and drop the last reference.
  auto self = shared_from_this();
  while (!finished_ && response_.body) {
    auto chunk = response_.body->next(ChunkBytes);
    switch (chunk.state) {
    case front::BodyChunk::State::Data:
      if (result_.body.size() + chunk.size <= keep_body_limit_) {
        result_.body.append(reinterpret_cast<const char *>(chunk.data),
                            chunk.size);
      }
      result_.bytes += chunk.size;
      response_.body->consume(chunk.size);
      break;
    case front::BodyChunk::State::Wait:
      return;
    case front::BodyChunk::State::End:
      finish();
      return;
    case front::BodyChunk::State::Error:
      result_.failed = true;
      finish();
      return;
    }
  }
}

void InternalExchange::finish() {
  if (finished_) {
    return;
  }
  finished_ = true;
  if (on_finished) {
    auto finished = std::move(on_finished);
    on_finished = nullptr;
    finished(*this, result_.status);
  }
  // The body stays until this exchange is destroyed: `finish()` may run
  // inside the body's own wake-up call.
  auto done = std::move(done_);
  done_ = nullptr;
  if (done) {
    done(result_);
  }
}

} // namespace gatecache::registry
