#include "mailkms/keystore/harvest.hpp"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

#include <nlohmann/json.hpp>

#include "mailkms/keystore/protocol.hpp"
#include "mailkms/keystore/users.hpp"
#include "mailkms/smime/ossl.hpp"

namespace mailkms::keystore {
namespace {

constexpr std::string_view kPrefix = "harvest/";

std::string harvest_key(std::string_view address) { return std::string(kPrefix) + std::string(address); }

std::string when(std::time_t t) {
  char text[32];
  std::tm tm{};
  if (gmtime_r(&t, &tm) == nullptr || std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%SZ", &tm) == 0) {
    return std::to_string(t);
  }
  return text;
}


bool names_crl(const smime::Certificate& certificate) {
  const int at = X509_get_ext_by_NID(certificate.native(), NID_crl_distribution_points, -1);
  return at >= 0;
}

bool about_revocation(int error) {
  switch (error) {
    case X509_V_ERR_UNABLE_TO_GET_CRL:
    case X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER:
    case X509_V_ERR_CRL_SIGNATURE_FAILURE:
    case X509_V_ERR_CRL_NOT_YET_VALID:
    case X509_V_ERR_CRL_HAS_EXPIRED:
    case X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE:
    case X509_V_ERR_KEYUSAGE_NO_CRL_SIGN:
    case X509_V_ERR_CERT_REVOKED: return true;
    default: return false;
  }
}

nlohmann::json to_json(const HarvestedCertificate& r) {
  std::vector<std::string> chain;
  for (const auto& c : r.chain) chain.push_back(c.pem());
  nlohmann::json j{{"address", r.address},
                   {"certificate", r.certificate.pem()},
                   {"chain", chain},
                   {"stored_at", r.stored_at}};
  if (r.capabilities) j["capabilities"] = protocol::capabilities_to_json(*r.capabilities);
  if (r.signing_time) j["signing_time"] = *r.signing_time;
  return j;
}

Result<HarvestedCertificate> from_json(std::string_view key, std::string_view text) {
  const Error bad = make_error(Errc::corrupt, std::string(key) + " does not parse");
  const auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object()) return bad;
  try {
    auto certificate = smime::Certificate::from_pem(j.at("certificate").get<std::string>());
    if (!certificate) return bad;
    HarvestedCertificate r{j.at("address").get<std::string>(), std::move(*certificate), {}, {}, {},
                           j.at("stored_at").get<std::time_t>()};
    for (const auto& pem : j.at("chain")) {
      auto c = smime::Certificate::from_pem(pem.get<std::string>());
      if (!c) return bad;
      r.chain.push_back(std::move(*c));
    }
    if (const auto caps = j.find("capabilities"); caps != j.end()) {
      auto parsed = protocol::capabilities_from_json(*caps);
      if (!parsed) return bad;
      r.capabilities = std::move(*parsed);
    }
    if (const auto t = j.find("signing_time"); t != j.end()) r.signing_time = t->get<std::time_t>();
    return r;
  } catch (const nlohmann::json::exception&) {
    return bad;
  }
}

}  // namespace

Status check_encryption_certificate(const smime::Certificate& certificate, std::string_view address, std::time_t now) {
  if (!certificate.has_email(address)) {
    std::string named;
    for (const auto& a : certificate.email_addresses()) named += (named.empty() ? "" : ", ") + a;
    return make_error(Errc::invalid_argument, std::string(address) + " is not an address of " + certificate.subject() +
                                                  " (it names " + (named.empty() ? "none" : named) + ")");
  }
  if (certificate.not_before() > now) {
    return make_error(Errc::invalid_argument,
                      certificate.subject() + " is not valid before " + when(certificate.not_before()));
  }
  if (certificate.not_after() <= now) {
    return make_error(Errc::invalid_argument, certificate.subject() + " expired " + when(certificate.not_after()));
  }
  X509* x = certificate.native();
  const std::uint32_t flags = X509_get_extension_flags(x);
  if ((flags & EXFLAG_INVALID) != 0) {
    ERR_clear_error();
    return make_error(Errc::invalid_argument, certificate.subject() + " has malformed extensions");
  }
  if ((flags & EXFLAG_CA) != 0) return make_error(Errc::invalid_argument, certificate.subject() + " is a CA certificate");
  if ((flags & EXFLAG_XKUSAGE) != 0 && (X509_get_extended_key_usage(x) & (XKU_SMIME | XKU_ANYEKU)) == 0) {
    return make_error(Errc::invalid_argument, certificate.subject() + "'s extendedKeyUsage does not allow email");
  }
  const EVP_PKEY* key = X509_get0_pubkey(x);
  if (key == nullptr) ERR_clear_error();
  // RSA-PSS keys may only sign; every other S/MIME key is RSA or EC.
  const bool rsa = key != nullptr && EVP_PKEY_is_a(key, "RSA");
  const bool ec = key != nullptr && EVP_PKEY_is_a(key, "EC");
  if (!rsa && !ec) return make_error(Errc::invalid_argument, certificate.subject() + "'s key cannot be encrypted to");
  const std::uint32_t needed = rsa ? KU_KEY_ENCIPHERMENT : KU_KEY_AGREEMENT;
  if ((flags & EXFLAG_KUSAGE) != 0 && (X509_get_key_usage(x) & needed) == 0) {
    return make_error(Errc::invalid_argument, certificate.subject() + "'s keyUsage does not allow encryption (no " +
                                                  (rsa ? "keyEncipherment" : "keyAgreement") + ")");
  }
  return Ok{};
}

Status verify_chain(const smime::CryptoContext& ctx, const smime::TrustStore& trust,
                    const smime::Certificate& certificate, std::span<const smime::Certificate> intermediates,
                    std::string_view address, std::time_t now, const std::vector<std::string>* crls) {
  // Declared first: the context only borrows the CRLs.
  const smime::ossl::CrlStack lists(sk_X509_CRL_new_null());
  const smime::ossl::BorrowedX509Stack untrusted(sk_X509_new_null());  // the certificates are the caller's
  const smime::ossl::X509StoreCtx sctx(X509_STORE_CTX_new_ex(ctx.libctx(), nullptr));
  if (!untrusted || !sctx) {
    ERR_clear_error();
    return make_error(Errc::crypto_failed, "out of memory building a chain");
  }
  for (const auto& c : intermediates) {
    if (sk_X509_push(untrusted.get(), c.native()) <= 0) return make_error(Errc::crypto_failed, "out of memory");
  }
  if (X509_STORE_CTX_init(sctx.get(), trust.native(), certificate.native(), untrusted.get()) != 1) {
    ERR_clear_error();
    return make_error(Errc::crypto_failed, "cannot build a chain");
  }
  // No purpose: the leaf's usages are check_encryption_certificate's to judge.
  X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(sctx.get()), now);
  if (crls != nullptr && names_crl(certificate)) {
    if (!lists) return make_error(Errc::crypto_failed, "out of memory");
    for (const auto& der : *crls) {
      const auto* p = reinterpret_cast<const unsigned char*>(der.data());
      smime::ossl::X509Crl crl(d2i_X509_CRL(nullptr, &p, static_cast<long>(der.size())));
      if (!crl || sk_X509_CRL_push(lists.get(), crl.get()) <= 0) {
        ERR_clear_error();
        return make_error(Errc::permission_denied, certificate.subject() + ": a CRL offered for it does not parse");
      }
      (void)crl.release();  // the stack owns it now
    }
    X509_STORE_CTX_set0_crls(sctx.get(), lists.get());
    X509_VERIFY_PARAM_set_flags(X509_STORE_CTX_get0_param(sctx.get()), X509_V_FLAG_CRL_CHECK);
  }
  if (X509_verify_cert(sctx.get()) != 1) {
    const int error = X509_STORE_CTX_get_error(sctx.get());
    std::string reason = X509_verify_cert_error_string(error);
    if (X509* where = X509_STORE_CTX_get_current_cert(sctx.get()); where != nullptr) {
      reason += " (" + smime::Certificate::share(where).subject() + ")";
    }
    ERR_clear_error();
    if (about_revocation(error)) {
      return make_error(Errc::permission_denied, certificate.subject() + " fails its revocation check: " + reason);
    }
    return make_error(Errc::permission_denied,
                      certificate.subject() + " does not chain to a trust anchor: " + reason);
  }
  if (auto outside = trust.out_of_scope(X509_STORE_CTX_get0_chain(sctx.get()), address)) {
    return make_error(Errc::permission_denied, std::move(*outside));
  }
  return Ok{};
}

Result<std::optional<std::string>> HarvestedCertificates::remember(const HarvestedCertificate& record) {
  std::optional<std::string> refused;
  MAILKMS_CHECK(storage_.transaction([&]() -> Status {
    MAILKMS_TRY(existing, get(record.address));
    if (existing && existing->signing_time &&
        (!record.signing_time || *record.signing_time < *existing->signing_time)) {
      refused = "a certificate from a message signed " + when(*existing->signing_time) + " is kept for " +
                record.address + "; this one is from " +
                (record.signing_time ? "an older message, signed " + when(*record.signing_time)
                                     : "a message without a signing time");
      return Ok{};
    }
    return barrier_.put(harvest_key(record.address), to_json(record).dump());
  }));
  return refused;
}

Result<std::optional<HarvestedCertificate>> HarvestedCertificates::get(std::string_view address) {
  const std::string key = harvest_key(Users::normalize(address));
  MAILKMS_TRY(stored, barrier_.get(key));
  if (!stored) return std::optional<HarvestedCertificate>();
  MAILKMS_TRY(record, from_json(key, std::string_view(reinterpret_cast<const char*>(stored->data()), stored->size())));
  // The barrier binds the record to its key; this binds the key to the address inside.
  if (harvest_key(record.address) != key) return make_error(Errc::corrupt, key + " names another address");
  return std::optional<HarvestedCertificate>(std::move(record));
}

Result<std::vector<HarvestedCertificate>> HarvestedCertificates::list(std::string_view after, std::size_t limit) {
  MAILKMS_TRY(rows, storage_.scan(kPrefix, after.empty() ? std::string() : harvest_key(Users::normalize(after)), limit));
  std::vector<HarvestedCertificate> out;
  for (const auto& [key, sealed] : rows) {
    MAILKMS_TRY(record, get(std::string_view(key).substr(kPrefix.size())));
    if (record) out.push_back(std::move(*record));
  }
  return out;
}

Status HarvestedCertificates::remove(std::string_view address, const std::string& actor) {
  const std::string normalized = Users::normalize(address);
  return storage_.transaction([&]() -> Status {
    MAILKMS_TRY(existing, storage_.get(harvest_key(normalized)));
    if (!existing) return make_error(Errc::not_found, "no harvested certificate for " + normalized);
    // A record that no longer opens can still be removed; the log then says so.
    auto record = get(normalized);
    const std::string detail = !record ? record.error().message : *record ? (*record)->certificate.subject() : "";
    MAILKMS_CHECK(storage_.remove(harvest_key(normalized)));
    return audit_.append({actor, "harvested-remove", normalized, "ok", detail});
  });
}

}  // namespace mailkms::keystore
