// The inbound half: verify signatures into Authentication-Results (and
// drop forged copies of ours), decrypt for the local recipients whose own
// escrowed keys open the message when policy says so and only where the MTA
// will not send it on (the others get it as it came), and remember trusted
// senders' certificates.
#include <algorithm>

#include "pipeline.hpp"
#include "mailkms/smime/open.hpp"

namespace mailkms::gateway {
namespace {

bool in_local_domain(const policy::Policy& policy, const std::string& address) {
  const auto domain = smime::normalize_address(address.substr(address.rfind('@') + 1));
  const auto& local = policy.locality.domains;
  return std::find(local.begin(), local.end(), domain) != local.end();
}

}  // namespace

smime::Result<smime::Spool> Gateway::as_it_came(const std::string& sender, const std::vector<std::string>& recipients,
                                                const smime::Spool& message) const {
  MAILKMS_TRY(header, read_header_section(message));
  const std::string mark = mark_.make(sender, recipients, message, header.body_offset);
  return with_field_on_top(message, {std::string(reinjection_header), " " + mark},
                           smime::SpoolOptions{settings_.spool_memory_limit, settings_.spool_directory});
}

Outcome Gateway::inbound(const Transaction& tx, const std::vector<smime::HeaderField>& headers,
                         const smime::Spool& message, const std::vector<std::string>& skip) {
  const policy::Policy& policy = *tx.policy;
  const std::string where = "inbound (" + tx.direction.reason + ")";
  Outcome outcome;

  bool verify = false;
  bool decrypt = false;  // for some recipient: each has the copy its own rule and key allow
  bool harvest = true;
  std::vector<std::string> recipients;
  std::vector<policy::RecipientDecision> decisions;
  std::string rules;
  const auto fields = policy_headers(headers);  // rules on the subject or a header apply inbound too
  for (const auto& r : tx.recipients) {
    if (std::find(skip.begin(), skip.end(), r) != skip.end()) continue;
    recipients.push_back(r);
    decisions.push_back(policy::decide(policy, policy::Direction::inbound, tx.sender, r, &fields));
    const auto& d = decisions.back();
    verify |= d.settings->verify;
    decrypt |= d.settings->decrypt;
    harvest &= d.settings->harvest;
    rules += (rules.empty() ? "" : ", ") + r + ": " + d.rule_name();
  }
  outcome.log = where + ": " + rules;

  const auto kind = smime_kind(headers);
  const auto edits_with = [&](const std::vector<SmimeResult>& results) {
    std::vector<HeaderEdit> edits;
    if (verify) {
      edits.push_back(
          {HeaderEdit::Kind::prepend, "Authentication-Results", authentication_results(settings_.authserv_id, results), 0});
    }
    return edits;
  };
  const auto finish_with = [&](const std::vector<SmimeResult>& results) {
    outcome.header_edits = edits_with(results);
    return std::move(outcome);
  };
  if (kind == SmimeKind::none) {
    outcome.log += "; no S/MIME";
    return finish_with({{"none", "", ""}});
  }
  if (!verify && !(decrypt && kind == SmimeKind::encrypted)) {
    outcome.log += "; neither verified nor decrypted by policy";
    return finish_with({});
  }

  // Verifies with `run`, notes the result, and harvests what a trusted chain
  // vouches for; an Outcome when on_bad_signature refuses the message.
  const auto check_signature = [&](std::vector<SmimeResult>& results, const std::vector<std::string>& authors,
                                   const auto& run) -> std::optional<Outcome> {
    auto trust = trust_.get();
    if (!trust) {
      results.push_back({"temperror", "keystore unavailable", ""});
      outcome.log += "; not verified, keystore: " + trust.error().message;
      return std::nullopt;
    }
    smime::VerifyOptions options;
    options.trust = &(*trust)->store;
    options.revocation = &(*trust)->revocation;
    options.from = authors;
    options.max_in_memory = settings_.inbound_memory_limit;
    const smime::VerifyResult verified = run(options);
    results.push_back(smime_result(verified, authors));
    outcome.log += "; signature " + std::string(smime::to_string(verified.status));
    // MIME or CMS that cannot be read is malformed input, not a bad
    // signature; a spool we cannot read back is an internal error.
    const bool malformed = verified.status == smime::SignatureStatus::malformed;
    const FailureAction action = unreadable(verified) ? settings_.on_internal_error
                                 : malformed          ? settings_.on_malformed
                                                      : settings_.on_bad_signature;
    if (verified.status != smime::SignatureStatus::pass && verified.status != smime::SignatureStatus::no_signature &&
        action != FailureAction::accept) {
      Outcome bad = failure(action,
                            where + (unreadable(verified) ? ": spool unreadable"
                                     : malformed          ? ": malformed signature"
                                                          : ": bad signature"),
                            verified.reason);
      if (bad.verdict == Outcome::Verdict::deliver) bad.header_edits = edits_with(results);
      return bad;
    }
    if (harvest && verified.status == smime::SignatureStatus::pass) {
      for (const auto& signer : verified.signers) {
        if (signer.status != smime::SignatureStatus::pass) continue;
        for (const auto& address : signer.addresses) {
          const bool author = std::any_of(authors.begin(), authors.end(),
                                          [&](const std::string& a) { return smime::same_address(a, address); });
          if (!author) continue;
          // Our own users' certificates come from our CA, never from mail:
          // one an outside CA issued for our domain would be encrypted to.
          if (in_local_domain(policy, address)) {
            outcome.log += "; not harvested: " + address + " is in a local domain";
            continue;
          }
          // Fetched here, checked by the keystore: without the CRL a
          // certificate names, it is not kept (the keystore says why).
          auto crls = crls_.crls_for(signer.certificate);
          if (!crls) outcome.log += "; " + crls.error().message;
          auto stored = keystore_->remember({address, signer.certificate, verified.certificates, signer.capabilities,
                                             signer.signing_time, crls ? *crls : std::vector<std::string>{}});
          outcome.log += !stored ? "; not harvested: " + stored.error().message
                         : *stored ? "; harvested " + address
                                   : "";
        }
      }
    }
    return std::nullopt;
  };
  const std::vector<std::string> authors = smime::author_addresses(smime::Message{headers, {}});

  // What OpenSSL can only read whole is opened in memory, within a bound.
  const bool too_large = message.size() > settings_.inbound_memory_limit;
  const std::string size_note = std::to_string(message.size()) + " bytes, over inbound_memory_limit";

  if (is_signed(kind)) {
    if (too_large && kind == SmimeKind::signed_opaque) {
      outcome.log += "; signed-data not verified: " + size_note;
      return finish_with({{"neutral", "signed-data too large to verify here", ""}});
    }
    // Straight from the spool: a multipart/signed message is never loaded.
    std::vector<SmimeResult> results;
    if (auto refused = check_signature(results, authors, [&](const smime::VerifyOptions& options) {
          return smime::verify_message(*ctx_, message, options);
        })) {
      return std::move(*refused);
    }
    return finish_with(results);
  }

  // Encrypted: read in memory, when it is to be opened at all.
  if (!decrypt) {
    outcome.log += "; encrypted, left encrypted by policy";
    return finish_with({{"none", "encrypted; not decrypted by this gateway", ""}});
  }
  if (too_large) {
    outcome.log += "; encrypted, not decrypted: " + size_note;
    return finish_with({{"none", "encrypted; too large to decrypt here", ""}});
  }
  // Before the final hop the MTA may still expand a recipient into an
  // address elsewhere (an alias, .forward): plain text made here could leave.
  const auto here = policy::decryption_here(policy, tx.connection);
  if (!here.allowed) {
    outcome.log += "; encrypted, not decrypted here: " + here.reason;
    return finish_with({{"none", "encrypted; decrypted only at the final hop", ""}});
  }
  MAILKMS_TRY_OR(text, message.to_string(), return failure(settings_.on_internal_error, where, text_result.error().message));
  auto parsed = smime::parse_message(text);
  if (!parsed) {
    Outcome malformed = failure(settings_.on_malformed, where + ": malformed MIME", parsed.error().message);
    if (malformed.verdict == Outcome::Verdict::deliver) malformed.header_edits = edits_with({{"permerror", "malformed MIME", ""}});
    return malformed;
  }
  smime::Entity entity = parsed->entity;
  bool decrypted = false;
  std::string decrypted_note;
  std::vector<std::string> readers;  // the recipients whose own keys open it
  bool authenticated = false;        // AuthEnvelopedData: its integrity was checked
  std::string cipher;
  if (kind == SmimeKind::encrypted) {
    // The current key of each local recipient whose rule says decrypt.
    std::vector<std::string> local;
    for (std::size_t i = 0; i < recipients.size(); ++i) {
      if (decisions[i].settings->decrypt && in_local_domain(policy, recipients[i])) local.push_back(recipients[i]);
    }
    std::vector<std::string> normalized;
    for (const auto& r : local) normalized.push_back(smime::normalize_address(r));
    MAILKMS_TRY_OR(found, certificates_.lookup(normalized),
                   return failure(settings_.on_keystore_unavailable, where + ": keystore unavailable", found_result.error().message));
    std::vector<std::unique_ptr<smime::KeyUnwrapper>> unwrappers;
    std::vector<std::string> owners;
    for (std::size_t i = 0; i < local.size(); ++i) {
      if (!found[i]) continue;
      unwrappers.push_back(keystore_->unwrapper(normalized[i], found[i]->certificate));
      owners.push_back(local[i]);
    }
    std::vector<smime::KeyUnwrapper*> keys;
    for (auto& u : unwrappers) keys.push_back(u.get());
    auto opened = smime::decrypt_entity(*ctx_, entity, keys);
    if (!opened) {
      const auto code = opened.error().code;
      if (code == smime::Errc::no_matching_recipient) {
        outcome.log += "; encrypted to none of the local recipients' keys, delivered as it came";
        return finish_with({{"none", "encrypted; no local key", ""}});
      }
      if (code == smime::Errc::key_operation_failed) {
        return failure(settings_.on_keystore_unavailable, where + ": keystore could not decrypt", opened.error().message);
      }
      Outcome broken = failure(settings_.on_malformed, where + ": cannot decrypt", opened.error().describe());
      if (broken.verdict == Outcome::Verdict::deliver) {
        broken.header_edits = edits_with({{"permerror", "cannot decrypt: " + std::string(smime::to_string(code)), ""}});
      }
      return broken;
    }
    for (const std::size_t i : opened->readers) readers.push_back(owners[i]);
    entity = std::move(opened->content);
    decrypted = true;
    authenticated = opened->authenticated;
    cipher = smime::name(opened->cipher);
    const auto addresses = opened->recipient.email_addresses();
    decrypted_note = settings_.authserv_id + "; cipher=" + cipher + (addresses.empty() ? "" : "; key=" + addresses.front());
    outcome.log += "; decrypted (" + cipher + "; " + here.reason + ")";
  }

  // EFAIL: content encrypted without integrity protection (CBC) may have
  // been changed on the way to exfiltrate what the reader's client shows;
  // unless a reader's rule allows it, only a signature that passes vouches
  // for it.
  const auto wants_signature = [&](const std::string& reader) {
    const auto at = std::find(recipients.begin(), recipients.end(), reader);
    return !decisions[static_cast<std::size_t>(at - recipients.begin())].settings->decrypt_unauthenticated;
  };
  const bool must_vouch = decrypted && !authenticated && std::any_of(readers.begin(), readers.end(), wants_signature);
  std::vector<SmimeResult> results;
  if (verify || must_vouch) {
    auto layer = smime::classify(*ctx_, entity);
    if (layer && *layer && (**layer == smime::LayerKind::signed_multipart || **layer == smime::LayerKind::signed_opaque)) {
      if (auto refused = check_signature(results, authors, [&](const smime::VerifyOptions& options) {
            return smime::verify_entity(*ctx_, entity, options);
          })) {
        return std::move(*refused);
      }
    } else {
      results.push_back({"none", "decrypted; not signed", ""});
    }
  }

  if (!decrypted) return finish_with(results);
  // Only its readers get the plaintext, and of them only those a passing
  // signature is not asked for; the others get the message as it came, in a
  // copy of their own.
  const bool vouched = !results.empty() && results.back().result == "pass";
  std::vector<std::string> others;
  std::vector<std::string> unvouched;
  for (const auto& r : recipients) {
    const bool reader = std::find(readers.begin(), readers.end(), r) != readers.end();
    if (!reader) {
      others.push_back(r);
    } else if (must_vouch && !vouched && wants_signature(r)) {
      unvouched.push_back(r);
    }
  }
  const std::string unprotected = cipher + " does not protect the content's integrity, and no signature that passes vouches for it";
  if (!unvouched.empty()) outcome.log += "; left encrypted for " + join(unvouched) + ": " + unprotected;
  if (others.size() + unvouched.size() == recipients.size()) {
    // Nobody reads it here: as it came, saying why, whatever `verify` says.
    SmimeResult& verdict = results.back();
    if (verdict.result == "none") verdict.reason = "not signed";
    verdict.reason += "; left encrypted: " + unprotected + " (decrypt_unauthenticated = false)";
    outcome.header_edits = {
        {HeaderEdit::Kind::prepend, "Authentication-Results", authentication_results(settings_.authserv_id, results), 0}};
    return outcome;
  }
  others.insert(others.end(), unvouched.begin(), unvouched.end());
  if (!others.empty()) {
    auto copy = as_it_came(tx.sender, others, message);
    if (!copy) return failure(settings_.on_internal_error, where + ": re-injection", copy.error().message);
    outcome.reinjections.push_back({others, std::move(*copy)});
    outcome.removed_recipients = others;
    outcome.log += "; " + join(others) + " not among its readers, re-injected as it came";
  }
  // The decrypted entity replaces the encrypted one; the outer fields stay,
  // but for a claim of decryption we did not make. Of the inner fields only
  // the entity's own Content-* come out: anything else in there was written
  // by whoever encrypted (a From, our Authentication-Results) and would pass
  // for the header we checked.
  std::vector<smime::HeaderField> after;
  for (const auto& f : headers) {
    if (!is_content_field(f.name) && !iequals(f.name, decrypted_header)) after.push_back(f);
  }
  after.push_back({std::string(decrypted_header), " " + decrypted_note});
  after.push_back({"MIME-Version", " 1.0"});
  for (const auto& f : entity.headers) {
    if (is_content_field(f.name) && !iequals(f.name, "MIME-Version")) after.push_back(f);
  }
  std::string rebuilt;
  for (const auto& f : after) rebuilt.append(f.name).append(":").append(f.value).append("\r\n");
  rebuilt.append("\r\n");
  const std::size_t body_offset = rebuilt.size();
  rebuilt.append(entity.body);
  outcome.header_edits = diff_headers(headers, after);
  if (verify) {
    outcome.header_edits.push_back(
        {HeaderEdit::Kind::prepend, "Authentication-Results", authentication_results(settings_.authserv_id, results), 0});
  }
  outcome.message = smime::Spool::from(std::move(rebuilt));
  outcome.body_offset = body_offset;
  return outcome;
}

}  // namespace mailkms::gateway
