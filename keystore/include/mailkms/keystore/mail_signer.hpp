// The keystore's signature on the mail it sends: tokens, keys, refusals.
//
// A token mail is what a phisher copies. Signed (S/MIME) with a
// certificate that the keystore's own CA issued for the sending address,
// it shows in the user's mail program as coming from here, and the mail
// itself names the CA's fingerprint to compare. The key is made and
// certified on first use and kept behind the barrier, as users' keys are;
// it is replaced, and the old certificate revoked as superseded, when the
// sender changes, the certificate was revoked, or it has less than
// kRenewalWindow left.
#pragma once

#include <ctime>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "mailkms/keystore/barrier.hpp"
#include "mailkms/keystore/ca.hpp"
#include "mailkms/keystore/clock.hpp"
#include "mailkms/keystore/error.hpp"
#include "mailkms/smime/crypto_context.hpp"
#include "mailkms/smime/sign.hpp"

namespace mailkms::keystore {

class MailSigner {
 public:
  static constexpr std::time_t kRenewalWindow = std::time_t{30} * 24 * 3600;

  MailSigner(Barrier& barrier, CertificateAuthority& ca, smime::CryptoContextPtr ctx, Clock clock = {})
      : barrier_(barrier), ca_(ca), ctx_(std::move(ctx)), clock_(std::move(clock)) {}

  // What a mail can tell its reader about its signature.
  struct Identity {
    std::string address;           // whom the certificate names: the sender
    std::string serial;            // the signing certificate's
    std::string root_subject;      // the CA a client must trust to call it valid
    std::string root_fingerprint;  // SHA-256 of the root's DER, "AB:CD:…" as mail programs show it
  };

  // The identity signing as `sender` (made or renewed first when needed,
  // with a key of `key_type`, valid `validity_days`); `actor` is audited.
  Result<Identity> identity(const std::string& sender, KeyType key_type, int validity_days, const std::string& actor);

  // `message` (a whole RFC 5322 message, as compose_message makes it)
  // signed as multipart/signed by the identity for `sender`, which
  // identity() must have made.
  Result<std::string> sign(std::string_view message, const std::string& sender);

 private:
  struct Current {
    Identity identity;
    std::time_t not_after = 0;
    std::shared_ptr<smime::LocalSigner> signer;
  };
  Result<std::optional<Current>> load(const std::string& sender);
  Result<Current> make(const std::string& sender, KeyType key_type, int validity_days, const std::string& actor);
  Result<Current> signer_for(const CertificateRecord& record, const std::string& address);
  [[nodiscard]] bool usable(const Current& current, const std::string& sender) const;

  Barrier& barrier_;
  CertificateAuthority& ca_;
  smime::CryptoContextPtr ctx_;
  Clock clock_;
  std::mutex mutex_;  // one identity made at a time; guards current_
  std::optional<Current> current_;
};

}  // namespace mailkms::keystore
