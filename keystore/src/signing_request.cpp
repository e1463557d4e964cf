#include "mailkms/keystore/signing_request.hpp"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "mailkms/smime/ossl.hpp"

namespace mailkms::keystore {

std::optional<std::string> unacceptable_key(const EVP_PKEY* key) {
  if (EVP_PKEY_is_a(key, "RSA")) {
    const int bits = EVP_PKEY_get_bits(key);
    if (bits < 2048) return "RSA of " + std::to_string(bits) + " bits: at least 2048 are needed";
    if (bits > 16384) return "RSA of " + std::to_string(bits) + " bits: at most 16384 are accepted";
    return std::nullopt;
  }
  if (EVP_PKEY_is_a(key, "EC")) {
    char curve[80] = {};
    std::size_t length = 0;
    if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, curve, sizeof curve, &length) != 1) {
      ERR_clear_error();
      return "EC without a named curve: P-256 or P-384 are accepted";
    }
    const std::string_view name(curve, length);
    if (name == "prime256v1" || name == "P-256" || name == "secp384r1" || name == "P-384") return std::nullopt;
    return "EC on curve " + std::string(name) + ": P-256 or P-384 are accepted";
  }
  const char* type = EVP_PKEY_get0_type_name(key);
  return std::string(type != nullptr ? type : "an unknown type") + ": RSA (2048 bits or more) or EC on P-256 or P-384 are accepted";
}

Result<PublicKey> read_signing_request(std::string_view csr_pem) {
  if (csr_pem.size() > kMaxSigningRequest) {
    return make_error(Errc::invalid_argument, "the request is larger than " + std::to_string(kMaxSigningRequest) + " bytes");
  }
  const smime::ossl::Bio bio = smime::ossl::memory_bio(csr_pem);
  const smime::ossl::X509Req request(
      bio ? PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!request) {
    ERR_clear_error();
    return make_error(Errc::invalid_argument, "not a PEM certificate request");
  }
  PublicKey key(X509_REQ_get_pubkey(request.get()));
  if (!key) {
    ERR_clear_error();
    return make_error(Errc::invalid_argument, "the request carries no readable public key");
  }
  if (const auto weak = unacceptable_key(key.get())) {
    return make_error(Errc::invalid_argument, "the request's key is refused: " + *weak);
  }
  if (X509_REQ_verify(request.get(), key.get()) != 1) {
    ERR_clear_error();
    return make_error(Errc::invalid_argument, "the request is not signed by its own key");
  }
  return key;
}

}  // namespace mailkms::keystore
