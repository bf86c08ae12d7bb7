#include "appliance/registry/prewarmer.h"

#include <algorithm>
#include <utility>

#include "appliance/registry/service.h"
#include "appliance/registry/usage.h"
#include "common/log.h"

namespace gatecache::registry {

namespace {

// Images of one job fetched at once, and blobs of one image.
constexpr size_t ParallelImages = 2;
constexpr size_t ParallelBlobs = 3;
// Largest manifest body kept; the service rejects larger ones anyway.
constexpr size_t MaxManifestBytes = 8 << 20;

const char *const ManifestAccept =
    "application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json";

const char *const ForeignLayerType =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

std::string pins_key(const std::string &set) { return "pins/" + set; }

std::string join_lines(const std::vector<std::string> &lines) {
  std::string text;
  for (const auto &line : lines) {
    text += line;
    text += '\n';
  }
  return text;
}

struct Platform {
  std::string os;
  std::string architecture;
  std::string variant;
};

Platform parse_platform(const std::string &text) {
  Platform platform;
  size_t first = text.find('/');
  platform.os = text.substr(0, first);
  if (first == std::string::npos) {
    return platform;
  }
  size_t second = text.find('/', first + 1);
  platform.architecture =
      text.substr(first + 1, second == std::string::npos ? std::string::npos
                                                         : second - first - 1);
  if (second != std::string::npos) {
    platform.variant = text.substr(second + 1);
  }
  return platform;
}

// True when index entry `entry` is an image for `wanted`. A wanted platform
// without a variant takes any variant. Attestation manifests, which carry
// the platform unknown/unknown, never match.
bool platform_matches(const nlohmann::json &entry, const Platform &wanted) {
  auto platform = entry.find("platform");
  if (platform == entry.end() || !platform->is_object()) {
    return false;
  }
  std::string os = platform->value("os", "");
  std::string architecture = platform->value("architecture", "");
  std::string variant = platform->value("variant", "");
  if (os == "unknown" || architecture == "unknown") {
    return false;
  }
  return os == wanted.os && architecture == wanted.architecture &&
         (wanted.variant.empty() || variant == wanted.variant);
}

bool is_index(const std::string &media_type, const nlohmann::json &document) {
  if (media_type == "application/vnd.oci.image.index.v1+json" ||
      media_type ==
          "application/vnd.docker.distribution.manifest.list.v2+json") {
    return true;
  }
  return document.contains("manifests") && !document.contains("layers");
}

} // namespace

// ---- PinSet -------------------------------------------------------------

bool PinSet::contains(const std::string &digest) const {
  std::lock_guard lock(mutex_);
  return all_.contains(digest);
}

void PinSet::assign(const std::string &set, std::vector<std::string> digests) {
  std::lock_guard lock(mutex_);
  auto &current = by_set_[set];
  for (const auto &digest : current) {
    auto it = all_.find(digest);
    if (it != all_.end()) {
      all_.erase(it);
    }
  }
  current = std::move(digests);
  for (const auto &digest : current) {
    all_.insert(digest);
  }
}

// ---- Jobs ---------------------------------------------------------------

struct Prewarmer::ImageTask {
  prewarm::ImageRef ref;
  std::string set;
  enum class State { Queued, Running, Done, Failed } state = State::Queued;
  uint64_t bytes = 0;
  std::string error;
  size_t outstanding = 0;
  std::vector<std::string> blobs;
  size_t next_blob = 0;
  std::vector<std::string> digests; // Everything fetched, for the pins.
};

struct Prewarmer::Job {
  uint64_t id = 0;
  std::vector<std::string> set_names;
  front::Priority priority = front::Priority::Prewarm;
  std::vector<std::unique_ptr<ImageTask>> images;
  size_t next_image = 0;
  size_t running = 0;
  uint64_t counted = 0;
  bool done = false;
  double started_at = 0;
  double finished_at = 0;
};

Prewarmer::Prewarmer(struct ev_loop *loop, RegistryService &service,
                     Usage &usage, std::shared_ptr<cache::Index> index,
                     DiskWorker &worker, std::shared_ptr<PinSet> pins)
    : loop_(loop), service_(service), usage_(usage), index_(std::move(index)),
      worker_(worker), pins_(std::move(pins)) {
  ev_timer_init(&retire_timer_, &Prewarmer::on_retire_timer, 0, 0);
  retire_timer_.data = this;
}

Prewarmer::~Prewarmer() { ev_timer_stop(loop_, &retire_timer_); }

void Prewarmer::load_pins() {
  auto stored = index_->state_with_prefix(pins_key(""));
  if (!stored) {
    GC_LOG(Cache, warn, "reading prewarm pins failed: {}",
           stored.error().message);
    return;
  }
  for (const auto &[key, text] : *stored) {
    std::string name = key.substr(pins_key("").size());
    std::vector<std::string> digests;
    size_t start = 0;
    while (start < text.size()) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) {
        end = text.size();
      }
      if (end > start) {
        digests.push_back(text.substr(start, end - start));
      }
      start = end + 1;
    }
    GC_LOG(Cache, info, "prewarm set {}: {} digests pinned", name,
           digests.size());
    pins_->assign(name, std::move(digests));
  }
}

uint64_t Prewarmer::start(std::vector<prewarm::ImageSet> sets,
                          front::Priority priority) {
  auto job = std::make_unique<Job>();
  job->id = next_job_++;
  job->priority = priority;
  job->started_at = ev_now(loop_);
  for (auto &set : sets) {
    job->set_names.push_back(set.name);
    for (auto &image : set.images) {
      auto task = std::make_unique<ImageTask>();
      task->ref = std::move(image);
      task->set = set.name;
      job->images.push_back(std::move(task));
    }
  }
  GC_LOG(Cache, info, "prewarm job {} started: {} images from {} sets", job->id,
         job->images.size(), job->set_names.size());
  Job &ref = *job;
  jobs_.emplace(job->id, std::move(job));
  // Keep only the most recent finished jobs.
  while (jobs_.size() > 32 && jobs_.begin()->second->done) {
    jobs_.erase(jobs_.begin());
  }
  for (size_t i = 0; i < ParallelImages; ++i) {
    next_image(ref);
  }
  if (ref.images.empty()) {
    finish_job(ref);
  }
  return ref.id;
}

void Prewarmer::next_image(Job &job) {
  if (job.next_image >= job.images.size()) {
    return;
  }
  ImageTask &task = *job.images[job.next_image++];
  ++job.running;
  task.state = ImageTask::State::Running;
  std::string reference = task.ref.reference;
  request(job, task, "/v2/" + task.ref.repository + "/manifests/" + reference,
          true,
          [this, reference](Job &j, ImageTask &t, const InternalResult &r) {
            on_manifest(j, t, reference, r);
          });
}

void Prewarmer::request(
    Job &job, ImageTask &task, const std::string &path, bool manifest,
    std::function<void(Job &, ImageTask &, const InternalResult &)> then) {
  front::Request request;
  request.method = front::Method::Get;
  request.method_name = "GET";
  request.path = path;
  request.query = "ns=" + task.ref.registry;
  request.protocol = "internal";
  request.priority = job.priority;
  if (manifest) {
    request.accept = ManifestAccept;
  }
  ++task.outstanding;
  uint64_t job_id = job.id;
  ImageTask *task_pointer = &task;
  auto exchange = InternalExchange::create(
      std::move(request), manifest ? MaxManifestBytes : 0,
      [this, job_id, task_pointer,
       then = std::move(then)](const InternalResult &result) {
        auto found = jobs_.find(job_id);
        if (found == jobs_.end()) {
          return;
        }
        --task_pointer->outstanding;
        then(*found->second, *task_pointer, result);
      });
  uint64_t *counted = &job.counted;
  std::string registry = task.ref.registry;
  exchange->on_finished = [this, counted, registry,
                           manifest](const front::Exchange &done, int) {
    if (manifest && done.cache_result == front::CacheResult::Miss &&
        usage_.counted(registry, CountedKind::ManifestGet)) {
      ++*counted;
    }
  };
  service_.handle(exchange);
  retire(std::move(exchange));
}

void Prewarmer::on_manifest(Job &job, ImageTask &task,
                            const std::string &reference,
                            const InternalResult &result) {
  if (result.status != 200 || result.failed) {
    std::string error =
        "manifest " + reference + ": status " + std::to_string(result.status);
    if (auto parsed = nlohmann::json::parse(result.body, nullptr, false);
        !parsed.is_discarded() && parsed.contains("errors") &&
        parsed["errors"].is_array() && !parsed["errors"].empty()) {
      error += " " + parsed["errors"][0].value("message", "");
    }
    if (task.outstanding == 0) {
      image_done(job, task, error);
    } else {
      task.error = error;
    }
    return;
  }
  task.bytes += result.bytes;
  std::string digest = result.header("docker-content-digest");
  if (!digest.empty()) {
    task.digests.push_back(digest);
  }
  auto document = nlohmann::json::parse(result.body, nullptr, false);
  if (document.is_discarded() || !document.is_object()) {
    image_done(job, task, "manifest " + reference + " is not JSON");
    return;
  }
  std::string media_type = result.header("content-type");
  if (is_index(media_type, document)) {
    const auto &manifests = document["manifests"];
    if (!manifests.is_array()) {
      image_done(job, task, "index " + reference + " has no manifest list");
      return;
    }
    std::vector<std::string> platforms = task.ref.platforms;
    if (platforms.empty()) {
      platforms.push_back("linux/amd64");
    }
    size_t started = 0;
    for (const auto &wanted_text : platforms) {
      Platform wanted = parse_platform(wanted_text);
      for (const auto &entry : manifests) {
        if (!entry.is_object() || !platform_matches(entry, wanted)) {
          continue;
        }
        std::string child = entry.value("digest", "");
        if (child.empty()) {
          continue;
        }
        ++started;
        request(job, task, "/v2/" + task.ref.repository + "/manifests/" + child,
                true,
                [this, child](Job &j, ImageTask &t, const InternalResult &r) {
                  on_manifest(j, t, child, r);
                });
        break;
      }
    }
    if (started == 0) {
      image_done(job, task,
                 "index " + reference + " has none of the " +
                     "platforms requested");
    }
    return;
  }
  // An image manifest: its config and layers.
  auto add_blob = [&task](const nlohmann::json &descriptor) {
    if (!descriptor.is_object()) {
      return;
    }
    if (descriptor.value("mediaType", "") == ForeignLayerType) {
      return;
    }
    std::string blob = descriptor.value("digest", "");
    if (!blob.empty() && std::find(task.blobs.begin(), task.blobs.end(),
                                   blob) == task.blobs.end()) {
      task.blobs.push_back(blob);
    }
  };
  if (document.contains("config")) {
    add_blob(document["config"]);
  }
  if (document.contains("layers") && document["layers"].is_array()) {
    for (const auto &layer : document["layers"]) {
      add_blob(layer);
    }
  }
  if (document.contains("fsLayers") && document["fsLayers"].is_array()) {
    for (const auto &layer : document["fsLayers"]) {
      if (layer.is_object() && layer.contains("blobSum")) {
        add_blob(nlohmann::json{{"digest", layer["blobSum"]}});
      }
    }
  }
  fetch_blobs(job, task);
}

void Prewarmer::fetch_blobs(Job &job, ImageTask &task) {
  while (task.next_blob < task.blobs.size() &&
         task.outstanding < ParallelBlobs) {
    std::string blob = task.blobs[task.next_blob++];
    request(job, task, "/v2/" + task.ref.repository + "/blobs/" + blob, false,
            [this, blob](Job &j, ImageTask &t, const InternalResult &r) {
              if (r.status != 200 || r.failed) {
                t.error =
                    "blob " + blob + ": status " + std::to_string(r.status);
              } else {
                t.bytes += r.bytes;
                t.digests.push_back(blob);
              }
              fetch_blobs(j, t);
            });
  }
  if (task.outstanding == 0 && task.next_blob >= task.blobs.size()) {
    image_done(job, task, task.error);
  }
}

void Prewarmer::image_done(Job &job, ImageTask &task, std::string error) {
  if (task.state == ImageTask::State::Done ||
      task.state == ImageTask::State::Failed) {
    return;
  }
  task.error = std::move(error);
  task.state =
      task.error.empty() ? ImageTask::State::Done : ImageTask::State::Failed;
  if (task.error.empty()) {
    GC_LOG(Cache, info, "prewarm job {}: {} done ({} bytes)", job.id,
           task.ref.str(), task.bytes);
  } else {
    GC_LOG(Cache, warn, "prewarm job {}: {} failed: {}", job.id, task.ref.str(),
           task.error);
  }
  --job.running;
  next_image(job);
  if (job.running == 0 && job.next_image >= job.images.size()) {
    finish_job(job);
  }
}

void Prewarmer::finish_job(Job &job) {
  // A request for stored content completes at once, so the last image can
  // finish inside `next_image()` of the one before. The job ends once.
  if (job.done) {
    return;
  }
  job.done = true;
  job.finished_at = ev_now(loop_);

  // Pin each set's content, including what earlier images of the set
  // share with later ones.
  std::map<std::string, std::vector<std::string>> by_set;
  size_t failed = 0;
  for (const auto &task : job.images) {
    auto &digests = by_set[task->set];
    digests.insert(digests.end(), task->digests.begin(), task->digests.end());
    if (task->state == ImageTask::State::Failed) {
      ++failed;
    }
  }

  for (auto &[set, digests] : by_set) {
    std::sort(digests.begin(), digests.end());
    digests.erase(std::unique(digests.begin(), digests.end()), digests.end());
    pins_->assign(set, digests);
    auto index = index_;
    std::string key = pins_key(set);
    std::string value = join_lines(digests);
    worker_.post(
        [index, key, value] {
          if (auto stored = index->put_state(key, value); !stored) {
            GC_LOG(Cache, warn, "storing {} failed: {}", key,
                   stored.error().message);
          }
        },
        nullptr);
  }

  GC_LOG(Cache, info,
         "prewarm job {} finished: {} images, {} failed, {} counted requests",
         job.id, job.images.size(), failed, job.counted);
}

std::optional<nlohmann::json> Prewarmer::job_json(uint64_t id) const {
  auto found = jobs_.find(id);
  if (found == jobs_.end()) {
    return std::nullopt;
  }
  const Job &job = *found->second;
  size_t done = 0;
  uint64_t bytes = 0;
  nlohmann::json errors = nlohmann::json::array();
  nlohmann::json images = nlohmann::json::array();
  for (const auto &task : job.images) {
    const char *state = "queued";
    switch (task->state) {
    case ImageTask::State::Queued:
      state = "queued";
      break;
    case ImageTask::State::Running:
      state = "running";
      break;
    case ImageTask::State::Done:
      state = "done";
      break;
    case ImageTask::State::Failed:
      state = "failed";
      break;
    }
    if (task->state == ImageTask::State::Done ||
        task->state == ImageTask::State::Failed) {
      ++done;
    }
    if (task->state == ImageTask::State::Failed) {
      errors.push_back(task->ref.str() + ": " + task->error);
    }
    bytes += task->bytes;
    nlohmann::json image = {
        {"ref", task->ref.str()}, {"state", state}, {"bytes", task->bytes}};
    if (!task->error.empty()) {
      image["error"] = task->error;
    }
    images.push_back(std::move(image));
  }
  // The job waits for budget when its requests queue behind the reserve.
  nlohmann::json waiting_until = nullptr;
  if (!job.done) {
    for (const auto &task : job.images) {
      if (task->state != ImageTask::State::Running) {
        continue;
      }
      auto *budget = usage_.scheduler(task->ref.registry);
      if (budget != nullptr && !budget->available_now(job.priority)) {
        auto status = budget->status();
        if (status.reset_at > 0) {
          waiting_until = status.reset_at;
        }
        break;
      }
    }
  }
  std::string state = job.done
                          ? (errors.empty() ? "done" : "failed")
                          : (waiting_until.is_null() ? "running" : "waiting");
  return nlohmann::json{{"id", job.id},
                        {"sets", job.set_names},
                        {"state", state},
                        {"images_total", job.images.size()},
                        {"images_done", done},
                        {"bytes", bytes},
                        {"counted", job.counted},
                        {"errors", std::move(errors)},
                        {"images", std::move(images)},
                        {"waiting_until", waiting_until},
                        {"started_at", job.started_at},
                        {"finished_at", job.done
                                            ? nlohmann::json(job.finished_at)
                                            : nlohmann::json(nullptr)}};
}

nlohmann::json Prewarmer::jobs_json() const {
  nlohmann::json jobs = nlohmann::json::array();
  for (const auto &[id, job] : jobs_) {
    auto entry = *job_json(id);
    entry.erase("images");
    jobs.push_back(std::move(entry));
  }
  return jobs;
}

void Prewarmer::retire(std::shared_ptr<InternalExchange> exchange) {
  retired_.push_back(std::move(exchange));
  if (!ev_is_active(&retire_timer_)) {
    ev_timer_set(&retire_timer_, 1.0, 0);
    ev_timer_start(loop_, &retire_timer_);
  }
}

void Prewarmer::on_retire_timer(struct ev_loop *, ev_timer *timer, int) {
  auto *self = static_cast<Prewarmer *>(timer->data);
  // Drop exchanges whose bodies ended; the rest wait another round.
  std::vector<std::shared_ptr<InternalExchange>> keep;
  for (auto &exchange : self->retired_) {
    if (!exchange->finished()) {
      keep.push_back(std::move(exchange));
    }
  }
  self->retired_ = std::move(keep);
  if (!self->retired_.empty()) {
    ev_timer_set(&self->retire_timer_, 1.0, 0);
    ev_timer_start(self->loop_, &self->retire_timer_);
  }
}

} // namespace gatecache::registry
