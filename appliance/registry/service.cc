#include "appliance/registry/service.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <map>
#include <utility>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "appliance/front/file_body.h"
#include "appliance/registry/media_type.h"
#include "appliance/registry/range.h"
#include "appliance/registry/schema1.h"
#include "cache/digest.h"
#include "cache/evictor.h"
#include "common/log.h"

namespace gatecache::registry {

namespace {

using front::CacheResult;
using front::HeaderList;
using front::Method;
using front::Response;

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Transport failures, 5xx, 408 and 429 mean the upstream is unavailable, so
// a stored copy is served stale. Other statuses describe the content.
bool upstream_unavailable(const CallResult &result) {
  if (result.error) {
    return true;
  }
  int status = result.head.status;
  return status >= 500 || status == 429 || status == 408;
}

std::string member_key(const std::string &upstream,
                       const std::string &repository,
                       const std::string &digest) {
  std::string key;
  key.reserve(upstream.size() + repository.size() + digest.size() + 2);
  key.append(upstream).push_back('\n');
  key.append(repository).push_back('\n');
  key.append(digest);
  return key;
}

HeaderList content_headers(const std::string &media_type,
                           const std::string &digest) {
  HeaderList headers;
  headers.reserve(4);
  headers.emplace_back("content-type", media_type);
  headers.emplace_back("docker-content-digest", digest);
  headers.emplace_back("etag", "\"" + digest + "\"");
  headers.emplace_back("docker-distribution-api-version", "registry/2.0");
  return headers;
}

// Removes least recently used content until the store fits `max_bytes`.
// Runs on a disk worker thread right after `just_stored` was indexed, which
// is never evicted by the same pass. Readers that have a file open keep
// reading it after the unlink.
void evict_if_needed(cache::BlobStore &store, cache::Index &index,
                     uint64_t max_bytes, const std::string &just_stored,
                     AccessLog &recent, EvictionLog &evictions,
                     const PinSet &pins) {
  auto total = index.total_size();
  if (!total || *total <= max_bytes) {
    return;
  }
  // Hits are recorded in batches. Write the pending ones first, so content
  // read a moment ago does not look unused.
  recent.flush(index);
  auto evicted =
      cache::evict_to(store, index, max_bytes,
                      [&just_stored, &pins](const std::string &digest) {
                        return digest == just_stored || pins.contains(digest);
                      });
  if (!evicted) {
    GC_LOG(Cache, error, "evicting content failed: {}",
           evicted.error().message);
    return;
  }
  uint64_t bytes = 0;
  std::vector<std::string> digests;
  for (const auto &[digest, record] : *evicted) {
    bytes += record.size;
    digests.push_back(digest);
  }
  evictions.add(std::move(digests));
  GC_LOG(Cache, info, "evicted {} items ({} bytes) to stay under {} bytes",
         evicted->size(), bytes, max_bytes);
}

// Sends an OCI error document with `error`'s status, plus `extra` headers.
void respond_oci_error(const std::shared_ptr<front::Exchange> &exchange,
                       const OciError &error, HeaderList extra) {
  Response response;
  response.status = error.status;
  response.headers = {{"content-type", "application/json"},
                      {"docker-distribution-api-version", "registry/2.0"}};
  if (error.status == 405) {
    // RFC 9110 section 15.5.6: a 405 lists the methods the target allows.
    response.headers.emplace_back("allow", "GET, HEAD");
  }
  for (auto &header : extra) {
    response.headers.push_back(std::move(header));
  }
  std::string body = oci_error_body(error);
  response.head_length = static_cast<int64_t>(body.size());
  if (exchange->request().method != Method::Head) {
    response.body = std::make_unique<front::MemoryBody>(std::move(body));
  }
  exchange->respond(std::move(response));
}

// Applies the request's Range header to a response for `size` bytes. Sets
// the status, the range headers, and the `first` byte and `length` to send.
// Returns false after responding 416 to an unsatisfiable or invalid range.
bool apply_range(const std::shared_ptr<front::Exchange> &exchange,
                 uint64_t size, Response &response, uint64_t &first,
                 uint64_t &length) {
  response.headers.emplace_back("accept-ranges", "bytes");
  const std::string &header = exchange->request().range;
  auto range = parse_range(header, size);
  switch (range.kind) {
  case RangeKind::None:
    response.status = 200;
    first = 0;
    length = size;
    return true;
  case RangeKind::Satisfiable:
    response.status = 206;
    first = range.first;
    length = range.last - range.first + 1;
    response.headers.emplace_back("content-range",
                                  content_range(range.first, range.last, size));
    return true;
  case RangeKind::Unsatisfiable:
  case RangeKind::Invalid:
    break;
  }
  std::string reason = range.kind == RangeKind::Unsatisfiable
                           ? "is outside the blob"
                           : "is invalid";
  respond_oci_error(exchange,
                    OciError::range_invalid("range '" + header + "' " + reason),
                    {{"content-range", unsatisfied_content_range(size)}});
  return false;
}

// Builds a pull request for `/v2/<repository>/<path>` with the token
// scope of that repository and, when given, the client's Accept header.
upstream::Request registry_request(const char *method,
                                   const std::string &repository,
                                   const std::string &path,
                                   const std::string &accept = "") {
  upstream::Request request;
  request.method = method;
  request.path = "/v2/" + repository + "/" + path;
  request.scope = "repository:" + repository + ":pull";
  if (!accept.empty()) {
    request.headers.emplace_back("accept", accept);
  }
  return request;
}

// Key of a running blob download. Downloads are per upstream, so a stalled
// or failing upstream never holds up a pull from another one.
std::string fetch_key(const std::string &upstream, const std::string &digest) {
  return upstream + "\n" + digest;
}

// Largest tag list relayed from an upstream.
constexpr size_t MaxTagListBytes = 4 << 20;

} // namespace

void AccessLog::add(const std::string &digest, int64_t unix_time) {
  std::lock_guard lock(mutex_);
  if (last_access_.size() < MaxPending || last_access_.contains(digest)) {
    last_access_[digest] = unix_time;
  }
}

void AccessLog::flush(cache::Index &index) {
  std::unordered_map<std::string, int64_t> pending;
  {
    std::lock_guard lock(mutex_);
    pending.swap(last_access_);
  }
  // One index transaction per distinct second keeps the order of accesses.
  std::map<int64_t, std::vector<std::string>> by_time;
  for (auto &[digest, time] : pending) {
    by_time[time].push_back(digest);
  }
  for (const auto &[time, digests] : by_time) {
    if (auto written = index.touch_content(digests, time); !written) {
      GC_LOG(Cache, warn, "recording access times failed: {}",
             written.error().message);
      return;
    }
  }
}

void EvictionLog::add(std::vector<std::string> digests) {
  if (digests.empty()) {
    return;
  }
  std::lock_guard lock(mutex_);
  digests_.insert(digests_.end(), std::make_move_iterator(digests.begin()),
                  std::make_move_iterator(digests.end()));
  pending_.store(true, std::memory_order_release);
}

std::vector<std::string> EvictionLog::take() {
  std::lock_guard lock(mutex_);
  pending_.store(false, std::memory_order_release);
  return std::move(digests_);
}

RegistryService::RegistryService(struct ev_loop *loop,
                                 std::shared_ptr<const config::Config> config,
                                 std::shared_ptr<cache::BlobStore> store,
                                 std::shared_ptr<cache::Index> index,
                                 upstream::Client &client, DiskWorker &worker,
                                 Usage &usage, ServiceLimits limits)
    : loop_(loop), config_(std::move(config)),
      routes_(RouteTable::from_config(*config_)), store_(std::move(store)),
      index_(std::move(index)), client_(client), worker_(worker), usage_(usage),
      limits_(limits), calls_(client), manifests_(limits.manifest_cache_bytes),
      access_log_(std::make_shared<AccessLog>()),
      evictions_(std::make_shared<EvictionLog>()) {
  observe_responses();
  ev_timer_init(&flush_timer_, &RegistryService::on_flush_timer,
                limits_.access_flush_interval_s,
                limits_.access_flush_interval_s);
  flush_timer_.data = this;
  ev_timer_start(loop_, &flush_timer_);
  ev_unref(loop_);
}

void RegistryService::reload(std::shared_ptr<const config::Config> config) {
  config_ = std::move(config);
  routes_ = RouteTable::from_config(*config_);
  observe_responses();
}

void RegistryService::observe_responses() {
  // Origins of upstreams removed by a reload stay, because requests that
  // started before it still name them.
  std::unordered_map<std::string, std::string> names_by_url;
  for (const auto &[name, upstream] : config_->upstreams) {
    origins_[name] = upstream::Origin{upstream.url, upstream.ca_file};
    names_by_url.emplace(upstream.url, name);
  }
  client_.set_response_observer(
      [this, names = std::move(names_by_url)](
          const std::string &base_url, const upstream::ResponseHead &head) {
        auto found = names.find(base_url);
        if (found != names.end()) {
          usage_.observe(found->second, head.status, head.headers);
        }
      });
}

RegistryService::~RegistryService() {
  client_.set_response_observer(nullptr);
  for (auto &[key, pending] : pending_grants_) {
    pending.scheduler->cancel(pending.handle);
  }
  pending_grants_.clear();
  flush_access_times();
  ev_ref(loop_);
  ev_timer_stop(loop_, &flush_timer_);
}

void RegistryService::handle(ExchangePtr exchange) {
  if (evictions_->pending()) {
    // Evicted manifests leave memory too, so the next request fetches and
    // stores them again instead of serving what the disk no longer has.
    for (const auto &digest : evictions_->take()) {
      manifests_.erase(digest);
    }
  }
  const auto &request = exchange->request();
  auto routed =
      route_request(routes_, request.method_name, request.path, request.query);
  if (!routed) {
    respond_error(exchange, routed.error());
    return;
  }
  const Route &route = *routed;
  exchange->upstream_name = route.upstream;
  // Internal requests (prewarm) have no peer and belong to no cluster;
  // they run in cluster 0 without counting as anyone's pulls.
  bool internal = request.peer.empty();
  auto cluster = internal ? std::optional<size_t>(0) : usage_.classify(request);
  if (!cluster) {
    usage_.count_denied();
    GC_LOG(Access, warn,
           "denied {} {}: client {} is in no configured cluster (client "
           "certificate name '{}')",
           request.method_name, request.path, request.peer,
           request.client_name);
    respond_error(exchange,
                  OciError::denied("this client is not in any cluster "
                                   "allowed to use this mirror"));
    return;
  }
  exchange->cluster = *cluster;
  if (!internal && (route.endpoint == Endpoint::Manifest ||
                    route.endpoint == Endpoint::Blob)) {
    begin_accounting(exchange, *cluster, route);
  }
  switch (route.endpoint) {
  case Endpoint::Base: {
    Response response;
    response.status = 200;
    response.headers = {{"content-type", "application/json"},
                        {"docker-distribution-api-version", "registry/2.0"}};
    response.body = std::make_unique<front::MemoryBody>(std::string("{}"));
    exchange->respond(std::move(response));
    return;
  }
  case Endpoint::Manifest:
    if (route.by_digest) {
      serve_manifest_by_digest(std::move(exchange), route);
    } else {
      serve_manifest_by_tag(std::move(exchange), route);
    }
    return;
  case Endpoint::Blob:
    serve_blob(std::move(exchange), route);
    return;
  case Endpoint::TagsList:
    serve_tags_list(std::move(exchange), route);
    return;
  }
}

void RegistryService::begin_accounting(const ExchangePtr &exchange,
                                       size_t cluster, const Route &route) {
  ++usage_.cluster(cluster).requests;
  uint64_t pull = usage_.start_pull(
      exchange->request(), cluster, route.upstream, route.repository,
      route.reference, route.endpoint == Endpoint::Manifest);
  exchange->on_finished = [this, pull](const front::Exchange &done,
                                       int status) {
    usage_.finish_pull(pull, status, done.cache_result);
    auto &counters = usage_.cluster(done.cluster);
    switch (done.cache_result) {
    case CacheResult::Hit:
      ++counters.hits;
      break;
    case CacheResult::Revalidated:
      ++counters.revalidated;
      break;
    case CacheResult::Miss:
    case CacheResult::Joined:
      ++counters.misses;
      break;
    case CacheResult::Stale:
      ++counters.stale;
      break;
    case CacheResult::None:
      break;
    }
  };
}

// ---- Manifests --------------------------------------------------------

void RegistryService::serve_manifest_by_tag(ExchangePtr exchange,
                                            const Route &route) {
  auto accepted = parse_accept(exchange->request().accept);
  std::optional<cache::TagRecord> stored;
  auto records =
      index_->get_tag(route.upstream, route.repository, route.reference);
  if (!records) {
    GC_LOG(Registry, error, "reading tag {}/{}:{} from the index failed: {}",
           route.upstream, route.repository, route.reference,
           records.error().message);
  } else {
    for (auto &record : *records) {
      if (acceptable(accepted, record.media_type)) {
        stored = std::move(record);
        break;
      }
    }
  }
  if (stored) {
    double age = ev_now(loop_) - static_cast<double>(stored->validated_at);
    double window = usage_.freshness_window(route.upstream, route.reference);
    if (age >= 0 && age < window) {
      if (auto entry = load_manifest(stored->digest)) {
        send_manifest(exchange, *entry, CacheResult::Hit);
        return;
      }
    }
  }
  revalidate_tag(std::move(exchange), route, std::move(stored));
}

void RegistryService::revalidate_tag(ExchangePtr exchange, const Route &route,
                                     std::optional<cache::TagRecord> stored) {
  std::string key =
      "HEAD manifest\n" +
      member_key(route.upstream, route.repository, route.reference) + "\n" +
      exchange->request().accept;
  Route copy = route;
  auto granted = [this, exchange, copy, stored, key](GrantPtr grant) {
    if (exchange->closed()) {
      return;
    }
    const std::string &accept = exchange->request().accept;
    exchange->fetch_id = calls_.run(
        key, origin_for(copy.upstream),
        [&] {
          return registry_request("HEAD", copy.repository,
                                  "manifests/" + copy.reference, accept);
        },
        0,
        [this, exchange, copy, stored, grant](const CallResult &result) {
          on_tag_checked(exchange, copy, stored, result);
        });
  };
  auto refused = [this, exchange, copy, stored](double retry_after_s) {
    if (exchange->closed()) {
      return;
    }
    if (stored &&
        serve_stale(exchange, copy, *stored, "no budget to revalidate it")) {
      return;
    }
    respond_no_budget(exchange, copy, retry_after_s, "manifest");
  };
  when_budget_allows(exchange, route.upstream, CountedKind::ManifestHead, key,
                     stored.has_value(), std::move(granted),
                     std::move(refused));
}

void RegistryService::on_tag_checked(ExchangePtr exchange, const Route &route,
                                     std::optional<cache::TagRecord> stored,
                                     const CallResult &result) {
  if (exchange->closed()) {
    return;
  }
  if (upstream_unavailable(result)) {
    std::string reason =
        result.error ? result.error->message
                     : "upstream status " + std::to_string(result.head.status);
    if (stored && serve_stale(exchange, route, *stored, reason)) {
      return;
    }
    respond_upstream_failure(exchange, route, result, "manifest");
    return;
  }
  if (result.head.status != 200) {
    respond_upstream_failure(exchange, route, result, "manifest");
    return;
  }
  auto digest_header = result.head.header("docker-content-digest");
  auto media_type = result.head.header("content-type");
  auto digest =
      digest_header
          ? cache::Digest::parse(*digest_header)
          : Result<cache::Digest>(fail(ErrorCode::Invalid, "no digest header"));
  if (!digest || !media_type) {
    // Without a digest the tag can only be fetched by name.
    fetch_manifest(exchange, route, route.reference, true, CacheResult::Miss);
    return;
  }
  std::string digest_text = digest->str();
  // A stored manifest keeps the type it was stored with, so the HEAD's
  // Content-Type is not compared with it. Comparing would fetch the
  // manifest again on every request when the upstream's type differs in
  // parameters only, or differs from the type another upstream sent first.
  auto entry = load_manifest(digest_text);
  if (!entry && !is_manifest_media_type(media_type_essence(*media_type))) {
    // The upstream is broken, not the client's Accept: a 404 here would
    // tell a node that the tag does not exist.
    std::string reason = "upstream sent Content-Type '" + *media_type +
                         "' for tag " + route.reference +
                         ", which is not a manifest media type";
    if (stored && serve_stale(exchange, route, *stored, reason)) {
      return;
    }
    GC_LOG(Registry, warn, "upstream={} repo={} {}", route.upstream,
           route.repository, reason);
    respond_error(exchange, OciError::unavailable(reason));
    return;
  }
  const std::string &served_type = entry ? entry->media_type : *media_type;
  if (!acceptable(parse_accept(exchange->request().accept), served_type)) {
    respond_error(exchange, OciError::manifest_unknown(
                                "upstream has " + served_type + " for tag " +
                                route.reference +
                                ", which the Accept header does not allow"));
    return;
  }
  if (entry) {
    serve_stored_for_tag(exchange, route, stored, *entry);
    return;
  }
  // Fetch by digest, not by tag, so the stored bytes are the ones the HEAD
  // named even if the tag moves meanwhile.
  fetch_manifest(exchange, route, digest_text, true, CacheResult::Miss, stored);
}

void RegistryService::serve_stored_for_tag(
    const ExchangePtr &exchange, const Route &route,
    const std::optional<cache::TagRecord> &stored, const ManifestEntry &entry) {
  auto index = index_;
  Route copy = route;
  int64_t now = unix_now();
  if (stored && stored->digest == entry.digest &&
      same_media_type(stored->media_type, entry.media_type)) {
    worker_.post(
        [index, copy, now] {
          (void)index->touch_tag(copy.upstream, copy.repository, copy.reference,
                                 now);
        },
        nullptr);
    send_manifest(exchange, entry, CacheResult::Revalidated);
    return;
  }
  // The tag moved, or is new here. The HEAD proved that this repository
  // contains the digest, so stored content needs no further check.
  remember_repository(route, entry.digest, true);
  cache::TagRecord record{entry.media_type, entry.digest, now, now};
  worker_.post(
      [index, copy, record] {
        auto stored_tag = index->put_tag(copy.upstream, copy.repository,
                                         copy.reference, record);
        if (!stored_tag) {
          GC_LOG(Registry, error, "recording tag {}/{}:{} failed: {}",
                 copy.upstream, copy.repository, copy.reference,
                 stored_tag.error().message);
        }
      },
      nullptr);
  send_manifest(exchange, entry, CacheResult::Revalidated);
}

void RegistryService::serve_manifest_by_digest(ExchangePtr exchange,
                                               const Route &route) {
  auto entry = load_manifest(route.reference);
  if (!entry) {
    fetch_manifest(std::move(exchange), route, route.reference, false,
                   CacheResult::Miss);
    return;
  }
  auto accepted = parse_accept(exchange->request().accept);
  if (!acceptable(accepted, entry->media_type)) {
    respond_error(exchange,
                  OciError{404, "MANIFEST_UNKNOWN",
                           "manifest " + route.reference + " is " +
                               entry->media_type +
                               ", which the Accept header does not allow"});
    return;
  }
  if (repository_confirmed(route, route.reference)) {
    send_manifest(exchange, *entry, CacheResult::Hit);
    return;
  }
  confirm_upstream(std::move(exchange), route, "manifests",
                   [this, entry](ExchangePtr confirmed) {
                     send_manifest(confirmed, *entry, CacheResult::Hit);
                   });
}

void RegistryService::fetch_manifest(ExchangePtr exchange, const Route &route,
                                     const std::string &reference,
                                     bool record_tag, CacheResult outcome,
                                     std::optional<cache::TagRecord> stale) {
  std::string key = "GET manifest\n" +
                    member_key(route.upstream, route.repository, reference) +
                    "\n" + exchange->request().accept;
  Route copy = route;
  auto granted = [this, exchange, copy, reference, record_tag, outcome,
                  key](GrantPtr grant) {
    if (exchange->closed()) {
      return;
    }
    const std::string &accept = exchange->request().accept;
    bool joined = false;
    exchange->fetch_id = calls_.run(
        key, origin_for(copy.upstream),
        [&] {
          GC_LOG(Registry, info, "fetching manifest upstream={} repo={} ref={}",
                 copy.upstream, copy.repository, reference);
          return registry_request("GET", copy.repository,
                                  "manifests/" + reference, accept);
        },
        limits_.max_manifest_bytes,
        [this, exchange, copy, reference, record_tag, outcome,
         grant](const CallResult &result) {
          on_manifest_fetched(exchange, copy, reference, record_tag, outcome,
                              result);
        },
        &joined);
    if (joined) {
      exchange->cache_result = CacheResult::Joined;
    }
  };
  auto refused = [this, exchange, copy, stale](double retry_after_s) {
    if (exchange->closed()) {
      return;
    }
    if (stale && serve_stale(exchange, copy, *stale,
                             "no budget to fetch its new digest")) {
      return;
    }
    respond_no_budget(exchange, copy, retry_after_s, "manifest");
  };
  when_budget_allows(exchange, route.upstream, CountedKind::ManifestGet, key,
                     stale.has_value(), std::move(granted), std::move(refused));
}

void RegistryService::on_manifest_fetched(ExchangePtr exchange,
                                          const Route &route,
                                          const std::string &reference,
                                          bool record_tag, CacheResult outcome,
                                          const CallResult &result) {
  if (result.error || result.head.status != 200) {
    if (!exchange->closed()) {
      respond_upstream_failure(exchange, route, result, "manifest");
    }
    return;
  }
  auto content_type = result.head.header("content-type");
  if (!content_type || content_type->empty()) {
    GC_LOG(Registry, error,
           "upstream={} repo={} ref={} sent a manifest without Content-Type",
           route.upstream, route.repository, reference);
    respond_error(exchange,
                  OciError::unavailable("upstream sent a manifest without a "
                                        "Content-Type"));
    return;
  }
  // The digest that names the bytes: the one asked for, or for a tag the
  // one the upstream announced, and in either case what the bytes hash to.
  auto requested = cache::Digest::parse(reference);
  auto announced_header = result.head.header("docker-content-digest");
  std::optional<cache::Digest> announced;
  if (requested) {
    announced = *requested;
  } else if (announced_header) {
    auto parsed = cache::Digest::parse(*announced_header);
    if (parsed) {
      announced = *parsed;
    }
  }
  auto algorithm =
      announced ? announced->algorithm : cache::DigestAlgorithm::Sha256;
  cache::Digest actual = cache::digest_of(result.body, algorithm);
  bool persist = true;
  if (announced && !(actual == *announced) &&
      same_media_type(*content_type, Schema1SignedMediaType)) {
    // Signed schema 1 manifests are named by their payload's digest.
    auto payload = schema1_payload(result.body);
    if (payload && cache::digest_of(*payload, algorithm) == *announced) {
      actual = *announced;
      // NOTE: the store checks files against the digest of their bytes,
      // which a signed schema 1 manifest never matches, so it is kept in
      // memory only and is not served while the upstream is down.
      persist = false;
    }
  }
  if (announced && !(actual == *announced)) {
    GC_LOG(Registry, error,
           "manifest digest mismatch upstream={} repo={} ref={} "
           "expected={} actual={}; nothing stored",
           route.upstream, route.repository, reference, announced->str(),
           actual.str());
    respond_error(exchange,
                  OciError::unavailable("upstream sent a manifest that does "
                                        "not match its digest"));
    return;
  }
  std::string digest = actual.str();
  auto checked = check_manifest_media_type(*content_type, result.body);
  if (!checked) {
    GC_LOG(Registry, error,
           "invalid manifest media type upstream={} repo={} digest={}: {}; "
           "nothing stored",
           route.upstream, route.repository, digest, checked.error().message);
    if (!exchange->closed()) {
      respond_error(
          exchange,
          OciError::unavailable(
              "upstream " + route.upstream + " sent manifest " + digest +
              " with an invalid media type: " + checked.error().message));
    }
    return;
  }
  auto entry = std::make_shared<ManifestEntry>();
  entry->bytes = std::make_shared<const std::string>(result.body);
  entry->media_type = std::move(*checked);
  entry->digest = digest;
  bool indexed = keep_stored_media_type(route, *entry);
  manifests_.put(entry);
  remember_repository(route, digest, false);
  if (!persist) {
    GC_LOG(Registry, debug, "serving schema 1 manifest {} from memory only",
           digest);
  } else if (!indexed) {
    store_manifest(route, actual, entry, record_tag ? route.reference : "");
  } else if (record_tag) {
    auto index = index_;
    Route copy = route;
    std::string type = entry->media_type;
    worker_.post(
        [index, copy, digest, type] {
          int64_t now = unix_now();
          (void)index->add_repository(digest, copy.upstream, copy.repository);
          (void)index->put_tag(copy.upstream, copy.repository, copy.reference,
                               cache::TagRecord{type, digest, now, now});
        },
        nullptr);
  }
  if (exchange->closed()) {
    return;
  }
  auto accepted = parse_accept(exchange->request().accept);
  if (!acceptable(accepted, entry->media_type)) {
    respond_error(exchange,
                  OciError{404, "MANIFEST_UNKNOWN",
                           "manifest " + digest + " is " + entry->media_type +
                               ", which the Accept header does not allow"});
    return;
  }
  if (exchange->cache_result == CacheResult::None) {
    exchange->cache_result = outcome;
  }
  send_manifest(exchange, *entry, exchange->cache_result);
}

bool RegistryService::keep_stored_media_type(const Route &route,
                                             ManifestEntry &entry) {
  // The index, not the memory cache, records whether the bytes are on
  // disk, because an evicted manifest can still be in memory. A record
  // with a type that is no manifest type was stored before types were
  // checked, and is replaced.
  std::optional<std::string> indexed_type;
  auto record = index_->get_content(entry.digest);
  if (record && *record && (*record)->kind == cache::ContentKind::Manifest) {
    std::string essence = media_type_essence((*record)->media_type);
    if (is_manifest_media_type(essence)) {
      indexed_type = std::move(essence);
    }
  }
  // Memory comes first because it also contains manifests whose index
  // write is still queued on the disk worker.
  std::optional<std::string> kept_type;
  if (auto cached = manifests_.get(entry.digest)) {
    kept_type = cached->media_type;
  } else {
    kept_type = indexed_type;
  }
  if (kept_type && *kept_type != entry.media_type) {
    GC_LOG(Registry, warn,
           "upstream={} repo={} sent manifest {} as {}, but it is stored as "
           "{}; serving the stored type",
           route.upstream, route.repository, entry.digest, entry.media_type,
           *kept_type);
    entry.media_type = *kept_type;
  }
  return indexed_type && *indexed_type == entry.media_type;
}

void RegistryService::store_manifest(const Route &route,
                                     const cache::Digest &digest,
                                     std::shared_ptr<const ManifestEntry> entry,
                                     const std::string &tag) {
  // Store the verified bytes, then index them, off the loop.
  auto store = store_;
  auto index = index_;
  Route copy = route;
  worker_.post(
      [store, index, digest, entry, copy, tag,
       max_bytes = config_->storage.max_size_bytes, recent = access_log_,
       evictions = evictions_, pins = pins_] {
        auto stored = store->put(digest, *entry->bytes);
        if (!stored) {
          GC_LOG(Cache, error, "storing manifest {} failed: {}", entry->digest,
                 stored.error().message);
          return;
        }
        int64_t now = unix_now();
        cache::ContentRecord record{entry->bytes->size(), entry->media_type,
                                    cache::ContentKind::Manifest, now};
        auto indexed = index->put_content(entry->digest, record, copy.upstream,
                                          copy.repository);
        if (indexed && !tag.empty()) {
          indexed = index->put_tag(
              copy.upstream, copy.repository, tag,
              cache::TagRecord{entry->media_type, entry->digest, now, now});
        }
        if (!indexed) {
          GC_LOG(Cache, error, "indexing manifest {} failed: {}", entry->digest,
                 indexed.error().message);
          return;
        }
        evict_if_needed(*store, *index, max_bytes, entry->digest, *recent,
                        *evictions, *pins);
      },
      nullptr);
}

void RegistryService::send_manifest(const ExchangePtr &exchange,
                                    const ManifestEntry &entry,
                                    CacheResult outcome) {
  if (exchange->cache_result == CacheResult::None ||
      outcome != CacheResult::Miss) {
    exchange->cache_result = outcome;
  }
  touch(entry.digest);
  Response response;
  response.status = 200;
  response.headers = content_headers(entry.media_type, entry.digest);
  response.head_length = static_cast<int64_t>(entry.bytes->size());
  if (exchange->request().method == Method::Get) {
    response.body = std::make_unique<front::MemoryBody>(entry.bytes);
  }
  exchange->respond(std::move(response));
}

std::shared_ptr<const ManifestEntry>
RegistryService::load_manifest(const std::string &digest) {
  if (auto entry = manifests_.get(digest)) {
    return entry;
  }
  auto parsed = cache::Digest::parse(digest);
  if (!parsed) {
    return nullptr;
  }
  auto record = index_->get_content(digest);
  if (!record || !*record || (*record)->kind != cache::ContentKind::Manifest ||
      (*record)->size > limits_.max_manifest_bytes) {
    return nullptr;
  }
  // A type that is no manifest type was stored before upstream types were
  // checked. The manifest is fetched again, which replaces the record.
  std::string media_type = media_type_essence((*record)->media_type);
  if (!is_manifest_media_type(media_type)) {
    GC_LOG(Cache, warn,
           "stored manifest {} has media type '{}'; fetching it again", digest,
           (*record)->media_type);
    return nullptr;
  }
  // NOTE: a blocking read on the loop. Manifests are small and recently
  // used ones stay in memory, so this runs once per manifest per start.
  auto fd = store_->open_read(*parsed);
  if (!fd) {
    return nullptr;
  }
  std::string bytes((*record)->size, '\0');
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t got = pread(*fd, bytes.data() + done, bytes.size() - done,
                        static_cast<off_t>(done));
    if (got < 0 && errno == EINTR) {
      continue;
    }
    if (got <= 0) {
      break;
    }
    done += static_cast<size_t>(got);
  }
  close(*fd);
  if (done != bytes.size() ||
      !(cache::digest_of(bytes, parsed->algorithm) == *parsed)) {
    GC_LOG(Cache, error, "stored manifest {} is damaged; dropping it", digest);
    return nullptr;
  }
  auto entry = std::make_shared<ManifestEntry>();
  entry->bytes = std::make_shared<const std::string>(std::move(bytes));
  entry->media_type = std::move(media_type);
  entry->digest = digest;
  manifests_.put(entry);
  return entry;
}

// ---- Blobs ------------------------------------------------------------

void RegistryService::serve_blob(ExchangePtr exchange, const Route &route) {
  auto digest = cache::Digest::parse(route.reference);
  if (!digest) {
    respond_error(exchange,
                  OciError{400, "DIGEST_INVALID", digest.error().message});
    return;
  }
  auto record = index_->get_content(route.reference);
  auto stored_size = store_->size_of(*digest);
  if (record && *record && stored_size && *stored_size != (*record)->size) {
    // A file whose size differs from the verified size was damaged on
    // disk. Drop it and fetch it again rather than serve wrong bytes.
    // NOTE: blocking unlink and index write on the loop; this path only
    // runs after outside damage to the store.
    GC_LOG(Cache, error,
           "stored blob {} has {} bytes but {} were verified; dropping it",
           route.reference, *stored_size, (*record)->size);
    (void)index_->remove_content(route.reference);
    (void)store_->remove(*digest);
    record = Result<std::optional<cache::ContentRecord>>(std::nullopt);
  }
  if (record && *record && stored_size) {
    cache::ContentRecord content = **record;
    if (repository_confirmed(route, route.reference)) {
      send_stored_blob(exchange, *digest, content, CacheResult::Hit);
      return;
    }
    cache::Digest copy = *digest;
    confirm_upstream(std::move(exchange), route, "blobs",
                     [this, copy, content](ExchangePtr confirmed) {
                       send_stored_blob(confirmed, copy, content,
                                        CacheResult::Hit);
                     });
    return;
  }
  auto running = fetches_.find(fetch_key(route.upstream, route.reference));
  if (running != fetches_.end()) {
    join_running_fetch(std::move(exchange), route, running->second);
    return;
  }
  if (exchange->request().method == Method::Head) {
    head_blob_upstream(std::move(exchange), route);
    return;
  }
  start_fetch(std::move(exchange), route, *digest);
}

void RegistryService::send_stored_blob(const ExchangePtr &exchange,
                                       const cache::Digest &digest,
                                       const cache::ContentRecord &record,
                                       CacheResult outcome) {
  exchange->cache_result = outcome;
  auto fd = store_->open_read(digest);
  if (!fd) {
    GC_LOG(Cache, error, "opening blob {} failed: {}", digest.str(),
           fd.error().message);
    respond_error(exchange,
                  OciError{404, "BLOB_UNKNOWN",
                           "blob " + digest.str() + " is not available"});
    return;
  }

  struct stat info {};

  if (fstat(*fd, &info) != 0) {
    close(*fd);
    GC_LOG(Cache, error, "fstat of blob {} failed: {}", digest.str(),
           errno_message("fstat", errno));
    respond_error(exchange,
                  OciError::unavailable("cannot read blob " + digest.str()));
    return;
  }
  uint64_t size = static_cast<uint64_t>(info.st_size);
  touch(digest.str());
  Response response;
  response.headers = content_headers(record.media_type, digest.str());
  uint64_t first = 0;
  uint64_t length = size;
  if (!apply_range(exchange, size, response, first, length)) {
    close(*fd);
    return;
  }
  response.head_length = static_cast<int64_t>(length);
  if (exchange->request().method == Method::Get) {
    auto body = front::FileBody::open(*fd, first, length);
    if (!body) {
      close(*fd);
      GC_LOG(Cache, error, "reading blob {} failed: {}", digest.str(),
             body.error().message);
      respond_error(exchange,
                    OciError::unavailable("cannot read blob " + digest.str()));
      return;
    }
    response.body = std::move(*body);
  }
  close(*fd);
  exchange->respond(std::move(response));
}

void RegistryService::start_fetch(ExchangePtr exchange, const Route &route,
                                  const cache::Digest &digest) {
  std::string key = "GET blob\n" + fetch_key(route.upstream, route.reference);
  Route copy = route;
  auto granted = [this, exchange, copy, digest](GrantPtr grant) {
    if (exchange->closed()) {
      return;
    }
    // Another request may have started the download while this one
    // waited for budget.
    auto running = fetches_.find(fetch_key(copy.upstream, copy.reference));
    if (running != fetches_.end()) {
      join_running_fetch(exchange, copy, running->second);
      return;
    }
    start_fetch_now(exchange, copy, digest, std::move(grant));
  };
  auto refused = [this, exchange, copy](double retry_after_s) {
    if (!exchange->closed()) {
      respond_no_budget(exchange, copy, retry_after_s, "blob");
    }
  };
  when_budget_allows(exchange, route.upstream, CountedKind::BlobGet, key, false,
                     std::move(granted), std::move(refused));
}

void RegistryService::start_fetch_now(ExchangePtr exchange, const Route &route,
                                      const cache::Digest &digest,
                                      GrantPtr grant) {
  auto fetch = std::make_shared<BlobFetch>(
      next_fetch_id(), digest, route.upstream, route.repository, store_);
  fetch->set_max_size(config_->storage.max_size_bytes);
  std::string key = fetch_key(route.upstream, route.reference);
  fetches_[key] = fetch;
  // The grant's in-flight slot is held until the download ends.
  fetch->on_finished(
      [this, key, grant = std::move(grant)](BlobFetch &finished) {
        auto found = fetches_.find(key);
        if (found != fetches_.end() && found->second.get() == &finished) {
          fetches_.erase(found);
        }
      });
  auto index = index_;
  auto store = store_;
  uint64_t max_bytes = config_->storage.max_size_bytes;
  std::string upstream = route.upstream;
  std::string repository = route.repository;
  std::string digest_text = digest.str();
  fetch->start(client_, origin_for(route.upstream), worker_,
               [index, store, max_bytes, upstream, repository, digest_text,
                recent = access_log_, evictions = evictions_,
                pins = pins_](cache::BlobStore::Writer &writer,
                              const std::string &media_type) -> Result<void> {
                 // Downloads of one digest from two upstreams may both
                 // commit. The second rename replaces the file with the
                 // same verified bytes, and readers of the first file keep
                 // their descriptors.
                 auto committed = writer.commit();
                 if (!committed) {
                   return committed;
                 }
                 cache::ContentRecord record{writer.size(), media_type,
                                             cache::ContentKind::Blob,
                                             unix_now()};
                 // Content keeps the kind and type it was first indexed
                 // with, such as a manifest also fetched as a blob.
                 auto existing = index->get_content(digest_text);
                 if (existing && *existing) {
                   record.media_type = (*existing)->media_type;
                   record.kind = (*existing)->kind;
                 }
                 auto indexed = index->put_content(digest_text, record,
                                                   upstream, repository);
                 if (!indexed) {
                   return indexed;
                 }
                 evict_if_needed(*store, *index, max_bytes, digest_text,
                                 *recent, *evictions, *pins);
                 return {};
               });
  remember_repository(route, route.reference, false);
  join_fetch(std::move(exchange), route, fetch, CacheResult::Miss);
}

void RegistryService::join_running_fetch(ExchangePtr exchange,
                                         const Route &route,
                                         std::shared_ptr<BlobFetch> fetch) {
  if (fetch->repository() == route.repository) {
    join_fetch(std::move(exchange), route, std::move(fetch),
               CacheResult::Joined);
    return;
  }
  // The download is for another repository of the same upstream, which
  // may contain blobs this one does not.
  Route copy = route;
  confirm_upstream(std::move(exchange), route, "blobs",
                   [this, copy, fetch](ExchangePtr confirmed) {
                     join_fetch(std::move(confirmed), copy, fetch,
                                CacheResult::Joined);
                   });
}

void RegistryService::join_fetch(ExchangePtr exchange, const Route &route,
                                 std::shared_ptr<BlobFetch> fetch,
                                 CacheResult outcome) {
  exchange->cache_result = outcome;
  exchange->fetch_id = fetch->id();
  // Failures are reported for the request's own repository, which may
  // differ from the one the download reads from.
  Route copy = route;
  fetch->on_head_known([this, exchange, copy, fetch](BlobFetch &known) {
    if (exchange->closed()) {
      return;
    }
    if (known.state() == BlobFetch::State::Failed) {
      CallResult result;
      result.head.status = known.upstream_status();
      if (known.upstream_status() == 0) {
        result.error = known.error();
      }
      if (known.retry_after()) {
        result.head.headers.emplace_back("retry-after", *known.retry_after());
      }
      respond_upstream_failure(exchange, copy, result, "blob");
      return;
    }
    int64_t size = known.size();
    if (size < 0) {
      // The upstream sent no Content-Length. Every response carries an
      // exact one and honours Range, so this client waits for the
      // verified blob and is served from the store.
      serve_blob_when_stored(exchange, copy, fetch);
      return;
    }
    Response response;
    response.headers =
        content_headers(known.media_type(), known.digest().str());
    uint64_t first = 0;
    uint64_t range_length = 0;
    if (!apply_range(exchange, static_cast<uint64_t>(size), response, first,
                     range_length)) {
      return;
    }
    auto length = static_cast<int64_t>(range_length);
    response.head_length = length;
    if (exchange->request().method == Method::Get) {
      response.body = std::make_unique<FetchBody>(fetch, first, length);
    }
    exchange->respond(std::move(response));
  });
}

void RegistryService::serve_blob_when_stored(const ExchangePtr &exchange,
                                             const Route &route,
                                             std::shared_ptr<BlobFetch> fetch) {
  fetch->on_finished([this, exchange, route](BlobFetch &finished) {
    if (exchange->closed()) {
      return;
    }
    auto record = index_->get_content(finished.digest().str());
    if (finished.state() != BlobFetch::State::Done || !record || !*record) {
      CallResult result;
      result.head.status = finished.upstream_status();
      if (finished.upstream_status() == 0) {
        result.error = finished.error();
      }
      respond_upstream_failure(exchange, route, result, "blob");
      return;
    }
    send_stored_blob(exchange, finished.digest(), **record,
                     exchange->cache_result);
  });
}

void RegistryService::head_blob_upstream(ExchangePtr exchange,
                                         const Route &route) {
  std::string key = "HEAD blob\n" + member_key(route.upstream, route.repository,
                                               route.reference);
  Route copy = route;
  exchange->fetch_id = calls_.run(
      key, origin_for(route.upstream),
      [&] {
        return registry_request("HEAD", route.repository,
                                "blobs/" + route.reference);
      },
      0,
      [this, exchange, copy](const CallResult &result) {
        if (exchange->closed()) {
          return;
        }
        if (result.error || result.head.status != 200) {
          respond_upstream_failure(exchange, copy, result, "blob");
          return;
        }
        respond_blob_head(exchange, copy, result.head);
      });
}

void RegistryService::respond_blob_head(const ExchangePtr &exchange,
                                        const Route &route,
                                        const upstream::ResponseHead &head) {
  // The size is what a GET would send, so it must be exact. A value that
  // is not a plain decimal integer makes the upstream's response unusable.
  auto length_header = head.header("content-length");
  auto size = length_header ? parse_content_length(*length_header)
                            : std::optional<int64_t>();
  if (length_header && !size) {
    GC_LOG(Registry, warn,
           "upstream={} repo={} sent Content-Length '{}' for blob {}",
           route.upstream, route.repository, *length_header, route.reference);
    respond_error(exchange, OciError::unavailable(
                                "upstream " + route.upstream +
                                " sent an invalid Content-Length for blob " +
                                route.reference));
    return;
  }
  exchange->cache_result = CacheResult::Miss;
  Response response;
  response.headers = content_headers(
      blob_media_type(head.header("content-type")), route.reference);
  if (!size) {
    // The upstream's HEAD gave no size, so this HEAD cannot either: a
    // Range is ignored and no Accept-Ranges is sent.
    // TODO: fetch the blob and respond from the store, as a GET does.
    response.status = 200;
    exchange->respond(std::move(response));
    return;
  }
  uint64_t first = 0;
  uint64_t length = 0;
  if (!apply_range(exchange, static_cast<uint64_t>(*size), response, first,
                   length)) {
    return;
  }
  response.head_length = static_cast<int64_t>(length);
  exchange->respond(std::move(response));
}

// ---- Repository membership -------------------------------------------

bool RegistryService::repository_confirmed(const Route &route,
                                           const std::string &digest) {
  std::string key = member_key(route.upstream, route.repository, digest);
  if (confirmed_.contains(key)) {
    return true;
  }
  auto known = index_->has_repository(digest, route.upstream, route.repository);
  if (known && *known) {
    confirmed_.insert(std::move(key));
    return true;
  }
  return false;
}

void RegistryService::remember_repository(const Route &route,
                                          const std::string &digest,
                                          bool persist) {
  // The set caches positive index lookups only. Clearing it when large
  // bounds its memory at the cost of some repeated lookups.
  if (confirmed_.size() > 1'000'000) {
    confirmed_.clear();
  }
  confirmed_.insert(member_key(route.upstream, route.repository, digest));
  if (persist) {
    auto index = index_;
    Route copy = route;
    worker_.post(
        [index, copy, digest] {
          (void)index->add_repository(digest, copy.upstream, copy.repository);
        },
        nullptr);
  }
}

void RegistryService::confirm_upstream(
    ExchangePtr exchange, const Route &route, const std::string &what,
    std::function<void(ExchangePtr)> on_confirmed) {
  std::string key =
      "HEAD " + what + "\n" +
      member_key(route.upstream, route.repository, route.reference);
  Route copy = route;
  exchange->fetch_id = calls_.run(
      key, origin_for(route.upstream),
      [&] {
        return registry_request("HEAD", route.repository,
                                what + "/" + route.reference, "*/*");
      },
      0,
      [this, exchange, copy, what,
       on_confirmed = std::move(on_confirmed)](const CallResult &result) {
        if (exchange->closed()) {
          return;
        }
        if (result.error || result.head.status != 200) {
          respond_upstream_failure(exchange, copy, result,
                                   what == "blobs" ? "blob" : "manifest");
          return;
        }
        remember_repository(copy, copy.reference, true);
        on_confirmed(exchange);
      });
}

// ---- Other endpoints and helpers -------------------------------------

// TODO: keep tag lists for a short time; every request that does not
// join a running one reaches the upstream.
void RegistryService::serve_tags_list(ExchangePtr exchange,
                                      const Route &route) {
  std::string key = "GET tags\n" + route.upstream + "\n" + route.repository;
  Route copy = route;
  exchange->fetch_id = calls_.run(
      key, origin_for(route.upstream),
      [&] { return registry_request("GET", route.repository, "tags/list"); },
      MaxTagListBytes,
      [this, exchange, copy](const CallResult &result) {
        if (exchange->closed()) {
          return;
        }
        if (result.error || result.head.status != 200) {
          respond_upstream_failure(exchange, copy, result, "repository");
          return;
        }
        // TODO: follow `Link` pagination; only the first page is relayed.
        Response response;
        response.headers = {
            {"content-type",
             result.head.header("content-type").value_or("application/json")}};
        response.head_length = static_cast<int64_t>(result.body.size());
        if (exchange->request().method == Method::Get) {
          response.body = std::make_unique<front::MemoryBody>(result.body);
        }
        exchange->respond(std::move(response));
      });
}

void RegistryService::respond_error(const ExchangePtr &exchange,
                                    const OciError &error, HeaderList extra) {
  respond_oci_error(exchange, error, std::move(extra));
}

void RegistryService::respond_upstream_failure(const ExchangePtr &exchange,
                                               const Route &route,
                                               const CallResult &result,
                                               const std::string &what) {
  std::string subject = route.upstream + "/" + route.repository;
  if (result.error && result.error->code == ErrorCode::StorageFull) {
    respond_error(exchange, OciError::unavailable(result.error->message));
    return;
  }
  if (result.error) {
    GC_LOG(Registry, warn, "upstream={} repo={} failed for {} f={}: {}",
           route.upstream, route.repository, what, exchange->fetch_id,
           result.error->message);
    respond_error(exchange,
                  OciError{503, "UNAVAILABLE",
                           "upstream " + route.upstream +
                               " is unavailable and no cached copy exists"});
    return;
  }
  int status = result.head.status;
  if (status == 404) {
    std::string code = what == "blob"       ? "BLOB_UNKNOWN"
                       : what == "manifest" ? "MANIFEST_UNKNOWN"
                                            : "NAME_UNKNOWN";
    respond_error(exchange,
                  OciError{404, code, what + " not found in " + subject});
    return;
  }
  if (status == 429) {
    HeaderList extra;
    if (auto retry = result.head.header("retry-after")) {
      extra.emplace_back("retry-after", *retry);
    }
    respond_error(exchange,
                  OciError{429, "TOOMANYREQUESTS",
                           "upstream " + route.upstream +
                               " is rate limiting and no cached copy exists"},
                  std::move(extra));
    return;
  }
  if (status == 401 || status == 403) {
    respond_error(exchange, OciError{403, "DENIED",
                                     "upstream denied access to " + subject});
    return;
  }
  GC_LOG(Registry, warn, "upstream={} repo={} answered {} for {}",
         route.upstream, route.repository, status, what);
  respond_error(exchange, OciError{503, "UNAVAILABLE",
                                   "upstream " + route.upstream + " answered " +
                                       std::to_string(status)});
}

const upstream::Origin &
RegistryService::origin_for(const std::string &upstream) {
  return origins_.at(upstream);
}

void RegistryService::touch(const std::string &digest) {
  access_log_->add(digest, static_cast<int64_t>(ev_now(loop_)));
}

void RegistryService::flush_access_times() {
  auto index = index_;
  auto recent = access_log_;
  worker_.post([index, recent] { recent->flush(*index); }, nullptr);
}

void RegistryService::on_flush_timer(struct ev_loop *, ev_timer *timer, int) {
  static_cast<RegistryService *>(timer->data)->flush_access_times();
}

} // namespace gatecache::registry
