// Rotation of the internal CA and the bundle of CA certificates that nodes
// trust.
//
// A rotation replaces the CA without a moment in which a node distrusts
// the server or the server rejects a node's client certificate:
//   1. `begin_rotation` creates the next CA (`ca-next.key`, `ca-next.crt`).
//      The trust bundle now contains the current and the next CA, and must
//      reach every node before the switch.
//   2. `switch_rotation` makes the next CA current, keeps the old one as
//      `ca-previous.*`, and issues the server certificate from the new CA.
//      The bundle still contains both, so client certificates of the old
//      CA are still accepted.
//   3. `finish_rotation` removes the previous CA; the bundle contains one CA.
// Each step changes files by atomic renames and can be run again after a
// crash. A step run out of order fails and names the step that is next.
//
// Every function blocks on disk and key generation. Hold a `DirectoryLock`
// on `paths.dir` around each call, so that a running daemon never reads
// the directory halfway through a step.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "common/error.h"
#include "tls/ca.h"
#include "tls/openssl_ptr.h"

namespace gatecache::tls {

// Place of a CA in a rotation.
enum class CaRole { Current, Next, Previous };

// Returns "current", "next" or "previous".
const char *to_string(CaRole role);

struct TrustedCa {
  CaRole role = CaRole::Current;
  std::filesystem::path path;
  X509Ptr certificate;
};

// Progress of a rotation, read from which CA files exist.
enum class RotationPhase {
  Idle,      // No rotation: only `ca.*`.
  Begun,     // `ca-next.*` exists: `switch` is next.
  Switching, // Both `ca-next.*` and `ca-previous.*` exist: a `switch` was
             // interrupted and must be run again.
  Switched,  // `ca-previous.*` exists: `finish` is next.
};

// Returns "idle", "begun", "switching" or "switched".
const char *to_string(RotationPhase phase);

// Returns the phase of the rotation in `paths.dir`. Errors: `Io` when a
// file cannot be examined.
[[nodiscard]] Result<RotationPhase> read_rotation_phase(const TlsPaths &paths);

// Returns the command that moves a rotation in `phase` on, such as
// "gatecache ca rotate switch", or "gatecache ca rotate begin" for `Idle`.
std::string next_rotation_command(RotationPhase phase);

// Creates the next CA in `ca-next.key` and `ca-next.crt`, named
// "gatecache CA <host> <date>-<random>" so that its subject differs from
// the current CA's, and returns facts about its certificate. Removes a
// `ca-next.key` without certificate that an interrupted `begin` left.
// Errors: `Invalid` outside `RotationPhase::Idle`, naming the next step,
// or when the current CA does not load. `NotFound` without a current CA.
// `Io` when a file cannot be written.
[[nodiscard]] Result<CertificateInfo>
begin_rotation(const TlsPaths &paths,
               std::chrono::system_clock::time_point now =
                   std::chrono::system_clock::now());

// Makes the next CA current: hard-links `ca.*` to `ca-previous.*`, renames
// `ca-next.*` over `ca.*`, and issues a new server certificate for `names`
// valid for `lifetime` from the new CA. Resumes a switch that was
// interrupted. Returns facts about the new server certificate. Errors:
// `Invalid` in `Idle` or `Switched`, naming the next step, when a CA does
// not load, or for bad names. `Io` when a file cannot be changed.
[[nodiscard]] Result<CertificateInfo>
switch_rotation(const TlsPaths &paths, const std::vector<std::string> &names,
                std::chrono::seconds lifetime,
                std::chrono::system_clock::time_point now =
                    std::chrono::system_clock::now());

// Removes `ca-previous.crt` and `ca-previous.key`, so the previous CA
// leaves the trust bundle. Returns the client certificates under
// `paths.clients_dir()` that the previous CA issued, which stop working.
// Errors: `Invalid` outside `Switched` (naming the next step) or while the
// server certificate is not issued by the current CA; `Io` when a file
// cannot be removed.
[[nodiscard]] Result<std::vector<std::filesystem::path>>
finish_rotation(const TlsPaths &paths);

// Reads the CA certificates that nodes and the front trust: the current
// CA, then the next CA (from `begin` to `switch`), then the previous CA
// (from `switch` to `finish`). Errors: `NotFound` when `ca.crt` is
// missing, `Invalid` when a file is not a readable CA certificate.
[[nodiscard]] Result<std::vector<TrustedCa>>
read_trust_bundle(const TlsPaths &paths);

// Returns the certificates of `bundle` as concatenated PEM blocks.
// Errors: `Internal` when encoding fails.
[[nodiscard]] Result<std::string>
trust_bundle_pem(const std::vector<TrustedCa> &bundle);

} // namespace gatecache::tls
