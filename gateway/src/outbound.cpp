// The outbound half: decide per recipient, fetch certificates, sign with
// the sender's keystore identity, encrypt to the recipients (and the
// sender), and keep recipients who need different copies apart.
#include <algorithm>
#include <map>

#include "mailkms/keystore/protocol.hpp"
#include "mailkms/smime/encrypt.hpp"
#include "mailkms/smime/open.hpp"
#include "pipeline.hpp"

namespace mailkms::gateway {
namespace {

smime::Cipher pick_cipher(const policy::Settings& s, const std::optional<smime::Capabilities>& capabilities, bool& ok) {
  const std::optional<smime::Capabilities> one[] = {capabilities};
  auto chosen = smime::choose_cipher(one, s.ciphers, s.ciphers.front());
  ok = chosen.has_value();
  return ok ? *chosen : s.ciphers.front();
}

int severity(policy::MissingCertificate action) {
  switch (action) {
    case policy::MissingCertificate::reject: return 3;
    case policy::MissingCertificate::tempfail: return 2;
    case policy::MissingCertificate::quarantine: return 1;
    case policy::MissingCertificate::send_plain: return 0;
  }
  return 2;
}

struct Planned {
  std::string recipient;
  policy::RecipientDecision decision;
  Treatment treatment;
  std::optional<policy::MissingCertificate> missing;  // policy cannot be met for this one
  std::string why;
  std::optional<RecipientCertificate> certificate;
};

using Groups = std::vector<std::pair<Treatment, std::vector<const Planned*>>>;

// The recipients a message shows to its readers: To and Cc (and their
// Resent- forms), normalized.
std::vector<std::string> shown_recipients(const std::vector<smime::HeaderField>& headers) {
  std::vector<std::string> shown;
  for (const auto& f : headers) {
    if (!iequals(f.name, "To") && !iequals(f.name, "Cc") && !iequals(f.name, "Resent-To") && !iequals(f.name, "Resent-Cc")) {
      continue;
    }
    for (const auto& a : smime::mailbox_addresses(f.unfolded())) shown.push_back(smime::normalize_address(a));
  }
  return shown;
}

// Each encrypted-to recipient the headers do not show (a Bcc) gets a copy
// of their own: the RecipientInfos of a shared copy name every certificate
// it is encrypted to, and would tell the others who was blind-copied
// (RFC 8551 §3.3). The first of a group keeps its place if none is shown.
// Returns how many copies were added.
std::size_t separate_blind(Groups& groups, const std::vector<std::string>& shown) {
  const auto blind = [&](const Planned* p) {
    return std::find(shown.begin(), shown.end(), smime::normalize_address(p->recipient)) == shown.end();
  };
  Groups separate;
  for (auto& [treatment, members] : groups) {
    if (!treatment.encrypt) continue;
    std::vector<const Planned*> kept;
    std::vector<const Planned*> alone;
    for (const Planned* p : members) (blind(p) ? alone : kept).push_back(p);
    if (kept.empty()) {  // nobody here is shown: the first keeps this copy
      kept.push_back(alone.front());
      alone.erase(alone.begin());
    }
    for (const Planned* p : alone) separate.push_back({treatment, {p}});
    members = std::move(kept);
  }
  groups.insert(groups.end(), separate.begin(), separate.end());
  return separate.size();
}

// An application/pkcs7-mime message passes as already encrypted only when
// its body is, in full, encrypted content for someone. One too large to
// check in memory is encrypted again: never passed on in the clear.
bool already_encrypted(const smime::CryptoContext& ctx, const smime::Spool& message, std::size_t memory_limit) {
  if (message.size() > memory_limit) return false;
  auto text = message.to_string();
  if (!text) return false;
  auto parsed = smime::parse_entity(*text);
  return parsed && smime::is_complete_encryption(ctx, *parsed);
}

// What the log line says about the signer, whatever else happens.
std::string signer_note(const policy::SignerAuthorization& authorization) {
  return authorization.authorized ? "[signer " + authorization.identity + ": " + authorization.reason + "]"
                                  : "[not signed as " + authorization.identity + ": " + authorization.reason + "]";
}

// A rule says sign "always", and this submission may not sign as its
// author: asking again will not change that, so the message is refused.
Outcome refused_signer(const policy::SignerAuthorization& authorization, const std::string& log) {
  Outcome outcome;
  outcome.verdict = Outcome::Verdict::reject;
  outcome.reply = {"550", "5.7.1", "Policy requires signing, and this submission may not sign as " +
                                       authorization.identity + ": " + authorization.reason};
  outcome.log = log;
  return outcome;
}

}  // namespace

keystore::Result<bool> Gateway::from_keystore(const Transaction& tx, const std::vector<smime::HeaderField>& headers) {
  // The keystore submits with the sendmail command, never over SMTP, one
  // recipient a mail.
  if (tx.refusable_recipients || !is_enrollment_address(tx.sender) || tx.recipients.size() != 1) return false;
  const auto value_of = [&](std::string_view name) -> std::optional<std::string> {
    const auto it = std::find_if(headers.begin(), headers.end(), [&](const auto& f) { return iequals(f.name, name); });
    if (it == headers.end()) return std::nullopt;
    std::string value = it->unfolded();
    const auto first = value.find_first_not_of(" \t");
    const auto last = value.find_last_not_of(" \t");
    return first == std::string::npos ? std::string() : value.substr(first, last - first + 1);
  };
  const auto mark = value_of(keystore::protocol::kMailMarkHeader);
  const auto message_id = value_of("Message-ID");
  if (!mark || !message_id) return false;
  return keystore::check_mail_mark(keystore_, *mark, tx.recipients.front(), *message_id);
}

keystore::Result<std::shared_ptr<keystore::RemoteSigner>> Gateway::signer_for(const std::string& address) {
  const std::string key = smime::normalize_address(address);
  const auto now = std::chrono::steady_clock::now();
  {
    const std::lock_guard lock(signers_mutex_);
    const auto it = signers_.find(key);
    // A signing certificate revoked since it was cached is refused by the
    // keystore at sign time; that failure drops it from here (see below).
    if (it != signers_.end() && it->second.expires > now &&
        it->second.signer->certificate().not_after() > std::time(nullptr)) {
      return it->second.signer;
    }
  }
  MAILKMS_TRY(made, keystore::RemoteSigner::create(keystore_, key));
  auto signer = std::make_shared<keystore::RemoteSigner>(std::move(made));
  const std::lock_guard lock(signers_mutex_);
  if (signers_.size() > 10'000) signers_.clear();  // bounded; refilled on demand
  signers_[key] = {signer, now + settings_.certificate_ttl};
  return signer;
}

BasicResult<EarlyPlan, RecipientVerdict> Gateway::plan_recipient_early(const Transaction& tx, const std::string& recipient) {
  bool uncertain = false;
  const auto decision = policy::decide(*tx.policy, tx.direction.direction, tx.sender, recipient, nullptr, &uncertain);
  const auto& s = *decision.settings;
  EarlyPlan plan;
  plan.uncertain = uncertain;
  if (tx.direction.direction == policy::Direction::inbound) {
    plan.treatment.decrypt = s.decrypt && policy::decryption_here(*tx.policy, tx.connection).allowed;
    plan.log = recipient + ": " + decision.reason;
    return plan;
  }
  plan.treatment.sign = s.sign != policy::Mode::never;
  plan.treatment.digest = s.digest;
  if (s.encrypt == policy::Mode::never) {
    plan.log = recipient + ": " + decision.reason + ": encrypt never";
    return plan;
  }
  const std::string one[] = {recipient};
  auto found = certificates_.lookup(one);
  if (!found) {
    if (s.encrypt == policy::Mode::always || settings_.on_keystore_unavailable == FailureAction::tempfail) {
      RecipientVerdict verdict;
      verdict.kind = RecipientVerdict::Kind::tempfail;
      verdict.reply = {"451", "4.7.1", "Cannot look up the recipient's certificate now; try again later"};
      verdict.log = recipient + ": deferred, keystore: " + found.error().message;
      return verdict;
    }
    plan.log = recipient + ": keystore unavailable, no certificate assumed";
    return plan;
  }
  const auto& certificate = found->front();
  if (certificate) {
    bool ok = false;
    plan.treatment.encrypt = true;
    plan.treatment.cipher = pick_cipher(s, certificate->capabilities, ok);
    if (ok) {
      plan.log = recipient + ": " + decision.reason + ": certificate found";
      return plan;
    }
    plan.treatment.encrypt = false;
  }
  if (s.encrypt == policy::Mode::always && !uncertain) {
    const std::string why = certificate ? "reads none of the allowed ciphers" : "has no certificate";
    RecipientVerdict verdict;
    verdict.log = recipient + ": " + decision.reason + ": " + why + ", on_missing_certificate " +
                  std::string(policy::to_string(s.on_missing_certificate));
    if (s.on_missing_certificate == policy::MissingCertificate::reject) {
      verdict.kind = RecipientVerdict::Kind::reject;
      verdict.reply = {"550", "5.7.1", "Policy requires encryption and " + recipient + " " + why};
      return verdict;
    }
    if (s.on_missing_certificate == policy::MissingCertificate::tempfail) {
      verdict.kind = RecipientVerdict::Kind::tempfail;
      verdict.reply = {"450", "4.7.1", "Policy requires encryption and " + recipient + " " + why + " yet"};
      return verdict;
    }
  }
  plan.log = recipient + ": " + decision.reason + ": no certificate, sent without encryption";
  return plan;
}

Outcome Gateway::outbound(const Transaction& tx, const std::vector<smime::HeaderField>& headers,
                          const smime::Spool& message, const std::vector<std::string>& skip) {
  const policy::Policy& policy = *tx.policy;
  auto kind = smime_kind(headers, message);
  if (kind == SmimeKind::encrypted && !already_encrypted(*ctx_, message, settings_.inbound_memory_limit)) {
    kind = SmimeKind::none;  // a label, or a CMS prefix with something else behind it
  }
  const std::string direction = "outbound (" + tx.direction.reason + ")";
  // A keystore that cannot be asked cannot vouch: policy decides, and the
  // keystore's absence is dealt with as it is for any message.
  if (const auto ours = from_keystore(tx, headers); ours && *ours) {
    // The keystore's own mail to users (enrollment tokens, certificate files
    // protected by the user's password): the user cannot decrypt anything
    // before they have their key.
    Outcome outcome;
    outcome.log = direction + ": from the keystore (its mark confirmed), sent as it is";
    return outcome;
  }
  if (kind == SmimeKind::encrypted) {
    Outcome outcome;
    outcome.log = direction + ": already encrypted by the sender, passed through";
    return outcome;
  }
  // Who the message may be signed as: its author, if this submission is
  // authorized for that address; else no one.
  const auto authorization = policy::authorize_signer(policy, tx.connection, tx.sender, sole_author(headers));
  const std::string where = direction + " " + signer_note(authorization);
  const bool already_signed = is_signed(kind);
  const bool calendar = has_calendar(message);
  const auto fields = policy_headers(headers);

  std::vector<std::string> recipients;
  for (const auto& r : tx.recipients) {
    if (std::find(skip.begin(), skip.end(), r) == skip.end()) recipients.push_back(r);
  }
  std::vector<Planned> plan;
  bool any_sign = false;
  bool any_encrypt = false;
  bool required = false;  // policy says encrypt or sign: never out as it came
  bool to_sender = false;
  std::optional<std::string> subject_tag;
  for (const auto& r : recipients) {
    Planned p{r, policy::decide(policy, policy::Direction::outbound, tx.sender, r, &fields), {}, {}, {}, {}};
    const auto& s = *p.decision.settings;
    any_sign |= s.sign != policy::Mode::never && !already_signed;
    any_encrypt |= s.encrypt != policy::Mode::never && !(calendar && s.exempt_calendar);
    required |= (s.encrypt == policy::Mode::always && !(calendar && s.exempt_calendar)) ||
                (s.sign == policy::Mode::always && !already_signed);
    to_sender |= s.encrypt_to_sender && authorization.authorized;
    if (p.decision.matched_subject_tag) subject_tag = p.decision.rule->subject_tag;
    plan.push_back(std::move(p));
  }

  // On a failure the settings decide, but a message policy says must be
  // encrypted or signed (a rule saying "always", or a certificate found) is
  // never let out as it came: accept becomes tempfail.
  const auto fail = [&](FailureAction action, const std::string& what, const std::string& reason) {
    if (required && action == FailureAction::accept) action = FailureAction::tempfail;
    return failure(action, where + ": " + what, reason);
  };
  // At RCPT TO a recipient that needed the keystore was already deferred;
  // mail taken without SMTP, or a keystore lost since, is decided here.
  const auto keystore_unavailable = [&](const std::string& what, const std::string& reason) {
    return fail(settings_.on_keystore_unavailable, what, reason);
  };

  const std::string& signer_address = authorization.identity;
  std::shared_ptr<keystore::RemoteSigner> signer;
  std::string no_signer_reason = "signing not asked";
  if (any_sign && !authorization.authorized) {
    no_signer_reason = "not authorized to sign as " + signer_address;
  } else if (any_sign) {
    auto made = signer_for(signer_address);
    if (made) {
      signer = std::move(*made);
    } else if (keystore_down(made.error())) {
      return keystore_unavailable("keystore unavailable", made.error().message);
    } else {
      no_signer_reason = "no signing identity for " + signer_address + ": " + made.error().message;
    }
  }

  // Certificates for everyone who may be encrypted to, and the sender.
  std::vector<std::optional<RecipientCertificate>> certificates(plan.size());
  std::optional<RecipientCertificate> sender_certificate;
  if (any_encrypt) {
    std::vector<std::string> wanted = recipients;
    if (to_sender) wanted.push_back(signer_address);
    auto found = certificates_.lookup(wanted);
    if (!found) return keystore_unavailable("keystore unavailable", found.error().message);
    for (std::size_t i = 0; i < plan.size(); ++i) certificates[i] = (*found)[i];
    if (to_sender) sender_certificate = found->back();
  }

  // Each recipient's treatment, or what to do when policy cannot be met.
  bool unauthorized_signer = false;  // a rule says sign always, and it cannot be
  for (std::size_t i = 0; i < plan.size(); ++i) {
    auto& p = plan[i];
    const auto& s = *p.decision.settings;
    p.treatment.digest = s.digest;
    p.treatment.sign = s.sign != policy::Mode::never && !already_signed && signer != nullptr;
    if (s.sign == policy::Mode::always && !already_signed && !authorization.authorized) {
      unauthorized_signer = true;
      p.why = no_signer_reason;
    } else if (s.sign == policy::Mode::always && !already_signed && !signer) {
      p.missing = s.on_missing_certificate;
      p.why = no_signer_reason;
    }
    const bool exempt = calendar && s.exempt_calendar;
    if (s.encrypt == policy::Mode::never || exempt) {
      if (p.why.empty()) p.why = exempt ? "calendar invitation, not encrypted" : "encrypt never";
      continue;
    }
    bool ok = false;
    if (certificates[i]) {
      p.treatment.cipher = pick_cipher(s, certificates[i]->capabilities, ok);
      p.treatment.encrypt = ok;
      p.certificate = certificates[i];
    }
    if (p.treatment.encrypt) {
      if (p.why.empty()) p.why = "certificate found";
    } else if (s.encrypt == policy::Mode::always) {
      p.missing = s.on_missing_certificate;
      p.why = certificates[i] ? "reads none of the allowed ciphers" : "no certificate";
    } else if (p.why.empty()) {
      p.why = "no certificate, encrypt if-possible";
    }
    required |= p.treatment.encrypt;
  }

  // Recipients policy cannot be met for: the strictest action decides.
  std::vector<std::string> unmet;
  std::optional<policy::MissingCertificate> strictest;
  for (const auto& p : plan) {
    if (!p.missing || *p.missing == policy::MissingCertificate::send_plain) continue;
    unmet.push_back(p.recipient);
    if (!strictest || severity(*p.missing) > severity(*strictest)) strictest = p.missing;
  }
  std::string decisions;
  for (const auto& p : plan) {
    decisions += (decisions.empty() ? "" : "; ") + p.recipient + ": " + p.decision.rule_name() + ", " +
                 describe(p.treatment) + " (" + p.why + ")";
  }
  if (unauthorized_signer) return refused_signer(authorization, where + ": " + decisions);
  if (strictest) {
    Outcome outcome;
    const std::string names = join(unmet);
    if (*strictest == policy::MissingCertificate::reject) {
      outcome.verdict = Outcome::Verdict::reject;
      outcome.reply = {"550", "5.7.1", "Policy requires encryption; no usable certificate for " + names};
    } else if (*strictest == policy::MissingCertificate::tempfail) {
      outcome.verdict = Outcome::Verdict::tempfail;
      outcome.reply = {"451", "4.7.1", "Policy requires encryption; no usable certificate yet for " + names};
    } else {
      outcome.quarantine = true;
      outcome.quarantine_reason = "mailkms: no usable certificate for " + names;
    }
    outcome.log = where + ": " + decisions + " => " + std::string(policy::to_string(*strictest));
    return outcome;
  }

  // Recipients with equal treatments share a copy; the first recipient's
  // copy is this transaction's.
  Groups groups;
  for (const auto& p : plan) {
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == p.treatment; });
    if (it == groups.end()) {
      groups.push_back({p.treatment, {&p}});
    } else {
      it->second.push_back(&p);
    }
  }
  Outcome outcome;
  outcome.log = where + ": " + decisions;
  if (groups.empty()) return outcome;
  if (groups.size() > 1 && settings_.mixed_recipients == MixedRecipients::defer && tx.refusable_recipients) {
    // Known only now (a rule on the subject or a header), too late for
    // 452 4.5.3: the differing recipients' rules decide, as for a missing
    // certificate. send-plain lets the message go, each recipient with their
    // own copy, by re-injection: never one copy for treatments that differ.
    std::optional<policy::MissingCertificate> action;
    std::vector<std::string> differing;
    for (std::size_t g = 1; g < groups.size(); ++g) {
      for (const auto* p : groups[g].second) {
        differing.push_back(p->recipient);
        const auto a = p->decision.settings->on_missing_certificate;
        if (!action || severity(a) > severity(*action)) action = a;
      }
    }
    if (*action != policy::MissingCertificate::send_plain) {
      Outcome refused;
      const std::string names = join(differing);
      if (*action == policy::MissingCertificate::reject) {
        refused.verdict = Outcome::Verdict::reject;
        refused.reply = {"550", "5.7.1", "These recipients need a differently protected copy: " + names};
      } else if (*action == policy::MissingCertificate::tempfail) {
        refused.verdict = Outcome::Verdict::tempfail;
        refused.reply = {"451", "4.7.1", "These recipients need a differently protected copy: " + names};
      } else {
        refused.quarantine = true;
        refused.quarantine_reason = "mailkms: recipients need different copies: " + names;
      }
      refused.log = outcome.log + " => mixed recipients, " + std::string(policy::to_string(*action));
      return refused;
    }
    outcome.log += " => mixed recipients (send-plain), re-injected";
  }
  if (const std::size_t blind = separate_blind(groups, shown_recipients(headers)); blind > 0) {
    outcome.log += " => " + std::to_string(blind) + " blind-copied recipient(s) encrypted apart";
  }

  const auto transform_failed = [&](const smime::Error& error, bool encrypting) {
    if (error.code == smime::Errc::key_operation_failed) {
      {
        const std::lock_guard lock(signers_mutex_);
        signers_.erase(smime::normalize_address(signer_address));  // the retry asks the keystore afresh
      }
      return keystore_unavailable("keystore signing failed", error.message);
    }
    if (error.code == smime::Errc::malformed_mime || error.code == smime::Errc::limit_exceeded) {
      // Never delivered in the clear when policy wanted it encrypted.
      Outcome refused;
      refused.verdict = Outcome::Verdict::reject;
      refused.reply = {"554", "5.6.0", "The message's MIME structure cannot be signed or encrypted: " + error.message};
      refused.log = where + ": malformed, rejected: " + error.message;
      if (!encrypting) return fail(settings_.on_malformed, "malformed", error.message);
      return refused;
    }
    return fail(settings_.on_internal_error, std::string(smime::to_string(error.code)), error.message);
  };
  MAILKMS_TRY_OR(header, read_header_section(message), return transform_failed(header_result.error(), required));

  // The subject tag that selected a rule is not for the recipients' eyes.
  const smime::SpoolOptions spool_options{settings_.spool_memory_limit, settings_.spool_directory};
  std::optional<smime::Spool> retagged;
  if (subject_tag) {
    const auto subject = fields.find("Subject");
    if (subject) {
      const auto untagged = smime::encode_header_text(policy::remove_subject_tag(*subject, *subject_tag));
      auto rewritten = with_subject(message, header, untagged, spool_options);
      if (!rewritten) return fail(settings_.on_internal_error, "subject", rewritten.error().message);
      retagged = std::move(*rewritten);
    }
  }
  const smime::Spool& input = retagged ? *retagged : message;

  const auto transform = [&](const Treatment& t, const std::vector<const Planned*>& members) -> smime::Result<std::optional<smime::Spool>> {
    if (!t.sign && !t.encrypt) {
      if (!retagged) return std::optional<smime::Spool>{};
      smime::Spool copy(spool_options);
      MAILKMS_CHECK(input.for_each_chunk(0, input.size(), [&](std::string_view c) { return copy.append(c); }));
      return std::optional<smime::Spool>(std::move(copy));
    }
    smime::Spool out(spool_options);
    smime::SignOptions sign_options;
    sign_options.digest = t.digest;
    smime::EncryptOptions encrypt_options;
    encrypt_options.cipher = t.cipher;
    std::vector<smime::Recipient> to;
    if (t.encrypt) {
      for (const auto* p : members) {
        to.push_back({p->certificate->certificate, smime::choose_key_transport(p->certificate->capabilities)});
      }
      const bool sender_too = std::any_of(members.begin(), members.end(),
                                          [](const Planned* p) { return p->decision.settings->encrypt_to_sender; });
      if (sender_too && sender_certificate &&
          std::none_of(to.begin(), to.end(), [&](const smime::Recipient& r) { return r.certificate == sender_certificate->certificate; })) {
        to.push_back({sender_certificate->certificate, smime::choose_key_transport(sender_certificate->capabilities)});
      }
    }
    if (t.sign && t.encrypt) {
      MAILKMS_CHECK(smime::sign_and_encrypt_message(*ctx_, input, out, *signer, sign_options, to, encrypt_options));
    } else if (t.sign) {
      MAILKMS_CHECK(smime::sign_message(*ctx_, input, out, *signer, sign_options));
    } else {
      MAILKMS_CHECK(smime::encrypt_message(*ctx_, input, out, to, encrypt_options));
    }
    return std::optional<smime::Spool>(std::move(out));
  };
  // Copies for the other groups go back to the MTA first: if that fails,
  // nothing has been promised yet.
  for (std::size_t g = 1; g < groups.size(); ++g) {
    auto copy = transform(groups[g].first, groups[g].second);
    if (!copy) return transform_failed(copy.error(), groups[g].first.encrypt);
    const smime::Spool& body = *copy ? **copy : input;
    std::vector<std::string> members;
    for (const auto* p : groups[g].second) members.push_back(p->recipient);
    MAILKMS_TRY_OR(copy_header, read_header_section(body), return fail(settings_.on_internal_error, "re-injection", copy_header_result.error().message));
    const std::string mark = mark_.make(tx.sender, members, body, copy_header.body_offset);
    auto marked = with_field_on_top(body, {std::string(reinjection_header), " " + mark}, spool_options);
    if (!marked) return fail(settings_.on_internal_error, "re-injection", marked.error().message);
    outcome.reinjections.push_back({members, std::move(*marked)});
    outcome.removed_recipients.insert(outcome.removed_recipients.end(), members.begin(), members.end());
  }

  auto transformed = transform(groups[0].first, groups[0].second);
  if (!transformed) return transform_failed(transformed.error(), groups[0].first.encrypt);
  if (*transformed) {
    MAILKMS_TRY_OR(after, read_header_section(**transformed), return fail(settings_.on_internal_error, "transformed header", after_result.error().message));
    outcome.header_edits = diff_headers(header.fields, after.fields);
    outcome.body_offset = after.body_offset;
    outcome.message = std::move(**transformed);
  }
  if (groups.size() > 1) outcome.log += " => split into " + std::to_string(groups.size()) + " copies";
  return outcome;
}

}  // namespace mailkms::gateway
