#include "mailkms/keystore/kdf.hpp"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include <string>

#include "mailkms/smime/ossl.hpp"

namespace mailkms::keystore {
namespace {

// 32 bytes from OpenSSL's KDF `name` with `params`; `failure` if it fails.
Result<smime::SecretBytes> derive(const char* name, const OSSL_PARAM* params, const char* failure) {
  const smime::ossl::Kdf kdf(EVP_KDF_fetch(nullptr, name, nullptr));
  const smime::ossl::KdfCtx ctx(kdf ? EVP_KDF_CTX_new(kdf.get()) : nullptr);
  std::string key(32, '\0');
  if (!ctx || EVP_KDF_derive(ctx.get(), reinterpret_cast<unsigned char*>(key.data()), key.size(), params) != 1) {
    OPENSSL_cleanse(key.data(), key.size());
    return make_error(Errc::crypto_failed, failure);
  }
  return smime::SecretBytes(std::move(key));
}

}  // namespace

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
  return derive("SCRYPT", params, "scrypt failed (parameters too large for this machine?)");
}

Result<smime::SecretBytes> hkdf_sha256(const smime::SecretBytes& key, std::string_view label) {
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<unsigned char*>(key.data()), key.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, const_cast<char*>(label.data()), label.size()),
      OSSL_PARAM_construct_end(),
  };
  return derive("HKDF", params, "HKDF failed");
}

}  // namespace mailkms::keystore
