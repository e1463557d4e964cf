#include "x509_build.hpp"

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "mailkms/smime/ossl.hpp"

namespace mailkms::keystore::detail {
const char* signing_digest(const EVP_PKEY* key) {
  return EVP_PKEY_is_a(key, "EC") && EVP_PKEY_get_bits(key) >= 384 ? "SHA384" : "SHA256";
}

Error crypto_error(std::string_view what) {
  std::string message(what);
  if (const unsigned long code = ERR_get_error(); code != 0) {
    message += ": ";
    message += ERR_reason_error_string(code) != nullptr ? ERR_reason_error_string(code) : "unknown";
  }
  ERR_clear_error();
  return make_error(Errc::crypto_failed, std::move(message));
}

Status add_extension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, issuer, cert, nullptr, nullptr, 0);
  const smime::ossl::X509Extension ext(X509V3_EXT_conf_nid(nullptr, &v3, nid, value.c_str()));
  if (!ext) return crypto_error("cannot make extension " + std::string(OBJ_nid2sn(nid)));
  if (X509_add_ext(cert, ext.get(), -1) != 1) return crypto_error("cannot add extension");
  return Ok{};
}

Status set_random_serial(X509* cert) {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1) return crypto_error("no randomness for a serial");
  bytes[0] = static_cast<unsigned char>((bytes[0] & 0x7f) | 0x40);
  const smime::ossl::Bignum bn(BN_bin2bn(bytes, sizeof bytes, nullptr));
  if (!bn || BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert)) == nullptr) {
    return crypto_error("cannot set the serial");
  }
  return Ok{};
}

Status sign_with(const smime::CryptoContext& ctx, X509* cert, EVP_PKEY* key) {
  const smime::ossl::Md md(EVP_MD_fetch(ctx.libctx(), signing_digest(key), nullptr));
  if (!md || X509_sign(cert, key, md.get()) <= 0) return crypto_error("cannot sign the certificate");
  return Ok{};
}

}  // namespace mailkms::keystore::detail
