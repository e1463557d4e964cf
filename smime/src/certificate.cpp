#include "mailkms/smime/certificate.hpp"

#include <openssl/cms.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>

#include <algorithm>
#include <cctype>
#include <climits>

#include "mailkms/smime/ossl.hpp"

namespace mailkms::smime {
namespace {

std::string name_to_string(const X509_NAME* name) {
  ossl::Bio out(BIO_new(BIO_s_mem()));
  X509_NAME_print_ex(out.get(), name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
  return ossl::bio_contents(out.get());
}

std::time_t to_time_t(const ASN1_TIME* t) {
  std::tm tm{};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return timegm(&tm);
}

std::shared_ptr<X509> own(X509* x) { return {x, X509_free}; }

}  // namespace

std::string normalize_address(std::string_view address) {
  std::string out(address);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool same_address(std::string_view a, std::string_view b) { return normalize_address(a) == normalize_address(b); }

bool plausible_domain(std::string_view domain) {
  if (domain.empty() || domain.size() > 253 || domain.front() == '.' || domain.back() == '.') return false;
  if (domain.find('.') == std::string_view::npos || domain.find("..") != std::string_view::npos) return false;
  return std::all_of(domain.begin(), domain.end(), [](unsigned char c) {
    return std::isalnum(c) != 0 || c == '-' || c == '.' || c >= 0x80;
  });
}

bool address_in_domain(std::string_view address, std::string_view domain) {
  const auto at = address.rfind('@');
  if (at == std::string_view::npos || domain.empty()) return false;
  const std::string own = normalize_address(address.substr(at + 1));
  const std::string wanted = normalize_address(domain);
  if (wanted.front() != '.') return own == wanted;
  // ".partner.example": a label, then the domain.
  return own.size() > wanted.size() && own.ends_with(wanted);
}

Certificate Certificate::share(X509* x509) {
  X509_up_ref(x509);
  return Certificate(own(x509));
}

Result<Certificate> Certificate::from_pem(std::string_view pem) {
  auto bio = ossl::memory_bio(pem);
  X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr);
  if (x == nullptr) return ossl::error(Errc::invalid_certificate, "not a PEM certificate");
  return Certificate(own(x));
}

Result<Certificate> Certificate::from_der(std::string_view der) {
  if (der.size() > static_cast<std::size_t>(LONG_MAX)) return make_error(Errc::limit_exceeded, "certificate too large");
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  X509* x = d2i_X509(nullptr, &p, static_cast<long>(der.size()));
  if (x == nullptr) return ossl::error(Errc::invalid_certificate, "not a DER certificate");
  return Certificate(own(x));
}

Result<std::vector<Certificate>> Certificate::all_from_pem(std::string_view pem) {
  auto bio = ossl::memory_bio(pem);
  std::vector<Certificate> certs;
  while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) certs.push_back(Certificate(own(x)));
  // The loop ends on "no start line" at the end of the bundle; anything
  // else means a certificate in it is broken, and dropping it silently
  // would drop trust anchors with it.
  const unsigned long code = ERR_peek_last_error();
  if (code != 0 && !(ERR_GET_LIB(code) == ERR_LIB_PEM && ERR_GET_REASON(code) == PEM_R_NO_START_LINE)) {
    return ossl::error(Errc::invalid_certificate,
                       "certificate " + std::to_string(certs.size() + 1) + " of the PEM bundle is unreadable");
  }
  ERR_clear_error();
  if (certs.empty()) return make_error(Errc::invalid_certificate, "no PEM certificate found");
  return certs;
}

std::string Certificate::der() const { return ossl::to_der<X509>(x509_.get(), i2d_X509); }

std::string Certificate::pem() const {
  ossl::Bio out(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(out.get(), x509_.get());
  return ossl::bio_contents(out.get());
}

std::string Certificate::subject() const { return name_to_string(X509_get_subject_name(x509_.get())); }
std::string Certificate::issuer() const { return name_to_string(X509_get_issuer_name(x509_.get())); }

std::string Certificate::serial_hex() const {
  BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x509_.get()), nullptr);
  if (bn == nullptr) return {};
  char* hex = BN_bn2hex(bn);
  std::string out = hex != nullptr ? hex : "";
  OPENSSL_free(hex);
  BN_free(bn);
  return out;
}

std::time_t Certificate::not_before() const { return to_time_t(X509_get0_notBefore(x509_.get())); }
std::time_t Certificate::not_after() const { return to_time_t(X509_get0_notAfter(x509_.get())); }

std::vector<std::string> Certificate::email_addresses() const {
  std::vector<std::string> out;
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x509_.get(), NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) ERR_clear_error();  // absent or malformed: either way no address from it
  if (names != nullptr) {
    for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
      const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names, i);
      if (gn->type != GEN_EMAIL) continue;
      const ASN1_IA5STRING* s = gn->d.rfc822Name;
      out.push_back(normalize_address(
          std::string_view(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                           static_cast<std::size_t>(ASN1_STRING_length(s)))));
    }
    GENERAL_NAMES_free(names);
  }
  if (!out.empty()) return out;
  // Older certificates carry the address only in the subject (RFC 8550 §3).
  const X509_NAME* subject = X509_get_subject_name(x509_.get());
  for (int i = -1; (i = X509_NAME_get_index_by_NID(subject, NID_pkcs9_emailAddress, i)) >= 0;) {
    const ASN1_STRING* s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i));
    out.push_back(normalize_address(std::string_view(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                                                     static_cast<std::size_t>(ASN1_STRING_length(s)))));
  }
  return out;
}

bool Certificate::has_email(std::string_view address) const {
  const auto all = email_addresses();
  return std::any_of(all.begin(), all.end(), [&](const std::string& a) { return same_address(a, address); });
}

// The public key, or null; a key that does not decode leaves nothing on
// OpenSSL's error queue to be misreported by a later, unrelated call.
const EVP_PKEY* public_key(X509* x509) {
  const EVP_PKEY* k = X509_get0_pubkey(x509);
  if (k == nullptr) ERR_clear_error();
  return k;
}

bool Certificate::is_rsa() const {
  const EVP_PKEY* k = public_key(x509_.get());
  return k != nullptr && (EVP_PKEY_is_a(k, "RSA") || EVP_PKEY_is_a(k, "RSA-PSS"));
}

bool Certificate::is_ec() const {
  const EVP_PKEY* k = public_key(x509_.get());
  return k != nullptr && EVP_PKEY_is_a(k, "EC");
}

int Certificate::key_bits() const {
  const EVP_PKEY* k = public_key(x509_.get());
  return k != nullptr ? EVP_PKEY_get_bits(k) : 0;
}

bool operator==(const Certificate& a, const Certificate& b) {
  return X509_cmp(a.native(), b.native()) == 0;
}

Result<PrivateKey> PrivateKey::from_pem(const CryptoContext& ctx, std::string_view pem,
                                        std::optional<std::string_view> passphrase) {
  auto bio = ossl::memory_bio(pem);
  // Always a passphrase, empty when none was given: with none, OpenSSL
  // would prompt on the terminal, or read stdin.
  std::string pass(passphrase.value_or(""));
  EVP_PKEY* key = PEM_read_bio_PrivateKey_ex(bio.get(), nullptr, nullptr, pass.data(), ctx.libctx(), nullptr);
  OPENSSL_cleanse(pass.data(), pass.size());
  if (key == nullptr) return ossl::error(Errc::invalid_certificate, "not a PEM private key, or wrong passphrase");
  return adopt(key);
}

PrivateKey PrivateKey::adopt(EVP_PKEY* pkey) { return PrivateKey(std::shared_ptr<EVP_PKEY>(pkey, EVP_PKEY_free)); }

bool PrivateKey::matches(const Certificate& cert) const {
  return X509_check_private_key(cert.native(), pkey_.get()) == 1;
}

namespace {

// PKCS12_parse works in the thread's default library context; point that
// at ours for the duration, so legacy PBE (RC2-40 exports) follows ctx.
class DefaultContextScope {
 public:
  explicit DefaultContextScope(OSSL_LIB_CTX* ctx) : previous_(OSSL_LIB_CTX_set0_default(ctx)) {}
  ~DefaultContextScope() { OSSL_LIB_CTX_set0_default(previous_); }
  DefaultContextScope(const DefaultContextScope&) = delete;
  DefaultContextScope& operator=(const DefaultContextScope&) = delete;

 private:
  OSSL_LIB_CTX* previous_;
};

}  // namespace

Result<std::string> certificates_only_der(const std::vector<Certificate>& certs) {
  if (certs.empty()) return make_error(Errc::invalid_argument, "no certificate to write");
  ossl::BorrowedX509Stack stack(sk_X509_new_null());
  if (!stack) return make_error(Errc::internal, "out of memory");
  for (const auto& cert : certs) {
    if (sk_X509_push(stack.get(), cert.native()) <= 0) return make_error(Errc::internal, "out of memory");
  }
  // No signer and CMS_PARTIAL: a certificates-only SignedData. Detached, it
  // has no eContent, the form `openssl crl2pkcs7 -nocrl` writes.
  ossl::Cms cms(CMS_sign(nullptr, nullptr, stack.get(), nullptr, CMS_PARTIAL));
  if (!cms || CMS_set_detached(cms.get(), 1) != 1) return make_error(Errc::internal, "cannot make a certificates-only CMS");
  std::string der = ossl::to_der<CMS_ContentInfo>(cms.get(), i2d_CMS_ContentInfo);
  if (der.empty()) return make_error(Errc::internal, "cannot encode a certificates-only CMS");
  return der;
}

Result<KeyBundle> read_pkcs12(const CryptoContext& ctx, std::string_view der, std::string_view password) {
  const DefaultContextScope scope(ctx.libctx());
  if (der.size() > static_cast<std::size_t>(LONG_MAX)) return make_error(Errc::limit_exceeded, "PKCS#12 too large");
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  PKCS12* p12 = d2i_PKCS12(nullptr, &p, static_cast<long>(der.size()));
  if (p12 == nullptr) return ossl::error(Errc::invalid_certificate, "not a PKCS#12 file");
  const std::string pass(password);
  EVP_PKEY* key = nullptr;
  X509* cert = nullptr;
  STACK_OF(X509)* ca = nullptr;
  const int ok = PKCS12_parse(p12, pass.c_str(), &key, &cert, &ca);
  PKCS12_free(p12);
  if (ok != 1 || key == nullptr || cert == nullptr) {
    EVP_PKEY_free(key);
    X509_free(cert);
    sk_X509_pop_free(ca, X509_free);
    return ossl::error(Errc::invalid_certificate, "cannot open PKCS#12 (wrong password, or no key in it)");
  }
  KeyBundle bundle{PrivateKey::adopt(key), Certificate::share(cert), {}};
  X509_free(cert);
  for (int i = 0; i < sk_X509_num(ca); ++i) bundle.chain.push_back(Certificate::share(sk_X509_value(ca, i)));
  sk_X509_pop_free(ca, X509_free);
  return bundle;
}

}  // namespace mailkms::smime
