// What the gateway keeps from the keystore between messages — recipients'
// certificates, "no certificate", signing identities, trust anchors — and
// what makes it ask again: a reload (SIGHUP), which forgets all of it.
#include <catch2/catch.hpp>

#include "gateway_harness.hpp"

using mailkms::gateway::Outcome;
using mailkms::gateway::Settings;
using namespace mailkms::test;
using namespace std::chrono_literals;

namespace {

const std::string body = "The figures are attached.\r\n";

// Long enough that nothing in a test runs out by itself.
void long_ttls(Settings& settings) {
  settings.certificate_ttl = 3600s;
  settings.missing_certificate_ttl = 3600s;
}

// The Authentication-Results of zoe's signed mail to bob, from outside.
std::string verdict_on_zoes_mail(GatewayHarness& h) {
  auto tx = h.begin("zoe@partner.example", "192.0.2.50");
  REQUIRE(tx.direction.direction == mailkms::policy::Direction::inbound);
  h.add_all(tx, {"bob@example.org"});
  const auto outcome = h.finish(tx, signed_by("zoe", message_from("zoe@partner.example", "bob@example.org", body)));
  INFO(outcome.log);
  CHECK(outcome.verdict == Outcome::Verdict::deliver);
  return results_of(outcome);
}

// What alice's mail to `recipient` became on the way out.
std::string alices_mail_to(GatewayHarness& h, const std::string& recipient) {
  auto tx = h.begin("alice@example.org", "192.0.2.7", "alice@example.org");
  h.add_all(tx, {recipient});
  const auto outcome = h.finish(tx, message_from("alice@example.org", recipient, body));
  INFO(outcome.log);
  REQUIRE(outcome.verdict == Outcome::Verdict::deliver);
  return delivered(outcome);
}

const std::string untrusted = "mx.example.org;\r\n\tsmime=fail reason=\"untrusted";
const std::string zoe_passes = "mx.example.org;\r\n\tsmime=pass\r\n\tbody.smime-identifier=zoe@partner.example";

}  // namespace

TEST_CASE("a reload forgets the trust anchors: an anchor added since counts at once", "[gateway][cache]") {
  GatewayHarness h(long_ttls);
  h.keystore->distrust_all();
  CHECK(verdict_on_zoes_mail(h).rfind(untrusted, 0) == 0);
  h.keystore->trust_test_root();  // mailkmsctl trust add
  CHECK(verdict_on_zoes_mail(h).rfind(untrusted, 0) == 0);  // the anchors are cached
  h.gateway.forget_caches();  // kill -HUP
  CHECK(verdict_on_zoes_mail(h) == zoe_passes);
}

TEST_CASE("a reload forgets the signers and the certificates: the keystore is asked afresh", "[gateway][cache]") {
  GatewayHarness h(long_ttls);
  CHECK(alices_mail_to(h, "dave@partner.example").find("enveloped-data") == std::string::npos);  // no certificate
  REQUIRE(h.keystore->signers_made() == 1);
  h.keystore->add_certificate("dave@partner.example", "zoe");  // dave enrolls
  CHECK(alices_mail_to(h, "dave@partner.example").find("enveloped-data") == std::string::npos);  // "none" is cached
  CHECK(h.keystore->signers_made() == 1);  // so is alice's signer
  h.gateway.forget_caches();
  const auto out = alices_mail_to(h, "dave@partner.example");
  CHECK(h.keystore->signers_made() == 2);
  CHECK(opens_for(out, "zoe"));
}

// The TTLs, on the harness's clock: each is tested at the second before it
// runs out and the second after, without waiting for either.
namespace {

void five_and_one_minute_ttls(Settings& settings) {
  settings.certificate_ttl = 300s;
  settings.missing_certificate_ttl = 60s;
}

bool encrypted(const std::string& message) { return message.find("enveloped-data") != std::string::npos; }

}  // namespace

TEST_CASE("a certificate is used for certificate_ttl after it was fetched, then asked for again", "[gateway][cache][ttl]") {
  GatewayHarness h(five_and_one_minute_ttls);
  h.keystore->add_certificate("dave@partner.example", "zoe");
  CHECK(opens_for(alices_mail_to(h, "dave@partner.example"), "zoe"));
  h.keystore->remove("dave@partner.example");  // revoked: the keystore hands it out no more
  h.advance(299s);
  CHECK(opens_for(alices_mail_to(h, "dave@partner.example"), "zoe"));
  h.advance(2s);
  CHECK_FALSE(encrypted(alices_mail_to(h, "dave@partner.example")));
}

TEST_CASE("a missing certificate is remembered for missing_certificate_ttl, so an enrollment counts after it", "[gateway][cache][ttl]") {
  GatewayHarness h(five_and_one_minute_ttls);
  CHECK_FALSE(encrypted(alices_mail_to(h, "dave@partner.example")));
  h.keystore->add_certificate("dave@partner.example", "zoe");
  h.advance(59s);
  CHECK_FALSE(encrypted(alices_mail_to(h, "dave@partner.example")));
  h.advance(2s);
  CHECK(opens_for(alices_mail_to(h, "dave@partner.example"), "zoe"));
}

TEST_CASE("a sender's signing identity is kept for certificate_ttl, then the keystore is asked again", "[gateway][cache][ttl]") {
  GatewayHarness h(five_and_one_minute_ttls);
  alices_mail_to(h, "x@signonly.example");
  h.advance(299s);
  alices_mail_to(h, "x@signonly.example");
  CHECK(h.keystore->signers_made() == 1);
  h.advance(2s);
  alices_mail_to(h, "x@signonly.example");
  CHECK(h.keystore->signers_made() == 2);
}

TEST_CASE("trust anchors are fetched once a certificate_ttl, and kept through an outage for ten", "[gateway][cache][ttl]") {
  GatewayHarness h(five_and_one_minute_ttls);
  h.keystore->distrust_all();
  CHECK(verdict_on_zoes_mail(h).rfind(untrusted, 0) == 0);
  h.keystore->trust_test_root();
  h.advance(299s);
  CHECK(verdict_on_zoes_mail(h).rfind(untrusted, 0) == 0);
  h.advance(2s);
  CHECK(verdict_on_zoes_mail(h) == zoe_passes);

  h.keystore->set_reachable(false);
  h.advance(2999s);  // stale, and kept through an outage until it is ten TTLs old
  CHECK(verdict_on_zoes_mail(h) == zoe_passes);
  h.advance(2s);
  CHECK(verdict_on_zoes_mail(h) == "mx.example.org;\r\n\tsmime=temperror reason=\"keystore unavailable\"");
}
