// The certificate authority: a root, issuing CAs under it (or under an
// external CA, through a request and an import), user certificates in two
// profiles, revocation and CRLs. CA private keys live behind the barrier
// like every other key. Issuance walks the enabled issuing CAs in priority
// order and moves on, with a note, when one cannot issue.
#pragma once

#include <ctime>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mailkms/keystore/audit.hpp"
#include "mailkms/keystore/barrier.hpp"
#include "mailkms/keystore/error.hpp"
#include "mailkms/keystore/storage.hpp"
#include "mailkms/smime/certificate.hpp"
#include "mailkms/smime/crypto_context.hpp"

namespace mailkms::keystore {

enum class KeyType { rsa2048, rsa3072, rsa4096, ec_p256, ec_p384 };
std::optional<KeyType> parse_key_type(std::string_view name);  // "rsa-3072", "ec-p384" …
std::string_view to_string(KeyType type) noexcept;

// A new private key of `type`.
Result<smime::PrivateKey> generate_key(const smime::CryptoContext& ctx, KeyType type);

enum class CaRole { root, issuing, awaiting_external };
std::string_view to_string(CaRole role) noexcept;

struct CaInfo {
  std::string id;  // [a-z0-9-], chosen by the administrator
  CaRole role = CaRole::root;
  std::string parent;  // the CA above, "" for a root or an externally signed CA
  int priority = 100;  // issuing CAs are tried lowest first
  bool enabled = true;
  std::optional<smime::Certificate> certificate;  // absent while awaiting an external signature
  std::vector<smime::Certificate> external_chain;  // above an externally signed CA, up to its root
};

enum class Profile { encryption, signing };
std::string_view to_string(Profile profile) noexcept;

enum class RevocationReason {  // RFC 5280 §5.3.1
  unspecified = 0,
  key_compromise = 1,
  ca_compromise = 2,
  affiliation_changed = 3,
  superseded = 4,
  cessation_of_operation = 5,
};
std::optional<RevocationReason> parse_revocation_reason(std::string_view name);  // "keyCompromise" …

struct CertificateRecord {
  std::string serial;  // hex, upper case
  std::string ca_id;
  std::string owner;   // an address, or "ca:<id>"
  Profile profile = Profile::encryption;
  smime::Certificate certificate;
  std::optional<std::time_t> revoked_at;
  RevocationReason reason = RevocationReason::unspecified;
};

struct Issued {
  smime::Certificate certificate;
  std::string ca_id;
  std::vector<std::string> skipped;  // "ca-2: expired" — CAs passed over, and why
};

class CertificateAuthority {
 public:
  CertificateAuthority(Storage& storage, Barrier& barrier, AuditLog& audit, smime::CryptoContextPtr ctx)
      : storage_(storage), barrier_(barrier), audit_(audit), ctx_(std::move(ctx)) {}

  Result<CaInfo> create_root(const std::string& id, const std::string& name, KeyType type, int validity_days,
                             const std::string& actor);
  Result<CaInfo> create_issuing(const std::string& id, const std::string& parent, const std::string& name,
                                KeyType type, int validity_days, int priority, const std::string& actor);
  // An issuing CA to be signed by an external CA: returns the PKCS#10 (PEM).
  Result<std::string> request_external(const std::string& id, const std::string& name, KeyType type, int priority,
                                       const std::string& actor);
  // The external CA's certificate for `id`, then its chain up to its root.
  Status import_external(const std::string& id, std::string_view pem_chain, const std::string& actor);
  Status set_enabled(const std::string& id, bool enabled, const std::string& actor);

  Result<std::vector<CaInfo>> list();
  Result<CaInfo> get(const std::string& id);
  // The certificates above `id`, nearest first, up to and including the root.
  Result<std::vector<smime::Certificate>> chain(const std::string& id);

  // A certificate for `public_key`, naming `address`, in `profile`, from
  // the first enabled issuing CA (by priority) that can issue.
  Result<Issued> issue(EVP_PKEY* public_key, const std::string& address, Profile profile, int validity_days,
                       const std::string& actor);

  Result<CertificateRecord> certificate(const std::string& serial);

  // What a lookup needs, without parsing the certificate: the hot path.
  struct Summary {
    std::string ca_id;
    std::string pem;
    std::time_t not_after = 0;
    bool revoked = false;
  };
  Result<Summary> summary(const std::string& serial);
  // chain(id) as PEM, cached: CAs change rarely, lookups often.
  Result<std::vector<std::string>> chain_pem(const std::string& id);
  Status revoke(const std::string& serial, RevocationReason reason, const std::string& actor);
  // The current CRL of issuing CA `id` (DER): the one made last, unless a
  // revocation has happened since or it is a day old; then a new one, with
  // the next CRL number.
  Result<std::string> crl(const std::string& id, int next_update_days = 7);

 private:
  // The stored CRL while it is less than a day old.
  Result<std::optional<std::string>> cached_crl(const std::string& id);
  // Refuses a certificate record that says "valid" when a revocation row exists.
  Status check_not_revoked(const std::string& ca_id, const std::string& serial);
  Result<CaInfo> create_ca(const std::string& id, const std::optional<std::string>& parent, const std::string& name,
                           KeyType type, int validity_days, int priority, CaRole role, const std::string& actor);
  Status save(const CaInfo& info);
  Result<smime::PrivateKey> ca_key(const std::string& id);
  Result<Issued> issue_with(const CaInfo& ca, EVP_PKEY* public_key, const std::string& address, Profile profile,
                            int validity_days);

  Storage& storage_;
  Barrier& barrier_;
  AuditLog& audit_;
  smime::CryptoContextPtr ctx_;
  std::mutex chain_cache_mutex_;
  std::map<std::string, std::vector<std::string>, std::less<>> chain_cache_;
};

// Where private keys are kept behind the barrier: owner and key id are
// both in the storage key, so the barrier binds a key to its owner.
std::string private_key_path(std::string_view owner, std::string_view key_id);
Status store_private_key(Barrier& barrier, std::string_view owner, std::string_view key_id, const smime::PrivateKey& key);
Result<smime::PrivateKey> load_private_key(Barrier& barrier, const smime::CryptoContext& ctx, std::string_view owner,
                                           std::string_view key_id);

}  // namespace mailkms::keystore
