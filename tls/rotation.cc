#include "tls/rotation.h"

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <system_error>

#include <fcntl.h>
#include <openssl/pem.h>
#include <spdlog/fmt/fmt.h>
#include <unistd.h>

#include "common/log.h"
#include "tls/ca_files.h"
#include "tls/issuer.h"
#include "tls/pem_file.h"

namespace gatecache::tls {
namespace {

namespace fs = std::filesystem;

// Appends the CA in `path` to `bundle` when the file exists.
Result<void> add_if_present(std::vector<TrustedCa> &bundle, CaRole role,
                            const fs::path &path) {
  auto exists = file_exists(path);
  if (!exists) {
    return tl::unexpected(exists.error());
  }
  if (!*exists) {
    return {};
  }
  auto certificate = read_certificate(path);
  if (!certificate) {
    return tl::unexpected(certificate.error());
  }
  if (X509_check_ca(certificate->get()) == 0) {
    return fail(ErrorCode::Invalid, path.string() + " is not a CA certificate");
  }
  bundle.push_back(TrustedCa{role, path, std::move(*certificate)});
  return {};
}

using Clock = std::chrono::system_clock;

Error out_of_order(const char *step, RotationPhase phase) {
  const char *state = "";
  switch (phase) {
  case RotationPhase::Idle:
    state = "no CA rotation is in progress";
    break;
  case RotationPhase::Begun:
    state = "the CA rotation is begun but not switched";
    break;
  case RotationPhase::Switching:
    state = "a CA rotation switch was interrupted";
    break;
  case RotationPhase::Switched:
    state = "the CA rotation is switched but not finished";
    break;
  }
  return Error{ErrorCode::Invalid,
               fmt::format("cannot {} the CA rotation: {}; the next step is "
                           "`{}`",
                           step, state, next_rotation_command(phase))};
}

Result<void> fsync_directory(const fs::path &directory) {
  int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return fail(ErrorCode::Io,
                errno_message("open", errno) + " on " + directory.string());
  }
  int result = ::fsync(fd);
  int error = errno;
  ::close(fd);
  if (result != 0) {
    return fail(ErrorCode::Io,
                errno_message("fsync", error) + " on " + directory.string());
  }
  return {};
}

// Returns "2026-12-04-1a2b": the day of `now` and a random part, which
// together distinguish the CAs of one gateway.
std::string rotation_suffix(Clock::time_point now) {
  std::time_t seconds = Clock::to_time_t(now);
  std::tm parts{};
  gmtime_r(&seconds, &parts);
  char day[16];
  if (std::strftime(day, sizeof(day), "%Y-%m-%d", &parts) == 0) {
    return random_hex(4);
  }
  return std::string(day) + "-" + random_hex(2);
}

// Removes a `ca-next.key` that an interrupted `begin` left without its
// certificate. No node can trust a key without a certificate, so it is
// unused.
Result<void> remove_unfinished_next(const TlsPaths &paths) {
  auto key = file_exists(paths.ca_next_key());
  auto cert = file_exists(paths.ca_next_cert());
  if (!key || !cert) {
    return tl::unexpected(!key ? key.error() : cert.error());
  }
  if (*cert) {
    return {};
  }
  if (*key && ::unlink(paths.ca_next_key().c_str()) != 0) {
    return fail(ErrorCode::Io, errno_message("unlink", errno) + " on " +
                                   paths.ca_next_key().string());
  }
  return {};
}

// Links `from` to `to` unless `to` exists. Both are in one directory.
Result<void> link_once(const fs::path &from, const fs::path &to) {
  if (::link(from.c_str(), to.c_str()) != 0 && errno != EEXIST) {
    return fail(ErrorCode::Io, errno_message("link", errno) + " from " +
                                   from.string() + " to " + to.string());
  }
  return {};
}

// Renames `from` over `to` when `from` exists.
Result<void> rename_if_present(const fs::path &from, const fs::path &to) {
  if (::rename(from.c_str(), to.c_str()) != 0 && errno != ENOENT) {
    return fail(ErrorCode::Io, errno_message("rename", errno) + " from " +
                                   from.string() + " to " + to.string());
  }
  return {};
}

// Moves the CA files for a switch. Each step can run again: links that
// exist stay, renames whose source is gone are done. The previous CA is
// linked completely before any rename, so a crash never loses the old
// CA.
Result<void> move_ca_files(const TlsPaths &paths) {
  Result<void> moved = link_once(paths.ca_key(), paths.ca_previous_key());
  if (moved) {
    moved = link_once(paths.ca_cert(), paths.ca_previous_cert());
  }
  if (moved) {
    moved = fsync_directory(paths.dir);
  }
  if (moved) {
    moved = rename_if_present(paths.ca_next_cert(), paths.ca_cert());
  }
  if (moved) {
    moved = rename_if_present(paths.ca_next_key(), paths.ca_key());
  }
  if (moved) {
    moved = fsync_directory(paths.dir);
  }
  return moved;
}

// Returns the client certificates under `paths.clients_dir()` that `ca`
// issued.
std::vector<fs::path> client_certificates_of(const TlsPaths &paths, X509 *ca) {
  std::vector<fs::path> issued;
  std::error_code error;
  for (const auto &entry : fs::directory_iterator(paths.clients_dir(), error)) {
    fs::path cert = entry.path() / "client.crt";
    auto certificate = read_certificate(cert);
    if (certificate && is_issued_by(certificate->get(), ca)) {
      issued.push_back(cert);
    }
  }
  std::sort(issued.begin(), issued.end());
  return issued;
}

} // namespace

Result<CertificateInfo> begin_rotation(const TlsPaths &paths,
                                       Clock::time_point now) {
  auto phase = read_rotation_phase(paths);
  if (!phase) {
    return tl::unexpected(phase.error());
  }
  if (*phase == RotationPhase::Begun) {
    if (auto removed = remove_unfinished_next(paths); !removed) {
      return tl::unexpected(removed.error());
    }
    phase = read_rotation_phase(paths);
    if (!phase) {
      return tl::unexpected(phase.error());
    }
  }
  if (*phase != RotationPhase::Idle) {
    return tl::unexpected(out_of_order("begin", *phase));
  }
  auto current_exists = file_exists(paths.ca_cert());
  if (!current_exists) {
    return tl::unexpected(current_exists.error());
  }
  if (!*current_exists) {
    return fail(ErrorCode::NotFound,
                "no CA in " + paths.dir.string() +
                    "; create it with `gatecache ca init` first");
  }
  if (auto current = load_ca(paths.current_ca()); !current) {
    return tl::unexpected(current.error());
  }

  if (auto created =
          create_ca(paths.next_ca(), ca_common_name(rotation_suffix(now)), now);
      !created) {
    return tl::unexpected(created.error());
  }
  return read_certificate_info(paths.ca_next_cert());
}

Result<CertificateInfo> switch_rotation(const TlsPaths &paths,
                                        const std::vector<std::string> &names,
                                        std::chrono::seconds lifetime,
                                        Clock::time_point now) {
  auto phase = read_rotation_phase(paths);
  if (!phase) {
    return tl::unexpected(phase.error());
  }
  if (*phase != RotationPhase::Begun && *phase != RotationPhase::Switching) {
    return tl::unexpected(out_of_order("switch", *phase));
  }
  // Bad settings must fail before the CA files move.
  if (lifetime <= std::chrono::seconds::zero()) {
    return fail(ErrorCode::Invalid,
                "the server certificate lifetime must be positive");
  }
  if (names.empty()) {
    return fail(ErrorCode::Invalid,
                "the server certificate needs at least one name");
  }
  for (const std::string &name : names) {
    if (auto parsed = parse_subject_alt_name(name); !parsed) {
      return tl::unexpected(parsed.error());
    }
  }
  if (*phase == RotationPhase::Begun) {
    // Both CAs must load before anything moves.
    if (auto current = load_ca(paths.current_ca()); !current) {
      return tl::unexpected(current.error());
    }
    if (auto next = load_ca(paths.next_ca()); !next) {
      return tl::unexpected(next.error());
    }
  }

  if (auto moved = move_ca_files(paths); !moved) {
    return tl::unexpected(moved.error());
  }
  if (auto current = load_ca(paths.current_ca()); !current) {
    return tl::unexpected(current.error());
  }
  GC_LOG(Tls, info, "Switched the CA rotation: {} is current, {} is previous",
         paths.ca_cert().string(), paths.ca_previous_cert().string());

  // A share of 1 reissues whatever the remaining lifetime.
  auto issued = ensure_server_certificate(paths, names, lifetime, 1.0, now);
  if (!issued) {
    return tl::unexpected(issued.error());
  }
  return read_certificate_info(paths.server_cert());
}

Result<std::vector<fs::path>> finish_rotation(const TlsPaths &paths) {
  auto phase = read_rotation_phase(paths);
  if (!phase) {
    return tl::unexpected(phase.error());
  }
  if (*phase != RotationPhase::Switched) {
    return tl::unexpected(out_of_order("finish", *phase));
  }
  auto ca = read_certificate(paths.ca_cert());
  if (!ca) {
    return tl::unexpected(ca.error());
  }
  auto server = read_certificate(paths.server_cert());
  if (!server || !is_issued_by(server->get(), ca->get())) {
    return fail(ErrorCode::Invalid,
                "the server certificate " + paths.server_cert().string() +
                    " is not issued by the current CA, so nodes would "
                    "reject it without the previous CA; run `gatecache ca "
                    "issue-server` first");
  }

  std::vector<fs::path> stale;
  if (auto previous = read_certificate(paths.ca_previous_cert()); previous) {
    stale = client_certificates_of(paths, previous->get());
  }
  // The certificate goes first: a crash then leaves only the key, which
  // no bundle includes, and `finish` removes it when run again.
  for (const fs::path &path :
       {paths.ca_previous_cert(), paths.ca_previous_key()}) {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return fail(ErrorCode::Io,
                  errno_message("unlink", errno) + " on " + path.string());
    }
  }
  if (auto synced = fsync_directory(paths.dir); !synced) {
    return tl::unexpected(synced.error());
  }
  GC_LOG(Tls, info, "Finished the CA rotation: the previous CA is removed");
  return stale;
}

const char *to_string(CaRole role) {
  switch (role) {
  case CaRole::Current:
    return "current";
  case CaRole::Next:
    return "next";
  case CaRole::Previous:
    return "previous";
  }
  return "unknown";
}

const char *to_string(RotationPhase phase) {
  switch (phase) {
  case RotationPhase::Idle:
    return "idle";
  case RotationPhase::Begun:
    return "begun";
  case RotationPhase::Switching:
    return "switching";
  case RotationPhase::Switched:
    return "switched";
  }
  return "unknown";
}

Result<RotationPhase> read_rotation_phase(const TlsPaths &paths) {
  bool next = false;
  bool previous = false;
  for (auto [flag, path] : {std::pair{&next, paths.ca_next_key()},
                            std::pair{&next, paths.ca_next_cert()},
                            std::pair{&previous, paths.ca_previous_key()},
                            std::pair{&previous, paths.ca_previous_cert()}}) {
    auto exists = file_exists(path);
    if (!exists) {
      return tl::unexpected(exists.error());
    }
    *flag = *flag || *exists;
  }
  if (next && previous) {
    return RotationPhase::Switching;
  }
  if (next) {
    return RotationPhase::Begun;
  }
  return previous ? RotationPhase::Switched : RotationPhase::Idle;
}

std::string next_rotation_command(RotationPhase phase) {
  switch (phase) {
  case RotationPhase::Idle:
    return "gatecache ca rotate begin";
  case RotationPhase::Begun:
  case RotationPhase::Switching:
    return "gatecache ca rotate switch";
  case RotationPhase::Switched:
    return "gatecache ca rotate finish";
  }
  return "gatecache ca show";
}

Result<std::vector<TrustedCa>> read_trust_bundle(const TlsPaths &paths) {
  auto current_exists = file_exists(paths.ca_cert());
  if (!current_exists) {
    return tl::unexpected(current_exists.error());
  }
  if (!*current_exists) {
    return fail(ErrorCode::NotFound,
                "no CA certificate at " + paths.ca_cert().string() +
                    "; create the CA with `gatecache ca init`");
  }
  std::vector<TrustedCa> bundle;
  for (auto [role, path] :
       {std::pair{CaRole::Current, paths.ca_cert()},
        std::pair{CaRole::Next, paths.ca_next_cert()},
        std::pair{CaRole::Previous, paths.ca_previous_cert()}}) {
    if (auto added = add_if_present(bundle, role, path); !added) {
      return tl::unexpected(added.error());
    }
  }
  return bundle;
}

Result<std::string> trust_bundle_pem(const std::vector<TrustedCa> &bundle) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio) {
    return fail(ErrorCode::Internal, "BIO_new: " + take_openssl_errors());
  }
  for (const TrustedCa &ca : bundle) {
    if (PEM_write_bio_X509(bio.get(), ca.certificate.get()) != 1) {
      return fail(ErrorCode::Internal, "failed to encode " + ca.path.string() +
                                           ": " + take_openssl_errors());
    }
  }
  char *data = nullptr;
  long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, size > 0 ? static_cast<size_t>(size) : 0);
}

} // namespace gatecache::tls
