#include "cache/scrubber.h"

#include <cerrno>
#include <chrono>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"

namespace gatecache::cache {

namespace {

constexpr const char *LastPassKey = "scrub/last_pass";
// Bytes hashed per `pread`, and so between two checks of the rate and of
// `stop()`.
constexpr size_t ChunkBytes = 1 << 20;

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

} // namespace

Scrubber::Scrubber(std::shared_ptr<BlobStore> store, Index &index,
                   Options options, DamageCallback on_damaged)
    : store_(std::move(store)), index_(index), options_(options),
      on_damaged_(std::move(on_damaged)) {}

Scrubber::~Scrubber() { stop(); }

void Scrubber::start() {
  std::lock_guard lock(mutex_);
  if (thread_.joinable()) {
    return;
  }
  stopping_ = false;
  thread_ = std::thread([this] { run(); });
}

void Scrubber::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
  }
}

void Scrubber::run_now() {
  {
    std::lock_guard lock(mutex_);
    requested_ = true;
  }
  wake_.notify_all();
}

Scrubber::Stats Scrubber::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void Scrubber::run() {
  int64_t last_pass = load_last_pass();
  {
    std::lock_guard lock(mutex_);
    stats_.last_pass_end = last_pass;
  }
  while (wait_for_next_pass()) {
    scrub_all();
  }
}

bool Scrubber::wait_for_next_pass() {
  std::unique_lock lock(mutex_);
  for (;;) {
    if (stopping_) {
      return false;
    }
    if (requested_) {
      requested_ = false;
      return true;
    }
    if (options_.interval_s <= 0) {
      wake_.wait(lock);
      continue;
    }
    auto due = std::chrono::system_clock::from_time_t(
                   static_cast<time_t>(stats_.last_pass_end)) +
               std::chrono::duration_cast<std::chrono::system_clock::duration>(
                   std::chrono::duration<double>(options_.interval_s));
    if (std::chrono::system_clock::now() >= due) {
      return true;
    }
    wake_.wait_until(lock, due);
  }
}

void Scrubber::scrub_all() {
  std::vector<Digest> digests;
  auto listed = store_->for_each([&digests](const Digest &digest, uint64_t) {
    digests.push_back(digest);
    return true;
  });
  if (!listed) {
    GC_LOG(Cache, error, "scrub cannot list the blob store: {}",
           listed.error().message);
  }

  {
    std::lock_guard lock(mutex_);
    stats_.running = true;
  }
  GC_LOG(Cache, info, "scrub pass started: {} files", digests.size());
  auto started = std::chrono::steady_clock::now();
  uint64_t files = 0;
  uint64_t damaged = 0;
  pass_bytes_ = 0;
  pass_started_ = started;
  bool stopped = false;
  for (const Digest &digest : digests) {
    Check check = check_file(digest);
    if (check == Check::Stopped) {
      stopped = true;
      break;
    }
    if (check == Check::Gone) {
      continue;
    }
    ++files;
    if (check == Check::Damaged) {
      ++damaged;
    }
  }

  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started)
          .count();
  std::lock_guard lock(mutex_);
  stats_.running = false;
  if (stopped) {
    GC_LOG(
        Cache, info,
        "scrub pass stopped after {} files, {} bytes, {} damaged in {:.1f} s",
        files, pass_bytes_, damaged, seconds);
    return;
  }
  stats_.passes += 1;
  stats_.last_pass_end = unix_now();
  save_last_pass(stats_.last_pass_end);
  GC_LOG(Cache, info,
         "scrub pass finished: {} files, {} bytes, {} damaged in {:.1f} s",
         files, pass_bytes_, damaged, seconds);
}

Scrubber::Check Scrubber::check_file(const Digest &digest) {
  auto fd = store_->open_read(digest);
  if (!fd) {
    // Evicted since the listing.
    return Check::Gone;
  }
  std::vector<uint8_t> buffer(ChunkBytes);
  Hasher hasher(digest.algorithm);
  uint64_t offset = 0;
  for (;;) {
    ssize_t got =
        ::pread(*fd, buffer.data(), buffer.size(), static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) {
      continue;
    }
    if (got < 0) {
      int error = errno;
      ::close(*fd);
      // A read error is a disk fault too, but removing content the disk
      // may still return on a retry would lose it for good, so the next
      // pass looks again.
      GC_LOG(Cache, error, "scrub cannot read {}: {}", digest.str(),
             errno_message("pread", error));
      return Check::Intact;
    }
    if (got == 0) {
      break;
    }
    hasher.update(buffer.data(), static_cast<size_t>(got));
    offset += static_cast<uint64_t>(got);
    {
      std::lock_guard lock(mutex_);
      stats_.bytes += static_cast<uint64_t>(got);
    }
    pass_bytes_ += static_cast<uint64_t>(got);
    if (!pace()) {
      ::close(*fd);
      return Check::Stopped;
    }
  }

  Digest actual = hasher.finish();
  Check result = Check::Intact;
  if (!(actual == digest)) {
    remove_damaged(digest, actual, *fd);
    result = Check::Damaged;
  }
  ::close(*fd);
  std::lock_guard lock(mutex_);
  stats_.files += 1;
  if (result == Check::Damaged) {
    stats_.damaged += 1;
  }
  return result;
}

void Scrubber::remove_damaged(const Digest &digest, const Digest &actual,
                              int fd) {
  // The file may have been evicted and fetched again while it was read.
  // Only the file that was hashed is removed.
  struct stat hashed {};

  struct stat current {};

  auto path = store_->path_for(digest);
  if (::fstat(fd, &hashed) != 0 || ::stat(path.c_str(), &current) != 0 ||
      hashed.st_dev != current.st_dev || hashed.st_ino != current.st_ino) {
    GC_LOG(Cache, info,
           "scrub found {} damaged, but it was replaced since; leaving the "
           "new file",
           digest.str());
    return;
  }
  GC_LOG(Cache, error,
         "stored content {} is damaged: it hashes to {}; removing it, so the "
         "next request fetches it again",
         digest.str(), actual.str());
  auto unindexed = index_.remove_content(digest.str());
  if (!unindexed) {
    GC_LOG(Cache, error, "removing the index record of {} failed: {}",
           digest.str(), unindexed.error().message);
  }
  auto removed = store_->remove(digest);
  if (!removed) {
    GC_LOG(Cache, error, "removing damaged content {} failed: {}", digest.str(),
           removed.error().message);
  }
  if (on_damaged_) {
    on_damaged_(digest);
  }
}

bool Scrubber::pace() {
  auto elapsed = std::chrono::steady_clock::now() - pass_started_;
  std::chrono::duration<double> due(
      static_cast<double>(pass_bytes_) /
      static_cast<double>(options_.rate_bytes_per_s));
  std::unique_lock lock(mutex_);
  if (stopping_) {
    return false;
  }
  if (due > elapsed) {
    wake_.wait_for(lock, due - elapsed, [this] { return stopping_; });
  }
  return !stopping_;
}

int64_t Scrubber::load_last_pass() {
  auto stored = index_.get_state(LastPassKey);
  if (stored && *stored) {
    try {
      return std::stoll(**stored);
    } catch (const std::exception &) {
      GC_LOG(Cache, warn, "ignoring an invalid {} record in the index",
             LastPassKey);
    }
  }
  // Everything in a new store was verified on the way in.
  int64_t now = unix_now();
  save_last_pass(now);
  return now;
}

void Scrubber::save_last_pass(int64_t when) {
  auto saved = index_.put_state(LastPassKey, std::to_string(when));
  if (!saved) {
    GC_LOG(Cache, warn, "saving the scrub time failed: {}",
           saved.error().message);
  }
}

} // namespace gatecache::cache
