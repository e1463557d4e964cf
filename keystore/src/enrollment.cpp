#include "mailkms/keystore/enrollment.hpp"

#include <openssl/crypto.h>

#include <algorithm>
#include <utility>

#include "mailkms/keystore/mail_message.hpp"
#include "mailkms/keystore/mailer.hpp"

namespace mailkms::keystore {
namespace {

constexpr auto kWindow = std::chrono::hours(1);

void wipe(std::string& s) { OPENSSL_cleanse(s.data(), s.size()); }

// The attached certificate of the nth CA below the root (ca.crt).
std::string intermediate_file(std::size_t n) { return "ca-intermediate-" + std::to_string(n) + ".crt"; }

// "alice" for alice@example.org, safe as a file name in a MIME header.
std::string file_stem(std::string_view address) {
  std::string out;
  for (const char c : address.substr(0, address.find('@'))) {
    const bool safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                      c == '_' || c == '-';
    out += safe ? c : '_';
  }
  return out.empty() || out.front() == '.' ? "keys" + out : out;
}


std::string_view password_of(const RedeemRequest& request) {
  return {reinterpret_cast<const char*>(request.password.data()), request.password.size()};
}

}  // namespace

std::string_view to_string(EnrollStatus status) noexcept {
  switch (status) {
    case EnrollStatus::sent: return "sent";
    case EnrollStatus::already_enrolled: return "already-enrolled";
    case EnrollStatus::failed: break;
  }
  return "failed";
}

void Enrollment::set_settings(EnrollmentSettings settings) {
  auto fresh = std::make_shared<const EnrollmentSettings>(std::move(settings));
  const std::lock_guard lock(settings_mutex_);
  settings_ = std::move(fresh);
}

std::shared_ptr<const EnrollmentSettings> Enrollment::settings() const {
  const std::lock_guard lock(settings_mutex_);
  return settings_;
}

bool Enrollment::FailureLimits::allowed(const std::string& sender, std::chrono::steady_clock::time_point now) {
  const std::lock_guard lock(mutex_);
  forget_old(now);
  const auto mine = by_sender_.find(sender);
  return all_.size() < kFailuresInAll && (mine == by_sender_.end() || mine->second.size() < kFailuresPerSender);
}

void Enrollment::FailureLimits::failed(const std::string& sender, std::chrono::steady_clock::time_point now) {
  const std::lock_guard lock(mutex_);
  all_.push_back(now);
  by_sender_[sender].push_back(now);
}

void Enrollment::FailureLimits::unrecorded() {
  const std::lock_guard lock(mutex_);
  ++unrecorded_;
}

std::size_t Enrollment::FailureLimits::take_unrecorded() {
  const std::lock_guard lock(mutex_);
  return std::exchange(unrecorded_, 0);
}

void Enrollment::FailureLimits::forget_old(std::chrono::steady_clock::time_point now) {
  while (!all_.empty() && now - all_.front() >= kWindow) all_.pop_front();
  for (auto it = by_sender_.begin(); it != by_sender_.end();) {
    auto& times = it->second;
    while (!times.empty() && now - times.front() >= kWindow) times.pop_front();
    it = times.empty() ? by_sender_.erase(it) : std::next(it);
  }
}

Result<std::vector<EnrollOutcome>> Enrollment::enroll(std::span<const std::string> addresses, bool reissue,
                                                      const std::string& actor) {
  const auto s = settings();
  if (s->enrollment_address.empty()) {
    return make_error(Errc::invalid_argument,
                      "enrollment by mail is off: set enrollment_address in [keystore] (the address users reply to)");
  }
  std::vector<EnrollOutcome> out;
  for (const auto& address : addresses) out.push_back(enroll_one(*s, address, reissue, actor));
  return out;
}

EnrollOutcome Enrollment::enroll_one(const EnrollmentSettings& s, const std::string& given, bool reissue,
                                     const std::string& actor) {
  EnrollOutcome outcome{given, EnrollStatus::failed, {}};
  auto user = users_.get(given);
  if (!user && user.error().code == Errc::not_found) user = users_.add(given, actor);
  if (!user) {
    outcome.reason = user.error().message;
    return outcome;
  }
  outcome.address = user->address;
  if (!user->enabled) {
    outcome.reason = user->address + " is disabled";
    return outcome;
  }
  if (user->enrolled != 0 && !reissue) {
    outcome.status = EnrollStatus::already_enrolled;
    return outcome;
  }
  auto mailed = mail_token(s, TokenKind::enrollment, user->address, actor, "enroll");
  if (!mailed) {
    outcome.reason = mailed.error().message;
    return outcome;
  }
  outcome.status = EnrollStatus::sent;
  return outcome;
}

Result<std::time_t> Enrollment::mail_recovery_token(std::string_view address, const std::string& actor) {
  const auto s = settings();
  if (s->enrollment_address.empty()) {
    return make_error(Errc::invalid_argument,
                      "recovery by mail is off: set enrollment_address in [keystore] (the address users reply to)");
  }
  MAILKMS_TRY(user, users_.get(address));
  if (!user.enabled) return make_error(Errc::invalid_argument, user.address + " is disabled");
  if (user.encryption_serials.empty()) return make_error(Errc::not_found, user.address + " has no escrowed key");
  return mail_token(*s, TokenKind::recovery, user.address, actor, "recover");
}

Result<std::time_t> Enrollment::mail_token(const EnrollmentSettings& s, TokenKind kind, const std::string& address,
                                           const std::string& actor, const std::string& action) {
  const std::time_t now = clock_.wall();
  const TokenRecord record{kind, address, now, now + static_cast<std::time_t>(s.token_lifetime.count()), false, 0, false};
  std::string token = new_token();
  std::string normalized = normalize_token(token).value();  // new_token() always reads back
  const std::string hash = token_hash(normalized);
  const std::string mark = "token " + AuditLog::fingerprint(normalized);
  MAILKMS_TRY(values, mail_values(s, address, actor));
  values["token"] = token;
  values["expires"] = readable_time(record.expires);
  auto rendered = render_template_file(s.templates / (kind == TokenKind::enrollment ? "enrollment.txt" : "recovery.txt"),
                                       values);
  auto message = rendered ? signed_mail(s, *rendered, address) : Result<std::string>(rendered.error());
  wipe(token);
  wipe(normalized);
  wipe(values["token"]);
  if (rendered) wipe(*rendered);
  if (!message) return std::move(message).error();
  // Stored, and the address's earlier token of this kind voided, before
  // the mail goes: a token that was mailed always exists.
  std::optional<std::string> previous;  // the token this one voids, restored if the mail fails
  MAILKMS_CHECK(storage_.transaction([&]() -> Status {
    MAILKMS_CHECK(tokens_.save(hash, record));
    MAILKMS_TRY(superseded, tokens_.make_current(hash, record));
    previous = std::move(superseded);
    return audit_.append({actor, action, address, "ok",
                          std::string(to_string(kind)) + " token sent, expires " + readable_time(record.expires) +
                              ", " + mark});
  }));
  const Status sent = send_mail(s.mail_command, s.sender(), address, *message);
  wipe(*message);
  if (!sent) {
    (void)storage_.transaction([&]() -> Status {
      MAILKMS_CHECK(tokens_.withdraw(hash, record, previous));
      return audit_.append({actor, action, address, "failed",
                            "the mail was not sent, token withdrawn" +
                                std::string(previous ? " and the one before restored" : "") + ": " + sent.error().message});
    });
    return sent.error();
  }
  return record.expires;
}

MarkMaker Enrollment::marker(const std::string& address) {
  return [this, address](const std::string& message_id) { return mark_.make(address, message_id, clock_.wall()); };
}

Result<std::map<std::string, std::string>> Enrollment::mail_values(const EnrollmentSettings& s,
                                                                   const std::string& address, const std::string& actor) {
  const UserPolicy& policy = users_.policy();
  MAILKMS_TRY(signer, signer_.identity(s.sender(), policy.signing_key, policy.validity_days, actor));
  return std::map<std::string, std::string>{{"address", address},
                                            {"mail_from", s.sender()},
                                            {"enrollment_address", s.enrollment_address},
                                            {"signer", signer.address},
                                            {"ca_name", signer.root_subject},
                                            {"ca_fingerprint", signer.root_fingerprint}};
}

Result<std::string> Enrollment::signed_mail(const EnrollmentSettings& s, std::string_view rendered,
                                            const std::string& to, std::span<const Attachment> attachments) {
  MAILKMS_TRY(message, compose_message(rendered, to, s.sender(), attachments, marker(to)));
  auto signed_message = signer_.sign(message, s.sender());
  wipe(message);
  return signed_message;
}

Status Enrollment::mail_refusal(const EnrollmentSettings& s, const std::string& to, const std::string& reason,
                                const std::string& actor) {
  MAILKMS_TRY(values, mail_values(s, to, actor));
  values["reason"] = reason;
  MAILKMS_TRY(rendered, render_template_file(s.templates / "refused.txt", values));
  MAILKMS_TRY(message, signed_mail(s, rendered, to));
  return send_mail(s.mail_command, s.sender(), to, message);
}

Result<bool> Enrollment::redeem(const RedeemRequest& request, const std::string& actor) {
  const auto s = settings();
  const std::string from = Users::normalize(request.from);
  if (!Users::plausible_address(from)) return make_error(Errc::invalid_argument, "\"from\" is not a mail address");
  const std::optional<std::string> token = normalize_token(request.token);
  if (!token) {
    // Anyone can mail the enrollment address: what carries no token is not
    // an attempt at one. It counts toward no limit and is not answered.
    MAILKMS_CHECK(limiter_.record({actor, "redeem-token", from, "ignored", "no token in the reply"}));
    return false;
  }
  const std::string hash = token_hash(*token);
  const std::string mark = "token " + AuditLog::fingerprint(*token);

  const auto refuse = [&](const std::string& why, const std::string& told = {}) -> Result<bool> {
    if (!limits_.allowed(from, clock_.steady())) {
      // A flood becomes neither mail nor a record apiece: a count.
      limits_.unrecorded();
      return false;
    }
    limits_.failed(from, clock_.steady());
    std::string detail = why + ", " + mark;
    if (const std::size_t unrecorded = limits_.take_unrecorded(); unrecorded > 0) {
      detail += "; " + std::to_string(unrecorded) + " earlier failure(s) past the limits were counted, not recorded";
    }
    // "From" is anyone's to forge: only a user who awaits our mail, with a
    // token still to redeem, is answered.
    auto waiting = tokens_.pending(from, clock_.wall());
    if (!waiting) {
      detail += "; not answered: " + waiting.error().message;
    } else if (!*waiting) {
      // Anyone's to send from any address: audited within the limiter's
      // limits. A failure against a token that awaits its reply is
      // recorded each time (the per-sender limit bounds those).
      detail += "; not answered: no token pending for the address";
      MAILKMS_CHECK(limiter_.record({actor, "redeem-token", from, "refused", detail}));
      return false;
    } else if (const Status mailed = mail_refusal(*s, from, told, actor); !mailed) {
      detail += "; the refusal was not mailed: " + mailed.error().message;
    }
    MAILKMS_CHECK(audit_.append({actor, "redeem-token", from, "refused", detail}));
    return false;
  };

  MAILKMS_TRY(found, tokens_.find(hash));
  if (!found) return refuse("wrong token");
  const TokenRecord& record = *found;
  if (record.used) return refuse("token reused (redeemed " + readable_time(record.used_at) + ")");
  if (record.superseded) return refuse("token replaced by a newer one");
  if (record.expires <= clock_.wall()) return refuse("token expired");
  if (record.address != from) return refuse("token of another address (" + record.address + ")");
  if (request.password.size() < kMinPassword) {
    return refuse("password too short",
                  "The password you chose was too short: please choose one of at least " +
                      std::to_string(kMinPassword) + " characters.");
  }
  auto delivered = deliver(*s, request, hash, mark, record, actor, refuse);
  if (!delivered) {
    (void)audit_.append({actor, "redeem-token", from, "failed", delivered.error().message + ", " + mark});
  }
  return delivered;
}

Result<bool> Enrollment::deliver(const EnrollmentSettings& s, const RedeemRequest& request, const std::string& hash,
                                 const std::string& mark, const TokenRecord& record, const std::string& actor,
                                 const std::function<Result<bool>(const std::string&)>& refuse) {
  const std::string& address = record.address;
  const bool enrollment = record.kind == TokenKind::enrollment;
  auto user = users_.get(address);
  if (!user && user.error().code == Errc::not_found) return refuse("no such user any more");
  if (!user) return std::move(user).error();
  if (!user->enabled) return refuse("the user is disabled");
  if (user->encryption_serials.empty()) return refuse("the user has no escrowed encryption key");

  // Everything the mail carries is made before the token is spent.
  MAILKMS_TRY(escrowed, users_.escrowed_encryption_keys(address));
  std::vector<Pkcs12Entry> entries;
  if (enrollment) {
    entries.push_back(escrowed.back());  // the current key: enrollment hands out nothing older
  } else {
    entries = std::move(escrowed);
  }
  MAILKMS_TRY(current, ca_.certificate(user->encryption_serials.back()));
  MAILKMS_TRY(chain, ca_.chain(current.ca_id));
  Pkcs12Options options = pkcs12_;
  options.profile = s.pkcs12_profile;
  MAILKMS_TRY(p12, make_pkcs12(*ctx_, entries, chain, password_of(request), options));
  const std::string p12_file = file_stem(address) + ".p12";
  const std::string signing_file = enrollment && request.csr ? file_stem(address) + "-signing.crt" : std::string();
  MAILKMS_TRY(values, mail_values(s, address, actor));
  values["p12_file"] = p12_file;
  values["signing_file"] = signing_file;  // empty: its lines are left out
  values["keys"] = std::to_string(entries.size());
  // The chain runs from the issuing CA up to the root, which is ca.crt.
  std::string& intermediates = values["intermediate_files"];  // empty: its line is left out
  for (std::size_t n = 1; n < chain.size(); ++n) intermediates += (n > 1 ? ", " : "") + intermediate_file(n);
  MAILKMS_TRY(text, render_template_file(s.templates / (enrollment ? "certificate.txt" : "recovered.txt"), values));

  // Spent in one transaction with what it grants.
  const std::time_t now = clock_.wall();
  std::optional<smime::Certificate> signing;
  std::optional<Error> bad_request;
  bool raced = false;
  const Status spent = storage_.transaction([&]() -> Status {
    MAILKMS_TRY(again, tokens_.find(hash));
    if (!again || again->used || again->superseded) {
      raced = true;  // redeemed or replaced since we looked
      return Ok{};
    }
    again->used = true;
    again->used_at = now;
    MAILKMS_CHECK(tokens_.save(hash, *again));
    if (enrollment && request.csr) {
      auto certified = users_.certify_signing_request(address, *request.csr, actor);
      if (!certified && certified.error().code == Errc::invalid_argument) bad_request = certified.error();
      if (!certified) return std::move(certified).error();
      signing = std::move(*certified);
    }
    if (enrollment) MAILKMS_CHECK(users_.set_enrolled(address, now));
    return audit_.append({actor, "redeem-token", address, "ok",
                          std::string(to_string(record.kind)) + " token redeemed, " + std::to_string(entries.size()) +
                              " key(s) mailed" + (signing ? ", signing certificate " + signing->serial_hex() : "") +
                              ", " + mark});
  });
  if (raced) return refuse("token reused (redeemed a moment ago)");
  if (!spent && bad_request) return refuse("unusable certificate request: " + bad_request->message);
  if (!spent) return spent.error();

  std::vector<Attachment> attachments{{p12_file, "application/pkcs12", std::move(p12)}};
  if (signing) attachments.push_back({signing_file, "application/pkix-cert", signing->der()});
  for (std::size_t i = chain.size(); i-- > 0;) {
    // The root is the one to trust; intermediates come along for old clients.
    const std::string name = i + 1 == chain.size() ? "ca.crt" : intermediate_file(chain.size() - 1 - i);
    attachments.push_back({name, "application/pkix-cert", chain[i].der()});
  }
  auto message = signed_mail(s, text, address, attachments);
  Status sent = message ? send_mail(s.mail_command, s.sender(), address, *message) : Status(message.error());
  if (!sent) {
    // The user may send their reply again: the token works once more.
    MAILKMS_CHECK(storage_.transaction([&]() -> Status {
      MAILKMS_TRY(again, tokens_.find(hash));
      if (!again) return make_error(Errc::not_found, "the token vanished");
      again->used = false;
      again->used_at = 0;
      MAILKMS_CHECK(tokens_.save(hash, *again));
      return enrollment ? users_.set_enrolled(address, user->enrolled) : Status(Ok{});
    }));
    return make_error(Errc::unavailable, "the keys could not be mailed, the token can be used again: " +
                                             sent.error().message);
  }
  return true;
}

}  // namespace mailkms::keystore
