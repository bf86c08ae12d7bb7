#include "tls/rotation.h"

#include <openssl/pem.h>

#include "tls/ca_files.h"
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

} // namespace

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
