// The gateway's inbound decisions over the in-memory keystore: signatures
// into Authentication-Results, decryption only at the final hop and only
// for the recipients whose keys open the message, and the enrollment
// address, whose mail goes to the keystore and never to a mailbox.
#include <catch2/catch.hpp>

#include <algorithm>

#include "gateway_harness.hpp"

using mailkms::gateway::Outcome;
using namespace mailkms::test;
namespace smime = mailkms::smime;

namespace {

const std::string body = "The secret is 42.\r\n";

// MAIL FROM an outside sender over SMTP from an outside client.
mailkms::gateway::Transaction inbound(GatewayHarness& h, const std::vector<std::string>& recipients,
                                      bool final_hop = false, const std::string& sender = "zoe@partner.example") {
  mailkms::gateway::Transaction tx;
  tx.queue_id = "TESTQUEUE";
  tx.connection.client_address = "192.0.2.50";
  tx.connection.final_hop = final_hop;
  tx.sender = sender;
  h.gateway.begin(tx);
  REQUIRE(tx.direction.direction == mailkms::policy::Direction::inbound);
  h.add_all(tx, recipients);
  return tx;
}

std::string encrypted_to(const std::vector<std::string>& users, smime::Cipher cipher, const std::string& to) {
  return signed_and_encrypted_by_zoe(users, cipher, message_from("zoe@partner.example", to, body));
}

}  // namespace

TEST_CASE("inbound signed by a trusted outside sender: smime=pass naming her, and her certificate harvested", "[gateway][inbound]") {
  GatewayHarness h;
  auto tx = inbound(h, {"bob@example.org"});
  const auto outcome = h.finish(tx, signed_by("zoe", message_from("zoe@partner.example", "bob@example.org", body)));
  INFO(outcome.log);
  CHECK(outcome.verdict == Outcome::Verdict::deliver);
  CHECK_FALSE(outcome.message);  // the signed message itself is untouched
  CHECK(results_of(outcome) == "mx.example.org;\r\n\tsmime=pass\r\n\tbody.smime-identifier=zoe@partner.example");
  CHECK(h.keystore->remembered() == std::vector<std::string>{"zoe@partner.example"});
}

TEST_CASE("inbound signed mail altered on the way: smime=fail, delivered, nothing harvested", "[gateway][inbound]") {
  GatewayHarness h;
  auto tx = inbound(h, {"bob@example.org"});
  std::string altered = signed_by("zoe", message_from("zoe@partner.example", "bob@example.org", body));
  const auto at = altered.find("The secret is 42.");
  REQUIRE(at != std::string::npos);
  altered.replace(at, 17, "The secret is 43.");
  const auto outcome = h.finish(tx, altered);
  CHECK(outcome.verdict == Outcome::Verdict::deliver);
  CHECK(results_of(outcome).rfind("mx.example.org;\r\n\tsmime=fail reason=", 0) == 0);
  CHECK(h.keystore->remembered().empty());
}

TEST_CASE("inbound signed under a root nobody trusts: smime=fail (untrusted), nothing harvested", "[gateway][inbound]") {
  GatewayHarness h;
  auto tx = inbound(h, {"bob@example.org"}, false, "mallory@elsewhere.example");
  auto mallory = smime::LocalSigner::create(context(), cert("mallory"), key("mallory"));
  REQUIRE(mallory);
  const auto signed_text =
      must(smime::sign_message(*context(), message_from("mallory@example.org", "bob@example.org", body), *mallory, {}));
  const auto outcome = h.finish(tx, signed_text);
  CHECK(outcome.verdict == Outcome::Verdict::deliver);
  const auto results = results_of(outcome);
  INFO(results);
  CHECK(results.rfind("mx.example.org;\r\n\tsmime=fail reason=\"untrusted", 0) == 0);
  CHECK(h.keystore->remembered().empty());
}

TEST_CASE("inbound encrypted to bob before the final hop: left encrypted, saying why", "[gateway][inbound][decrypt]") {
  GatewayHarness h;
  auto tx = inbound(h, {"bob@example.org"});
  const auto outcome = h.finish(tx, encrypted_to({"bob"}, smime::Cipher::aes256_gcm, "bob@example.org"));
  INFO(outcome.log);
  CHECK(outcome.verdict == Outcome::Verdict::deliver);
  CHECK_FALSE(outcome.message);
  CHECK(results_of(outcome) == "mx.example.org;\r\n\tsmime=none reason=\"encrypted; decrypted only at the final hop\"");
}

TEST_CASE("inbound encrypted to bob at the final hop: decrypted for him, the signature verified, the decryption recorded", "[gateway][inbound][decrypt]") {
  GatewayHarness h;
  auto tx = inbound(h, {"bob@example.org"}, true);
  const auto outcome = h.finish(tx, encrypted_to({"bob"}, smime::Cipher::aes256_gcm, "bob@example.org"));
  INFO(outcome.log);
  REQUIRE(outcome.verdict == Outcome::Verdict::deliver);
  const auto out = delivered(outcome);
  CHECK(out.find("\r\nX-Mailkms-Decrypted: mx.example.org; cipher=aes-256-gcm; key=bob@example.org\r\n") != std::string::npos);
  CHECK(out.find("multipart/signed") != std::string::npos);
  CHECK(out.find(body) != std::string::npos);
  CHECK(results_of(outcome) == "mx.example.org;\r\n\tsmime=pass\r\n\tbody.smime-identifier=zoe@partner.example");
  CHECK(outcome.reinjections.empty());
}

TEST_CASE("inbound encrypted to bob alone, sent to bob and carol: bob's copy decrypted, carol's as it came", "[gateway][inbound][decrypt]") {
  GatewayHarness h;
  auto tx = inbound(h, {"bob@example.org", "carol@example.org"}, true);
  const auto encrypted = encrypted_to({"bob"}, smime::Cipher::aes256_gcm, "bob@example.org, carol@example.org");
  const auto outcome = h.finish(tx, encrypted);
  INFO(outcome.log);
  REQUIRE(outcome.verdict == Outcome::Verdict::deliver);
  CHECK(delivered(outcome).find(body) != std::string::npos);
  CHECK(outcome.removed_recipients == std::vector<std::string>{"carol@example.org"});
  REQUIRE(outcome.reinjections.size() == 1);
  CHECK(outcome.reinjections[0].recipients == std::vector<std::string>{"carol@example.org"});
  const std::string copy = must(outcome.reinjections[0].message.to_string());
  CHECK(copy.rfind("X-Mailkms-Reinjected: ", 0) == 0);
  CHECK(copy.substr(copy.find("\r\n") + 2) == encrypted);  // line for line the ciphertext that came
}

TEST_CASE("inbound encrypted to bob alone, through a front end that relays copies: carol's copy exactly as it came", "[gateway][inbound][decrypt]") {
  GatewayHarness h;
  auto tx = inbound(h, {"bob@example.org", "carol@example.org"}, true);
  tx.relays_copies = true;
  const auto encrypted = encrypted_to({"bob"}, smime::Cipher::aes256_gcm, "bob@example.org, carol@example.org");
  const auto outcome = h.finish(tx, encrypted);
  INFO(outcome.log);
  REQUIRE(outcome.verdict == Outcome::Verdict::deliver);
  CHECK(delivered(outcome).find(body) != std::string::npos);
  REQUIRE(outcome.reinjections.size() == 1);
  CHECK(outcome.reinjections[0].recipients == std::vector<std::string>{"carol@example.org"});
  CHECK(must(outcome.reinjections[0].message.to_string()) == encrypted);
}

TEST_CASE("inbound CBC-encrypted mail is decrypted only when a signature that passes vouches for it (EFAIL)", "[gateway][inbound][decrypt]") {
  const auto encrypted = encrypted_to({"bob"}, smime::Cipher::aes256_cbc, "bob@example.org");
  GatewayHarness h;
  auto tx = inbound(h, {"bob@example.org"}, true);
  const auto vouched = h.finish(tx, encrypted);
  CHECK(delivered(vouched).find(body) != std::string::npos);

  GatewayHarness untrusting;
  untrusting.keystore->distrust_all();  // zoe's signature no longer passes
  auto tx2 = inbound(untrusting, {"bob@example.org"}, true);
  const auto kept = untrusting.finish(tx2, encrypted);
  INFO(kept.log);
  CHECK(kept.verdict == Outcome::Verdict::deliver);
  CHECK_FALSE(kept.message);
  CHECK(results_of(kept).find("left encrypted: aes-256-cbc does not protect the content's integrity") != std::string::npos);
}

TEST_CASE("inbound with the keystore unreachable at the final hop: 451 4.7.1, not delivered encrypted or decrypted", "[gateway][inbound][keystore]") {
  GatewayHarness h;
  auto tx = inbound(h, {"bob@example.org"}, true);
  h.keystore->set_reachable(false);
  const auto outcome = h.finish(tx, encrypted_to({"bob"}, smime::Cipher::aes256_gcm, "bob@example.org"));
  CHECK(outcome.verdict == Outcome::Verdict::tempfail);
  CHECK(outcome.reply.code == "451");
  CHECK(outcome.reply.enhanced == "4.7.1");
}

TEST_CASE("a reply to the enrollment address goes to the keystore, never to a mailbox", "[gateway][enrollment]") {
  GatewayHarness h;
  const std::string reply = message_from("alice@example.org", "mailkms-enroll@example.org",
                                         "Password: correct horse battery\r\n> MKMS-ABCDE-FGHIJ-KLMNO-PQRST-UVWXY-Z\r\n");
  SECTION("alone: discarded, token and password handed on") {
    auto tx = h.begin("alice@example.org");
    h.add_all(tx, {"mailkms-enroll@example.org"});
    const auto outcome = h.finish(tx, reply);
    CHECK(outcome.verdict == Outcome::Verdict::discard);
    CHECK(outcome.log.find("correct horse") == std::string::npos);
    REQUIRE(h.keystore->redeemed().size() == 1);
    CHECK(h.keystore->redeemed()[0].from == "alice@example.org");
    CHECK(h.keystore->redeemed()[0].token == "MKMS-ABCDEFGHIJKLMNOPQRSTUVWXYZ");
    CHECK(h.keystore->redeemed()[0].password == "correct horse battery");
  }
  SECTION("beside another recipient: taken out of this transaction, the other's copy encrypted") {
    auto tx = h.begin("alice@example.org");
    h.add_all(tx, {"mailkms-enroll@example.org", "zoe@partner.example"});
    const auto outcome = h.finish(tx, reply);
    REQUIRE(outcome.verdict == Outcome::Verdict::deliver);
    CHECK(outcome.removed_recipients == std::vector<std::string>{"mailkms-enroll@example.org"});
    CHECK(opens_for(delivered(outcome), "zoe"));
    CHECK(h.keystore->redeemed().size() == 1);
  }
  SECTION("the keystore unreachable: 451 4.7.1, so the sender's MTA tries again") {
    h.keystore->set_reachable(false);
    auto tx = h.begin("alice@example.org");
    h.add_all(tx, {"mailkms-enroll@example.org"});
    const auto outcome = h.finish(tx, reply);
    CHECK(outcome.verdict == Outcome::Verdict::tempfail);
    CHECK(outcome.reply.code == "451");
    CHECK(outcome.reply.enhanced == "4.7.1");
    CHECK(outcome.reply.text == "The S/MIME gateway cannot process this message now; try again later");
  }
}

TEST_CASE("the keystore's own mail from the enrollment address, its mark confirmed, goes out as it is", "[gateway][enrollment]") {
  GatewayHarness h;
  h.keystore->add_mail_mark("v1.abc", "zoe@partner.example", "<m1@example.org>");
  const std::string mail = message_from("mailkms-enroll@example.org", "zoe@partner.example", body, "Your certificate",
                                        "X-Mailkms-Keystore-Mark: v1.abc\r\n");
  auto tx = h.begin_local("mailkms-enroll@example.org");
  h.add_all(tx, {"zoe@partner.example"});
  const auto outcome = h.finish(tx, mail);
  INFO(outcome.log);
  CHECK(outcome.verdict == Outcome::Verdict::deliver);
  CHECK_FALSE(outcome.message);
  // A mark the keystore does not confirm: encrypted like any other mail.
  auto forged = h.begin_local("mailkms-enroll@example.org");
  h.add_all(forged, {"zoe@partner.example"});
  const std::string other = message_from("mailkms-enroll@example.org", "zoe@partner.example", body, "Your certificate",
                                         "X-Mailkms-Keystore-Mark: v1.forged\r\n");
  CHECK(opens_for(delivered(h.finish(forged, other)), "zoe"));
}

TEST_CASE("a signature that passes for an address in a local domain is not harvested", "[gateway][inbound]") {
  GatewayHarness h;
  auto tx = inbound(h, {"carol@example.org"}, false, "bob@example.org");
  const auto outcome = h.finish(tx, signed_by("bob", message_from("bob@example.org", "carol@example.org", body)));
  INFO(outcome.log);
  CHECK(results_of(outcome) == "mx.example.org;\r\n\tsmime=pass\r\n\tbody.smime-identifier=bob@example.org");
  CHECK(outcome.log.find("not harvested: bob@example.org is in a local domain") != std::string::npos);
  CHECK(h.keystore->remembered().empty());
}
