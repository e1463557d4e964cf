// The message pipeline both front ends share: for one SMTP transaction it
// decides, per recipient, what policy asks, and turns the message into the
// Outcome the front end applies — signed and encrypted on the way out,
// verified (and decrypted where policy says) on the way in. The front end
// owns the transaction and the spool; the gateway never talks SMTP.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <optional>
#include <string>
#include <vector>

#include "mailkms/gateway/certificate_cache.hpp"
#include "mailkms/gateway/clock.hpp"
#include "mailkms/gateway/outcome.hpp"
#include "mailkms/gateway/reinjection.hpp"
#include "mailkms/gateway/settings.hpp"
#include "mailkms/gateway/crl_fetcher.hpp"
#include "mailkms/gateway/trust_cache.hpp"
#include "mailkms/gateway/keystore_port.hpp"
#include "mailkms/gateway/metrics.hpp"
#include "mailkms/policy/policy.hpp"
#include "mailkms/smime/crypto_context.hpp"

namespace mailkms::gateway {

// The outbound stages' values (outbound.cpp).
struct OutboundPlan;
struct OutboundKeys;
struct OutboundCopies;
struct Planned;
enum class SmimeKind;
// The inbound stages' values (inbound.cpp).
struct InboundPlan;
struct SignatureCheck;
struct Opened;
struct SmimeResult;

// How one recipient's copy must be made; recipients with equal treatments
// can share one copy.
struct Treatment {
  bool sign = false;
  bool encrypt = false;
  bool decrypt = false;  // inbound
  smime::Cipher cipher = smime::Cipher::aes256_cbc;
  smime::Digest digest = smime::Digest::sha256;
  friend bool operator==(const Treatment&, const Treatment&) = default;
};

// One SMTP transaction, as the front end knows it.
struct Transaction {
  std::string queue_id;
  policy::Connection connection;
  std::string sender;  // MAIL FROM, without <>
  std::vector<std::string> recipients;
  // The policy this transaction started with (a reload never changes it).
  std::shared_ptr<const policy::Policy> policy;
  policy::DirectionDecision direction{policy::Direction::inbound, ""};
  std::optional<Treatment> first_treatment;  // for MixedRecipients::defer
  // Whether the MTA can refuse one recipient at RCPT TO. Postfix cannot for
  // mail it takes without SMTP (sendmail, QMQP, re-queued mail): there every
  // decision waits for the end of the message, and a mixed transaction is
  // split by re-injection whatever mixed_recipients says.
  bool refusable_recipients = true;
  // Whether the front end sends each copy in its own transaction to its
  // next hop (the proxy): recipients that need different treatment are then
  // never deferred, whatever mixed_recipients says, and their copies carry
  // no re-injection mark, since they come back to no gateway.
  bool relays_copies = false;
};

// What RCPT time could tell about one recipient.
struct EarlyPlan {
  Treatment treatment;
  bool uncertain = false;  // a rule on the subject or a header may still change it
  std::string log;
};

struct RecipientVerdict {
  enum class Kind { accept, defer, reject, tempfail };
  Kind kind = Kind::accept;
  Reply reply;
  std::string log;
};

// What went wrong in a front end itself, outside any decision of the
// gateway's; the gateway still decides the answer.
enum class FrontEndTrouble {
  internal,     // an exception, or a call to the MTA that failed
  spool,        // the message could not be stored (disk full?)
  too_big,      // over size_limit(): nothing more of it was kept
  reinjection,  // a copy for other recipients was not taken
  next_hop,     // the proxy's next hop was down, slow or reset: nothing was relayed
};

class Gateway {
 public:
  // `keystore`: a KeystoreAdapter in the daemons; `clock`: what the caches'
  // TTLs are counted in; `metrics`: where its counts go (none: nowhere).
  Gateway(Settings settings, std::shared_ptr<const policy::Policy> policy, smime::CryptoContextPtr ctx,
          const ReinjectionMark& mark, std::shared_ptr<KeystorePort> keystore, Clock clock = steady_clock(),
          std::shared_ptr<GatewayMetrics> metrics = nullptr);

  [[nodiscard]] const Settings& settings() const noexcept { return settings_; }
  [[nodiscard]] std::shared_ptr<const policy::Policy> policy() const { return std::atomic_load(&policy_); }
  // A new policy for transactions that start from now on.
  void replace_policy(std::shared_ptr<const policy::Policy> policy);
  // Forgets what is kept from the keystore and from CRL servers —
  // certificates, "no certificate", signing identities, trust anchors and
  // CRLs — so the next message asks afresh: a reload (SIGHUP) is how an
  // administrator makes a `trust add` or a revocation count at once.
  void forget_caches();

  // MAIL FROM: takes the policy snapshot and decides the direction.
  void begin(Transaction& transaction) const;
  // RCPT TO: whether this recipient can join the transaction. Adds it to
  // `transaction.recipients` when accepted.
  RecipientVerdict add_recipient(Transaction& transaction, const std::string& recipient);
  // End of message: `headers` are the message's header fields as received,
  // `message` the whole message (header section and body) in CRLF form.
  // Never throws; an internal failure becomes the configured action.
  Outcome finish(const Transaction& transaction, const std::vector<smime::HeaderField>& headers,
                 const smime::Spool& message);

  // How many bytes of this message to take before refusing it: the
  // max_message_size setting, doubled for a copy this site may have
  // re-injected (taken without SMTP, carrying the mark): encrypting made it
  // larger than the original that was let in. 0 is no limit.
  [[nodiscard]] std::size_t size_limit(const Transaction& transaction, const std::vector<smime::HeaderField>& headers) const;

  // The refusal for a front end's trouble, logged as `log`: every reply a
  // front end gives comes from the gateway.
  [[nodiscard]] Outcome answer_trouble(FrontEndTrouble trouble, std::string log) const;

  // Counts a message as its front end answered it at the end of DATA:
  // once per message, with the outcome it applied (finish's, or a
  // trouble's that replaced it).
  void account(const Transaction& transaction, const Disposition& disposition) const noexcept;

  [[nodiscard]] bool is_enrollment_address(std::string_view recipient) const;
  // Mail the keystore sent (enrollment tokens, PKCS#12 files), which goes
  // out as it is: submitted locally from the enrollment address to one
  // recipient, with a mark the keystore confirms. Anyone on the host can
  // use that sender address; only the keystore can make the mark.
  [[nodiscard]] keystore::Result<bool> from_keystore(const Transaction& transaction,
                                                     const std::vector<smime::HeaderField>& headers);

 private:
  BasicResult<EarlyPlan, RecipientVerdict> plan_recipient_early(const Transaction& transaction,
                                                                const std::string& recipient);
  // Mail to the enrollment address: handed to the keystore, never delivered.
  // A copy this site re-injected, carrying a valid mark for exactly this
  // envelope and body: already processed, passed through.
  bool is_our_reinjection(const Transaction& transaction, const std::vector<smime::HeaderField>& headers,
                          const smime::Spool& message) const;
  Outcome enrollment(const Transaction& transaction, const std::vector<smime::HeaderField>& headers,
                     const smime::Spool& message);
  // `skip`: recipients already taken out of this transaction.
  Outcome outbound(const Transaction& transaction, const std::vector<smime::HeaderField>& headers,
                   const smime::Spool& message, const std::vector<std::string>& skip);
  // The outbound stages, each taking the value the one before made: the
  // plan (policy per recipient, who may sign), the keys it needs, each
  // recipient's verdict, the copies, and the outcome with their transforms.
  std::optional<Outcome> passes_as_it_is(const Transaction& transaction, const std::vector<smime::HeaderField>& headers,
                                         SmimeKind kind);
  BasicResult<OutboundKeys, Outcome> resolve_keys(const OutboundPlan& plan);
  Outcome make_copies(const Transaction& transaction, const smime::Spool& message, const OutboundPlan& plan,
                      const OutboundKeys& keys, bool required, const OutboundCopies& copies);
  smime::Result<std::optional<smime::Spool>> transform(const Treatment& treatment, const std::vector<const Planned*>& members,
                                                       const smime::Spool& input, bool retagged,
                                                       const OutboundKeys& keys) const;
  Outcome transform_failed(const OutboundPlan& plan, bool required, const smime::Error& error, bool encrypting);
  // `failure`, but never delivering as it came what policy requires protected.
  Outcome outbound_failure(bool required, FailureAction action, FailureClass failure, const std::string& what,
                           const std::string& reason) const;
  Outcome inbound(const Transaction& transaction, const std::vector<smime::HeaderField>& headers,
                  const smime::Spool& message, const std::vector<std::string>& skip);
  // The inbound stages: the plan (policy per recipient), the signature
  // checked, the message opened for its readers, and the copies.
  std::optional<Outcome> left_encrypted(const InboundPlan& plan, const Transaction& transaction,
                                        const smime::Spool& message) const;
  BasicResult<Opened, Outcome> open_for_readers(const InboundPlan& plan, const policy::Policy& policy,
                                                const smime::Spool& message);
  SignatureCheck check_signature(const InboundPlan& plan, const policy::Policy& policy, std::vector<SmimeResult> results,
                                 const std::function<smime::VerifyResult(const smime::VerifyOptions&)>& run);
  std::string harvest(const InboundPlan& plan, const policy::Policy& policy, const smime::VerifyResult& verified);
  Outcome decrypted_copies(const Transaction& transaction, const InboundPlan& plan,
                           const std::vector<smime::HeaderField>& headers, const smime::Spool& message,
                           const Opened& opened, std::vector<SmimeResult> results, bool must_vouch,
                           std::string log) const;
  std::vector<HeaderEdit> results_edits(const InboundPlan& plan, const std::vector<SmimeResult>& results) const;
  Outcome annotated(const InboundPlan& plan, std::string log, const std::vector<SmimeResult>& results) const;
  Outcome inbound_failure(const InboundPlan& plan, FailureAction action, FailureClass failure, const std::string& what,
                          const std::string& reason, const std::vector<SmimeResult>& results) const;
  // What `action` makes of a message that met a failure of this class.
  Outcome failure(FailureAction action, FailureClass failure, const std::string& what, const std::string& reason) const;
  // A copy of `message` for `recipients` apart from the rest: marked for
  // re-injection, or as it is for a front end that relays copies itself.
  smime::Result<smime::Spool> copy_for(const Transaction& transaction, const std::vector<std::string>& recipients,
                                       const smime::Spool& message) const;
  // The sender's signing identity from the keystore, kept for the
  // certificate TTL: fetching and parsing it per message cost more CPU than
  // the signature.
  keystore::Result<std::shared_ptr<smime::Signer>> signer_for(const std::string& address);

  Settings settings_;
  std::shared_ptr<const policy::Policy> policy_;
  smime::CryptoContextPtr ctx_;
  std::shared_ptr<KeystorePort> keystore_;
  Clock clock_;
  std::shared_ptr<GatewayMetrics> metrics_;  // never null; the caches count into it
  CertificateCache certificates_;
  TrustCache trust_;
  CrlFetcher crls_;  // outside CAs' CRLs, for harvesting
  ReinjectionMark mark_;
  struct CachedSigner {
    std::shared_ptr<smime::Signer> signer;
    std::chrono::steady_clock::time_point expires;
  };
  std::mutex signers_mutex_;
  std::unordered_map<std::string, CachedSigner> signers_;
};

}  // namespace mailkms::gateway
