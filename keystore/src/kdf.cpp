#include "mailkms/keystore/kdf.hpp"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include <string>

namespace mailkms::keystore {

Result<smime::SecretBytes> scrypt(std::string_view passphrase, std::string_view salt, const ScryptParameters& p) {
  std::uint64_t n = p.n;
  std::uint32_t r = p.r;
  std::uint32_t parallel = p.p;
  std::uint64_t max_memory = 128 * n * r + (std::uint64_t{1} << 20);  // scrypt needs 128 N r bytes
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD, const_cast<char*>(passphrase.data()), passphrase.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, const_cast<char*>(salt.data()), salt.size()),
      OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &n),
      OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &r),
      OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &parallel),
      OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_MAXMEM, &max_memory),
      OSSL_PARAM_construct_end(),
  };
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "SCRYPT", nullptr);
  EVP_KDF_CTX* ctx = kdf != nullptr ? EVP_KDF_CTX_new(kdf) : nullptr;
  EVP_KDF_free(kdf);
  std::string key(32, '\0');
  const bool ok = ctx != nullptr &&
                  EVP_KDF_derive(ctx, reinterpret_cast<unsigned char*>(key.data()), key.size(), params) == 1;
  EVP_KDF_CTX_free(ctx);
  if (!ok) return make_error(Errc::crypto_failed, "scrypt failed (parameters too large for this machine?)");
  return smime::SecretBytes(std::move(key));
}

}  // namespace mailkms::keystore
