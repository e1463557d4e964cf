// Users: each has an encryption key pair, whose private key is escrowed
// behind the barrier and kept forever (archived mail must stay readable),
// and a signing key pair, whose private key the gateway signs with and
// which never leaves the keystore — or, when the user brings a PKCS#10
// request, only a signing certificate for a key they keep themselves.
#pragma once

#include <ctime>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "mailkms/keystore/audit.hpp"
#include "mailkms/keystore/barrier.hpp"
#include "mailkms/keystore/ca.hpp"
#include "mailkms/keystore/error.hpp"
#include "mailkms/keystore/kdf.hpp"
#include "mailkms/keystore/pkcs12.hpp"
#include "mailkms/keystore/storage.hpp"

namespace mailkms::keystore {

struct UserPolicy {
  KeyType encryption_key = KeyType::rsa2048;  // RSA: what every deployed client can encrypt to
  KeyType signing_key = KeyType::rsa2048;
  int validity_days = 365;
};

struct UserRecord {
  std::string address;  // lower case
  bool enabled = true;
  std::time_t created = 0;
  std::vector<std::string> encryption_serials;  // oldest first; the last is current
  std::string signing_serial;
  bool signing_key_held = true;  // false when the user keeps their own signing key
  std::time_t enrolled = 0;      // when they redeemed an enrollment token; 0: not yet
};

struct BulkSummary {
  std::size_t added = 0;
  std::size_t already_present = 0;
  std::vector<std::pair<std::string, std::string>> failed;  // address, why
};

class Users {
 public:
  Users(Storage& storage, Barrier& barrier, AuditLog& audit, CertificateAuthority& ca, smime::CryptoContextPtr ctx,
        UserPolicy policy = {})
      : storage_(storage), barrier_(barrier), audit_(audit), ca_(ca), ctx_(std::move(ctx)), policy_(policy) {}

  [[nodiscard]] const UserPolicy& policy() const { return policy_; }

  // Keys, certificates, escrow and the user record: all in one transaction.
  Result<UserRecord> add(std::string_view address, const std::string& actor);
  // One address at a time, each in its own transaction; a bad one does not
  // stop the rest. `progress` is called after each.
  BulkSummary add_many(std::span<const std::string> addresses, const std::string& actor,
                       const std::function<void(std::size_t done, std::size_t total)>& progress = {});
  Result<UserRecord> get(std::string_view address);
  Result<std::vector<UserRecord>> list(std::string_view after, std::size_t limit);
  Status set_enabled(std::string_view address, bool enabled, const std::string& actor);
  // Not audited here: the caller audits the redemption in the same transaction.
  Status set_enrolled(std::string_view address, std::time_t when);
  // New keys and certificates; the old encryption key stays escrowed. A
  // signing key the user keeps (!signing_key_held) is left alone with its
  // certificate: only the encryption key is renewed, and the user sends a
  // new request for signing.
  Result<UserRecord> renew(std::string_view address, const std::string& actor);
  // Renews every enabled user whose encryption certificate, or signing
  // certificate for a key we hold, ends before `before`; one transaction
  // each. Returns how many were renewed.
  Result<std::size_t> renew_expiring(std::time_t before, const std::string& actor);
  // A signing certificate for a key the user holds, from their PKCS#10.
  Result<smime::Certificate> certify_signing_request(std::string_view address, std::string_view csr_pem,
                                                     const std::string& actor);

  Result<smime::Certificate> encryption_certificate(std::string_view address);
  Result<smime::Certificate> signing_certificate(std::string_view address);
  Result<smime::PrivateKey> signing_key(std::string_view address);
  // Every escrowed encryption key with its certificate, oldest first.
  Result<std::vector<Pkcs12Entry>> escrowed_encryption_keys(std::string_view address);

  // Moving users between keystores (the original moved users between KMS
  // servers): their certificates and private keys, and the issuing chain,
  // encrypted under a key derived from `password` (scrypt, AES-256-GCM).
  Result<std::string> export_bundle(std::span<const std::string> addresses, std::string_view password,
                                    const ScryptParameters& kdf, const std::string& actor);
  struct ImportSummary {
    std::size_t imported = 0;
    std::vector<std::string> skipped;  // already present here
  };
  // Fails as a whole, importing nothing, if the bundle was changed, the
  // password is wrong, or a bundled certificate's serial is already stored
  // here (already_exists: a record is never replaced).
  Result<ImportSummary> import_bundle(std::string_view bundle, std::string_view password, const std::string& actor);

  static std::string normalize(std::string_view address);
  static bool plausible_address(std::string_view address);

  // Whether some user's address is in `domain` (lower case): the domains
  // the keystore serves. Read from storage at the first call, then kept as
  // users are saved (a domain stays once seen: at worst a harvest too many
  // is refused).
  Result<bool> has_domain(std::string_view domain);

 private:
  Status issue_encryption(UserRecord& record, const std::string& actor);
  Status issue_signing(UserRecord& record, const std::string& actor);
  Status save(const UserRecord& record);

  Storage& storage_;
  Barrier& barrier_;
  AuditLog& audit_;
  CertificateAuthority& ca_;
  smime::CryptoContextPtr ctx_;
  UserPolicy policy_;
  std::mutex domains_mutex_;
  std::optional<std::set<std::string, std::less<>>> domains_;  // read on first use
};

}  // namespace mailkms::keystore
