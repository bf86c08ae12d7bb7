#include "appliance/upstream/tls_context.h"

#include <mutex>

#include <openssl/err.h>
#include <openssl/x509v3.h>

namespace gatecache::upstream {

namespace {

// ALPN protocol list in wire format: length-prefixed names.
constexpr unsigned char AlpnProtocols[] = "\x02h2\x08http/1.1";

int session_store_index() {
  static int index = -1;
  static std::once_flag once;
  std::call_once(once, [] {
    index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  });
  return index;
}

int on_new_session(SSL *ssl, SSL_SESSION *session) noexcept {
  auto *store = static_cast<TlsSessionStore *>(
      SSL_get_ex_data(ssl, session_store_index()));
  if (store == nullptr) {
    return 0;
  }
  store->store(session);
  return 1;
}

} // namespace

TlsSessionStore::~TlsSessionStore() {
  if (session_ != nullptr) {
    SSL_SESSION_free(session_);
  }
}

void TlsSessionStore::store(SSL_SESSION *session) {
  if (session_ != nullptr) {
    SSL_SESSION_free(session_);
  }
  session_ = session;
}

TlsContextCache::~TlsContextCache() {
  for (auto &[ca_file, context] : contexts_) {
    SSL_CTX_free(context);
  }
}

Result<SSL_CTX *> TlsContextCache::get(const std::string &ca_file) {
  auto it = contexts_.find(ca_file);
  if (it != contexts_.end()) {
    return it->second;
  }
  SSL_CTX *context = SSL_CTX_new(TLS_client_method());
  if (context == nullptr) {
    return fail(ErrorCode::Internal, "SSL_CTX_new: " + take_ssl_errors());
  }
  SSL_CTX_set_min_proto_version(context, TLS1_2_VERSION);
  SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_mode(context, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_session_cache_mode(context, SSL_SESS_CACHE_CLIENT |
                                              SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(context, on_new_session);
  if (SSL_CTX_set_default_verify_paths(context) != 1) {
    std::string errors = take_ssl_errors();
    SSL_CTX_free(context);
    return fail(ErrorCode::Internal,
                "cannot load the system trust store: " + errors);
  }
  if (!ca_file.empty() &&
      SSL_CTX_load_verify_locations(context, ca_file.c_str(), nullptr) != 1) {
    std::string errors = take_ssl_errors();
    SSL_CTX_free(context);
    return fail(ErrorCode::Invalid,
                "cannot load CA file " + ca_file + ": " + errors);
  }
  // SSL_CTX_set_alpn_protos returns 0 on success, unlike most of OpenSSL.
  if (SSL_CTX_set_alpn_protos(context, AlpnProtocols,
                              sizeof(AlpnProtocols) - 1) != 0) {
    SSL_CTX_free(context);
    return fail(ErrorCode::Internal, "SSL_CTX_set_alpn_protos failed");
  }
  contexts_.emplace(ca_file, context);
  return context;
}

Result<void> prepare_client_ssl(SSL *ssl, const std::string &host,
                                bool ip_literal, TlsSessionStore *store) {
  if (ip_literal) {
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    if (X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str()) != 1) {
      return fail(ErrorCode::Internal,
                  "cannot set the IP address to verify: " + take_ssl_errors());
    }
  } else {
    if (SSL_set_tlsext_host_name(ssl, host.c_str()) != 1 ||
        SSL_set1_host(ssl, host.c_str()) != 1) {
      return fail(ErrorCode::Internal,
                  "cannot set the TLS server name: " + take_ssl_errors());
    }
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  }
  if (store != nullptr) {
    SSL_set_ex_data(ssl, session_store_index(), store);
    if (store->get() != nullptr) {
      SSL_set_session(ssl, store->get());
    }
  }
  return {};
}

std::string take_ssl_errors() {
  std::string text;
  while (unsigned long code = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof(buffer));
    if (!text.empty()) {
      text += "; ";
    }
    text += buffer;
  }
  return text.empty() ? "unknown error" : text;
}

} // namespace gatecache::upstream
