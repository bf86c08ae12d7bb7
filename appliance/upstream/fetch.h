// One `Client::start()` request through tokens, redirects and retries.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "appliance/upstream/auth_challenge.h"
#include "appliance/upstream/client.h"
#include "appliance/upstream/client_impl.h"
#include "appliance/upstream/exchange.h"
#include "appliance/upstream/token_cache.h"
#include "appliance/upstream/url.h"

namespace gatecache::upstream {

class Fetch final : public Retirable, public ExchangeEvents {
public:
  // RFC 9110 section 15.4 leaves the limit to the client; 5 is what the
  // Docker registry clients use.
  static constexpr int MaxRedirects = 5;
  // Body bytes of a 401 or redirect read and dropped to keep an HTTP/1.1
  // connection reusable; past this the exchange is aborted instead.
  static constexpr size_t MaxDrainBytes = 64 * 1024;

  Fetch(Client::Impl &impl, uint64_t id, std::string url, std::string ca_file,
        Request request, ResponseHandler *handler, bool token_flow,
        std::string observed_base = {});
  ~Fetch() override;

  uint64_t id() const { return id_; }

  // Validates the request and sends it. Runs from the task queue.
  void begin();
  // Ends the fetch with no further callback.
  void cancel();
  // Continues after a token fetch that this fetch waited for.
  void resume_with_token(const Result<std::string> &token);

  void on_exchange_head(ResponseHead head) override;
  bool on_exchange_data(const uint8_t *data, size_t size) override;
  void on_exchange_complete(std::optional<Error> error) override;

private:
  enum class Phase {
    Pending,
    WaitingToken,
    Sending,
    Draining,
    Streaming,
    Done
  };

  // Next step once the intercepted response (a 401 or a redirect) ends.
  struct Followup {
    bool redirect = false;
    int status = 0;
    Url target;
    BearerChallenge challenge;
  };

  Result<void> validate() const;
  bool intercept(const ResponseHead &head);
  void send();
  void run_followup();
  void follow_redirect(const Followup &followup);
  void start_token_flow(const BearerChallenge &challenge);
  void drop_exchange();
  void complete(std::optional<Error> error);
  std::string describe() const;

  Client::Impl &impl_;
  uint64_t id_;
  std::string url_text_;
  std::string ca_file_;
  Request request_;
  ResponseHandler *handler_;
  bool token_flow_;
  // The `Origin::base_url` shown to the response observer; empty for
  // requests that are not to a registry origin (token requests).
  std::string observed_base_;
  Phase phase_ = Phase::Pending;
  Url origin_url_;
  Url url_;
  std::string method_;
  int hops_ = 0;
  bool token_fetched_ = false;
  std::optional<std::string> token_;
  std::optional<TokenKey> token_key_;
  std::optional<Followup> followup_;
  size_t drained_bytes_ = 0;
  std::unique_ptr<Exchange> exchange_;
};

} // namespace gatecache::upstream
