// The gateway's outbound decisions over the in-memory keystore, as the
// Postfix tests see them through the milter: what is signed, by whom, to
// whom it is encrypted, and the exact reply when policy cannot be met.
#include <catch2/catch.hpp>

#include <algorithm>

#include "gateway_harness.hpp"

using mailkms::gateway::FailureAction;
using mailkms::gateway::MixedRecipients;
using mailkms::gateway::Outcome;
using mailkms::gateway::RecipientVerdict;
using mailkms::smime::SignatureStatus;
using namespace mailkms::test;

namespace {

const std::string body = "The figures are attached.\r\nRegards, Alice\r\n";

bool names(const mailkms::smime::VerifyResult& verified, const std::string& address) {
  return std::any_of(verified.signers.begin(), verified.signers.end(), [&](const auto& s) {
    return s.status == SignatureStatus::pass &&
           std::find(s.addresses.begin(), s.addresses.end(), address) != s.addresses.end();
  });
}

// The signature on `entity` passes for alice, and the content is `body`.
void signed_by_alice(const mailkms::smime::Entity& entity) {
  const auto verified = verify_for(entity, "alice@example.org");
  INFO(verified.reason);
  CHECK(verified.status == SignatureStatus::pass);
  CHECK(names(verified, "alice@example.org"));
  REQUIRE(verified.content);
  CHECK(verified.content->body == body);
}

}  // namespace

TEST_CASE("outbound to a recipient whose rule says encrypt never: signed by the author, not encrypted", "[gateway][outbound]") {
  GatewayHarness h;
  auto tx = h.begin("alice@example.org");
  h.add_all(tx, {"x@signonly.example"});
  const auto outcome = h.finish(tx, message_from("alice@example.org", "x@signonly.example", body));
  INFO(outcome.log);
  REQUIRE(outcome.verdict == Outcome::Verdict::deliver);
  const auto out = delivered(outcome);
  CHECK(out.find("multipart/signed") != std::string::npos);
  signed_by_alice(must(mailkms::smime::parse_message(out)).entity);
}

TEST_CASE("outbound to a recipient with a certificate: signed by alice, encrypted to the recipient and to alice", "[gateway][outbound]") {
  GatewayHarness h;
  auto tx = h.begin("alice@example.org");
  h.add_all(tx, {"zoe@partner.example"});
  const auto outcome = h.finish(tx, message_from("alice@example.org", "zoe@partner.example", body));
  INFO(outcome.log);
  REQUIRE(outcome.verdict == Outcome::Verdict::deliver);
  const auto out = delivered(outcome);
  CHECK(out.find("enveloped-data") != std::string::npos);
  CHECK(out.find("The figures") == std::string::npos);
  signed_by_alice(decrypt_as(out, "zoe"));
  CHECK(opens_for(out, "alice"));      // her sent copy stays readable
  CHECK_FALSE(opens_for(out, "bob"));  // and nobody else's key opens it
}

TEST_CASE("a rule says encrypt always, no certificate, reject: 550 5.7.1 at RCPT and at the end of the message", "[gateway][outbound][missing]") {
  GatewayHarness h;
  auto tx = h.begin("alice@example.org");
  const auto verdict = h.add(tx, "x@reject.example");
  CHECK(verdict.kind == RecipientVerdict::Kind::reject);
  CHECK(verdict.reply.code == "550");
  CHECK(verdict.reply.enhanced == "5.7.1");
  CHECK(verdict.reply.text.find("x@reject.example") != std::string::npos);

  // Mail taken without SMTP is decided at its end.
  auto local = h.begin_local("alice@example.org");
  h.add_all(local, {"x@reject.example"});
  const auto outcome = h.finish(local, message_from("alice@example.org", "x@reject.example", body));
  CHECK(outcome.verdict == Outcome::Verdict::reject);
  CHECK(outcome.reply.code == "550");
  CHECK(outcome.reply.enhanced == "5.7.1");
  CHECK(outcome.reply.text == "Policy requires encryption; no usable certificate for x@reject.example");
  CHECK_FALSE(outcome.message);
}

TEST_CASE("a rule says encrypt always, no certificate, tempfail: 450 4.7.1 with one text at RCPT and at the end of the message", "[gateway][outbound][missing]") {
  GatewayHarness h;
  auto tx = h.begin("alice@example.org");
  const auto verdict = h.add(tx, "x@tempfail.example");
  CHECK(verdict.kind == RecipientVerdict::Kind::tempfail);
  CHECK(verdict.reply.code == "450");
  CHECK(verdict.reply.enhanced == "4.7.1");
  CHECK(verdict.reply.text == "Policy requires encryption; no usable certificate yet for x@tempfail.example");

  auto local = h.begin_local("alice@example.org");
  h.add_all(local, {"x@tempfail.example"});
  const auto outcome = h.finish(local, message_from("alice@example.org", "x@tempfail.example", body));
  CHECK(outcome.verdict == Outcome::Verdict::tempfail);
  CHECK(outcome.reply.code == "450");
  CHECK(outcome.reply.enhanced == "4.7.1");
  CHECK(outcome.reply.text == "Policy requires encryption; no usable certificate yet for x@tempfail.example");
  CHECK_FALSE(outcome.message);
}

TEST_CASE("recipients a subject tag sets apart at the end of the message: their rule's tempfail is 450 4.7.1", "[gateway][outbound][mixed]") {
  GatewayHarness h;
  auto tx = h.begin("alice@example.org");
  h.add_all(tx, {"zoe@partner.example", "carol@example.org"});  // both encrypted, as far as RCPT can tell
  const auto outcome =
      h.finish(tx, message_from("alice@example.org", "zoe@partner.example, carol@example.org", body, "[noencrypt] Figures"));
  INFO(outcome.log);
  CHECK(outcome.verdict == Outcome::Verdict::tempfail);
  CHECK(outcome.reply.code == "450");
  CHECK(outcome.reply.enhanced == "4.7.1");
  CHECK(outcome.reply.text == "These recipients need a differently protected copy: carol@example.org");
}

TEST_CASE("a rule says encrypt always, no certificate, quarantine: held, signed, never in clear to the recipient's server", "[gateway][outbound][missing]") {
  GatewayHarness h;
  auto tx = h.begin("alice@example.org");
  h.add_all(tx, {"x@hold.example"});
  const auto outcome = h.finish(tx, message_from("alice@example.org", "x@hold.example", body));
  INFO(outcome.log);
  CHECK(outcome.verdict == Outcome::Verdict::deliver);
  CHECK(outcome.quarantine);
  CHECK(outcome.quarantine_reason == "mailkms: no usable certificate for x@hold.example");
}

TEST_CASE("a rule says encrypt always, no certificate, send-plain: delivered signed by alice, not encrypted", "[gateway][outbound][missing]") {
  GatewayHarness h;
  auto tx = h.begin("alice@example.org");
  h.add_all(tx, {"x@plain.example"});
  const auto outcome = h.finish(tx, message_from("alice@example.org", "x@plain.example", body));
  INFO(outcome.log);
  REQUIRE(outcome.verdict == Outcome::Verdict::deliver);
  CHECK_FALSE(outcome.quarantine);
  const auto out = delivered(outcome);
  CHECK(out.find("enveloped-data") == std::string::npos);
  signed_by_alice(must(mailkms::smime::parse_message(out)).entity);
}

TEST_CASE("authenticated bob writing From: alice is delivered, not signed as alice", "[gateway][outbound][signer]") {
  GatewayHarness h;
  auto tx = h.begin("bob@example.org", "192.0.2.7", "bob@example.org");
  h.add_all(tx, {"x@signonly.example"});
  const auto outcome = h.finish(tx, message_from("alice@example.org", "x@signonly.example", body));
  CHECK(outcome.verdict == Outcome::Verdict::deliver);
  CHECK_FALSE(outcome.message);  // as it came: nothing to sign it with
  CHECK(outcome.log.find("[not signed as alice@example.org: login bob@example.org does not own it]") != std::string::npos);
  CHECK(h.keystore->signers_made() == 0);  // the keystore is never asked for alice's key
}

TEST_CASE("authenticated bob, From: bob: signed by bob", "[gateway][outbound][signer]") {
  GatewayHarness h;
  auto tx = h.begin("bob@example.org", "192.0.2.7", "bob@example.org");
  h.add_all(tx, {"x@signonly.example"});
  const auto outcome = h.finish(tx, message_from("bob@example.org", "x@signonly.example", body));
  REQUIRE(outcome.verdict == Outcome::Verdict::deliver);
  const auto verified = verify_for(must(mailkms::smime::parse_message(delivered(outcome))).entity, "bob@example.org");
  CHECK(verified.status == SignatureStatus::pass);
  CHECK(names(verified, "bob@example.org"));
}

TEST_CASE("a rule says sign always and the submission may not sign as its author: 550 5.7.1 naming the reason", "[gateway][outbound][signer]") {
  GatewayHarness h;
  SECTION("no SASL login, from a network that may not sign unauthenticated") {
    auto tx = h.begin("alice@example.org", "10.1.2.3");
    h.add_all(tx, {"x@signed.example"});
    const auto outcome = h.finish(tx, message_from("alice@example.org", "x@signed.example", body));
    CHECK(outcome.verdict == Outcome::Verdict::reject);
    CHECK(outcome.reply.code == "550");
    CHECK(outcome.reply.enhanced == "5.7.1");
    CHECK(outcome.reply.text.rfind("Policy requires signing, and this submission may not sign as alice@example.org: ", 0) == 0);
  }
  SECTION("a login that does not own the From address") {
    auto tx = h.begin("bob@example.org", "192.0.2.7", "bob@example.org");
    h.add_all(tx, {"x@signed.example"});
    const auto outcome = h.finish(tx, message_from("alice@example.org", "x@signed.example", body));
    CHECK(outcome.verdict == Outcome::Verdict::reject);
    CHECK(outcome.reply.code == "550");
    CHECK(outcome.reply.enhanced == "5.7.1");
    CHECK(outcome.reply.text ==
          "Policy requires signing, and this submission may not sign as alice@example.org: login bob@example.org does not own it");
  }
}

TEST_CASE("the keystore unreachable: 451 4.7.1 at RCPT, and at the end of the message, never clear text", "[gateway][outbound][keystore]") {
  GatewayHarness h;
  h.keystore->set_reachable(false);
  auto tx = h.begin("alice@example.org");
  const auto verdict = h.add(tx, "zoe@partner.example");
  CHECK(verdict.kind == RecipientVerdict::Kind::tempfail);
  CHECK(verdict.reply.code == "451");
  CHECK(verdict.reply.enhanced == "4.7.1");

  auto local = h.begin_local("alice@example.org");
  h.add_all(local, {"zoe@partner.example"});
  const auto outcome = h.finish(local, message_from("alice@example.org", "zoe@partner.example", body));
  CHECK(outcome.verdict == Outcome::Verdict::tempfail);
  CHECK(outcome.reply.code == "451");
  CHECK(outcome.reply.enhanced == "4.7.1");
  CHECK_FALSE(outcome.message);
  CHECK(outcome.reinjections.empty());
}

TEST_CASE("the keystore lost between RCPT and the signature: 451 4.7.1, the signer asked afresh next time", "[gateway][outbound][keystore]") {
  GatewayHarness h([](auto& s) { s.certificate_ttl = std::chrono::seconds(300); });
  auto first = h.begin("alice@example.org");
  h.add_all(first, {"x@signonly.example"});
  REQUIRE(h.finish(first, message_from("alice@example.org", "x@signonly.example", body)).verdict == Outcome::Verdict::deliver);
  REQUIRE(h.keystore->signers_made() == 1);
  auto tx = h.begin("alice@example.org");
  h.add_all(tx, {"x@signonly.example"});
  h.keystore->set_reachable(false);  // the cached signer's key is out of reach
  const auto outcome = h.finish(tx, message_from("alice@example.org", "x@signonly.example", body));
  CHECK(outcome.verdict == Outcome::Verdict::tempfail);
  CHECK(outcome.reply.code == "451");
  CHECK(outcome.reply.enhanced == "4.7.1");
  h.keystore->set_reachable(true);
  auto retry = h.begin("alice@example.org");
  h.add_all(retry, {"x@signonly.example"});
  CHECK(h.finish(retry, message_from("alice@example.org", "x@signonly.example", body)).verdict == Outcome::Verdict::deliver);
  CHECK(h.keystore->signers_made() == 2);
}

TEST_CASE("the keystore unreachable with on_keystore_unavailable = accept: a rule's encrypt always still defers", "[gateway][outbound][keystore]") {
  GatewayHarness h([](auto& s) { s.on_keystore_unavailable = FailureAction::accept; });
  h.keystore->set_reachable(false);
  auto tx = h.begin_local("alice@example.org");
  h.add_all(tx, {"x@tempfail.example"});
  const auto outcome = h.finish(tx, message_from("alice@example.org", "x@tempfail.example", body));
  CHECK(outcome.verdict == Outcome::Verdict::tempfail);
  CHECK(outcome.reply.code == "451");
  CHECK(outcome.reply.enhanced == "4.7.1");
}

TEST_CASE("the keystore unreachable with on_keystore_unavailable = quarantine: mail that must be encrypted is deferred, not held in clear", "[gateway][outbound][keystore]") {
  // A held message leaves as it is when released: the MTA does not ask the
  // gateway again, so what policy says to encrypt must not be held plain.
  GatewayHarness h([](auto& s) { s.on_keystore_unavailable = FailureAction::quarantine; });
  h.keystore->set_reachable(false);
  auto tx = h.begin_local("alice@example.org");
  h.add_all(tx, {"x@tempfail.example"});
  const auto outcome = h.finish(tx, message_from("alice@example.org", "x@tempfail.example", body));
  CHECK(outcome.verdict == Outcome::Verdict::tempfail);
  CHECK_FALSE(outcome.quarantine);
  CHECK(outcome.reply.code == "451");
}

TEST_CASE("mixed recipients, defer: the one needing a different copy gets 452 4.5.3 at RCPT", "[gateway][outbound][mixed]") {
  GatewayHarness h;
  auto tx = h.begin("alice@example.org");
  h.add_all(tx, {"zoe@partner.example"});
  const auto verdict = h.add(tx, "y@nowhere.example");
  CHECK(verdict.kind == RecipientVerdict::Kind::defer);
  CHECK(verdict.reply.code == "452");
  CHECK(verdict.reply.enhanced == "4.5.3");
  const auto outcome = h.finish(tx, message_from("alice@example.org", "zoe@partner.example", body));
  REQUIRE(outcome.verdict == Outcome::Verdict::deliver);
  CHECK(outcome.reinjections.empty());
  signed_by_alice(decrypt_as(delivered(outcome), "zoe"));
}

TEST_CASE("mixed recipients, a front end that relays copies: none deferred, each copy apart and unmarked", "[gateway][outbound][mixed]") {
  GatewayHarness h;  // mixed_recipients = defer, which a relaying front end never needs
  auto tx = h.begin("alice@example.org");
  tx.relays_copies = true;
  h.add_all(tx, {"zoe@partner.example", "y@nowhere.example"});
  REQUIRE(tx.recipients.size() == 2);
  const auto outcome = h.finish(tx, message_from("alice@example.org", "zoe@partner.example, y@nowhere.example", body));
  INFO(outcome.log);
  REQUIRE(outcome.verdict == Outcome::Verdict::deliver);
  signed_by_alice(decrypt_as(delivered(outcome), "zoe"));
  CHECK(outcome.removed_recipients == std::vector<std::string>{"y@nowhere.example"});
  REQUIRE(outcome.reinjections.size() == 1);
  CHECK(outcome.reinjections[0].recipients == std::vector<std::string>{"y@nowhere.example"});
  const std::string copy = must(outcome.reinjections[0].message.to_string());
  CHECK(copy.find("X-Mailkms-Reinjected") == std::string::npos);
  CHECK(copy.find("enveloped-data") == std::string::npos);
  signed_by_alice(must(mailkms::smime::parse_message(copy)).entity);
}

TEST_CASE("mixed recipients without SMTP: the other recipient's copy re-injected, signed, readable", "[gateway][outbound][mixed]") {
  GatewayHarness h;
  auto tx = h.begin_local("alice@example.org");
  h.add_all(tx, {"zoe@partner.example", "y@nowhere.example"});
  const auto outcome = h.finish(tx, message_from("alice@example.org", "zoe@partner.example, y@nowhere.example", body));
  INFO(outcome.log);
  REQUIRE(outcome.verdict == Outcome::Verdict::deliver);
  signed_by_alice(decrypt_as(delivered(outcome), "zoe"));
  CHECK(outcome.removed_recipients == std::vector<std::string>{"y@nowhere.example"});
  REQUIRE(outcome.reinjections.size() == 1);
  CHECK(outcome.reinjections[0].recipients == std::vector<std::string>{"y@nowhere.example"});
  const std::string copy = must(outcome.reinjections[0].message.to_string());
  CHECK(copy.rfind("X-Mailkms-Reinjected: ", 0) == 0);
  CHECK(copy.find("enveloped-data") == std::string::npos);
  signed_by_alice(must(mailkms::smime::parse_message(copy)).entity);
}

TEST_CASE("a Bcc recipient's copy is encrypted apart: the shown recipient's copy does not open for them", "[gateway][outbound][mixed]") {
  GatewayHarness h([](auto& s) { s.mixed_recipients = MixedRecipients::reinject; });
  auto tx = h.begin("alice@example.org");
  h.add_all(tx, {"zoe@partner.example", "carol@example.org"});
  const auto outcome = h.finish(tx, message_from("alice@example.org", "zoe@partner.example", body));
  INFO(outcome.log);
  REQUIRE(outcome.verdict == Outcome::Verdict::deliver);
  const auto out = delivered(outcome);
  CHECK(opens_for(out, "zoe"));
  CHECK_FALSE(opens_for(out, "carol"));
  REQUIRE(outcome.reinjections.size() == 1);
  CHECK(outcome.reinjections[0].recipients == std::vector<std::string>{"carol@example.org"});
  const std::string copy = must(outcome.reinjections[0].message.to_string());
  signed_by_alice(decrypt_as(copy, "carol"));
  CHECK_FALSE(opens_for(copy, "zoe"));
}

TEST_CASE("a front end's own trouble is answered by the gateway: 451 4.3.0, or 552 5.3.4 for a message too big", "[gateway][trouble]") {
  GatewayHarness h;
  using mailkms::gateway::FrontEndTrouble;
  const auto internal = h.gateway.answer_trouble(FrontEndTrouble::internal, "internal error in RCPT TO: boom");
  CHECK(internal.verdict == Outcome::Verdict::tempfail);
  CHECK(internal.reply.code == "451");
  CHECK(internal.reply.enhanced == "4.3.0");
  CHECK(internal.reply.text == "Temporary failure in the S/MIME gateway");
  CHECK(internal.log == "internal error in RCPT TO: boom");
  const auto spool = h.gateway.answer_trouble(FrontEndTrouble::spool, "could not spool");
  CHECK(spool.verdict == Outcome::Verdict::tempfail);
  CHECK(spool.reply.code == "451");
  CHECK(spool.reply.text == "The S/MIME gateway cannot store the message now; try again later");
  const auto big = h.gateway.answer_trouble(FrontEndTrouble::too_big, "too big");
  CHECK(big.verdict == Outcome::Verdict::reject);
  CHECK(big.reply.code == "552");
  CHECK(big.reply.enhanced == "5.3.4");
  CHECK(big.reply.text == "Message too big for the S/MIME gateway");
  const auto split = h.gateway.answer_trouble(FrontEndTrouble::reinjection, "not taken");
  CHECK(split.verdict == Outcome::Verdict::tempfail);
  CHECK(split.reply.code == "451");
  CHECK(split.reply.text == "The S/MIME gateway cannot split this message now; try again later");
  const auto hop = h.gateway.answer_trouble(FrontEndTrouble::next_hop, "next hop down");
  CHECK(hop.verdict == Outcome::Verdict::tempfail);
  CHECK(hop.reply.code == "451");
  CHECK(hop.reply.enhanced == "4.4.1");
  CHECK(hop.reply.text == "The next hop cannot take the message now; try again later");
}

TEST_CASE("an encoded [secure] tag is honoured at the end of the message: 550 5.7.1, nothing delivered", "[gateway][outbound][missing]") {
  GatewayHarness h;
  auto tx = h.begin("alice@example.org");
  h.add_all(tx, {"x@secret.example"});  // at RCPT the tag is not known yet
  const auto outcome =
      h.finish(tx, message_from("alice@example.org", "x@secret.example", body, "=?utf-8?q?=5Bsecure=5D_Figures?="));
  CHECK(outcome.verdict == Outcome::Verdict::reject);
  CHECK(outcome.reply.code == "550");
  CHECK(outcome.reply.enhanced == "5.7.1");
  CHECK(outcome.reply.text == "Policy requires encryption; no usable certificate for x@secret.example");
  CHECK_FALSE(outcome.message);
}

TEST_CASE("a subject tag sets carol apart with mixed_recipients = reinject: her copy signed, readable, the tag gone", "[gateway][outbound][mixed]") {
  GatewayHarness h([](auto& s) { s.mixed_recipients = MixedRecipients::reinject; });
  auto tx = h.begin("alice@example.org");
  h.add_all(tx, {"zoe@partner.example", "carol@example.org"});
  const auto outcome = h.finish(
      tx, message_from("alice@example.org", "zoe@partner.example, carol@example.org", body, "[noencrypt] Figures"));
  INFO(outcome.log);
  REQUIRE(outcome.verdict == Outcome::Verdict::deliver);
  const auto out = delivered(outcome);
  CHECK(out.find("\r\nSubject: Figures\r\n") != std::string::npos);
  signed_by_alice(decrypt_as(out, "zoe"));
  REQUIRE(outcome.reinjections.size() == 1);
  CHECK(outcome.reinjections[0].recipients == std::vector<std::string>{"carol@example.org"});
  const std::string copy = must(outcome.reinjections[0].message.to_string());
  CHECK(copy.find("\r\nSubject: Figures\r\n") != std::string::npos);
  CHECK(copy.find("enveloped-data") == std::string::npos);
  signed_by_alice(must(mailkms::smime::parse_message(copy)).entity);
}

TEST_CASE("a calendar invitation to a recipient with a certificate goes out signed and readable", "[gateway][outbound]") {
  GatewayHarness h;
  auto tx = h.begin("alice@example.org");
  h.add_all(tx, {"zoe@partner.example"});
  const std::string invitation =
      "From: alice@example.org\r\nTo: zoe@partner.example\r\nSubject: Meeting\r\nMIME-Version: 1.0\r\n"
      "Content-Type: text/calendar; method=REQUEST; charset=utf-8\r\n\r\n"
      "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nEND:VCALENDAR\r\n";
  const auto outcome = h.finish(tx, invitation);
  INFO(outcome.log);
  REQUIRE(outcome.verdict == Outcome::Verdict::deliver);
  const auto out = delivered(outcome);
  CHECK(out.find("enveloped-data") == std::string::npos);
  const auto verified = verify_for(must(mailkms::smime::parse_message(out)).entity, "alice@example.org");
  CHECK(verified.status == SignatureStatus::pass);
  REQUIRE(verified.content);
  CHECK(verified.content->body == "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nEND:VCALENDAR\r\n");
}

TEST_CASE("a message signed in the sender's client is encrypted, not signed again, and one already encrypted passes", "[gateway][outbound]") {
  GatewayHarness h;
  auto alice = signer("alice");
  const auto signed_text =
      must(mailkms::smime::sign_message(*context(), message_from("alice@example.org", "zoe@partner.example", body), alice, {}));
  auto tx = h.begin("alice@example.org");
  h.add_all(tx, {"zoe@partner.example"});
  const auto outcome = h.finish(tx, signed_text);
  INFO(outcome.log);
  REQUIRE(outcome.verdict == Outcome::Verdict::deliver);
  signed_by_alice(decrypt_as(delivered(outcome), "zoe"));
  CHECK(h.keystore->signers_made() == 0);

  auto again = h.begin("alice@example.org");
  h.add_all(again, {"zoe@partner.example"});
  const auto passed = h.finish(again, delivered(outcome));
  CHECK(passed.verdict == Outcome::Verdict::deliver);
  CHECK_FALSE(passed.message);
  CHECK(passed.log.find("already encrypted by the sender, passed through") != std::string::npos);
}

TEST_CASE("outbound, a forged Authentication-Results in our name is removed", "[gateway][outbound]") {
  GatewayHarness h;
  auto tx = h.begin("alice@example.org");
  h.add_all(tx, {"x@signonly.example"});
  const auto outcome = h.finish(tx, message_from("alice@example.org", "x@signonly.example", body, "Figures",
                                                 "Authentication-Results: mx.example.org; smime=pass\r\n"));
  REQUIRE(outcome.verdict == Outcome::Verdict::deliver);
  const auto removed = std::find_if(outcome.header_edits.begin(), outcome.header_edits.end(), [](const auto& e) {
    return e.kind == mailkms::gateway::HeaderEdit::Kind::remove && e.name == "Authentication-Results";
  });
  CHECK(removed != outcome.header_edits.end());
}

TEST_CASE("routing syntax in a recipient gets 553 5.1.3 at RCPT", "[gateway][outbound]") {
  GatewayHarness h;
  auto tx = h.begin("alice@example.org");
  for (const std::string r : {"bob%partner.example@example.org", "partner!bob@example.org", "bob@example.org."}) {
    const auto verdict = h.add(tx, r);
    CHECK(verdict.kind == RecipientVerdict::Kind::reject);
    CHECK(verdict.reply.code == "553");
    CHECK(verdict.reply.enhanced == "5.1.3");
  }
  CHECK(tx.recipients.empty());
}
