// Pieces of the pipeline shared by its outbound and inbound halves.
#pragma once

#include <string>
#include <vector>

#include "mailkms/gateway/gateway.hpp"
#include "mailkms/smime/verify.hpp"
#include "message_text.hpp"

namespace mailkms::gateway {

std::string describe(const Treatment& treatment);

policy::Headers policy_headers(const std::vector<smime::HeaderField>& fields);

// Authentication-Results (RFC 8601 with the smime method of RFC 7281).
struct SmimeResult {
  std::string result;  // none, pass, fail, policy, neutral, temperror, permerror
  std::string reason;
  std::string identifier;  // the signer's address
};
std::string authentication_results(const std::string& authserv_id, const std::vector<SmimeResult>& results);
// A verification as one smime result, naming the signer it is about by the
// address under which it matched the message's `authors`.
SmimeResult smime_result(const smime::VerifyResult& verified, const std::vector<std::string>& authors);
// A message the gateway could not read back from its own spool: our
// trouble, not the sender's.
bool unreadable(const smime::VerifyResult& verified);
// The authserv-id an Authentication-Results value starts with.
std::string authserv_id_of(std::string_view value);
// What records that the gateway decrypted a message (inbound.cpp).
inline constexpr std::string_view decrypted_header = "X-Mailkms-Decrypted";
// Removals of the fields only we write, which any message arrives with
// forged: Authentication-Results in `authserv_id`'s name (RFC 8601 §5),
// and the record of a decryption. Highest index first.
std::vector<HeaderEdit> forged_results(const std::vector<smime::HeaderField>& headers, const std::string& authserv_id);
// `edits` with `removals` added where they do not already change or remove
// that field.
void add_removals(std::vector<HeaderEdit>& edits, const std::vector<HeaderEdit>& removals);

std::string join(const std::vector<std::string>& items, std::string_view separator = ", ");

// A refusal for policy that cannot be met: 550 5.7.1 for reject, 450 4.7.1
// for tempfail (RFC 5321 names both for policy at RCPT TO and at the end
// of DATA alike; RFC 3463: delivery not authorized). 451 stays for our own
// trouble (a keystore that cannot be reached).
Reply policy_refusal(policy::MissingCertificate action, std::string text);
// The one reply for recipients without a usable certificate where a rule
// says encrypt always, at RCPT TO and at the end of the message alike.
Reply missing_certificate_reply(policy::MissingCertificate action, const std::string& names);
// What on_missing_certificate makes of a message: refused with `reply`,
// held with `quarantine_reason`, or (send-plain) delivered.
Outcome unmet_policy(policy::MissingCertificate action, Reply reply, std::string quarantine_reason, std::string log);

// The keystore cannot answer now: unreachable, sealed, its storage or audit
// log failing. A reason to try again later, never an answer to the request:
// not "this sender has no signing identity" (mail would go unsigned, or be
// refused for good where policy says sign always), nor "this enrollment
// reply is refused" (it would be discarded, and the user never answered).
inline bool keystore_down(const keystore::Error& error) {
  using keystore::Errc;
  return error.code == Errc::unavailable || error.code == Errc::sealed || error.code == Errc::storage_failed ||
         error.code == Errc::internal;
}

}  // namespace mailkms::gateway

// Like MAILKMS_TRY, but runs `on_error` (which must return) on failure;
// the failed result is available as `var##_result`. (`var` names a
// declaration: it cannot be put in parentheses.)
// NOLINTBEGIN(bugprone-macro-parentheses)
#define MAILKMS_TRY_OR(var, expr, on_error) \
  auto var##_result = (expr);               \
  if (!var##_result) {                      \
    on_error;                               \
  }                                         \
  auto var = std::move(var##_result).value()
// NOLINTEND(bugprone-macro-parentheses)
