#include "appliance/upstream/fetch.h"

#include <cctype>

#include "common/log.h"

namespace gatecache::upstream {

namespace {

bool is_redirect(int status) {
  return status == 301 || status == 302 || status == 303 || status == 307 ||
         status == 308;
}

// Header names and values go verbatim into an HTTP/1.1 request or an
// HTTP/2 field block, so bytes that end a line or a string are rejected.
bool is_safe_field(std::string_view text) {
  for (char c : text) {
    if (c == '\r' || c == '\n' || c == '\0') {
      return false;
    }
  }
  return true;
}

bool is_valid_field_name(std::string_view name) {
  if (name.empty()) {
    return false;
  }
  for (unsigned char c : name) {
    if (c <= ' ' || c >= 0x7f || c == ':' || std::isupper(c)) {
      return false;
    }
  }
  return true;
}

} // namespace

Fetch::Fetch(Client::Impl &impl, uint64_t id, std::string url,
             std::string ca_file, Request request, ResponseHandler *handler,
             bool token_flow, std::string observed_base)
    : impl_(impl), id_(id), url_text_(std::move(url)),
      ca_file_(std::move(ca_file)), request_(std::move(request)),
      handler_(handler), token_flow_(token_flow),
      observed_base_(std::move(observed_base)) {}

Fetch::~Fetch() {
  if (exchange_ != nullptr) {
    exchange_->abort();
  }
}

std::string Fetch::describe() const { return method_ + " " + url_.redacted(); }

Result<void> Fetch::validate() const {
  if (request_.method != "GET" && request_.method != "HEAD") {
    return fail(ErrorCode::Invalid,
                "unsupported method " + request_.method + " for " + url_text_ +
                    ": only GET and HEAD are sent upstream");
  }
  for (const auto &[name, value] : request_.headers) {
    if (!is_valid_field_name(name) || !is_safe_field(value)) {
      return fail(ErrorCode::Invalid,
                  "invalid request header '" + name + "' for " + url_text_);
    }
  }
  return {};
}

void Fetch::begin() {
  if (phase_ != Phase::Pending) {
    return;
  }
  auto url = parse_url(url_text_);
  if (!url) {
    complete(url.error());
    return;
  }
  if (auto valid = validate(); !valid) {
    complete(valid.error());
    return;
  }
  origin_url_ = *url;
  url_ = std::move(*url);
  method_ = request_.method;
  phase_ = Phase::Sending;
  if (token_flow_) {
    // Docker Hub's pattern: a token per repository scope, sent up front
    // once known, which saves the 401 round trip.
    if (auto key = impl_.scope_key(origin_url_.origin(), request_.scope)) {
      token_key_ = *key;
      token_ = impl_.cached_token(*key);
      if (!token_) {
        // The token expired: fetch a new one before sending.
        phase_ = Phase::WaitingToken;
        impl_.request_token(*key, ca_file_, id_);
        return;
      }
    }
  }
  send();
}

void Fetch::send() {
  bool same_origin = url_.origin() == origin_url_.origin();
  HeaderList headers;
  headers.reserve(request_.headers.size() + 2);
  headers.emplace_back("user-agent", impl_.context().config.user_agent);
  for (const auto &[name, value] : request_.headers) {
    if (name == "host" || name == "user-agent" ||
        (name == "authorization" && (!same_origin || token_))) {
      continue;
    }
    headers.emplace_back(name, value);
  }
  if (token_ && same_origin) {
    headers.emplace_back("authorization", "Bearer " + *token_);
  }
  drained_bytes_ = 0;
  phase_ = Phase::Sending;
  exchange_ = std::make_unique<Exchange>(impl_.context(), this, url_, method_,
                                         std::move(headers));
  impl_.pool_for(url_, ca_file_).submit(exchange_.get());
}

void Fetch::drop_exchange() {
  if (exchange_ != nullptr) {
    exchange_->abort();
    impl_.context().tasks.retire(std::move(exchange_));
  }
}

bool Fetch::intercept(const ResponseHead &head) {
  bool same_origin = url_.origin() == origin_url_.origin();
  if (head.status == 401 && token_flow_ && !token_fetched_ && same_origin) {
    std::vector<AuthChallenge> challenges;
    for (const auto &[name, value] : head.headers) {
      if (name != "www-authenticate") {
        continue;
      }
      auto parsed = parse_challenges(value);
      if (!parsed) {
        GC_LOG(Upstream, debug, "ignoring challenge req={} url={}: {}", id_,
               url_.redacted(), parsed.error().message);
        continue;
      }
      challenges.insert(challenges.end(), parsed->begin(), parsed->end());
    }
    if (auto bearer = find_bearer_challenge(challenges)) {
      followup_ = Followup{false, head.status, Url{}, std::move(*bearer)};
      return true;
    }
    return false;
  }
  if (!is_redirect(head.status)) {
    return false;
  }
  std::optional<std::string> location = head.header("location");
  if (!location) {
    return false;
  }
  if (hops_ >= MaxRedirects) {
    drop_exchange();
    complete(Error{ErrorCode::UpstreamRejected,
                   describe() + ": more than " + std::to_string(MaxRedirects) +
                       " redirects"});
    return true;
  }
  auto target = resolve_reference(url_, *location);
  if (!target) {
    drop_exchange();
    complete(
        Error{ErrorCode::UpstreamRejected,
              describe() + ": invalid redirect: " + target.error().message});
    return true;
  }
  followup_ = Followup{true, head.status, std::move(*target), {}};
  return true;
}

void Fetch::on_exchange_head(ResponseHead head) {
  const auto &observer = impl_.context().observer;
  if (observer && !observed_base_.empty() &&
      url_.origin() == origin_url_.origin()) {
    observer(observed_base_, head);
  }
  if (intercept(head)) {
    if (phase_ != Phase::Done) {
      phase_ = Phase::Draining;
    }
    return;
  }
  phase_ = Phase::Streaming;
  handler_->on_head(head);
}

bool Fetch::on_exchange_data(const uint8_t *data, size_t size) {
  if (phase_ == Phase::Draining) {
    drained_bytes_ += size;
    if (drained_bytes_ > MaxDrainBytes) {
      run_followup();
      return false;
    }
    return true;
  }
  if (phase_ != Phase::Streaming) {
    return false;
  }
  bool keep = handler_->on_data(data, size);
  if (phase_ == Phase::Done) {
    return false;
  }
  if (!keep) {
    // The handler aborted: by contract it gets no `on_complete`.
    phase_ = Phase::Done;
    handler_ = nullptr;
    drop_exchange();
    impl_.finish_fetch(id_);
    return false;
  }
  return true;
}

void Fetch::on_exchange_complete(std::optional<Error> error) {
  if (phase_ == Phase::Draining) {
    run_followup();
    return;
  }
  complete(std::move(error));
}

void Fetch::run_followup() {
  drop_exchange();
  Followup followup = std::move(*followup_);
  followup_.reset();
  if (followup.redirect) {
    follow_redirect(followup);
  } else {
    start_token_flow(followup.challenge);
  }
}

void Fetch::follow_redirect(const Followup &followup) {
  ++hops_;
  // The query of a CDN redirect is often a signature, so it stays out of
  // the log.
  GC_LOG(Upstream, debug, "following redirect req={} status={} from={} to={}",
         id_, followup.status, url_.redacted(), followup.target.redacted());
  url_ = followup.target;
  // RFC 9110 section 15.4.4: after 303 the client uses GET (or HEAD).
  if (followup.status == 303 && method_ != "HEAD") {
    method_ = "GET";
  }
  send();
}

void Fetch::start_token_flow(const BearerChallenge &challenge) {
  TokenKey key{challenge.realm, challenge.service,
               request_.scope.empty() ? challenge.scope : request_.scope};
  if (token_ && token_key_ == key) {
    // The upstream rejected this token, so no other request may reuse it.
    impl_.forget_token(key, *token_);
  }
  token_fetched_ = true;
  token_key_ = key;
  if (!request_.scope.empty() || challenge.scope.empty()) {
    impl_.remember_scope(origin_url_.origin(), request_.scope, key);
  }
  std::optional<std::string> cached = impl_.cached_token(key);
  if (cached && cached != token_) {
    // Another request stored a fresh token in the meantime.
    token_ = std::move(cached);
    send();
    return;
  }
  phase_ = Phase::WaitingToken;
  impl_.request_token(key, ca_file_, id_);
}

void Fetch::resume_with_token(const Result<std::string> &token) {
  if (phase_ != Phase::WaitingToken) {
    return;
  }
  if (!token) {
    complete(
        Error{token.error().code, describe() + ": " + token.error().message});
    return;
  }
  token_ = *token;
  send();
}

void Fetch::cancel() {
  phase_ = Phase::Done;
  handler_ = nullptr;
  drop_exchange();
}

void Fetch::complete(std::optional<Error> error) {
  if (phase_ == Phase::Done) {
    return;
  }
  phase_ = Phase::Done;
  drop_exchange();
  if (error) {
    GC_LOG(Upstream, warn, "upstream request failed req={} url={} error={}: {}",
           id_, url_.host.empty() ? url_text_ : url_.redacted(),
           to_string(error->code), error->message);
  }
  ResponseHandler *handler = handler_;
  handler_ = nullptr;
  // The fetch leaves the table first, so a `cancel()` of this id from
  // inside the handler is a no-op.
  impl_.finish_fetch(id_);
  handler->on_complete(std::move(error));
}

} // namespace gatecache::upstream
