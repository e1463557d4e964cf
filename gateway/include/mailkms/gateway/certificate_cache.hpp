// Recipients' encryption certificates, fetched from the keystore and kept
// in-process for a while so the hot path rarely waits on the socket. A
// certificate that is expired (or revoked: the keystore stops handing it
// out) is never returned; "no certificate" is remembered for a shorter
// time so a new enrollment takes effect soon.
#pragma once

#include <chrono>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "mailkms/gateway/clock.hpp"
#include "mailkms/gateway/keystore_port.hpp"

namespace mailkms::gateway {

struct RecipientCertificate {
  smime::Certificate certificate;
  std::optional<smime::Capabilities> capabilities;  // known for harvested certificates
};

class CertificateCache {
 public:
  // `counted` is told each lookup's hits and misses (addresses answered
  // from the cache, and asked of the keystore).
  CertificateCache(KeystorePort& keystore, std::chrono::seconds ttl, std::chrono::seconds missing_ttl,
                   Clock clock = steady_clock(), CacheCounter counted = {})
      : keystore_(&keystore), ttl_(ttl), missing_ttl_(missing_ttl), clock_(std::move(clock)), counted_(std::move(counted)) {}

  // The certificate of each address (nullopt: none), in the order asked.
  // One keystore request for all the addresses not cached; its failure is
  // the result (Errc::unavailable when the keystore is down).
  keystore::Result<std::vector<std::optional<RecipientCertificate>>> lookup(std::span<const std::string> addresses);

  // Forget everything, e.g. after a policy reload.
  void clear();

 private:
  struct Entry {
    std::optional<RecipientCertificate> value;
    std::chrono::steady_clock::time_point expires;
  };
  KeystorePort* keystore_;
  std::chrono::seconds ttl_;
  std::chrono::seconds missing_ttl_;
  Clock clock_;
  CacheCounter counted_;
  std::mutex mutex_;
  std::unordered_map<std::string, Entry> entries_;
};

}  // namespace mailkms::gateway
