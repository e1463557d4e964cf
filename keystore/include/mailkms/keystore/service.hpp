// The keystore's operations as the daemon serves them: decides who may do
// what (by the peer's credentials), answers each request with a result or
// an Error, and audits refusals. Knows nothing of sockets, so it is tested
// directly as well as through the daemon.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>
#include <vector>

#include "mailkms/keystore/admins.hpp"
#include "mailkms/keystore/audit.hpp"
#include "mailkms/keystore/authenticated_storage.hpp"
#include "mailkms/keystore/barrier.hpp"
#include "mailkms/keystore/ca.hpp"
#include "mailkms/keystore/clock.hpp"
#include "mailkms/keystore/enrollment.hpp"
#include "mailkms/keystore/audit_checkpoint.hpp"
#include "mailkms/keystore/harvest.hpp"
#include "mailkms/keystore/protocol.hpp"
#include "mailkms/keystore/seal.hpp"
#include "mailkms/keystore/service_ca.hpp"
#include "mailkms/keystore/database.hpp"
#include "mailkms/keystore/users.hpp"
#include "mailkms/smime/sign.hpp"
#include "mailkms/smime/verify.hpp"

namespace mailkms::keystore {

// A peer over TLS, as the client certificate the handshake verified
// against the service CA names it. What it may do is decided from the
// keystore's own row for that certificate (ServiceCa::admit), not from
// these fields alone.
struct TlsPeer {
  std::string name;         // the certificate's CN
  std::string role;         // its OU: "gateway", "admin" or "keystore"
  std::string serial;       // hex, upper case
  std::string fingerprint;  // SHA-256 of its DER, hex
  std::string address;      // where it connected from, for the log
};

// Who is asking: a local process from SO_PEERCRED, or a TLS peer. A TLS
// caller's uid, gid and pid mean nothing and are never looked at.
struct Caller {
  uid_t uid = 0;
  gid_t gid = 0;
  pid_t pid = 0;
  std::optional<TlsPeer> tls{};

  static Caller remote(TlsPeer peer) {
    return Caller{static_cast<uid_t>(-1), static_cast<gid_t>(-1), 0, std::move(peer)};
  }
  // What rate limits and throttles count by: "uid 1000", "tls mx1.example.org".
  [[nodiscard]] std::string principal() const {
    return tls ? "tls " + tls->name : "uid " + std::to_string(uid);
  }
};

struct AccessPolicy {
  // Gateways (milter, proxy) may look up certificates, sign, decrypt,
  // remember outside senders' certificates and redeem users' tokens.
  std::vector<uid_t> gateway_uids;
  std::vector<gid_t> gateway_gids;
  // Signatures and unwraps a second, per gateway uid (0: no limit): a
  // compromised gateway uses users' keys at this rate at most, and is seen
  // doing so in `mailkmsctl status`.
  unsigned key_uses_per_second = 1000;
};

class KeystoreService {
 public:
  // Opens an initialized keystore; it starts sealed.
  struct Policies {
    UserPolicy users;
    AdminPolicy admins;
    Pkcs12Options pkcs12;
    EnrollmentSettings enrollment;
    // [keystore] local_domains: served here besides the users' domains.
    std::vector<std::string> local_domains;
    // What sessions, tokens, back-offs and rate limits count in: the
    // system's clocks, except in tests.
    Clock clock;
  };

  static Result<std::unique_ptr<KeystoreService>> open(const DatabaseLocation& database,
                                                       smime::CryptoContextPtr ctx, AccessPolicy access,
                                                       Policies policies = {});

  // Creates a keystore: the database, a master key sealed as `seal` says,
  // and the first administrator; left unsealed. Refuses an existing
  // database.
  static Result<std::unique_ptr<KeystoreService>> initialize(const DatabaseLocation& database,
                                                             smime::CryptoContextPtr ctx, const SealRecord& seal,
                                                             smime::SecretBytes master_key,
                                                             const std::string& first_admin,
                                                             std::string_view admin_password, AccessPolicy access,
                                                             Policies policies = {});

  Result<nlohmann::json> handle(const Caller& caller, const protocol::Request& request);

  // A new access policy (SIGHUP): requests from then on are judged by it.
  void set_access(AccessPolicy access);
  // New enrollment settings (SIGHUP): the mail command, addresses, templates.
  void set_enrollment(EnrollmentSettings settings) { enrollment_.set_settings(std::move(settings)); }
  // New local domains (SIGHUP).
  void set_local_domains(std::vector<std::string> domains);

  // Unsealing outside the protocol (a key file named in the configuration).
  Status unseal_with_key_file(const std::filesystem::path& path);
  [[nodiscard]] bool sealed() const { return barrier_.sealed(); }

  CertificateAuthority& ca() { return ca_; }
  Admins& admins() { return admins_; }
  Users& users() { return users_; }
  AuditLog& audit() { return audit_; }
  HarvestedCertificates& harvested() { return harvested_; }
  ServiceCa& service_ca() { return service_ca_; }
  Enrollment& enrollment() { return enrollment_; }
  Storage& storage() { return guarded_; }
  // Where audit checkpoints go (the file; and `log`, the daemon's log) and
  // how often one is made while the log grows.
  void set_audit_checkpoints(std::filesystem::path file, std::chrono::seconds interval,
                             std::function<void(const std::string&)> log);
  // Run every few seconds, and once more at exit (`final`): writes the
  // counts of rate-limited audit records whose window ended, and a
  // checkpoint when one is due.
  void audit_upkeep(bool final);
  // Renews users whose certificates end before `before` (the daemon's
  // hourly timer); waits for a rotation of the master key, as requests do.
  Result<std::size_t> renew_expiring(std::time_t before);
  // Where rows found forged, deleted or replayed are reported (besides the
  // audit log, which a replayed head may have broken): the daemon's log.
  void set_integrity_reporter(std::function<void(const std::string&)> report) { report_integrity_ = std::move(report); }

 private:
  KeystoreService(std::unique_ptr<Storage> storage, smime::CryptoContextPtr ctx, AccessPolicy access,
                  Policies policies);
  [[nodiscard]] bool is_gateway(const Caller& caller) const;
  // A TLS caller may do `op` only in the role its certificate has and the
  // keystore's row for it confirms (see admit_peer); status is for all.
  Status check_remote(const Caller& caller, const std::string& op, bool gateway_op);
  // ServiceCa::admit, remembered for kPeerRecheck.
  Status admit_peer(const TlsPeer& peer, PeerRole role);
  // Service certificates (gateway-add, -list, -revoke, service-ca).
  Result<nlohmann::json> execute_service_peers(const std::string& op, const nlohmann::json& params,
                                               const std::string& actor);
  Result<SealRecord> seal_record();
  // `peer` is whose wrong secret slows their own next attempt; none for
  // the key file read at start.
  Status finish_unseal(Result<smime::SecretBytes> master, const std::string& actor, const std::string& how,
                       std::optional<std::string> peer);
  // Loads the master key into the barrier and the row authentication.
  Status open_barrier(smime::SecretBytes master_key);
  void close_barrier();
  // At the first unseal of a database written before rows were
  // authenticated: authenticates them, once, and audits it.
  Status adopt_unauthenticated_rows(const std::string& actor);
  // Audits and logs what the row checks found while answering a request.
  void report_integrity(const std::string& op, const Error* error);
  Result<nlohmann::json> dispatch(const Caller& caller, const protocol::Request& request);
  // handle() once it holds the rotation lock (shared, or for rekey exclusive).
  Result<nlohmann::json> handle_locked(const Caller& caller, const protocol::Request& request);
  // The master key was rotated through another instance: seals this one,
  // and unseals it again from its key file, if it has one, under the new key.
  void reopen_after_rotation_elsewhere();
  Result<nlohmann::json> dispatch_contained(const Caller& caller, const protocol::Request& request);
  // The administrator whose live session the request carries (refusals
  // audited, within the limiter's limits: anyone on the socket can send one).
  Result<std::string> session_administrator(const Caller& caller, const protocol::Request& request);

  Result<nlohmann::json> status();
  // health: what an administrator checks on one screen (mailkmsctl status):
  // this instance, its database, the audit head, pending requests,
  // certificates in use that expire soon, and each CA's CRL.
  Result<nlohmann::json> health();
  Result<nlohmann::json> expiring_certificates(std::time_t within);
  // At unseal: the database's chain against the keystore's own checkpoint
  // file (an older copy of the database put back is said loudly), then a
  // checkpoint of where the chain stands.
  void check_and_checkpoint_audit();
  // audit-verify: the chain, and the checkpoints given (or the keystore's own).
  Result<nlohmann::json> verify_audit(const nlohmann::json& params);
  // A gateway's operation, audited (in batches) whatever its outcome: a
  // result the audit cannot take is not given.
  Result<nlohmann::json> audited(const Caller& caller, const protocol::Request& request, Result<nlohmann::json> result);
  // One use of a user's key (sign, unwrap) by this gateway, if its rate allows.
  Status take_key_use(const Caller& caller);
  Result<nlohmann::json> unseal(const Caller& caller, const nlohmann::json& params);
  // A wrong unseal secret from `peer` (unseal or rekey) slows its next try.
  // Called with unseal_mutex_ held.
  void count_wrong_secret(const std::string& peer);
  Status check_unseal_throttle(const Caller& caller);
  // Rotation of the master key (rekey.cpp): the new key wrapped under the
  // seal in use, which the unseal secret given again opens.
  Result<nlohmann::json> rekey(const Caller& caller, const nlohmann::json& params, const std::string& actor);
  Result<smime::SecretBytes> seal_key_for(const SealRecord& record, const nlohmann::json& params);
  Result<nlohmann::json> lookup_certificates(const nlohmann::json& params);
  Result<nlohmann::json> signing_identity(const nlohmann::json& params);
  Result<nlohmann::json> sign(const nlohmann::json& params);
  Result<nlohmann::json> unwrap(const nlohmann::json& params);
  // An outside sender's certificate from a signature a gateway verified,
  // checked again here against our own trust anchors.
  Result<nlohmann::json> remember_certificate(const Caller& caller, const nlohmann::json& params);
  // The domain this keystore serves that `address` is in or below (one of
  // local_domains, or a user's), if any.
  Result<std::optional<std::string>> served_domain(std::string_view address);
  // A user's reply to the enrollment address, as a gateway passes it on.
  Result<nlohmann::json> redeem_token(const Caller& caller, const nlohmann::json& params);
  Result<nlohmann::json> check_mail_mark(const Caller& caller, const nlohmann::json& params);
  // The harvested certificate for `address` if it may still be encrypted
  // to: valid now and chaining to today's anchors. `trust` is fetched on
  // first use and kept for the rest of the request.
  Result<std::optional<HarvestedCertificate>> usable_harvested(const std::string& address,
                                                               std::shared_ptr<const smime::TrustStore>& trust);

  // The trust list (the original's CTL): our roots, the roots above
  // externally signed CAs, and anchors administrators added; and whether
  // the system's roots count too.
  struct TrustAnchor {
    std::string source;       // "ours", "external", "added"
    std::string fingerprint;  // SHA-256, for added ones: what trust-remove takes
    smime::Certificate certificate;
    std::vector<std::string> domains;  // what it vouches for (see smime::TrustStore::add); empty: any
  };
  static Result<TrustAnchor> parse_trust_row(const std::string& key, const std::string& value);
  struct TrustList {
    std::vector<TrustAnchor> anchors;
    bool system_roots = false;
  };
  Result<TrustList> trust_list();
  Result<nlohmann::json> trust_anchors();
  // The same as a store to verify chains against; built again only when
  // the list changed (loading the system's roots takes milliseconds).
  Result<std::shared_ptr<const smime::TrustStore>> trust_store();
  // Each issuing CA's current CRL, for gateways to check signers against.
  Result<nlohmann::json> crls();

  // Administration (admin_ops.cpp): needs a session; tasks that policy
  // says need several approvals become requests instead of running.
  Result<nlohmann::json> administer(const Caller& caller, const protocol::Request& request);
  Result<nlohmann::json> execute(const std::string& op, const nlohmann::json& params, const std::string& actor,
                                 const std::string& admin);
  Result<nlohmann::json> open_request(const std::string& op, const nlohmann::json& params, const std::string& admin,
                                      int required);
  Result<nlohmann::json> approve(const std::string& id, const std::string& admin);
  Result<nlohmann::json> fetch_request(const std::string& id, const std::string& admin);
  Result<int> approvals_required(std::string_view task);
  // How many administrators must agree to `op`: its task's count, or for
  // the admin-change task (administrators, approval counts) the highest
  // count of any task.
  Result<int> approvals_for(std::string_view op);

  std::unique_ptr<Storage> storage_;
  AuthenticatedStorage guarded_;  // what every service reads and writes through
  std::function<void(const std::string&)> report_integrity_;
  smime::CryptoContextPtr ctx_;
  mutable std::shared_mutex access_mutex_;
  AccessPolicy access_;
  std::vector<std::string> local_domains_;  // under access_mutex_
  Barrier barrier_;
  AuditLog audit_;
  AuditLimiter audit_limiter_;  // what anyone can cause: audited within limits
  AuditCheckpoints checkpoints_;
  std::chrono::seconds checkpoint_interval_{60};
  CertificateAuthority ca_;
  ServiceCa service_ca_;
  Users users_;
  Admins admins_;
  HarvestedCertificates harvested_;
  Pkcs12Options pkcs12_;
  Enrollment enrollment_;
  AuditBatcher gateway_audit_;  // after audit_: written out before it goes

  // Per gateway uid: what it did with users' keys, and its rate limit's bucket.
  struct GatewayUse {
    std::uint64_t signed_count = 0;
    std::uint64_t unwrapped = 0;
    std::uint64_t rate_limited = 0;
    double tokens = -1;  // not yet filled
    std::chrono::steady_clock::time_point refilled{};
  };
  std::mutex gateway_use_mutex_;
  std::map<std::string, GatewayUse> gateway_use_;  // by Caller::principal()
  std::string database_;  // DatabaseLocation::describe(), for health

  // Signing keys in use, kept unwrapped (this process may hold keys):
  // the gateway signs every outgoing message. Keyed by address, checked
  // against the current signing serial on every use.
  struct CachedSigner {
    std::string serial;
    bool pss = false;
    std::shared_ptr<smime::LocalSigner> signer;
  };
  Result<std::shared_ptr<smime::LocalSigner>> signer_for(const UserRecord& user, bool pss);
  std::mutex signer_cache_mutex_;
  std::unordered_map<std::string, CachedSigner> signer_cache_;

  std::mutex trust_cache_mutex_;
  std::string trust_cache_key_;  // the anchors' DER, and whether the system's roots count
  std::shared_ptr<const smime::TrustStore> trust_cache_;

  // Held shared by every request, exclusively by a rotation of the master
  // key; a request passes the gate first, which a waiting rotation holds
  // (std::shared_mutex may let readers starve a writer).
  std::shared_mutex rotation_mutex_;
  std::mutex rotation_gate_;
  // The key file the daemon unsealed with, if it did (set before serving).
  std::filesystem::path unseal_key_file_;

  std::mutex unseal_mutex_;
  struct UnsealThrottle {
    int failures = 0;
    std::chrono::steady_clock::time_point next{};
  };
  std::unordered_map<std::string, UnsealThrottle> unseal_throttles_;  // by Caller::principal()

  // TLS peers admitted lately (ServiceCa::admit), by serial: what another
  // instance revokes is refused here within kPeerRecheck.
  struct PeerVerdict {
    std::chrono::steady_clock::time_point checked;
    std::optional<Error> refusal;
    PeerRole role = PeerRole::gateway;
  };
  std::mutex peer_cache_mutex_;
  std::unordered_map<std::string, PeerVerdict> peer_cache_;
  Clock clock_;
};

std::string describe(const Caller& caller);

}  // namespace mailkms::keystore
