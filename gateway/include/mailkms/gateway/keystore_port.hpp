// What the gateway asks of the keystore, and nothing more: recipients'
// certificates, a sender's signer, a recipient's key unwrapper, an
// enrollment reply handed on, the keystore's mail mark checked, the trust
// anchors and CRLs, a harvested certificate offered. KeystoreAdapter answers
// over the keystore's socket (the daemons use it); tests answer from memory.
// A port never holds a private key in the front end's process: signers and
// unwrappers ask the keystore for each operation.
#pragma once

#include <openssl/x509.h>

#include <ctime>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mailkms/keystore/client.hpp"
#include "mailkms/smime/decrypt.hpp"
#include "mailkms/smime/sign.hpp"

namespace mailkms::gateway {

// The anchors inbound signatures are checked against, and our CAs' CRLs.
struct TrustMaterial {
  struct Anchor {
    smime::Certificate certificate;
    std::vector<std::string> domains;  // empty: vouches for any domain
  };
  std::vector<Anchor> anchors;
  bool system_roots = false;
  std::vector<std::shared_ptr<X509_CRL>> crls;
};

// An outside sender's certificate from a signature that verified.
struct HarvestedCertificate {
  std::string address;
  smime::Certificate certificate;
  std::vector<smime::Certificate> chain;
  std::optional<smime::Capabilities> capabilities;
  std::optional<std::time_t> signing_time;
  std::vector<std::string> crls;  // DER, from the certificate's distribution points
};

// A user's reply to the enrollment address. The password is cleansed by
// whoever made it, after the call.
struct EnrollmentRedemption {
  std::string from;
  std::string token;
  std::string_view password;
  std::optional<std::string> csr_pem;
};

// Every call may fail with keystore::Errc::unavailable: the keystore could
// not be asked. The gateway never takes that for "no".
class KeystorePort {
 public:
  virtual ~KeystorePort() = default;

  // The encryption certificates known for `addresses` (normalized).
  virtual keystore::Result<keystore::CertificateLookup> certificates(std::span<const std::string> addresses) = 0;
  // A signer for `address`'s signing identity; its sign() fails with
  // smime::Errc::key_operation_failed when the keystore refuses or is lost.
  virtual keystore::Result<std::shared_ptr<smime::Signer>> signer(const std::string& address) = 0;
  // An unwrapper for the key of `address` whose certificate is `certificate`.
  virtual std::unique_ptr<smime::KeyUnwrapper> unwrapper(const std::string& address,
                                                         const smime::Certificate& certificate) = 0;
  // true: the keystore took the reply (it mailed the keys); false: refused.
  virtual keystore::Result<bool> redeem(const EnrollmentRedemption& reply) = 0;
  // Whether `mark` is the keystore's own, for this recipient and Message-ID.
  virtual keystore::Result<bool> is_keystore_mark(std::string_view mark, std::string_view recipient,
                                                  std::string_view message_id) = 0;
  virtual keystore::Result<TrustMaterial> trust() = 0;
  // Whether the keystore kept the certificate.
  virtual keystore::Result<bool> remember(const HarvestedCertificate& harvested) = 0;
};

// The port over mailkms-keystored's socket.
class KeystoreAdapter final : public KeystorePort {
 public:
  explicit KeystoreAdapter(keystore::ClientOptions options) : client_(std::move(options)) {}

  keystore::Result<keystore::CertificateLookup> certificates(std::span<const std::string> addresses) override;
  keystore::Result<std::shared_ptr<smime::Signer>> signer(const std::string& address) override;
  std::unique_ptr<smime::KeyUnwrapper> unwrapper(const std::string& address,
                                                 const smime::Certificate& certificate) override;
  keystore::Result<bool> redeem(const EnrollmentRedemption& reply) override;
  keystore::Result<bool> is_keystore_mark(std::string_view mark, std::string_view recipient,
                                          std::string_view message_id) override;
  keystore::Result<TrustMaterial> trust() override;
  keystore::Result<bool> remember(const HarvestedCertificate& harvested) override;

 private:
  keystore::KeystoreClient client_;
};

}  // namespace mailkms::gateway
