#include "mailkms/gateway/trust_cache.hpp"

#include <openssl/x509.h>

#include "mailkms/keystore/protocol.hpp"

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

keystore::Result<std::shared_ptr<Trust>> fetch(keystore::KeystoreClient& client) {
  MAILKMS_TRY(anchors, client.call("trust-anchors", nlohmann::json::object()));
  MAILKMS_TRY(crls, client.call("crls", nlohmann::json::object()));
  auto trust = std::make_shared<Trust>();
  for (const auto& anchor : anchors.value("anchors", nlohmann::json::array())) {
    auto certificate = smime::Certificate::from_pem(anchor.value("certificate", ""));
    if (!certificate) return keystore::make_error(keystore::Errc::corrupt, "a trust anchor does not parse");
    // An anchor scoped to domains vouches for signers there alone.
    std::vector<std::string> domains;
    for (const auto& d : anchor.value("domains", nlohmann::json::array())) {
      if (!d.is_string()) return keystore::make_error(keystore::Errc::corrupt, "a trust anchor's scope does not parse");
      domains.push_back(d.get<std::string>());
    }
    trust->store.add(*certificate, domains);
  }
  if (anchors.value("system_roots", false)) {
    if (auto added = trust->store.add_system_roots(); !added) {
      return keystore::make_error(keystore::Errc::internal, "system roots: " + added.error().message);
    }
  }
  std::vector<std::shared_ptr<X509_CRL>> lists;
  const nlohmann::json lists_by_ca = crls.value("crls", nlohmann::json::object());
  for (const auto& [ca, encoded] : lists_by_ca.items()) {
    MAILKMS_TRY(der, keystore::protocol::unbase64(encoded));
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    X509_CRL* crl = d2i_X509_CRL(nullptr, &p, static_cast<long>(der.size()));
    if (crl == nullptr) return keystore::make_error(keystore::Errc::corrupt, "the CRL of CA " + ca + " does not parse");
    lists.emplace_back(crl, X509_CRL_free);
  }
  trust->revocation = CrlRevocationChecker(std::move(lists));
  return trust;
}

}  // namespace

keystore::Result<std::shared_ptr<Trust>> TrustCache::get() {
  const std::lock_guard lock(mutex_);
  const auto now = std::chrono::steady_clock::now();
  if (trust_ && now - fetched_ < ttl_) return trust_;
  auto fresh = fetch(*client_);
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

}  // namespace mailkms::gateway
