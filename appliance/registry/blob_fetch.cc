#include "appliance/registry/blob_fetch.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <utility>

#include <unistd.h>

#include "appliance/registry/disk_worker.h"
#include "appliance/registry/media_type.h"
#include "common/log.h"

namespace gatecache::registry {

namespace {

// Read size for readers that follow a download. Large reads keep the
// session's TLS records full without many system calls.
constexpr size_t ReadBufferBytes = 256 * 1024;

} // namespace

std::optional<int64_t> parse_content_length(std::string_view value) {
  // from_chars alone would accept a leading '-'.
  if (value.empty() ||
      value.find_first_not_of("0123456789") != std::string_view::npos) {
    return std::nullopt;
  }
  int64_t length = 0;
  auto [end, ec] =
      std::from_chars(value.data(), value.data() + value.size(), length);
  if (ec != std::errc() || end != value.data() + value.size()) {
    return std::nullopt;
  }
  return length;
}

std::string blob_media_type(const std::optional<std::string> &content_type) {
  if (!content_type || content_type->empty()) {
    return std::string(DefaultBlobMediaType);
  }
  return *content_type;
}

BlobFetch::BlobFetch(uint64_t id, cache::Digest digest, std::string upstream,
                     std::string repository,
                     std::shared_ptr<cache::BlobStore> store)
    : id_(id), digest_(std::move(digest)), upstream_(std::move(upstream)),
      repository_(std::move(repository)), store_(std::move(store)) {}

BlobFetch::~BlobFetch() {
  if (client_ != nullptr &&
      (state_ == State::Connecting || state_ == State::Receiving)) {
    client_->cancel(request_id_);
  }
}

void BlobFetch::start(
    upstream::Client &client, const upstream::Origin &origin,
    DiskWorker &worker,
    std::function<Result<void>(cache::BlobStore::Writer &, const std::string &)>
        commit) {
  client_ = &client;
  worker_ = &worker;
  commit_ = std::move(commit);
  upstream::Request request;
  request.method = "GET";
  request.path = "/v2/" + repository_ + "/blobs/" + digest_.str();
  request.scope = "repository:" + repository_ + ":pull";
  GC_LOG(Registry, info, "fetching blob f={} upstream={} repo={} digest={}",
         id_, upstream_, repository_, digest_.str());
  request_id_ = client.start(origin, std::move(request), this);
}

void BlobFetch::on_head_known(HeadCallback callback) {
  if (head_notified_) {
    callback(*this);
    return;
  }
  head_callbacks_.push_back(std::move(callback));
}

void BlobFetch::on_finished(DoneCallback callback) {
  if (state_ == State::Done || state_ == State::Failed) {
    callback(*this);
    return;
  }
  done_callbacks_.push_back(std::move(callback));
}

uint64_t BlobFetch::subscribe(std::function<void()> wakeup) {
  uint64_t token = next_token_++;
  subscribers_.emplace_back(token, std::move(wakeup));
  return token;
}

void BlobFetch::unsubscribe(uint64_t token) {
  std::erase_if(subscribers_,
                [token](const auto &entry) { return entry.first == token; });
}

void BlobFetch::on_head(const upstream::ResponseHead &head) {
  if (head.status != 200) {
    upstream_status_ = head.status;
    retry_after_ = head.header("retry-after");
    ErrorCode code = ErrorCode::UpstreamRejected;
    if (head.status == 404) {
      code = ErrorCode::NotFound;
    } else if (head.status == 429) {
      code = ErrorCode::RateLimited;
    } else if (head.status == 401 || head.status == 403) {
      code = ErrorCode::Unauthorized;
    }
    fail(Error{code, "upstream returned " + std::to_string(head.status) +
                         " for blob " + digest_.str()});
    return;
  }
  // NOTE: a malformed Content-Length is treated as absent, and the digest
  // check at the end still decides whether the bytes are stored.
  auto length_header = head.header("content-length");
  auto length =
      length_header ? parse_content_length(*length_header) : std::nullopt;
  size_ = length.value_or(-1);
  if (size_ >= 0 && static_cast<uint64_t>(size_) > max_size_) {
    fail(Error{ErrorCode::StorageFull,
               "blob " + digest_.str() + " has " + std::to_string(size_) +
                   " bytes, more than storage.max_size (" +
                   std::to_string(max_size_) + ")"});
    return;
  }
  media_type_ = blob_media_type(head.header("content-type"));
  std::optional<uint64_t> expected;
  if (size_ >= 0) {
    expected = static_cast<uint64_t>(size_);
  }
  auto writer = store_->create_writer(digest_, expected);
  if (!writer) {
    fail(writer.error());
    return;
  }
  writer_ = std::move(*writer);
  state_ = State::Receiving;
  head_known();
}

bool BlobFetch::on_data(const uint8_t *data, size_t size) {
  if (state_ != State::Receiving) {
    return false;
  }
  if (writer_->size() + size > max_size_) {
    fail(Error{ErrorCode::StorageFull,
               "blob " + digest_.str() + " grew past storage.max_size (" +
                   std::to_string(max_size_) + " bytes)"});
    return false;
  }
  auto appended = writer_->append(data, size);
  if (!appended) {
    fail(appended.error());
    return false;
  }
  notify();
  return true;
}

void BlobFetch::on_complete(std::optional<Error> error) {
  if (state_ == State::Failed) {
    return;
  }
  if (error) {
    fail(std::move(*error));
    return;
  }
  if (state_ != State::Receiving) {
    fail(Error{ErrorCode::Internal, "upstream response ended without a head"});
    return;
  }
  state_ = State::Verifying;
  auto self = shared_from_this();
  auto result = std::make_shared<Result<void>>();
  worker_->post(
      [self, result] {
        *result = self->commit_(*self->writer_, self->media_type_);
      },
      [self, result] {
        if (!*result) {
          self->fail(result->error());
          return;
        }
        self->state_ = State::Done;
        if (self->size_ < 0) {
          self->size_ = static_cast<int64_t>(self->writer_->size());
        }
        GC_LOG(Registry, info, "stored blob f={} digest={} bytes={}", self->id_,
               self->digest_.str(), self->size_);
        self->notify();
        self->finished();
      });
}

void BlobFetch::fail(Error error) {
  if (state_ == State::Failed || state_ == State::Done) {
    return;
  }
  state_ = State::Failed;
  error_ = std::move(error);
  if (writer_) {
    writer_->abort();
  }
  GC_LOG(Registry, warn,
         "blob fetch failed f={} upstream={} repo={} "
         "digest={} error={}: {}",
         id_, upstream_, repository_, digest_.str(), to_string(error_.code),
         error_.message);
  head_known();
  notify();
  finished();
}

void BlobFetch::notify() {
  // A wakeup may unsubscribe (the reader finished), so iterate a copy.
  auto subscribers = subscribers_;
  for (auto &[token, wakeup] : subscribers) {
    wakeup();
  }
}

void BlobFetch::head_known() {
  if (head_notified_) {
    return;
  }
  head_notified_ = true;
  auto callbacks = std::move(head_callbacks_);
  head_callbacks_.clear();
  for (auto &callback : callbacks) {
    callback(*this);
  }
}

void BlobFetch::finished() {
  auto callbacks = std::move(done_callbacks_);
  done_callbacks_.clear();
  for (auto &callback : callbacks) {
    callback(*this);
  }
}

FetchBody::FetchBody(std::shared_ptr<BlobFetch> fetch, uint64_t first,
                     int64_t length)
    : fetch_(std::move(fetch)), position_(first), length_(length),
      end_(length >= 0 ? first + static_cast<uint64_t>(length) : UINT64_MAX) {
  token_ = fetch_->subscribe([this] { wake(); });
}

FetchBody::~FetchBody() { fetch_->unsubscribe(token_); }

front::BodyChunk FetchBody::next(size_t max) {
  using State = BlobFetch::State;
  State state = fetch_->state();
  if (state == State::Failed) {
    return {front::BodyChunk::State::Error};
  }
  if (buffer_offset_ < buffer_size_) {
    size_t n = std::min(max, buffer_size_ - buffer_offset_);
    return {front::BodyChunk::State::Data, buffer_.data() + buffer_offset_, n};
  }

  uint64_t end = end_;
  if (end == UINT64_MAX && state == State::Done) {
    end = static_cast<uint64_t>(fetch_->size());
  }
  if (state == State::Done && position_ >= end) {
    return {front::BodyChunk::State::End};
  }

  // Until the digest is verified, hold back the last byte of the response
  // so no client can take an unverified body as complete.
  uint64_t limit = fetch_->available();
  if (state == State::Done) {
    limit = std::min(limit, end);
  } else if (end == UINT64_MAX) {
    // Size unknown: any byte may be the last one.
    limit = limit == 0 ? 0 : limit - 1;
  } else {
    limit = std::min(limit, end - 1);
  }
  if (position_ >= limit) {
    return {front::BodyChunk::State::Wait};
  }

  if (buffer_.empty()) {
    buffer_.resize(ReadBufferBytes);
  }
  size_t want = static_cast<size_t>(
      std::min<uint64_t>(limit - position_, buffer_.size()));
  ssize_t got;
  do {
    got = pread(fetch_->read_fd(), buffer_.data(), want,
                static_cast<off_t>(position_));
  } while (got < 0 && errno == EINTR);
  if (got <= 0) {
    GC_LOG(Registry, error, "reading download f={} at {} failed: {}",
           fetch_->id(), position_,
           got < 0 ? errno_message("pread", errno) : "unexpected end");
    return {front::BodyChunk::State::Error};
  }

  buffer_offset_ = 0;
  buffer_size_ = static_cast<size_t>(got);
  size_t n = std::min(max, buffer_size_);
  return {front::BodyChunk::State::Data, buffer_.data(), n};
}

void FetchBody::consume(size_t n) {
  buffer_offset_ += n;
  position_ += n;
  if (buffer_offset_ >= buffer_size_) {
    buffer_offset_ = 0;
    buffer_size_ = 0;
  }
}

} // namespace gatecache::registry
