#include "tls/context.h"

#include <algorithm>
#include <cstring>
#include <string_view>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tls/ca.h"
#include "tls/pem_file.h"
#include "tls/rotation.h"

namespace gatecache::tls {
namespace {

constexpr std::string_view AlpnHttp2 = "h2";
constexpr std::string_view AlpnHttp11 = "http/1.1";

// ALPN wire format (RFC 7301 section 3.1): each protocol is preceded by its
// length in one byte.
constexpr unsigned char ClientAlpnOffer[] = {2,   'h', '2', 8,   'h', 't',
                                             't', 'p', '/', '1', '.', '1'};

constexpr const char *Tls13Suites =
    "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:"
    "TLS_AES_256_GCM_SHA384";
constexpr const char *Tls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
    "ECDHE-ECDSA-AES256-GCM-SHA384";

// Finite-field groups are left out because a client that offers only those
// makes every handshake cost far more CPU than ECDHE.
constexpr const char *KeyExchangeGroups = "X25519:P-256:P-384";

// Session id context of contexts that do not verify clients. Contexts that
// do append the mode and a digest of the trust bundle (see
// `set_session_id_context`).
constexpr std::string_view SessionIdContext = "gatecache";

// Bytes of the trust bundle digest in a session id context. A session id
// context is at most SSL_MAX_SID_CTX_LENGTH (32) bytes long.
constexpr size_t BundleDigestBytes = 16;

// Chain depth accepted for client certificates: the leaf and the root CA
// that issued it, because the internal CA issues leaves directly.
constexpr int ClientChainDepth = 1;

struct NameStackDeleter {
  void operator()(STACK_OF(X509_NAME) * names) const noexcept {
    sk_X509_NAME_pop_free(names, X509_NAME_free);
  }
};

using NameStackPtr = std::unique_ptr<STACK_OF(X509_NAME), NameStackDeleter>;

// Finds `wanted` in the client's ALPN list and points `out` at it. A
// malformed list matches nothing.
bool find_protocol(const unsigned char *in, unsigned int in_length,
                   std::string_view wanted, const unsigned char **out,
                   unsigned char *out_length) {
  unsigned int position = 0;
  while (position < in_length) {
    unsigned int length = in[position];
    if (length == 0 || length > in_length - position - 1) {
      return false;
    }
    const unsigned char *name = in + position + 1;
    if (std::string_view(reinterpret_cast<const char *>(name), length) ==
        wanted) {
      *out = name;
      *out_length = static_cast<unsigned char>(length);
      return true;
    }
    position += 1 + length;
  }
  return false;
}

int on_alpn_select(SSL * /*ssl*/, const unsigned char **out,
                   unsigned char *out_length, const unsigned char *in,
                   unsigned int in_length, void * /*arg*/) noexcept {
  for (std::string_view wanted : {AlpnHttp2, AlpnHttp11}) {
    if (find_protocol(in, in_length, wanted, out, out_length)) {
      return SSL_TLSEXT_ERR_OK;
    }
  }
  // OpenSSL then sends the no_application_protocol alert that RFC 7301
  // section 3.2 requires.
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

Result<SslCtxPtr> new_context(const SSL_METHOD *method) {
  SslCtxPtr context(SSL_CTX_new(method));
  if (!context) {
    return fail(ErrorCode::Internal, "SSL_CTX_new: " + take_openssl_errors());
  }
  if (SSL_CTX_set_min_proto_version(context.get(), TLS1_2_VERSION) != 1) {
    return fail(ErrorCode::Internal, "failed to set the minimum TLS version: " +
                                         take_openssl_errors());
  }
  SSL_CTX_set_mode(context.get(), SSL_MODE_ENABLE_PARTIAL_WRITE |
                                      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_options(context.get(), SSL_OP_NO_RENEGOTIATION);
  return context;
}

Result<void> set_server_algorithms(SSL_CTX *context) {
  if (SSL_CTX_set_max_proto_version(context, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_ciphersuites(context, Tls13Suites) != 1 ||
      SSL_CTX_set_cipher_list(context, Tls12Ciphers) != 1 ||
      SSL_CTX_set1_groups_list(context, KeyExchangeGroups) != 1) {
    return fail(ErrorCode::Internal,
                "failed to set the server's TLS algorithms: " +
                    take_openssl_errors());
  }
  SSL_CTX_set_options(context, SSL_OP_CIPHER_SERVER_PREFERENCE |
                                   SSL_OP_PRIORITIZE_CHACHA |
                                   SSL_OP_ENABLE_KTLS);
  return {};
}

// Returns a digest of the set of CA certificates in `bundle`, independent
// of their order, so that a rotation's `switch` keeps sessions resumable.
Result<std::string> digest_bundle(const std::vector<TrustedCa> &bundle) {
  std::vector<std::string> digests;
  for (const TrustedCa &ca : bundle) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    if (X509_digest(ca.certificate.get(), EVP_sha256(), digest, &size) != 1) {
      return fail(ErrorCode::Internal, "failed to hash " + ca.path.string() +
                                           ": " + take_openssl_errors());
    }
    digests.emplace_back(reinterpret_cast<char *>(digest), size);
  }
  std::sort(digests.begin(), digests.end());
  std::string joined;
  for (const std::string &digest : digests) {
    joined += digest;
  }
  unsigned char total[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_Digest(joined.data(), joined.size(), total, &size, EVP_sha256(),
                 nullptr) != 1) {
    return fail(ErrorCode::Internal,
                "failed to hash the trust bundle: " + take_openssl_errors());
  }
  return std::string(reinterpret_cast<char *>(total),
                     std::min<size_t>(size, BundleDigestBytes));
}

// Sets the session id context: OpenSSL resumes a session only in a context
// with the same one. A session that started without a verified client
// certificate must not resume on a listener that requires one, and a
// session whose certificate was verified by a CA that left the bundle must
// not resume at all.
Result<void> set_session_id_context(SSL_CTX *context, ClientAuth mode,
                                    const std::string &bundle_digest) {
  std::string id(SessionIdContext);
  if (mode != ClientAuth::None) {
    id += mode == ClientAuth::Optional ? "-o" : "-r";
    id += bundle_digest;
  }
  if (SSL_CTX_set_session_id_context(
          context, reinterpret_cast<const unsigned char *>(id.data()),
          static_cast<unsigned int>(id.size())) != 1) {
    return fail(ErrorCode::Internal, "failed to set the session id context: " +
                                         take_openssl_errors());
  }
  return {};
}

// Trusts the CAs of `bundle` for client certificates, announces them as
// acceptable issuers, and requests a certificate from each client.
Result<void> set_client_verification(SSL_CTX *context,
                                     const std::vector<TrustedCa> &bundle,
                                     ClientAuth mode) {
  // The context's store starts empty, so only the bundle is trusted and
  // never the system's CAs.
  X509_STORE *store = SSL_CTX_get_cert_store(context);
  NameStackPtr names(sk_X509_NAME_new_null());
  if (!names) {
    return fail(ErrorCode::Internal,
                "sk_X509_NAME_new_null: " + take_openssl_errors());
  }
  for (const TrustedCa &ca : bundle) {
    if (X509_STORE_add_cert(store, ca.certificate.get()) != 1) {
      return fail(ErrorCode::Internal, "failed to trust " + ca.path.string() +
                                           ": " + take_openssl_errors());
    }
    X509_NAME *name =
        X509_NAME_dup(X509_get_subject_name(ca.certificate.get()));
    if (name == nullptr || sk_X509_NAME_push(names.get(), name) <= 0) {
      X509_NAME_free(name);
      return fail(ErrorCode::Internal,
                  "failed to list acceptable CAs: " + take_openssl_errors());
    }
  }
  SSL_CTX_set_client_CA_list(context, names.release());

  // OpenSSL checks the sslclient purpose for client certificates, which
  // requires the clientAuth extended key usage when the extension is
  // present, so a server certificate of the same CA is rejected.
  X509_VERIFY_PARAM *param = SSL_CTX_get0_param(context);
  if (X509_VERIFY_PARAM_set_purpose(param, X509_PURPOSE_SSL_CLIENT) != 1) {
    return fail(ErrorCode::Internal,
                "failed to set the client purpose: " + take_openssl_errors());
  }
  SSL_CTX_set_verify_depth(context, ClientChainDepth);
  int flags = SSL_VERIFY_PEER;
  if (mode == ClientAuth::Required) {
    flags |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
  }
  SSL_CTX_set_verify(context, flags, nullptr);
  // The store now contains the CAs, and OpenSSL would append the matching one
  // to the server's own chain. Clients trust the CA already.
  SSL_CTX_set_mode(context, SSL_MODE_NO_AUTO_CHAIN);
  return {};
}

Result<void> set_client_auth(SSL_CTX *context, const TlsPaths &paths,
                             ClientAuth mode) {
  if (mode == ClientAuth::None) {
    return set_session_id_context(context, mode, {});
  }
  auto bundle = read_trust_bundle(paths);
  if (!bundle) {
    return tl::unexpected(bundle.error());
  }
  auto digest = digest_bundle(*bundle);
  if (!digest) {
    return tl::unexpected(digest.error());
  }
  if (auto verified = set_client_verification(context, *bundle, mode);
      !verified) {
    return verified;
  }
  return set_session_id_context(context, mode, *digest);
}

Result<void> load_server_pair(SSL_CTX *context, const TlsPaths &paths) {
  if (auto permissions = check_key_permissions(paths.server_key());
      !permissions) {
    return permissions;
  }
  if (SSL_CTX_use_certificate_chain_file(context,
                                         paths.server_cert().c_str()) != 1) {
    return fail(ErrorCode::Invalid, "failed to load " +
                                        paths.server_cert().string() + ": " +
                                        take_openssl_errors());
  }
  if (SSL_CTX_use_PrivateKey_file(context, paths.server_key().c_str(),
                                  SSL_FILETYPE_PEM) != 1) {
    return fail(ErrorCode::Invalid, "failed to load " +
                                        paths.server_key().string() + ": " +
                                        take_openssl_errors());
  }
  if (SSL_CTX_check_private_key(context) != 1) {
    return fail(ErrorCode::Invalid, paths.server_key().string() +
                                        " does not match " +
                                        paths.server_cert().string() + ": " +
                                        take_openssl_errors());
  }
  return {};
}

bool is_host_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
}

} // namespace

void SslCtxDeleter::operator()(SSL_CTX *context) const noexcept {
  SSL_CTX_free(context);
}

const char *to_string(ClientAuth mode) {
  switch (mode) {
  case ClientAuth::None:
    return "none";
  case ClientAuth::Optional:
    return "optional";
  case ClientAuth::Required:
    return "required";
  }
  return "unknown";
}

Result<TicketKeys> TicketKeys::generate() {
  TicketKeys keys;
  if (RAND_bytes(keys.bytes_, sizeof(keys.bytes_)) != 1) {
    return fail(ErrorCode::Internal, "failed to generate session ticket "
                                     "keys: " +
                                         take_openssl_errors());
  }
  return keys;
}

TicketKeys::TicketKeys(const TicketKeys &other) {
  std::memcpy(bytes_, other.bytes_, sizeof(bytes_));
}

TicketKeys &TicketKeys::operator=(const TicketKeys &other) {
  std::memmove(bytes_, other.bytes_, sizeof(bytes_));
  return *this;
}

TicketKeys::~TicketKeys() { OPENSSL_cleanse(bytes_, sizeof(bytes_)); }

Result<SslCtxPtr> make_server_context(const TlsPaths &paths,
                                      const ServerContextOptions &options) {
  auto context = new_context(TLS_server_method());
  if (!context) {
    return context;
  }
  if (auto set = set_server_algorithms(context->get()); !set) {
    return tl::unexpected(set.error());
  }
  if (auto loaded = load_server_pair(context->get(), paths); !loaded) {
    return tl::unexpected(loaded.error());
  }
  if (auto set = set_client_auth(context->get(), paths, options.client_auth);
      !set) {
    return tl::unexpected(set.error());
  }
  if (options.ticket_keys != nullptr &&
      SSL_CTX_set_tlsext_ticket_keys(
          context->get(),
          const_cast<unsigned char *>(options.ticket_keys->data()),
          TicketKeys::Size) != 1) {
    return fail(ErrorCode::Internal, "failed to set the session ticket keys: " +
                                         take_openssl_errors());
  }
  SSL_CTX_set_alpn_select_cb(context->get(), on_alpn_select, nullptr);
  return context;
}

ApplicationProtocol negotiated_protocol(const SSL *ssl) {
  const unsigned char *data = nullptr;
  unsigned int length = 0;
  SSL_get0_alpn_selected(ssl, &data, &length);
  std::string_view selected(reinterpret_cast<const char *>(data), length);
  return data != nullptr && selected == AlpnHttp2 ? ApplicationProtocol::Http2
                                                  : ApplicationProtocol::Http11;
}

Result<SslCtxPtr> make_client_context(const std::string &ca_file) {
  auto context = new_context(TLS_client_method());
  if (!context) {
    return context;
  }
  if (SSL_CTX_set_default_verify_paths(context->get()) != 1) {
    return fail(ErrorCode::Internal,
                "failed to load the system CA paths: " + take_openssl_errors());
  }
  if (!ca_file.empty() && SSL_CTX_load_verify_locations(
                              context->get(), ca_file.c_str(), nullptr) != 1) {
    return fail(ErrorCode::Invalid, "failed to load CA file " + ca_file + ": " +
                                        take_openssl_errors());
  }
  SSL_CTX_set_verify(context->get(), SSL_VERIFY_PEER, nullptr);

  // Unlike most OpenSSL calls, this one returns 0 on success.
  if (SSL_CTX_set_alpn_protos(context->get(), ClientAlpnOffer,
                              sizeof(ClientAlpnOffer)) != 0) {
    return fail(ErrorCode::Internal,
                "failed to set the ALPN offer: " + take_openssl_errors());
  }
  return context;
}

Result<void> set_client_host(SSL *ssl, const std::string &host) {
  std::string name = host;
  if (name.size() > 2 && name.front() == '[' && name.back() == ']') {
    name = name.substr(1, name.size() - 2);
  }
  // SNI carries no trailing dot (RFC 6066 section 3), and certificates
  // name hosts without one.
  if (!name.empty() && name.back() == '.') {
    name.pop_back();
  }
  if (name.empty() || name.size() > 253) {
    return fail(ErrorCode::Invalid, "invalid TLS host name \"" + host + "\"");
  }

  unsigned char address[sizeof(in6_addr)];
  bool is_ip = inet_pton(AF_INET, name.c_str(), address) == 1 ||
               inet_pton(AF_INET6, name.c_str(), address) == 1;
  if (is_ip) {
    if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name.c_str()) != 1) {
      return fail(ErrorCode::Internal,
                  "failed to set the IP to verify: " + take_openssl_errors());
    }
    return {};
  }

  // Underscores are not valid in host names but appear in internal ones,
  // and the certificate check decides anyway.
  if (!std::all_of(name.begin(), name.end(), is_host_char)) {
    return fail(ErrorCode::Invalid, "invalid TLS host name \"" + host + "\"");
  }
  SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  if (SSL_set_tlsext_host_name(ssl, name.c_str()) != 1 ||
      SSL_set1_host(ssl, name.c_str()) != 1) {
    return fail(ErrorCode::Internal,
                "failed to set the TLS host name: " + take_openssl_errors());
  }
  return {};
}

} // namespace gatecache::tls
