// What inbound verification needs from the keystore — the trust anchors
// (the administrators' trust list) and our CAs' CRLs — fetched at most once
// per TTL and shared by every message until then.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <vector>

#include "mailkms/gateway/clock.hpp"
#include "mailkms/gateway/keystore_port.hpp"
#include "mailkms/smime/verify.hpp"

namespace mailkms::gateway {

// Revocation from CRLs: a certificate whose issuer has a CRL is good or
// revoked by it; one whose issuer has none is unknown.
class CrlRevocationChecker final : public smime::RevocationChecker {
 public:
  explicit CrlRevocationChecker(std::vector<std::shared_ptr<X509_CRL>> crls) : crls_(std::move(crls)) {}
  smime::Revocation check(const smime::Certificate& certificate, const smime::Certificate& issuer) override;

 private:
  std::vector<std::shared_ptr<X509_CRL>> crls_;
};

struct Trust {
  smime::TrustStore store;
  CrlRevocationChecker revocation{{}};
};

class TrustCache {
 public:
  // `counted` is told of each get(): a hit (1, 0) or a fetch (0, 1).
  TrustCache(KeystorePort& keystore, std::chrono::seconds ttl, Clock clock = steady_clock(), CacheCounter counted = {})
      : keystore_(&keystore), ttl_(ttl), clock_(std::move(clock)), counted_(std::move(counted)) {}

  // The current anchors and CRLs; a stale copy is refreshed first, and kept
  // (for up to ten TTLs) if the keystore cannot be reached.
  keystore::Result<std::shared_ptr<Trust>> get();
  // Forget the copy: the next get() asks the keystore. Messages verifying
  // with it keep it until they are done.
  void clear();

 private:
  KeystorePort* keystore_;
  std::chrono::seconds ttl_;
  Clock clock_;
  CacheCounter counted_;
  std::mutex mutex_;
  std::shared_ptr<Trust> trust_;
  std::chrono::steady_clock::time_point fetched_{};
};

}  // namespace mailkms::gateway
