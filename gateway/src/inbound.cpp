// The inbound half: verify signatures into Authentication-Results (and
// drop forged copies of ours), decrypt for the local recipients whose own
// escrowed keys open the message when policy says so and only where the MTA
// will not send it on (the others get it as it came), and remember trusted
// senders' certificates. In stages: plan → signature → opened → copies.
#include <algorithm>

#include "pipeline.hpp"
#include "mailkms/smime/open.hpp"

namespace mailkms::gateway {

// What policy asks of the message for each recipient, from its header.
struct InboundPlan {
  std::string where;
  std::vector<std::string> recipients;
  std::vector<policy::RecipientDecision> decisions;  // one per recipient
  bool verify = false;
  bool decrypt = false;  // for some recipient: each has the copy its own rule and key allow
  bool harvest = true;
  SmimeKind kind = SmimeKind::none;
  std::vector<std::string> authors;
  std::string log;  // the log line so far
};

// A signature checked: its result, and the refusal on_bad_signature asks for.
struct SignatureCheck {
  std::vector<SmimeResult> results;
  std::string log;
  std::optional<Outcome> refused;
};

// The message opened with the keys of the local recipients it is for.
struct Opened {
  smime::Entity entity;
  std::vector<std::string> readers;  // the recipients whose own keys open it
  bool authenticated = false;        // AuthEnvelopedData: its integrity was checked
  std::string cipher;
  std::string decrypted_note;  // the X-Mailkms-Decrypted value
};

namespace {

bool in_local_domain(const policy::Policy& policy, const std::string& address) {
  const auto domain = smime::normalize_address(address.substr(address.rfind('@') + 1));
  const auto& local = policy.locality.domains;
  return std::find(local.begin(), local.end(), domain) != local.end();
}

InboundPlan plan_inbound(const Transaction& tx, const std::vector<smime::HeaderField>& headers,
                         const std::vector<std::string>& skip) {
  InboundPlan plan;
  plan.where = "inbound (" + tx.direction.reason + ")";
  std::string rules;
  const auto fields = policy_headers(headers);  // rules on the subject or a header apply inbound too
  for (const auto& r : tx.recipients) {
    if (std::find(skip.begin(), skip.end(), r) != skip.end()) continue;
    plan.recipients.push_back(r);
    plan.decisions.push_back(policy::decide(*tx.policy, policy::Direction::inbound, tx.sender, r, &fields));
    const auto& d = plan.decisions.back();
    plan.verify |= d.settings->verify;
    plan.decrypt |= d.settings->decrypt;
    plan.harvest &= d.settings->harvest;
    rules += (rules.empty() ? "" : ", ") + r + ": " + d.rule_name();
  }
  plan.log = plan.where + ": " + rules;
  plan.kind = smime_kind(headers);
  plan.authors = smime::author_addresses(smime::Message{headers, {}});
  return plan;
}

// EFAIL: content encrypted without integrity protection (CBC) may have
// been changed on the way to exfiltrate what the reader's client shows;
// unless a reader's rule allows it, only a signature that passes vouches
// for it.
bool wants_signature(const InboundPlan& plan, const std::string& reader) {
  const auto at = std::find(plan.recipients.begin(), plan.recipients.end(), reader);
  return !plan.decisions[static_cast<std::size_t>(at - plan.recipients.begin())].settings->decrypt_unauthenticated;
}

// The decrypted entity in place of the encrypted one; the outer fields
// stay, but for a claim of decryption we did not make. Of the inner fields
// only the entity's own Content-* come out: anything else in there was
// written by whoever encrypted (a From, our Authentication-Results) and
// would pass for the header we checked.
std::vector<smime::HeaderField> decrypted_header_fields(const std::vector<smime::HeaderField>& headers,
                                                        const Opened& opened) {
  std::vector<smime::HeaderField> after;
  for (const auto& f : headers) {
    if (!is_content_field(f.name) && !iequals(f.name, decrypted_header)) after.push_back(f);
  }
  after.push_back({std::string(decrypted_header), " " + opened.decrypted_note});
  after.push_back({"MIME-Version", " 1.0"});
  for (const auto& f : opened.entity.headers) {
    if (is_content_field(f.name) && !iequals(f.name, "MIME-Version")) after.push_back(f);
  }
  return after;
}

}  // namespace

// Authentication-Results with `results`, where policy asks to verify.
std::vector<HeaderEdit> Gateway::results_edits(const InboundPlan& plan, const std::vector<SmimeResult>& results) const {
  std::vector<HeaderEdit> edits;
  if (plan.verify) {
    edits.push_back({HeaderEdit::Kind::prepend, "Authentication-Results", authentication_results(settings_.authserv_id, results), 0});
  }
  return edits;
}

// The message delivered as it came, with `results`.
Outcome Gateway::annotated(const InboundPlan& plan, std::string log, const std::vector<SmimeResult>& results) const {
  Outcome outcome;
  outcome.log = std::move(log);
  outcome.header_edits = results_edits(plan, results);
  return outcome;
}

// `failure`, delivering (when the action delivers) with `results`.
Outcome Gateway::inbound_failure(const InboundPlan& plan, FailureAction action, FailureClass failure_class,
                                 const std::string& what, const std::string& reason,
                                 const std::vector<SmimeResult>& results) const {
  Outcome outcome = failure(action, failure_class, plan.where + ": " + what, reason);
  if (outcome.verdict == Outcome::Verdict::deliver) outcome.header_edits = results_edits(plan, results);
  return outcome;
}

// Offers the keystore the certificates of the signers that passed for an
// author: our own users' never (they come from our CA, never from mail:
// one an outside CA issued for our domain would be encrypted to).
std::string Gateway::harvest(const InboundPlan& plan, const policy::Policy& policy, const smime::VerifyResult& verified) {
  std::string log;
  for (const auto& signer : verified.signers) {
    if (signer.status != smime::SignatureStatus::pass) continue;
    for (const auto& address : signer.addresses) {
      const bool author = std::any_of(plan.authors.begin(), plan.authors.end(),
                                      [&](const std::string& a) { return smime::same_address(a, address); });
      if (!author) continue;
      if (in_local_domain(policy, address)) {
        log += "; not harvested: " + address + " is in a local domain";
        continue;
      }
      // Fetched here, checked by the keystore: without the CRL a
      // certificate names, it is not kept (the keystore says why).
      auto crls = crls_.crls_for(signer.certificate);
      if (!crls) log += "; " + crls.error().message;
      auto stored = keystore_->remember({address, signer.certificate, verified.certificates, signer.capabilities,
                                         signer.signing_time, crls ? *crls : std::vector<std::string>{}});
      log += !stored ? "; not harvested: " + stored.error().message : *stored ? "; harvested " + address : "";
    }
  }
  return log;
}

// Verifies with `run`, notes the result, and harvests what a trusted chain
// vouches for; a refusal when on_bad_signature asks for one.
SignatureCheck Gateway::check_signature(const InboundPlan& plan, const policy::Policy& policy,
                                        std::vector<SmimeResult> results,
                                        const std::function<smime::VerifyResult(const smime::VerifyOptions&)>& run) {
  SignatureCheck check;
  auto trust = trust_.get();
  if (!trust) {
    results.push_back({"temperror", "keystore unavailable", ""});
    metrics_->operation(Operation::verify, "temperror");
    check.results = std::move(results);
    check.log = "; not verified, keystore: " + trust.error().message;
    return check;
  }
  smime::VerifyOptions options;
  options.trust = &(*trust)->store;
  options.revocation = &(*trust)->revocation;
  options.from = plan.authors;
  options.max_in_memory = settings_.inbound_memory_limit;
  const smime::VerifyResult verified = run(options);
  results.push_back(smime_result(verified, plan.authors));
  metrics_->operation(Operation::verify, results.back().result);
  check.log = "; signature " + std::string(smime::to_string(verified.status));
  // MIME or CMS that cannot be read is malformed input, not a bad
  // signature; a spool we cannot read back is an internal error.
  struct Failed {
    FailureAction action;
    FailureClass failure;
    const char* what;
  };
  const Failed failed = unreadable(verified) ? Failed{settings_.on_internal_error, FailureClass::internal, "spool unreadable"}
                        : verified.status == smime::SignatureStatus::malformed
                            ? Failed{settings_.on_malformed, FailureClass::malformed, "malformed signature"}
                            : Failed{settings_.on_bad_signature, FailureClass::bad_signature, "bad signature"};
  if (verified.status != smime::SignatureStatus::pass && verified.status != smime::SignatureStatus::no_signature &&
      failed.action != FailureAction::accept) {
    check.refused = inbound_failure(plan, failed.action, failed.failure, failed.what, verified.reason, results);
  } else if (plan.harvest && verified.status == smime::SignatureStatus::pass) {
    check.log += harvest(plan, policy, verified);
  }
  check.results = std::move(results);
  return check;
}

// Why an encrypted message stays as it came here, if it does: policy, its
// size (OpenSSL reads CMS whole, in memory, within a bound), or a hop
// before the final one, where the MTA may still expand a recipient into an
// address elsewhere (an alias, .forward): plain text made here could leave.
std::optional<Outcome> Gateway::left_encrypted(const InboundPlan& plan, const Transaction& tx,
                                               const smime::Spool& message) const {
  if (!plan.decrypt) {
    return annotated(plan, plan.log + "; encrypted, left encrypted by policy",
                     {{"none", "encrypted; not decrypted by this gateway", ""}});
  }
  if (message.size() > settings_.inbound_memory_limit) {
    return annotated(plan, plan.log + "; encrypted, not decrypted: " + std::to_string(message.size()) +
                               " bytes, over inbound_memory_limit",
                     {{"none", "encrypted; too large to decrypt here", ""}});
  }
  const auto here = policy::decryption_here(*tx.policy, tx.connection);
  if (!here.allowed) {
    return annotated(plan, plan.log + "; encrypted, not decrypted here: " + here.reason,
                     {{"none", "encrypted; decrypted only at the final hop", ""}});
  }
  return std::nullopt;
}

// The message opened with the current key of each local recipient whose
// rule says decrypt; an Outcome when it is not to be delivered opened.
BasicResult<Opened, Outcome> Gateway::open_for_readers(const InboundPlan& plan, const policy::Policy& policy,
                                                       const smime::Spool& message) {
  MAILKMS_TRY_OR(text, message.to_string(), return failure(settings_.on_internal_error, FailureClass::internal, plan.where,
                                               text_result.error().message));
  auto parsed = smime::parse_message(text);
  if (!parsed) {
    return inbound_failure(plan, settings_.on_malformed, FailureClass::malformed, "malformed MIME", parsed.error().message,
                           {{"permerror", "malformed MIME", ""}});
  }
  std::vector<std::string> local;
  std::vector<std::string> normalized;
  for (std::size_t i = 0; i < plan.recipients.size(); ++i) {
    if (!plan.decisions[i].settings->decrypt || !in_local_domain(policy, plan.recipients[i])) continue;
    local.push_back(plan.recipients[i]);
    normalized.push_back(smime::normalize_address(plan.recipients[i]));
  }
  MAILKMS_TRY_OR(found, certificates_.lookup(normalized),
                 return failure(settings_.on_keystore_unavailable, FailureClass::keystore, plan.where + ": keystore unavailable",
                                found_result.error().message));
  std::vector<std::unique_ptr<smime::KeyUnwrapper>> unwrappers;
  std::vector<smime::KeyUnwrapper*> keys;
  std::vector<std::string> owners;
  for (std::size_t i = 0; i < local.size(); ++i) {
    if (!found[i]) continue;
    unwrappers.push_back(keystore_->unwrapper(normalized[i], found[i]->certificate));
    keys.push_back(unwrappers.back().get());
    owners.push_back(local[i]);
  }
  auto opened = smime::decrypt_entity(*ctx_, parsed->entity, keys);
  if (!opened) {
    const auto code = opened.error().code;
    if (code == smime::Errc::no_matching_recipient) {
      metrics_->operation(Operation::decrypt, "no_key");
      return annotated(plan, plan.log + "; encrypted to none of the local recipients' keys, delivered as it came",
                       {{"none", "encrypted; no local key", ""}});
    }
    if (code == smime::Errc::key_operation_failed) {
      metrics_->operation(Operation::decrypt, "keystore");
      return failure(settings_.on_keystore_unavailable, FailureClass::keystore, plan.where + ": keystore could not decrypt",
                     opened.error().message);
    }
    metrics_->operation(Operation::decrypt, "failed");
    return inbound_failure(plan, settings_.on_malformed, FailureClass::malformed, "cannot decrypt", opened.error().describe(),
                           {{"permerror", "cannot decrypt: " + std::string(smime::to_string(code)), ""}});
  }
  metrics_->operation(Operation::decrypt, "ok");
  Opened result;
  for (const std::size_t i : opened->readers) result.readers.push_back(owners[i]);
  result.entity = std::move(opened->content);
  result.authenticated = opened->authenticated;
  result.cipher = smime::name(opened->cipher);
  const auto addresses = opened->recipient.email_addresses();
  result.decrypted_note =
      settings_.authserv_id + "; cipher=" + result.cipher + (addresses.empty() ? "" : "; key=" + addresses.front());
  return result;
}

// Only its readers get the plaintext, and of them only those a passing
// signature is not asked for; the others get the message as it came, in a
// copy of their own.
Outcome Gateway::decrypted_copies(const Transaction& tx, const InboundPlan& plan, const std::vector<smime::HeaderField>& headers,
                                  const smime::Spool& message, const Opened& opened, std::vector<SmimeResult> results,
                                  bool must_vouch, std::string log) const {
  const bool vouched = !results.empty() && results.back().result == "pass";
  std::vector<std::string> others;
  std::vector<std::string> unvouched;
  for (const auto& r : plan.recipients) {
    if (std::find(opened.readers.begin(), opened.readers.end(), r) == opened.readers.end()) {
      others.push_back(r);
    } else if (must_vouch && !vouched && wants_signature(plan, r)) {
      unvouched.push_back(r);
    }
  }
  const std::string unprotected =
      opened.cipher + " does not protect the content's integrity, and no signature that passes vouches for it";
  if (!unvouched.empty()) log += "; left encrypted for " + join(unvouched) + ": " + unprotected;
  Outcome outcome;
  if (others.size() + unvouched.size() == plan.recipients.size()) {
    // Nobody reads it here: as it came, saying why, whatever `verify` says.
    SmimeResult& verdict = results.back();
    if (verdict.result == "none") verdict.reason = "not signed";
    verdict.reason += "; left encrypted: " + unprotected + " (decrypt_unauthenticated = false)";
    outcome.log = std::move(log);
    outcome.header_edits = {
        {HeaderEdit::Kind::prepend, "Authentication-Results", authentication_results(settings_.authserv_id, results), 0}};
    return outcome;
  }
  others.insert(others.end(), unvouched.begin(), unvouched.end());
  if (!others.empty()) {
    auto copy = copy_for(tx, others, message);
    if (!copy) {
      return failure(settings_.on_internal_error, FailureClass::reinjection, plan.where + ": re-injection",
                     copy.error().message);
    }
    outcome.reinjections.push_back({others, std::move(*copy)});
    outcome.removed_recipients = others;
    log += "; " + join(others) + " not among its readers, re-injected as it came";
  }
  const auto after = decrypted_header_fields(headers, opened);
  std::string rebuilt;
  for (const auto& f : after) rebuilt.append(f.name).append(":").append(f.value).append("\r\n");
  rebuilt.append("\r\n");
  outcome.body_offset = rebuilt.size();
  rebuilt.append(opened.entity.body);
  outcome.header_edits = diff_headers(headers, after);
  const auto results_field = results_edits(plan, results);
  outcome.header_edits.insert(outcome.header_edits.end(), results_field.begin(), results_field.end());
  outcome.message = smime::Spool::from(std::move(rebuilt));
  outcome.action = Action::decrypted;
  outcome.log = std::move(log);
  return outcome;
}

Outcome Gateway::inbound(const Transaction& tx, const std::vector<smime::HeaderField>& headers,
                         const smime::Spool& message, const std::vector<std::string>& skip) {
  const policy::Policy& policy = *tx.policy;
  const InboundPlan plan = plan_inbound(tx, headers, skip);
  if (plan.kind == SmimeKind::none) return annotated(plan, plan.log + "; no S/MIME", {{"none", "", ""}});
  if (!plan.verify && !(plan.decrypt && plan.kind == SmimeKind::encrypted)) {
    return annotated(plan, plan.log + "; neither verified nor decrypted by policy", {});
  }
  if (is_signed(plan.kind)) {
    if (plan.kind == SmimeKind::signed_opaque && message.size() > settings_.inbound_memory_limit) {
      return annotated(plan, plan.log + "; signed-data not verified: " + std::to_string(message.size()) +
                                 " bytes, over inbound_memory_limit",
                       {{"neutral", "signed-data too large to verify here", ""}});
    }
    // Straight from the spool: a multipart/signed message is never loaded.
    auto check = check_signature(plan, policy, {}, [&](const smime::VerifyOptions& options) {
      return smime::verify_message(*ctx_, message, options);
    });
    if (check.refused) return std::move(*check.refused);
    Outcome outcome = annotated(plan, plan.log + check.log, check.results);
    if (plan.verify) outcome.action = Action::verified;
    return outcome;
  }
  if (auto left = left_encrypted(plan, tx, message)) return std::move(*left);
  MAILKMS_TRY_OR(opened, open_for_readers(plan, policy, message), return std::move(opened_result).error());
  std::string log = plan.log + "; decrypted (" + opened.cipher + "; " + policy::decryption_here(policy, tx.connection).reason + ")";
  const bool must_vouch = !opened.authenticated && std::any_of(opened.readers.begin(), opened.readers.end(), [&](const std::string& r) {
                            return wants_signature(plan, r);
                          });
  std::vector<SmimeResult> results;
  if (plan.verify || must_vouch) {
    auto layer = smime::classify(*ctx_, opened.entity);
    if (layer && *layer && (**layer == smime::LayerKind::signed_multipart || **layer == smime::LayerKind::signed_opaque)) {
      auto check = check_signature(plan, policy, {}, [&](const smime::VerifyOptions& options) {
        return smime::verify_entity(*ctx_, opened.entity, options);
      });
      if (check.refused) return std::move(*check.refused);
      results = std::move(check.results);
      log += check.log;
    } else {
      results.push_back({"none", "decrypted; not signed", ""});
    }
  }
  return decrypted_copies(tx, plan, headers, message, opened, std::move(results), must_vouch, std::move(log));
}

}  // namespace mailkms::gateway
