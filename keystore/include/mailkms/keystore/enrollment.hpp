// Enrollment and key recovery by mail (the original KMS's "send token in
// an e-mail"): an administrator enrolls users, the keystore mails each a
// one-time token, the user replies (through a gateway) with the token and
// a password of their choosing, and the keystore mails back their keys as
// a PKCS#12 under that password. The keystore sends every one of these
// mails itself, so tokens are never shown to administrators or gateways;
// neither tokens nor passwords are ever logged or stored.
#pragma once

#include <chrono>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "mailkms/keystore/audit.hpp"
#include "mailkms/keystore/barrier.hpp"
#include "mailkms/keystore/ca.hpp"
#include "mailkms/keystore/clock.hpp"
#include "mailkms/keystore/error.hpp"
#include "mailkms/keystore/mail_mark.hpp"
#include "mailkms/keystore/mail_message.hpp"
#include "mailkms/keystore/mail_signer.hpp"
#include "mailkms/keystore/pkcs12.hpp"
#include "mailkms/keystore/storage.hpp"
#include "mailkms/keystore/tokens.hpp"
#include "mailkms/keystore/users.hpp"
#include "mailkms/smime/decrypt.hpp"

namespace mailkms::keystore {

struct EnrollmentSettings {
  // A sendmail-compatible command; "-f <mail_from> -- <recipient>" are appended.
  std::vector<std::string> mail_command{"/usr/sbin/sendmail", "-i"};
  // Empty: the enrollment address, which the gateway never encrypts from
  // (users cannot decrypt anything before they have their keys).
  std::string mail_from;
  std::string enrollment_address;  // where users reply; empty: enrollment by mail is off
  std::filesystem::path templates = "/etc/mailkms/templates";
  std::chrono::seconds token_lifetime{168 * 3600};
  Pkcs12Profile pkcs12_profile = Pkcs12Profile::modern;  // of the PKCS#12 files mailed to users

  // Who the mails come from: mail_from, else the enrollment address.
  [[nodiscard]] std::string sender() const {
    if (!mail_from.empty()) return mail_from;
    return enrollment_address.empty() ? "mailkms@localhost" : enrollment_address;
  }
};

enum class EnrollStatus { sent, already_enrolled, failed };
std::string_view to_string(EnrollStatus status) noexcept;  // "sent", "already-enrolled", "failed"

struct EnrollOutcome {
  std::string address;
  EnrollStatus status = EnrollStatus::failed;
  std::string reason;  // why it failed
};

// What a gateway passes on from a user's reply to the enrollment address.
struct RedeemRequest {
  std::string from;
  std::string token;
  smime::SecretBytes password;     // wiped when the request goes
  std::optional<std::string> csr;  // PEM PKCS#10: the user keeps their own signing key
};

class Enrollment {
 public:
  // Failed redemptions answered and audited one by one in an hour, from
  // one claimed sender and in all; past either, a failure is only counted.
  // A token is 130 random bits: the limits bound what failures cost (mail,
  // audit records), not guessing. The right token from its own address is
  // redeemed whatever the limits say, so forged replies, however many and
  // from whichever sender, lock nobody out.
  static constexpr std::size_t kFailuresPerSender = 5;
  static constexpr std::size_t kFailuresInAll = 10'000;
  static constexpr std::size_t kMinPassword = 8;

  // `limiter` takes the records of what anyone can mail us.
  Enrollment(Storage& storage, Barrier& barrier, AuditLog& audit, AuditLimiter& limiter, CertificateAuthority& ca,
             Users& users, smime::CryptoContextPtr ctx, Pkcs12Options pkcs12, EnrollmentSettings settings,
             Clock clock = {})
      : storage_(storage),
        audit_(audit),
        limiter_(limiter),
        ca_(ca),
        users_(users),
        ctx_(std::move(ctx)),
        pkcs12_(pkcs12),
        tokens_(storage, barrier),
        mark_(barrier),
        signer_(barrier, ca, ctx_, clock),
        clock_(std::move(clock)),
        settings_(std::make_shared<const EnrollmentSettings>(std::move(settings))) {}

  // New settings (SIGHUP): operations from then on use them.
  void set_settings(EnrollmentSettings settings);
  [[nodiscard]] std::shared_ptr<const EnrollmentSettings> settings() const;

  // Adds each address that is not yet a user and mails it an enrollment
  // token, unless it redeemed one already and `reissue` is false. One at a
  // time, like Users::add_many: one address failing does not stop the
  // rest. Fails as a whole only when enrollment by mail is off.
  Result<std::vector<EnrollOutcome>> enroll(std::span<const std::string> addresses, bool reissue,
                                            const std::string& actor);
  // Mails `address` a recovery token; returns when the token expires.
  Result<std::time_t> mail_recovery_token(std::string_view address, const std::string& actor);

  // true: the keys are on their way to the user. false: refused, or no
  // token in the reply (ignored: not answered, not counted toward the
  // failure limits, audited within AuditLimiter's limits); the
  // audit log says exactly why (past the failure limits: counted, and the
  // count is in the next failure recorded), the sender is told by mail only
  // if they are a user with a token pending, and the caller learns no more.
  // An Error only for failures of our own (storage, the mail command), after
  // which the token can still be used.
  Result<bool> redeem(const RedeemRequest& request, const std::string& actor);

  // What tells the keystore's own mail from other mail from its address.
  MailMark& mail_mark() { return mark_; }

 private:
  // Failed redemptions in the last hour, in memory.
  class FailureLimits {
   public:
    bool allowed(const std::string& sender, std::chrono::steady_clock::time_point now);
    void failed(const std::string& sender, std::chrono::steady_clock::time_point now);
    // A failure past the limits, counted only.
    void unrecorded();
    // How many were counted only since the last call.
    std::size_t take_unrecorded();

   private:
    void forget_old(std::chrono::steady_clock::time_point now);
    std::mutex mutex_;
    std::size_t unrecorded_ = 0;
    std::deque<std::chrono::steady_clock::time_point> all_;
    std::map<std::string, std::deque<std::chrono::steady_clock::time_point>, std::less<>> by_sender_;
  };

  Result<std::time_t> mail_token(const EnrollmentSettings& settings, TokenKind kind, const std::string& address,
                                 const std::string& actor, const std::string& action);
  EnrollOutcome enroll_one(const EnrollmentSettings& settings, const std::string& address, bool reissue,
                           const std::string& actor);
  // Marks a mail to `address` as the keystore's own.
  MarkMaker marker(const std::string& address);
  Status mail_refusal(const EnrollmentSettings& settings, const std::string& to, const std::string& reason,
                      const std::string& actor);
  // The placeholders every mail has: address, mail_from, enrollment_address,
  // and who signs it (signer, ca_name, ca_fingerprint), the signing
  // identity made first if it must be.
  Result<std::map<std::string, std::string>> mail_values(const EnrollmentSettings& settings, const std::string& address,
                                                         const std::string& actor);
  // A rendered template as a message to `to`, marked and signed.
  Result<std::string> signed_mail(const EnrollmentSettings& settings, std::string_view rendered, const std::string& to,
                                  std::span<const Attachment> attachments = {});
  // Spends the checked token `hash` and mails `record.address` its keys.
  Result<bool> deliver(const EnrollmentSettings& settings, const RedeemRequest& request, const std::string& hash,
                       const std::string& mark, const TokenRecord& record, const std::string& actor,
                       const std::function<Result<bool>(const std::string&)>& refuse);

  Storage& storage_;
  AuditLog& audit_;
  AuditLimiter& limiter_;
  CertificateAuthority& ca_;
  Users& users_;
  smime::CryptoContextPtr ctx_;
  Pkcs12Options pkcs12_;
  TokenStore tokens_;
  MailMark mark_;
  MailSigner signer_;
  FailureLimits limits_;
  Clock clock_;
  mutable std::mutex settings_mutex_;
  std::shared_ptr<const EnrollmentSettings> settings_;
};

}  // namespace mailkms::keystore
