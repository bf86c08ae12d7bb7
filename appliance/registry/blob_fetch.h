// One upstream download of a blob, shared by every request for its digest.
//
// Bytes go straight into a `BlobStore::Writer` as they arrive, and readers
// (`FetchBody`) follow the temp file as it grows, so every client is served
// from the single download while it is still running. A response is never
// completed before the whole blob is verified: readers hold back the last
// byte of what they serve until `commit()` has checked the digest. When the
// download fails or the digest does not match, every reader gets
// `BodyChunk::Error` and the session aborts its response.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "appliance/front/exchange.h"
#include "appliance/upstream/client.h"
#include "cache/blob_store.h"
#include "cache/digest.h"
#include "common/error.h"

namespace gatecache::registry {

class DiskWorker;

// Parses a Content-Length value: decimal digits only, within int64_t.
// Returns nullopt for anything else, such as a sign, spaces or overflow.
std::optional<int64_t> parse_content_length(std::string_view value);

// Returns the Content-Type to serve a blob with: the upstream's, or
// application/octet-stream when it sent none.
std::string blob_media_type(const std::optional<std::string> &content_type);

class BlobFetch : public upstream::ResponseHandler,
                  public std::enable_shared_from_this<BlobFetch> {
public:
  enum class State { Connecting, Receiving, Verifying, Done, Failed };

  // Called once the response head is known (`Receiving`), or on failure
  // before that. Waiters use it to respond with the right status.
  using HeadCallback = std::function<void(BlobFetch &)>;
  // Called once the fetch is done or failed and the result is stored.
  using DoneCallback = std::function<void(BlobFetch &)>;

  BlobFetch(uint64_t id, cache::Digest digest, std::string upstream,
            std::string repository, std::shared_ptr<cache::BlobStore> store);
  ~BlobFetch() override;

  // Rejects blobs larger than `max_bytes` (storage.max_size): the store
  // could never keep them, and an upstream must not fill the disk.
  void set_max_size(uint64_t max_bytes) { max_size_ = max_bytes; }

  uint64_t id() const { return id_; }

  const cache::Digest &digest() const { return digest_; }

  const std::string &upstream() const { return upstream_; }

  const std::string &repository() const { return repository_; }

  State state() const { return state_; }

  // Total size from Content-Length, or -1 while unknown.
  int64_t size() const { return size_; }

  const std::string &media_type() const { return media_type_; }

  // Bytes written to the temp file so far.
  uint64_t available() const { return writer_ ? writer_->size() : 0; }

  int read_fd() const { return writer_ ? writer_->read_fd() : -1; }

  // Upstream status when the fetch failed because of it (404, 429, ...).
  int upstream_status() const { return upstream_status_; }

  const std::optional<std::string> &retry_after() const { return retry_after_; }

  const Error &error() const { return error_; }

  // Adds a callback for the response head (runs at once if known).
  void on_head_known(HeadCallback callback);
  // Adds a callback for the end (runs at once if ended).
  void on_finished(DoneCallback callback);

  // Registers a reader to wake on progress. Returns a token for removal.
  uint64_t subscribe(std::function<void()> wakeup);
  void unsubscribe(uint64_t token);

  // Hooks the fetch up to the upstream client and the disk worker. `commit`
  // runs on the disk worker after the body ended and must verify, store and
  // index the blob; its result decides `Done` or `Failed`.
  void start(upstream::Client &client, const upstream::Origin &origin,
             DiskWorker &worker,
             std::function<Result<void>(cache::BlobStore::Writer &,
                                        const std::string &media_type)>
                 commit);

  // upstream::ResponseHandler
  void on_head(const upstream::ResponseHead &head) override;
  bool on_data(const uint8_t *data, size_t size) override;
  void on_complete(std::optional<Error> error) override;

private:
  void fail(Error error);
  void notify();
  void head_known();
  void finished();

  uint64_t id_;
  cache::Digest digest_;
  std::string upstream_;
  std::string repository_;
  std::shared_ptr<cache::BlobStore> store_;
  DiskWorker *worker_ = nullptr;
  std::function<Result<void>(cache::BlobStore::Writer &, const std::string &)>
      commit_;
  std::unique_ptr<cache::BlobStore::Writer> writer_;
  State state_ = State::Connecting;
  int64_t size_ = -1;
  uint64_t max_size_ = UINT64_MAX;
  std::string media_type_;
  int upstream_status_ = 0;
  std::optional<std::string> retry_after_;
  Error error_;
  bool head_notified_ = false;
  std::vector<HeadCallback> head_callbacks_;
  std::vector<DoneCallback> done_callbacks_;
  std::vector<std::pair<uint64_t, std::function<void()>>> subscribers_;
  uint64_t next_token_ = 1;
  upstream::Client *client_ = nullptr;
  uint64_t request_id_ = 0;
};

// NOTE: a reader was seen to fall far behind a fast loopback download
// while the machine was loaded. How the loop shares time between the
// download and its readers is not yet measured.
//
// A response body read from a `BlobFetch` as the download grows. Serves
// bytes [first, first + length) of the blob; `length` -1 means "to the end,
// size not known yet" (then the session uses chunked encoding on HTTP/1.1).
class FetchBody final : public front::BodySource {
public:
  FetchBody(std::shared_ptr<BlobFetch> fetch, uint64_t first, int64_t length);
  ~FetchBody() override;

  front::BodyChunk next(size_t max) override;
  void consume(size_t n) override;

  int64_t length() const override { return length_; }

private:
  std::shared_ptr<BlobFetch> fetch_;
  uint64_t token_ = 0;
  uint64_t position_; // Next blob offset to send.
  int64_t length_;    // As announced, -1 when unknown.
  uint64_t end_;      // One past the last blob offset to send.
  std::vector<uint8_t> buffer_;
  size_t buffer_offset_ = 0; // Consumed bytes at the front of `buffer_`.
  size_t buffer_size_ = 0;   // Valid bytes in `buffer_`.
};

} // namespace gatecache::registry
