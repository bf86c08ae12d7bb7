#include "tls/client_certificate.h"

#include <algorithm>
#include <system_error>

#include <spdlog/fmt/fmt.h>

#include "common/log.h"
#include "tls/ca_files.h"
#include "tls/issuer.h"
#include "tls/pem_file.h"
#include "tls/rotation.h"

namespace gatecache::tls {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::system_clock;

constexpr size_t MaxClientNameLength = 64;

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

Result<void> make_private_directory(const fs::path &directory) {
  std::error_code error;
  if (fs::create_directories(directory, error)) {
    fs::permissions(directory, fs::perms::owner_all, error);
  }
  if (error) {
    return fail(ErrorCode::Io, "failed to create " + directory.string() + ": " +
                                   error.message());
  }
  return {};
}

Result<KeyPair> load_current_ca(const TlsPaths &paths) {
  auto exists = file_exists(paths.ca_cert());
  if (!exists) {
    return tl::unexpected(exists.error());
  }
  if (!*exists) {
    return fail(ErrorCode::NotFound,
                "no CA in " + paths.dir.string() +
                    "; create it with `gatecache ca init` first");
  }
  return load_ca(paths.current_ca());
}

// Writes the three files. The key goes first, as for the server pair, so a
// crash leaves a key that does not match its certificate. The reverse
// order could leave a certificate whose key is lost.
Result<void> write_client_files(const ClientCertificateFiles &files,
                                EVP_PKEY *key, X509 *certificate,
                                const std::string &bundle) {
  if (auto written = write_private_key(files.key, key, ExistingFile::Replace);
      !written) {
    return written;
  }
  if (auto written =
          write_certificate(files.cert, certificate, ExistingFile::Replace);
      !written) {
    return written;
  }
  return write_file_atomic(files.bundle, bundle, 0644, ExistingFile::Replace);
}

} // namespace

Result<void> check_client_name(std::string_view name) {
  bool valid = !name.empty() && name.size() <= MaxClientNameLength &&
               name.front() != '.' && name.front() != '-' &&
               name.front() != '_' &&
               std::all_of(name.begin(), name.end(), is_name_char);
  if (!valid) {
    return fail(ErrorCode::Invalid,
                fmt::format("invalid client name \"{}\": expected 1 to 64 "
                            "letters, digits, '.', '-' or '_', starting with "
                            "a letter or digit",
                            name));
  }
  return {};
}

Result<ClientCertificateFiles>
issue_client_certificate(const TlsPaths &paths, const std::string &name,
                         const fs::path &out_dir, std::chrono::seconds lifetime,
                         Clock::time_point now) {
  if (auto checked = check_client_name(name); !checked) {
    return tl::unexpected(checked.error());
  }
  if (lifetime <= std::chrono::seconds::zero()) {
    return fail(ErrorCode::Invalid,
                "the client certificate lifetime must be positive");
  }
  auto ca = load_current_ca(paths);
  if (!ca) {
    return tl::unexpected(ca.error());
  }
  auto ca_not_after = to_time_point(X509_get0_notAfter(ca->certificate.get()));
  if (!ca_not_after) {
    return tl::unexpected(ca_not_after.error());
  }
  if (*ca_not_after <= now) {
    return fail(ErrorCode::Invalid,
                fmt::format("the CA in {} expired at {}; rotate it first",
                            paths.dir.string(), format_time(*ca_not_after)));
  }
  auto bundle = read_trust_bundle(paths);
  if (!bundle) {
    return tl::unexpected(bundle.error());
  }
  auto bundle_pem = trust_bundle_pem(*bundle);
  if (!bundle_pem) {
    return tl::unexpected(bundle_pem.error());
  }

  auto key = generate_key();
  if (!key) {
    return tl::unexpected(key.error());
  }
  CertificateRequest request;
  request.profile = CertificateProfile::Client;
  request.common_name = name;
  request.organizational_unit = std::string(ClientOrganizationalUnit);
  request.not_before = now - ClockSkewAllowance;
  request.not_after = std::min(now + lifetime, *ca_not_after);
  auto certificate = issue_certificate(
      request, key->get(), Signer{ca->certificate.get(), ca->key.get()});
  if (!certificate) {
    return tl::unexpected(certificate.error());
  }

  if (auto made = make_private_directory(out_dir); !made) {
    return tl::unexpected(made.error());
  }
  ClientCertificateFiles files{out_dir / "client.key", out_dir / "client.crt",
                               out_dir / "ca.crt", request.not_after};
  if (auto written = write_client_files(files, key->get(), certificate->get(),
                                        *bundle_pem);
      !written) {
    return tl::unexpected(written.error());
  }
  GC_LOG(Tls, info, "Issued client certificate CN={} valid until {} dir={}",
         name, format_time(request.not_after), out_dir.string());
  return files;
}

} // namespace gatecache::tls
