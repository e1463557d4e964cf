// A KeystorePort answered from memory, for the gateway's unit tests: users
// with the test PKI's certificates and keys, harvested correspondents, the
// trust anchors, and a switch that makes every call fail as a keystore that
// cannot be reached does. It records what the gateway handed it. Never
// linked into a daemon: it holds private keys in the caller's process.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mailkms/gateway/keystore_port.hpp"

namespace mailkms::test {

class InMemoryKeystore final : public gateway::KeystorePort {
 public:
  // `address` is a user of ours whose certificate and key are the test PKI's
  // `pki_user` (alice, bob, carol…): they encrypt to it, sign and decrypt.
  void add_user(const std::string& address, const std::string& pki_user);
  // `address` has an encryption certificate and no key here (a harvested
  // correspondent), with what they said they can read.
  void add_certificate(const std::string& address, const std::string& pki_user,
                       std::optional<smime::Capabilities> capabilities = std::nullopt);
  // Signatures under the test root pass; `domains` scopes it.
  // `address` has no certificate here any more (deleted, or revoked: the
  // keystore stops handing it out).
  void remove(const std::string& address);
  void trust_test_root(std::vector<std::string> domains = {});
  void distrust_all() { anchors_.clear(); }
  // A mail mark the keystore would confirm for this recipient and Message-ID.
  void add_mail_mark(const std::string& mark, const std::string& recipient, const std::string& message_id);
  // Whether the keystore answers: while false, every call (and every sign or
  // unwrap of a signer or unwrapper made before) fails as unreachable.
  void set_reachable(bool reachable) { state_->reachable = reachable; }
  // What redeem() answers when reachable.
  void set_redeem_accepts(bool accepts) { redeem_accepts_ = accepts; }

  struct Redeemed {
    std::string from, token, password;
    std::optional<std::string> csr_pem;
  };
  [[nodiscard]] const std::vector<Redeemed>& redeemed() const { return redeemed_; }
  [[nodiscard]] const std::vector<std::string>& remembered() const { return remembered_; }
  [[nodiscard]] std::size_t signers_made() const { return signers_made_; }

  keystore::Result<keystore::CertificateLookup> certificates(std::span<const std::string> addresses) override;
  keystore::Result<std::shared_ptr<smime::Signer>> signer(const std::string& address) override;
  std::unique_ptr<smime::KeyUnwrapper> unwrapper(const std::string& address,
                                                 const smime::Certificate& certificate) override;
  keystore::Result<bool> redeem(const gateway::EnrollmentRedemption& reply) override;
  keystore::Result<bool> is_keystore_mark(std::string_view mark, std::string_view recipient,
                                          std::string_view message_id) override;
  keystore::Result<gateway::TrustMaterial> trust() override;
  keystore::Result<bool> remember(const gateway::HarvestedCertificate& harvested) override;

  // Shared with the signers and unwrappers it made, which may outlive a call.
  struct State {
    bool reachable = true;
  };

 private:
  struct Entry {
    std::string pki_user;
    bool has_key = false;
    std::optional<smime::Capabilities> capabilities;
  };
  [[nodiscard]] keystore::Error unreachable() const;

  std::shared_ptr<State> state_ = std::make_shared<State>();
  std::map<std::string, Entry> entries_;  // by normalized address
  std::vector<gateway::TrustMaterial::Anchor> anchors_;
  std::vector<std::string> marks_;  // mark, recipient, Message-ID joined by newlines
  bool redeem_accepts_ = true;
  std::vector<Redeemed> redeemed_;
  std::vector<std::string> remembered_;
  std::size_t signers_made_ = 0;
};

}  // namespace mailkms::test
