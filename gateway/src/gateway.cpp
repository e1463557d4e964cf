#include "mailkms/gateway/gateway.hpp"

#include <algorithm>
#include <exception>
#include <optional>
#include <string_view>

#include <openssl/crypto.h>

#include "enrollment_reply.hpp"
#include "pipeline.hpp"

namespace mailkms::gateway {
namespace {

// Why a recipient's address could be routed elsewhere than its domain says,
// or nothing. The MTA may honour "bob%partner.example@example.org" (the
// percent hack), "partner!bob@example.org" (a bang path), a source route or
// a trailing dot in ways no domain rule sees; RFC 5321 needs none of them.
std::optional<std::string> routing_syntax(std::string_view address) {
  if (!address.empty() && address.front() == '@') return "a source route";
  const std::size_t at = address.rfind('@');
  const std::string_view local = address.substr(0, at == std::string_view::npos ? address.size() : at);
  if (local.find('%') != std::string_view::npos) return "a % in the local part";
  if (local.find('!') != std::string_view::npos) return "a ! in the local part";
  if (at != std::string_view::npos && address.back() == '.') return "a trailing dot in the domain";
  return std::nullopt;
}

Reply internal_trouble_reply() { return {"451", "4.3.0", "Temporary failure in the S/MIME gateway"}; }
Reply too_big_reply() { return {"552", "5.3.4", "Message too big for the S/MIME gateway"}; }

Reply routing_refusal(const std::string& recipient, const std::string& why) {
  return {"553", "5.1.3", recipient + ": address with " + why + " not accepted here"};
}

}  // namespace

Gateway::Gateway(Settings settings, std::shared_ptr<const policy::Policy> policy, smime::CryptoContextPtr ctx,
                 const ReinjectionMark& mark, std::shared_ptr<KeystorePort> keystore, Clock clock,
                 std::shared_ptr<GatewayMetrics> metrics)
    : settings_(std::move(settings)),
      policy_(std::move(policy)),
      ctx_(std::move(ctx)),
      keystore_(std::move(keystore)),
      clock_(std::move(clock)),
      metrics_(metrics ? std::move(metrics) : std::make_shared<GatewayMetrics>()),
      certificates_(*keystore_, settings_.certificate_ttl, settings_.missing_certificate_ttl, clock_,
                    [m = metrics_](std::size_t hits, std::size_t misses) { m->cache(Cache::certificate, hits, misses); }),
      trust_(*keystore_, settings_.certificate_ttl, clock_,
             [m = metrics_](std::size_t hits, std::size_t misses) { m->cache(Cache::trust, hits, misses); }),
      mark_(mark) {}

void Gateway::replace_policy(std::shared_ptr<const policy::Policy> policy) {
  std::atomic_store(&policy_, std::move(policy));
}

void Gateway::forget_caches() {
  certificates_.clear();
  trust_.clear();
  crls_.clear();
  const std::lock_guard lock(signers_mutex_);
  signers_.clear();
}

void Gateway::begin(Transaction& transaction) const {
  transaction.policy = policy();
  transaction.recipients.clear();
  transaction.first_treatment.reset();
  transaction.direction = policy::decide_direction(*transaction.policy, transaction.sender, transaction.connection);
}

std::size_t Gateway::size_limit(const Transaction& transaction, const std::vector<smime::HeaderField>& headers) const {
  const std::size_t limit = settings_.max_message_size;
  const bool maybe_ours = !transaction.refusable_recipients &&
                          std::any_of(headers.begin(), headers.end(), [](const smime::HeaderField& f) {
                            return iequals(f.name, reinjection_header);
                          });
  return maybe_ours ? limit * 2 : limit;
}

bool Gateway::is_enrollment_address(std::string_view recipient) const {
  return !settings_.enrollment_address.empty() &&
         smime::normalize_address(recipient) == smime::normalize_address(settings_.enrollment_address);
}

RecipientVerdict Gateway::add_recipient(Transaction& transaction, const std::string& recipient) {
  RecipientVerdict verdict;
  if (is_enrollment_address(recipient)) {
    transaction.recipients.push_back(recipient);
    return verdict;
  }
  if (const auto why = routing_syntax(recipient); why && transaction.refusable_recipients) {
    verdict.kind = RecipientVerdict::Kind::reject;
    verdict.reply = routing_refusal(recipient, *why);
    verdict.log = recipient + ": refused, " + *why + " could take it past the domain rules";
    return verdict;
  }
  if (!transaction.refusable_recipients) {
    transaction.recipients.push_back(recipient);
    verdict.log = recipient + ": decided at the end of the message (not taken over SMTP)";
    return verdict;
  }
  try {
    auto planned = plan_recipient_early(transaction, recipient);
    if (!planned) {
      verdict = std::move(planned).error();
      return verdict;
    }
    // A recipient a subject or header rule may still decide for is compared
    // as the envelope decides it: envelope differences, the common case,
    // are split here; only what the headers change is left to the end.
    if (settings_.mixed_recipients == MixedRecipients::defer && !transaction.relays_copies) {
      if (!transaction.first_treatment) {
        transaction.first_treatment = planned->treatment;
      } else if (*transaction.first_treatment != planned->treatment) {
        verdict.kind = RecipientVerdict::Kind::defer;
        verdict.reply = {"452", "4.5.3", "This recipient needs a differently protected copy; send it separately"};
        verdict.log = recipient + ": deferred, its treatment (" + describe(planned->treatment) +
                      ") differs from the first recipient's (" + describe(*transaction.first_treatment) + ")";
        return verdict;
      }
    }
    transaction.recipients.push_back(recipient);
    verdict.log = planned->log;
    return verdict;
  } catch (const std::exception& e) {
    verdict.kind = RecipientVerdict::Kind::tempfail;
    verdict.reply = internal_trouble_reply();
    verdict.log = recipient + ": internal error: " + e.what();
    return verdict;
  }
}

Outcome Gateway::finish(const Transaction& transaction, const std::vector<smime::HeaderField>& headers,
                        const smime::Spool& message) {
  try {
    // Our own copy was let in as its original; only the MTA's limit is its.
    if (is_our_reinjection(transaction, headers, message)) {
      Outcome outcome;
      outcome.log = "our own re-injected copy, already processed";
      outcome.action = Action::own_copy;
      int index = 0;
      for (const auto& f : headers) {
        if (iequals(f.name, reinjection_header)) outcome.header_edits.push_back({HeaderEdit::Kind::remove, f.name, {}, ++index});
      }
      add_removals(outcome.header_edits, forged_results(headers, settings_.authserv_id));
      return outcome;
    }
    if (settings_.max_message_size != 0 && message.size() > settings_.max_message_size) {
      Outcome outcome;
      outcome.verdict = Outcome::Verdict::reject;
      outcome.reply = too_big_reply();
      outcome.failure = FailureClass::too_big;
      outcome.log = "rejected: " + std::to_string(message.size()) + " bytes is over max_message_size";
      return outcome;
    }
    // Mail not taken over SMTP had no RCPT at which to refuse these.
    for (const auto& r : transaction.recipients) {
      if (const auto why = routing_syntax(r)) {
        Outcome refused;
        refused.verdict = Outcome::Verdict::reject;
        refused.reply = routing_refusal(r, *why);
        refused.log = "rejected: " + r + " has " + *why + ", which could take it past the domain rules";
        return refused;
      }
    }
    Outcome outcome = enrollment(transaction, headers, message);
    if (outcome.verdict != Outcome::Verdict::deliver) return outcome;
    Outcome processed = transaction.direction.direction == policy::Direction::outbound
                            ? outbound(transaction, headers, message, outcome.removed_recipients)
                            : inbound(transaction, headers, message, outcome.removed_recipients);
    // Authentication-Results in our name, and the record of our decryption,
    // are ours alone to write: any a message arrives with, whichever way it
    // goes and whatever else befalls it, are forgeries.
    if (processed.verdict == Outcome::Verdict::deliver) {
      add_removals(processed.header_edits, forged_results(headers, settings_.authserv_id));
    }
    if (!outcome.removed_recipients.empty()) {
      processed.removed_recipients.insert(processed.removed_recipients.begin(), outcome.removed_recipients.begin(),
                                          outcome.removed_recipients.end());
      processed.log = outcome.log + "; " + processed.log;
    }
    return processed;
  } catch (const std::exception& e) {
    // Outbound, it is not known here whether policy wanted the message
    // encrypted: in doubt, it is deferred rather than let out as it came.
    FailureAction action = settings_.on_internal_error;
    if (transaction.direction.direction == policy::Direction::outbound && action == FailureAction::accept) {
      action = FailureAction::tempfail;
    }
    return failure(action, FailureClass::internal, "internal error", e.what());
  }
}

Outcome Gateway::enrollment(const Transaction& transaction, const std::vector<smime::HeaderField>& headers,
                            const smime::Spool& message) {
  Outcome outcome;
  std::size_t enrollment = 0;
  for (const auto& r : transaction.recipients) {
    if (is_enrollment_address(r)) {
      outcome.removed_recipients.push_back(r);
      ++enrollment;
    }
  }
  if (enrollment == 0) return outcome;
  // Enrollment replies carry a password: they are for the keystore only,
  // never for a mailbox or a queue, and nothing of them is logged.
  outcome.log = "enrollment mail to " + settings_.enrollment_address;
  if (enrollment == transaction.recipients.size()) {
    outcome.verdict = Outcome::Verdict::discard;
    outcome.action = Action::enrollment;
    outcome.removed_recipients.clear();
  }
  constexpr std::size_t largest_reply = 4u << 20;
  if (message.size() > largest_reply) {
    outcome.log += " taken out of delivery; too large for an enrollment reply, not read";
    return outcome;
  }
  const std::string from = sole_author_or(headers, transaction.sender);
  auto text = message.to_string();
  EnrollmentReply reply;
  if (text) {
    if (auto parts = smime::decoded_parts(*text); parts) reply = read_enrollment_reply(*parts);
    OPENSSL_cleanse(text->data(), text->size());
  }
  auto answer = keystore_->redeem({from, reply.token, reply.password, reply.csr_pem});
  OPENSSL_cleanse(reply.password.data(), reply.password.size());
  if (!answer) {
    if (keystore_down(answer.error())) {
      return failure(FailureAction::tempfail, FailureClass::keystore, outcome.log, answer.error().message);
    }
    outcome.log += " taken out of delivery; the keystore did not take the reply from " + from + ": " + answer.error().message;
    return outcome;
  }
  outcome.log += " handed to the keystore and taken out of delivery; the reply from " + from + " was " +
                 (*answer ? "accepted" : "refused");
  return outcome;
}

bool Gateway::is_our_reinjection(const Transaction& transaction, const std::vector<smime::HeaderField>& headers,
                                 const smime::Spool& message) const {
  const auto mark = std::find_if(headers.begin(), headers.end(),
                                 [](const smime::HeaderField& f) { return iequals(f.name, reinjection_header); });
  if (mark == headers.end()) return false;
  const auto section = read_header_section(message);
  return section && mark_.check(mark->unfolded(), transaction.sender, transaction.recipients, message,
                                section->body_offset);
}

smime::Result<smime::Spool> Gateway::copy_for(const Transaction& transaction, const std::vector<std::string>& recipients,
                                              const smime::Spool& message) const {
  const smime::SpoolOptions options{settings_.spool_memory_limit, settings_.spool_directory};
  if (transaction.relays_copies) return copy_of(message, options);
  MAILKMS_TRY(header, read_header_section(message));
  const std::string mark = mark_.make(transaction.sender, recipients, message, header.body_offset);
  return with_field_on_top(message, {std::string(reinjection_header), " " + mark}, options);
}

Outcome Gateway::answer_trouble(FrontEndTrouble trouble, std::string log) const {
  Outcome outcome;
  outcome.verdict = Outcome::Verdict::tempfail;
  outcome.log = std::move(log);
  switch (trouble) {
    case FrontEndTrouble::internal:
      outcome.reply = internal_trouble_reply();
      outcome.failure = FailureClass::internal;
      break;
    case FrontEndTrouble::spool:
      outcome.reply = {"451", "4.3.0", "The S/MIME gateway cannot store the message now; try again later"};
      outcome.failure = FailureClass::spool;
      break;
    case FrontEndTrouble::too_big:
      outcome.verdict = Outcome::Verdict::reject;
      outcome.reply = too_big_reply();
      outcome.failure = FailureClass::too_big;
      break;
    case FrontEndTrouble::reinjection:
      outcome.reply = {"451", "4.3.0", "The S/MIME gateway cannot split this message now; try again later"};
      outcome.failure = FailureClass::reinjection;
      break;
    case FrontEndTrouble::next_hop:
      outcome.reply = {"451", "4.4.1", "The next hop cannot take the message now; try again later"};
      outcome.failure = FailureClass::next_hop;
      break;
  }
  return outcome;
}

void Gateway::account(const Transaction& transaction, const Disposition& disposition) const noexcept {
  try {
    metrics_->message(transaction.direction.direction, disposition);
  } catch (const std::exception&) {
    // Out of memory for a label: one count lost, the message answered.
  }
}

Outcome Gateway::failure(FailureAction action, FailureClass failure, const std::string& what,
                         const std::string& reason) const {
  Outcome outcome;
  outcome.failure = failure;
  switch (action) {
    case FailureAction::accept:
      outcome.log = what + ", delivered unchanged: " + reason;
      break;
    case FailureAction::reject:
      outcome.verdict = Outcome::Verdict::reject;
      outcome.reply = {"554", "5.7.0", "The S/MIME gateway cannot process this message"};
      outcome.log = what + ", rejected: " + reason;
      break;
    case FailureAction::tempfail:
      outcome.verdict = Outcome::Verdict::tempfail;
      outcome.reply = {"451", "4.7.1", "The S/MIME gateway cannot process this message now; try again later"};
      outcome.log = what + ", deferred: " + reason;
      break;
    case FailureAction::quarantine:
      outcome.quarantine = true;
      outcome.quarantine_reason = "mailkms: " + what;
      outcome.log = what + ", quarantined: " + reason;
      break;
  }
  return outcome;
}

}  // namespace mailkms::gateway
