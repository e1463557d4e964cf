#include "mailkms/gateway/certificate_cache.hpp"

#include <ctime>
#include <string_view>
#include <unordered_map>

namespace mailkms::gateway {

keystore::Result<std::vector<std::optional<RecipientCertificate>>> CertificateCache::lookup(
    std::span<const std::string> addresses) {
  std::vector<std::optional<RecipientCertificate>> out(addresses.size());
  std::vector<std::string> wanted;
  std::vector<std::size_t> positions;
  const auto now = clock_();
  const std::time_t wall = std::time(nullptr);
  {
    const std::lock_guard lock(mutex_);
    for (std::size_t i = 0; i < addresses.size(); ++i) {
      const std::string address = smime::normalize_address(addresses[i]);
      const auto it = entries_.find(address);
      // A cached certificate that has since expired is as good as none:
      // ask again rather than encrypt to it.
      if (it != entries_.end() && it->second.expires > now &&
          (!it->second.value || it->second.value->certificate.not_after() > wall)) {
        out[i] = it->second.value;
        continue;
      }
      wanted.push_back(address);
      positions.push_back(i);
    }
  }
  if (counted_) counted_(addresses.size() - wanted.size(), wanted.size());
  if (wanted.empty()) return out;

  MAILKMS_TRY(found, keystore_->certificates(wanted));
  std::unordered_map<std::string_view, const keystore::CertificateLookup::Found*> by_address;
  for (const auto& [address, entry] : found.found) by_address.emplace(address, &entry);
  const std::lock_guard lock(mutex_);
  if (entries_.size() > 100'000) entries_.clear();  // bounded; refilled on demand
  for (std::size_t k = 0; k < wanted.size(); ++k) {
    std::optional<RecipientCertificate> value;
    const auto hit = by_address.find(wanted[k]);
    if (hit != by_address.end() && hit->second->certificate.not_after() > wall) {
      value = RecipientCertificate{hit->second->certificate, hit->second->capabilities};
    }
    entries_[wanted[k]] = Entry{value, now + (value ? ttl_ : missing_ttl_)};
    out[positions[k]] = std::move(value);
  }
  return out;
}

void CertificateCache::clear() {
  const std::lock_guard lock(mutex_);
  entries_.clear();
}

}  // namespace mailkms::gateway
