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

// One recipient as the outbound stages see it.
struct Planned {
  std::string recipient;
  policy::RecipientDecision decision;
  Treatment treatment;
  std::optional<policy::MissingCertificate> missing;  // policy cannot be met for this one
  std::string why;
  std::optional<RecipientCertificate> certificate;
};

using Groups = std::vector<std::pair<Treatment, std::vector<const Planned*>>>;

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
    if (kept.empty() && !alone.empty()) {  // nobody here is shown: the first keeps this copy
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

// At RCPT TO, the recipient refused as the end of the message would refuse
// them; nothing where on_missing_certificate lets the message go (held or
// sent plain), which is decided at the end.
std::optional<RecipientVerdict> missing_certificate_verdict(policy::MissingCertificate action,
                                                            const std::string& recipient, std::string log) {
  if (action != policy::MissingCertificate::reject && action != policy::MissingCertificate::tempfail) return std::nullopt;
  RecipientVerdict verdict;
  verdict.kind = action == policy::MissingCertificate::reject ? RecipientVerdict::Kind::reject : RecipientVerdict::Kind::tempfail;
  verdict.reply = missing_certificate_reply(action, recipient);
  verdict.log = std::move(log);
  return verdict;
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
  return keystore_->is_keystore_mark(*mark, tx.recipients.front(), *message_id);
}

keystore::Result<std::shared_ptr<smime::Signer>> Gateway::signer_for(const std::string& address) {
  const std::string key = smime::normalize_address(address);
  const auto now = clock_();
  {
    const std::lock_guard lock(signers_mutex_);
    const auto it = signers_.find(key);
    // A signing certificate revoked since it was cached is refused by the
    // keystore at sign time; that failure drops it from here (see below).
    if (it != signers_.end() && it->second.expires > now &&
        it->second.signer->certificate().not_after() > std::time(nullptr)) {
      metrics_->cache(Cache::signer, 1, 0);
      return it->second.signer;
    }
  }
  metrics_->cache(Cache::signer, 0, 1);
  MAILKMS_TRY(signer, keystore_->signer(key));
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
    if (auto refused = missing_certificate_verdict(s.on_missing_certificate, recipient,
                                                   recipient + ": " + decision.reason + ": " + why + ", on_missing_certificate " +
                                                       std::string(policy::to_string(s.on_missing_certificate)))) {
      return std::move(*refused);
    }
  }
  plan.log = recipient + ": " + decision.reason + ": no certificate, sent without encryption";
  return plan;
}

// ---- The outbound stages: plan → keys → verdicts → copies → outcome ----------

// What policy asks for each recipient, and who may sign, from the message
// as it came: no keystore yet.
struct OutboundPlan {
  std::string where;  // for the log line: direction and signer
  policy::SignerAuthorization authorization;
  bool already_signed = false;
  bool calendar = false;
  policy::Headers fields;
  std::vector<policy::RecipientDecision> decisions;  // one per recipient, in order
  bool any_sign = false;
  bool any_encrypt = false;
  bool required = false;  // policy says encrypt or sign always: never out as it came
  bool to_sender = false;
  std::optional<std::string> subject_tag;
};

// The signer and the certificates the plan needs.
struct OutboundKeys {
  std::shared_ptr<smime::Signer> signer;
  std::string no_signer_reason = "signing not asked";
  std::vector<std::optional<RecipientCertificate>> certificates;  // one per recipient
  std::optional<RecipientCertificate> sender_certificate;
};

// Each recipient's treatment, or why policy cannot be met for them.
struct OutboundVerdicts {
  std::vector<Planned> recipients;
  bool unauthorized_signer = false;  // a rule says sign always, and this submission may not
  bool required = false;             // the plan's, or a certificate was found
  std::string decisions;             // for the log line
};

// Recipients with equal treatments share a copy; the first group is this
// transaction's.
struct OutboundCopies {
  Groups groups;
  std::string log;
};

namespace {

OutboundPlan plan_outbound(const Transaction& tx, const std::vector<smime::HeaderField>& headers, SmimeKind kind,
                           bool calendar, const std::vector<std::string>& skip) {
  OutboundPlan plan;
  // Who the message may be signed as: its author, if this submission is
  // authorized for that address; else no one.
  plan.authorization = policy::authorize_signer(*tx.policy, tx.connection, tx.sender, sole_author(headers));
  plan.where = "outbound (" + tx.direction.reason + ") " + signer_note(plan.authorization);
  plan.already_signed = is_signed(kind);
  plan.calendar = calendar;
  plan.fields = policy_headers(headers);
  for (const auto& r : tx.recipients) {
    if (std::find(skip.begin(), skip.end(), r) != skip.end()) continue;
    plan.decisions.push_back(policy::decide(*tx.policy, policy::Direction::outbound, tx.sender, r, &plan.fields));
    const auto& d = plan.decisions.back();
    const auto& s = *d.settings;
    const bool exempt = calendar && s.exempt_calendar;
    plan.any_sign |= s.sign != policy::Mode::never && !plan.already_signed;
    plan.any_encrypt |= s.encrypt != policy::Mode::never && !exempt;
    plan.required |= (s.encrypt == policy::Mode::always && !exempt) ||
                     (s.sign == policy::Mode::always && !plan.already_signed);
    plan.to_sender |= s.encrypt_to_sender && plan.authorization.authorized;
    if (d.matched_subject_tag) plan.subject_tag = d.rule->subject_tag;
  }
  return plan;
}

// One recipient's treatment from its rule and the keys found.
Planned verdict_for(const policy::RecipientDecision& decision, const OutboundPlan& plan, const OutboundKeys& keys,
                    const std::optional<RecipientCertificate>& certificate, bool& unauthorized_signer) {
  Planned p{decision.recipient, decision, {}, {}, {}, {}};
  const auto& s = *decision.settings;
  const bool sign_required = s.sign == policy::Mode::always && !plan.already_signed;
  p.treatment.digest = s.digest;
  p.treatment.sign = s.sign != policy::Mode::never && !plan.already_signed && keys.signer != nullptr;
  if (sign_required && !plan.authorization.authorized) {
    unauthorized_signer = true;
    p.why = keys.no_signer_reason;
  } else if (sign_required && !keys.signer) {
    p.missing = s.on_missing_certificate;
    p.why = keys.no_signer_reason;
  }
  const bool exempt = plan.calendar && s.exempt_calendar;
  if (s.encrypt == policy::Mode::never || exempt) {
    if (p.why.empty()) p.why = exempt ? "calendar invitation, not encrypted" : "encrypt never";
    return p;
  }
  if (certificate) {
    bool ok = false;
    p.treatment.cipher = pick_cipher(s, certificate->capabilities, ok);
    p.treatment.encrypt = ok;
    p.certificate = certificate;
  }
  if (p.treatment.encrypt) {
    if (p.why.empty()) p.why = "certificate found";
  } else if (s.encrypt == policy::Mode::always) {
    p.missing = s.on_missing_certificate;
    p.why = certificate ? "reads none of the allowed ciphers" : "no certificate";
  } else if (p.why.empty()) {
    p.why = "no certificate, encrypt if-possible";
  }
  return p;
}

OutboundVerdicts decide_recipients(const OutboundPlan& plan, const OutboundKeys& keys) {
  OutboundVerdicts verdicts;
  verdicts.required = plan.required;
  for (std::size_t i = 0; i < plan.decisions.size(); ++i) {
    auto p = verdict_for(plan.decisions[i], plan, keys, keys.certificates[i], verdicts.unauthorized_signer);
    verdicts.required |= p.treatment.encrypt;
    verdicts.decisions += (verdicts.decisions.empty() ? "" : "; ") + p.recipient + ": " + p.decision.rule_name() +
                          ", " + describe(p.treatment) + " (" + p.why + ")";
    verdicts.recipients.push_back(std::move(p));
  }
  return verdicts;
}

// The strictest on_missing_certificate of the recipients policy cannot be
// met for, and their names; nothing when none of them holds the message.
std::optional<std::pair<policy::MissingCertificate, std::vector<std::string>>> strictest_unmet(
    const std::vector<const Planned*>& unmet) {
  std::optional<policy::MissingCertificate> strictest;
  std::vector<std::string> names;
  for (const Planned* p : unmet) {
    const auto action = p->missing.value_or(p->decision.settings->on_missing_certificate);
    if (action == policy::MissingCertificate::send_plain) continue;
    names.push_back(p->recipient);
    if (!strictest || severity(action) > severity(*strictest)) strictest = action;
  }
  if (!strictest) return std::nullopt;
  return std::pair{*strictest, std::move(names)};
}

// The message refused or held because policy cannot be met for someone.
std::optional<Outcome> refusal(const OutboundPlan& plan, const OutboundVerdicts& verdicts) {
  const std::string log = plan.where + ": " + verdicts.decisions;
  if (verdicts.unauthorized_signer) return refused_signer(plan.authorization, log);
  std::vector<const Planned*> missing;
  for (const auto& p : verdicts.recipients) {
    if (p.missing) missing.push_back(&p);
  }
  const auto unmet = strictest_unmet(missing);
  if (!unmet) return std::nullopt;
  const std::string names = join(unmet->second);
  return unmet_policy(unmet->first, missing_certificate_reply(unmet->first, names),
                      "mailkms: no usable certificate for " + names,
                      log + " => " + std::string(policy::to_string(unmet->first)));
}

// Known only at the end of the message (a rule on the subject or a header),
// too late for 452 4.5.3: the differing recipients' rules decide, as for a
// missing certificate. send-plain lets the message go, each recipient with
// their own copy, by re-injection: never one copy for treatments that differ.
std::optional<Outcome> mixed_refusal(const Groups& groups, const std::string& log) {
  std::vector<const Planned*> differing;
  for (std::size_t g = 1; g < groups.size(); ++g) differing.insert(differing.end(), groups[g].second.begin(), groups[g].second.end());
  const auto unmet = strictest_unmet(differing);
  if (!unmet) return std::nullopt;
  const std::string names = join(unmet->second);
  return unmet_policy(unmet->first, policy_refusal(unmet->first, "These recipients need a differently protected copy: " + names),
                      "mailkms: recipients need different copies: " + names,
                      log + " => mixed recipients, " + std::string(policy::to_string(unmet->first)));
}

BasicResult<OutboundCopies, Outcome> group_copies(const Transaction& tx, const OutboundVerdicts& verdicts,
                                                  const std::vector<smime::HeaderField>& headers,
                                                  MixedRecipients mixed, std::string log) {
  OutboundCopies copies;
  for (const auto& p : verdicts.recipients) {
    auto it = std::find_if(copies.groups.begin(), copies.groups.end(), [&](const auto& g) { return g.first == p.treatment; });
    if (it == copies.groups.end()) {
      copies.groups.push_back({p.treatment, {&p}});
    } else {
      it->second.push_back(&p);
    }
  }
  if (copies.groups.size() > 1 && mixed == MixedRecipients::defer && tx.refusable_recipients && !tx.relays_copies) {
    if (auto refused = mixed_refusal(copies.groups, log)) return std::move(*refused);
    log += " => mixed recipients (send-plain), re-injected";
  }
  if (const std::size_t blind = separate_blind(copies.groups, shown_recipients(headers)); blind > 0) {
    log += " => " + std::to_string(blind) + " blind-copied recipient(s) encrypted apart";
  }
  copies.log = std::move(log);
  return copies;
}

Action action_of(const Treatment& treatment) {
  if (treatment.sign && treatment.encrypt) return Action::signed_encrypted;
  if (treatment.sign) return Action::signed_;
  if (treatment.encrypt) return Action::encrypted;
  return Action::passed;
}

}  // namespace

Reply policy_refusal(policy::MissingCertificate action, std::string text) {
  if (action == policy::MissingCertificate::reject) return {"550", "5.7.1", std::move(text)};
  return {"450", "4.7.1", std::move(text)};
}

Reply missing_certificate_reply(policy::MissingCertificate action, const std::string& names) {
  return policy_refusal(action, action == policy::MissingCertificate::tempfail
                                    ? "Policy requires encryption; no usable certificate yet for " + names
                                    : "Policy requires encryption; no usable certificate for " + names);
}

Outcome unmet_policy(policy::MissingCertificate action, Reply reply, std::string quarantine_reason, std::string log) {
  Outcome outcome;
  outcome.log = std::move(log);
  if (action == policy::MissingCertificate::quarantine) {
    outcome.quarantine = true;
    outcome.quarantine_reason = std::move(quarantine_reason);
  } else if (action != policy::MissingCertificate::send_plain) {
    outcome.verdict = action == policy::MissingCertificate::reject ? Outcome::Verdict::reject : Outcome::Verdict::tempfail;
    outcome.reply = std::move(reply);
  }
  return outcome;
}

// What the keystore's own mail and mail its sender encrypted need: nothing.
std::optional<Outcome> Gateway::passes_as_it_is(const Transaction& tx, const std::vector<smime::HeaderField>& headers,
                                                SmimeKind kind) {
  const std::string direction = "outbound (" + tx.direction.reason + ")";
  // A keystore that cannot be asked cannot vouch: policy decides, and the
  // keystore's absence is dealt with as it is for any message.
  if (const auto ours = from_keystore(tx, headers); ours && *ours) {
    // The keystore's own mail to users (enrollment tokens, certificate files
    // protected by the user's password): the user cannot decrypt anything
    // before they have their key.
    Outcome outcome;
    outcome.log = direction + ": from the keystore (its mark confirmed), sent as it is";
    outcome.action = Action::keystore_mail;
    return outcome;
  }
  if (kind == SmimeKind::encrypted) {
    Outcome outcome;
    outcome.log = direction + ": already encrypted by the sender, passed through";
    return outcome;
  }
  return std::nullopt;
}

// On a failure the settings decide, but a message policy says must be
// encrypted or signed (a rule saying "always", or a certificate found) is
// never let out as it came: accept becomes tempfail, and so does
// quarantine, since a held message leaves unchanged when released.
Outcome Gateway::outbound_failure(bool required, FailureAction action, FailureClass failure, const std::string& what,
                                  const std::string& reason) const {
  if (required && (action == FailureAction::accept || action == FailureAction::quarantine)) {
    action = FailureAction::tempfail;
  }
  return Gateway::failure(action, failure, what, reason);
}

BasicResult<OutboundKeys, Outcome> Gateway::resolve_keys(const OutboundPlan& plan) {
  // At RCPT TO a recipient that needed the keystore was already deferred;
  // mail taken without SMTP, or a keystore lost since, is decided here.
  const auto unavailable = [&](const std::string& reason) {
    return outbound_failure(plan.required, settings_.on_keystore_unavailable, FailureClass::keystore,
                            plan.where + ": keystore unavailable", reason);
  };
  OutboundKeys keys;
  const std::string& signer_address = plan.authorization.identity;
  if (plan.any_sign && !plan.authorization.authorized) {
    keys.no_signer_reason = "not authorized to sign as " + signer_address;
  } else if (plan.any_sign) {
    auto made = signer_for(signer_address);
    if (made) {
      keys.signer = std::move(*made);
    } else if (keystore_down(made.error())) {
      return unavailable(made.error().message);
    } else {
      keys.no_signer_reason = "no signing identity for " + signer_address + ": " + made.error().message;
    }
  }
  // Certificates for everyone who may be encrypted to, and the sender.
  keys.certificates.resize(plan.decisions.size());
  if (!plan.any_encrypt) return keys;
  std::vector<std::string> wanted;
  for (const auto& d : plan.decisions) wanted.push_back(d.recipient);
  if (plan.to_sender) wanted.push_back(signer_address);
  auto found = certificates_.lookup(wanted);
  if (!found) return unavailable(found.error().message);
  for (std::size_t i = 0; i < plan.decisions.size(); ++i) keys.certificates[i] = (*found)[i];
  if (plan.to_sender) keys.sender_certificate = found->back();
  return keys;
}

Outcome Gateway::outbound(const Transaction& tx, const std::vector<smime::HeaderField>& headers,
                          const smime::Spool& message, const std::vector<std::string>& skip) {
  auto kind = smime_kind(headers, message);
  if (kind == SmimeKind::encrypted && !already_encrypted(*ctx_, message, settings_.inbound_memory_limit)) {
    kind = SmimeKind::none;  // a label, or a CMS prefix with something else behind it
  }
  if (auto passed = passes_as_it_is(tx, headers, kind)) return std::move(*passed);
  const OutboundPlan plan = plan_outbound(tx, headers, kind, has_calendar(message), skip);
  MAILKMS_TRY_OR(keys, resolve_keys(plan), return std::move(keys_result).error());
  const OutboundVerdicts verdicts = decide_recipients(plan, keys);
  if (auto refused = refusal(plan, verdicts)) return std::move(*refused);
  MAILKMS_TRY_OR(copies, group_copies(tx, verdicts, headers, settings_.mixed_recipients, plan.where + ": " + verdicts.decisions),
                 return std::move(copies_result).error());
  return make_copies(tx, message, plan, keys, verdicts.required, copies);
}

Outcome Gateway::transform_failed(const OutboundPlan& plan, bool required, const smime::Error& error, bool encrypting) {
  if (error.code == smime::Errc::key_operation_failed) {
    {
      const std::lock_guard lock(signers_mutex_);
      signers_.erase(smime::normalize_address(plan.authorization.identity));  // the retry asks the keystore afresh
    }
    return outbound_failure(required, settings_.on_keystore_unavailable, FailureClass::keystore,
                            plan.where + ": keystore signing failed", error.message);
  }
  if (error.code == smime::Errc::malformed_mime || error.code == smime::Errc::limit_exceeded) {
    if (!encrypting) {
      return outbound_failure(required, settings_.on_malformed, FailureClass::malformed, plan.where + ": malformed",
                              error.message);
    }
    // Never delivered in the clear when policy wanted it encrypted.
    Outcome refused;
    refused.verdict = Outcome::Verdict::reject;
    refused.reply = {"554", "5.6.0", "The message's MIME structure cannot be signed or encrypted: " + error.message};
    refused.log = plan.where + ": malformed, rejected: " + error.message;
    refused.failure = FailureClass::malformed;
    return refused;
  }
  return outbound_failure(required, settings_.on_internal_error, FailureClass::internal,
                          plan.where + ": " + std::string(smime::to_string(error.code)), error.message);
}

// One copy for `members`: signed and/or encrypted, or nothing when `input`
// goes as it is.
smime::Result<std::optional<smime::Spool>> Gateway::transform(const Treatment& t, const std::vector<const Planned*>& members,
                                                              const smime::Spool& input, bool retagged,
                                                              const OutboundKeys& keys) const {
  const smime::SpoolOptions spool_options{settings_.spool_memory_limit, settings_.spool_directory};
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
    const auto& sender = keys.sender_certificate;
    if (sender_too && sender &&
        std::none_of(to.begin(), to.end(), [&](const smime::Recipient& r) { return r.certificate == sender->certificate; })) {
      to.push_back({sender->certificate, smime::choose_key_transport(sender->capabilities)});
    }
  }
  const auto made = t.sign && t.encrypt ? smime::sign_and_encrypt_message(*ctx_, input, out, *keys.signer, sign_options, to,
                                                                          encrypt_options)
                    : t.sign ? smime::sign_message(*ctx_, input, out, *keys.signer, sign_options)
                             : smime::encrypt_message(*ctx_, input, out, to, encrypt_options);
  // Signing and encrypting at once count as both, with the one result.
  const std::string_view result = made ? "ok" : "failed";
  if (t.sign) metrics_->operation(Operation::sign, result);
  if (t.encrypt) metrics_->operation(Operation::encrypt, result);
  MAILKMS_CHECK(made);
  return std::optional<smime::Spool>(std::move(out));
}

Outcome Gateway::make_copies(const Transaction& tx, const smime::Spool& message, const OutboundPlan& plan,
                             const OutboundKeys& keys, bool required, const OutboundCopies& copies) {
  Outcome outcome;
  outcome.log = copies.log;
  const auto& groups = copies.groups;
  if (groups.empty()) return outcome;
  const auto internal = [&](const std::string& what, const std::string& reason) {
    return outbound_failure(required, settings_.on_internal_error, FailureClass::internal, plan.where + ": " + what, reason);
  };
  MAILKMS_TRY_OR(header, read_header_section(message), return transform_failed(plan, required, header_result.error(), required));
  // The subject tag that selected a rule is not for the recipients' eyes.
  const smime::SpoolOptions spool_options{settings_.spool_memory_limit, settings_.spool_directory};
  std::optional<smime::Spool> retagged;
  if (const auto subject = plan.fields.find("Subject"); plan.subject_tag && subject) {
    const auto untagged = smime::encode_header_text(policy::remove_subject_tag(*subject, *plan.subject_tag));
    auto rewritten = with_subject(message, header, untagged, spool_options);
    if (!rewritten) return internal("subject", rewritten.error().message);
    retagged = std::move(*rewritten);
  }
  const smime::Spool& input = retagged ? *retagged : message;
  // Copies for the other groups go back to the MTA first: if that fails,
  // nothing has been promised yet.
  for (std::size_t g = 1; g < groups.size(); ++g) {
    auto copy = transform(groups[g].first, groups[g].second, input, retagged.has_value(), keys);
    if (!copy) return transform_failed(plan, required, copy.error(), groups[g].first.encrypt);
    const smime::Spool& body = *copy ? **copy : input;
    std::vector<std::string> members;
    for (const auto* p : groups[g].second) members.push_back(p->recipient);
    auto marked = copy_for(tx, members, body);
    if (!marked) return internal("re-injection", marked.error().message);
    outcome.reinjections.push_back({members, std::move(*marked)});
    outcome.removed_recipients.insert(outcome.removed_recipients.end(), members.begin(), members.end());
  }
  auto transformed = transform(groups[0].first, groups[0].second, input, retagged.has_value(), keys);
  if (!transformed) return transform_failed(plan, required, transformed.error(), groups[0].first.encrypt);
  if (*transformed) {
    MAILKMS_TRY_OR(after, read_header_section(**transformed), return internal("transformed header", after_result.error().message));
    outcome.header_edits = diff_headers(header.fields, after.fields);
    outcome.body_offset = after.body_offset;
    outcome.message = std::move(**transformed);
  }
  if (groups.size() > 1) outcome.log += " => split into " + std::to_string(groups.size()) + " copies";
  outcome.action = groups.size() > 1 ? Action::split : action_of(groups[0].first);
  return outcome;
}

}  // namespace mailkms::gateway
