#include "in_memory_keystore.hpp"

#include <algorithm>

#include "test_support.hpp"

namespace mailkms::test {
namespace {

using State = InMemoryKeystore::State;

smime::Error lost() { return smime::make_error(smime::Errc::key_operation_failed, "keystore: cannot be reached"); }

// The test PKI's key, asked only while the keystore is reachable, as the
// remote signer asks the daemon for each signature.
class ReachableSigner final : public smime::Signer {
 public:
  ReachableSigner(smime::LocalSigner local, std::shared_ptr<const State> state)
      : local_(std::move(local)), state_(std::move(state)) {}
  [[nodiscard]] const smime::Certificate& certificate() const override { return local_.certificate(); }
  [[nodiscard]] const std::vector<smime::Certificate>& chain() const override { return local_.chain(); }
  [[nodiscard]] smime::SignatureScheme scheme() const override { return local_.scheme(); }
  smime::Result<std::string> sign(smime::Digest digest, std::string_view to_be_signed) override {
    if (!state_->reachable) return lost();
    return local_.sign(digest, to_be_signed);
  }

 private:
  smime::LocalSigner local_;
  std::shared_ptr<const State> state_;
};

class ReachableUnwrapper final : public smime::KeyUnwrapper {
 public:
  ReachableUnwrapper(smime::LocalKeyUnwrapper local, std::shared_ptr<const State> state)
      : local_(std::move(local)), state_(std::move(state)) {}
  [[nodiscard]] const smime::Certificate& certificate() const override { return local_.certificate(); }
  smime::Result<smime::SecretBytes> unwrap(const smime::WrappedKey& wrapped) override {
    if (!state_->reachable) return lost();
    return local_.unwrap(wrapped);
  }

 private:
  smime::LocalKeyUnwrapper local_;
  std::shared_ptr<const State> state_;
};

// An unwrapper for a certificate the keystore holds no key for: the daemon
// refuses, as it would.
class RefusingUnwrapper final : public smime::KeyUnwrapper {
 public:
  explicit RefusingUnwrapper(smime::Certificate certificate) : certificate_(std::move(certificate)) {}
  [[nodiscard]] const smime::Certificate& certificate() const override { return certificate_; }
  smime::Result<smime::SecretBytes> unwrap(const smime::WrappedKey&) override {
    return smime::make_error(smime::Errc::key_operation_failed, "keystore: no such key");
  }

 private:
  smime::Certificate certificate_;
};

}  // namespace

keystore::Error InMemoryKeystore::unreachable() const {
  return keystore::make_error(keystore::Errc::unavailable, "cannot reach the keystore (test switch)");
}

void InMemoryKeystore::add_user(const std::string& address, const std::string& pki_user) {
  entries_[smime::normalize_address(address)] = {pki_user, true, std::nullopt};
}

void InMemoryKeystore::add_certificate(const std::string& address, const std::string& pki_user,
                                       std::optional<smime::Capabilities> capabilities) {
  entries_[smime::normalize_address(address)] = {pki_user, false, std::move(capabilities)};
}

void InMemoryKeystore::remove(const std::string& address) { entries_.erase(smime::normalize_address(address)); }

void InMemoryKeystore::trust_test_root(std::vector<std::string> domains) {
  anchors_.push_back({smime::Certificate::from_pem(read_file(pki_path("root.pem"))).value(), std::move(domains)});
}

void InMemoryKeystore::add_mail_mark(const std::string& mark, const std::string& recipient,
                                     const std::string& message_id) {
  marks_.push_back(mark + "\n" + recipient + "\n" + message_id);
}

keystore::Result<keystore::CertificateLookup> InMemoryKeystore::certificates(std::span<const std::string> addresses) {
  if (!state_->reachable) return unreachable();
  keystore::CertificateLookup lookup;
  for (const auto& address : addresses) {
    const auto it = entries_.find(smime::normalize_address(address));
    if (it == entries_.end()) {
      lookup.missing.push_back(address);
      continue;
    }
    const auto& e = it->second;
    lookup.found.push_back({address, {cert(e.pki_user), chain(), e.has_key ? "keystore" : "harvested", e.capabilities}});
  }
  return lookup;
}

keystore::Result<std::shared_ptr<smime::Signer>> InMemoryKeystore::signer(const std::string& address) {
  if (!state_->reachable) return unreachable();
  const auto it = entries_.find(smime::normalize_address(address));
  if (it == entries_.end() || !it->second.has_key) {
    return keystore::make_error(keystore::Errc::not_found, "no signing identity for " + address);
  }
  ++signers_made_;
  return std::shared_ptr<smime::Signer>(std::make_shared<ReachableSigner>(test::signer(it->second.pki_user), state_));
}

std::unique_ptr<smime::KeyUnwrapper> InMemoryKeystore::unwrapper(const std::string& address,
                                                                 const smime::Certificate& certificate) {
  const auto it = entries_.find(smime::normalize_address(address));
  if (it == entries_.end() || !it->second.has_key || !(cert(it->second.pki_user) == certificate)) {
    return std::make_unique<RefusingUnwrapper>(certificate);
  }
  return std::make_unique<ReachableUnwrapper>(test::unwrapper(it->second.pki_user), state_);
}

keystore::Result<bool> InMemoryKeystore::redeem(const gateway::EnrollmentRedemption& reply) {
  if (!state_->reachable) return unreachable();
  redeemed_.push_back({reply.from, reply.token, std::string(reply.password), reply.csr_pem});
  return redeem_accepts_;
}

keystore::Result<bool> InMemoryKeystore::is_keystore_mark(std::string_view mark, std::string_view recipient,
                                                          std::string_view message_id) {
  if (!state_->reachable) return unreachable();
  const std::string wanted = std::string(mark) + "\n" + std::string(recipient) + "\n" + std::string(message_id);
  return std::find(marks_.begin(), marks_.end(), wanted) != marks_.end();
}

keystore::Result<gateway::TrustMaterial> InMemoryKeystore::trust() {
  if (!state_->reachable) return unreachable();
  gateway::TrustMaterial material;
  material.anchors = anchors_;
  return material;
}

keystore::Result<bool> InMemoryKeystore::remember(const gateway::HarvestedCertificate& harvested) {
  if (!state_->reachable) return unreachable();
  remembered_.push_back(harvested.address);
  return true;
}

}  // namespace mailkms::test
