// An exchange that the daemon itself sends to the registry service, as a
// client would, for prewarming. It reads the whole response body: manifest
// bodies are kept, blob bodies only counted.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "appliance/front/exchange.h"

namespace gatecache::registry {

struct InternalResult {
  int status = 0;
  front::HeaderList headers;
  std::string body;    // Kept only when asked for.
  uint64_t bytes = 0;  // Body bytes read.
  bool failed = false; // The body ended with an error.

  // The first value of header `name` (lower case), or empty.
  std::string header(const std::string &name) const;
};

class InternalExchange final : public front::Exchange {
public:
  using Callback = std::function<void(const InternalResult &)>;

  // `keep_body_limit`: bytes of body kept in the result; larger bodies are
  // counted and dropped.
  static std::shared_ptr<InternalExchange>
  create(front::Request request, size_t keep_body_limit, Callback done);

  void respond(front::Response response) override;

  bool closed() const override { return false; }

  // True once the response and its body ended and the callback ran.
  bool finished() const { return finished_; }

private:
  InternalExchange(front::Request request, size_t keep_body_limit,
                   Callback done);
  void pump();
  void finish();

  size_t keep_body_limit_;
  Callback done_;
  front::Response response_;
  InternalResult result_;
  bool responded_ = false;
  bool finished_ = false;
};

} // namespace gatecache::registry
