#include "mailkms/gateway/trust_cache.hpp"

#include <openssl/x509.h>


namespace mailkms::gateway {

smime::Revocation CrlRevocationChecker::check(const smime::Certificate& certificate, const smime::Certificate& issuer) {
  for (const auto& crl : crls_) {
    if (X509_NAME_cmp(X509_CRL_get_issuer(crl.get()), X509_get_subject_name(issuer.native())) != 0) continue;
    EVP_PKEY* key = X509_get0_pubkey(issuer.native());
    if (key == nullptr || X509_CRL_verify(crl.get(), key) != 1) continue;  // not this issuer's CRL
    X509_REVOKED* entry = nullptr;
    return X509_CRL_get0_by_cert(crl.get(), &entry, certificate.native()) == 1 ? smime::Revocation::revoked
                                                                                : smime::Revocation::good;
  }
  return smime::Revocation::unknown;
}

namespace {

keystore::Result<std::shared_ptr<Trust>> fetch(KeystorePort& keystore) {
  MAILKMS_TRY(material, keystore.trust());
  auto trust = std::make_shared<Trust>();
  // An anchor scoped to domains vouches for signers there alone.
  for (const auto& anchor : material.anchors) trust->store.add(anchor.certificate, anchor.domains);
  if (material.system_roots) {
    if (auto added = trust->store.add_system_roots(); !added) {
      return keystore::make_error(keystore::Errc::internal, "system roots: " + added.error().message);
    }
  }
  trust->revocation = CrlRevocationChecker(std::move(material.crls));
  return trust;
}

}  // namespace

keystore::Result<std::shared_ptr<Trust>> TrustCache::get() {
  const std::lock_guard lock(mutex_);
  const auto now = clock_();
  const bool hit = trust_ && now - fetched_ < ttl_;
  if (counted_) counted_(hit ? 1 : 0, hit ? 0 : 1);
  if (hit) return trust_;
  auto fresh = fetch(*keystore_);
  if (!fresh) {
    // Keep verifying with what we had rather than fail every message for
    // a short outage; never for long, so a removed anchor stops counting.
    if (trust_ && now - fetched_ < 10 * ttl_) return trust_;
    return std::move(fresh).error();
  }
  trust_ = std::move(*fresh);
  fetched_ = now;
  return trust_;
}

void TrustCache::clear() {
  const std::lock_guard lock(mutex_);
  trust_.reset();
}

}  // namespace mailkms::gateway
