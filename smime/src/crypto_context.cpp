#include "mailkms/smime/crypto_context.hpp"

#include <openssl/provider.h>

#include "mailkms/smime/ossl.hpp"

namespace mailkms::smime {

Result<std::shared_ptr<const CryptoContext>> CryptoContext::create(const CryptoOptions& options) {
  OSSL_LIB_CTX* libctx = OSSL_LIB_CTX_new();
  if (libctx == nullptr) return ossl::error(Errc::internal, "cannot create an OpenSSL library context");
  OSSL_PROVIDER* base = OSSL_PROVIDER_load(libctx, "default");
  if (base == nullptr) {
    OSSL_LIB_CTX_free(libctx);
    return ossl::error(Errc::internal, "cannot load OpenSSL's default provider");
  }
  OSSL_PROVIDER* legacy = nullptr;
  if (options.legacy_ciphers) {
    legacy = OSSL_PROVIDER_load(libctx, "legacy");
    if (legacy == nullptr) {
      OSSL_PROVIDER_unload(base);
      OSSL_LIB_CTX_free(libctx);
      return ossl::error(Errc::unsupported_algorithm, "cannot load OpenSSL's legacy provider");
    }
  }
  return std::shared_ptr<const CryptoContext>(new CryptoContext(libctx, base, legacy, options));
}

CryptoContext::CryptoContext(OSSL_LIB_CTX* libctx, OSSL_PROVIDER* base, OSSL_PROVIDER* legacy,
                             CryptoOptions options)
    : libctx_(libctx), default_provider_(base), legacy_provider_(legacy), options_(options) {}

CryptoContext::~CryptoContext() {
  if (legacy_provider_ != nullptr) OSSL_PROVIDER_unload(legacy_provider_);
  OSSL_PROVIDER_unload(default_provider_);
  OSSL_LIB_CTX_free(libctx_);
}

}  // namespace mailkms::smime
