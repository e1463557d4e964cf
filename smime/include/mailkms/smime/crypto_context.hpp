// The OpenSSL library context the engine works in. Whether legacy ciphers
// (DES, RC2) can be read is a property of this context, not of the process,
// so one process can hold a strict and a permissive context side by side.
#pragma once

#include <openssl/types.h>

#include <memory>

#include "mailkms/smime/result.hpp"

namespace mailkms::smime {

struct CryptoOptions {
  // Load OpenSSL's "legacy" provider so archived mail encrypted with DES or
  // RC2 can be decrypted. Never used to encrypt.
  bool legacy_ciphers = false;
};

class CryptoContext {
 public:
  static Result<std::shared_ptr<const CryptoContext>> create(const CryptoOptions& options = {});

  CryptoContext(const CryptoContext&) = delete;
  CryptoContext& operator=(const CryptoContext&) = delete;
  ~CryptoContext();

  [[nodiscard]] OSSL_LIB_CTX* libctx() const noexcept { return libctx_; }
  [[nodiscard]] bool legacy_ciphers() const noexcept { return options_.legacy_ciphers; }

 private:
  CryptoContext(OSSL_LIB_CTX* libctx, OSSL_PROVIDER* base, OSSL_PROVIDER* legacy, CryptoOptions options);

  OSSL_LIB_CTX* libctx_;
  OSSL_PROVIDER* default_provider_;
  OSSL_PROVIDER* legacy_provider_;
  CryptoOptions options_;
};

using CryptoContextPtr = std::shared_ptr<const CryptoContext>;

}  // namespace mailkms::smime
