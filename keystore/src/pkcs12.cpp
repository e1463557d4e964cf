#include "mailkms/keystore/pkcs12.hpp"

#include "mailkms/smime/ossl.hpp"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pkcs12.h>

namespace mailkms::keystore {
namespace {

Error crypto(std::string_view what) {
  std::string message(what);
  if (const unsigned long code = ERR_get_error(); code != 0 && ERR_reason_error_string(code) != nullptr) {
    message += ": ";
    message += ERR_reason_error_string(code);
  }
  ERR_clear_error();
  return make_error(Errc::crypto_failed, std::move(message));
}

// OpenSSL wants the password NUL-terminated: the copy is wiped on every way out.
class PasswordCopy {
 public:
  explicit PasswordCopy(std::string_view password) : text_(password) {}
  ~PasswordCopy() { OPENSSL_cleanse(text_.data(), text_.size()); }
  PasswordCopy(const PasswordCopy&) = delete;
  PasswordCopy& operator=(const PasswordCopy&) = delete;
  [[nodiscard]] const char* c_str() const { return text_.c_str(); }

 private:
  std::string text_;
};

struct Bags {
  STACK_OF(PKCS12_SAFEBAG)* certs = nullptr;
  STACK_OF(PKCS12_SAFEBAG)* keys = nullptr;
  STACK_OF(PKCS7)* safes = nullptr;
  ~Bags() {
    sk_PKCS12_SAFEBAG_pop_free(certs, PKCS12_SAFEBAG_free);
    sk_PKCS12_SAFEBAG_pop_free(keys, PKCS12_SAFEBAG_free);
    sk_PKCS7_pop_free(safes, PKCS7_free);
  }
};

}  // namespace

std::optional<Pkcs12Profile> parse_pkcs12_profile(std::string_view name) {
  if (name == "modern") return Pkcs12Profile::modern;
  if (name == "legacy") return Pkcs12Profile::legacy;
  return std::nullopt;
}

Result<std::string> make_pkcs12(const smime::CryptoContext& ctx, std::span<const Pkcs12Entry> entries,
                                std::span<const smime::Certificate> chain, std::string_view password,
                                const Pkcs12Options& options) {
  if (entries.empty()) return make_error(Errc::invalid_argument, "nothing to put in the PKCS#12 file");
  if (password.size() < 8) return make_error(Errc::invalid_argument, "a PKCS#12 password needs at least 8 characters");
  const bool legacy = options.profile == Pkcs12Profile::legacy;
  const int pbe = legacy ? NID_pbe_WithSHA1And3_Key_TripleDES_CBC : NID_aes_256_cbc;
  const int iterations = legacy ? 2048 : options.iterations;
  const PasswordCopy pass(password);
  Bags bags;
  for (const auto& entry : entries) {
    unsigned char id[EVP_MAX_MD_SIZE];
    unsigned int id_length = 0;
    if (X509_digest(entry.certificate.native(), EVP_sha1(), id, &id_length) != 1) return crypto("cannot fingerprint");
    PKCS12_SAFEBAG* cert_bag = PKCS12_add_cert(&bags.certs, entry.certificate.native());
    PKCS12_SAFEBAG* key_bag = PKCS12_add_key_ex(&bags.keys, entry.key.native(), 0, iterations, pbe, pass.c_str(),
                                                ctx.libctx(), nullptr);
    if (cert_bag == nullptr || key_bag == nullptr || PKCS12_add_localkeyid(cert_bag, id, static_cast<int>(id_length)) != 1 ||
        PKCS12_add_localkeyid(key_bag, id, static_cast<int>(id_length)) != 1 ||
        PKCS12_add_friendlyname_utf8(cert_bag, entry.friendly_name.c_str(), -1) != 1 ||
        PKCS12_add_friendlyname_utf8(key_bag, entry.friendly_name.c_str(), -1) != 1) {
      return crypto("cannot add a key and its certificate");
    }
  }
  for (const auto& ca : chain) {
    if (PKCS12_add_cert(&bags.certs, ca.native()) == nullptr) return crypto("cannot add a CA certificate");
  }
  if (PKCS12_add_safe_ex(&bags.safes, bags.certs, pbe, iterations, pass.c_str(), ctx.libctx(), nullptr) != 1 ||
      PKCS12_add_safe_ex(&bags.safes, bags.keys, -1, 0, nullptr, ctx.libctx(), nullptr) != 1) {
    return crypto("cannot assemble the PKCS#12 contents");
  }
  const smime::ossl::Pkcs12 p12(PKCS12_add_safes_ex(bags.safes, 0, ctx.libctx(), nullptr));
  if (!p12) return crypto("cannot assemble the PKCS#12 file");
  const EVP_MD* mac = legacy ? EVP_sha1() : EVP_sha256();
  const int mac_iterations = legacy ? 2048 : options.iterations;
  if (PKCS12_set_mac(p12.get(), pass.c_str(), -1, nullptr, 0, mac_iterations, mac) != 1) {
    return crypto("cannot add the PKCS#12 MAC");
  }
  std::string out = smime::ossl::to_der(p12.get(), i2d_PKCS12);
  if (out.empty()) return crypto("cannot encode the PKCS#12 file");
  return out;
}

}  // namespace mailkms::keystore
