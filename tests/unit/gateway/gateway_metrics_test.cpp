// What the gateway counts, read back as Prometheus would scrape it: one
// message per answer, labelled by what became of it; the S/MIME operations
// behind it; the failures by class. The front ends' own tests check the
// same series over HTTP through a real MTA.
#include <catch2/catch.hpp>

#include <cstdint>
#include <sstream>

#include "gateway_harness.hpp"

using mailkms::gateway::Action;
using mailkms::gateway::Disposition;
using mailkms::gateway::FailureClass;
using mailkms::gateway::FrontEndTrouble;
using mailkms::gateway::Outcome;
using namespace mailkms::test;
namespace smime = mailkms::smime;

namespace {

const std::string body = "The figures are attached.\r\n";

// The value of `series` (name and labels, exactly as written) in what
// `registry` exposes; 0 when it was never written, as Prometheus reads it.
std::uint64_t sample(const mailkms::metrics::Registry& registry, const std::string& series) {
  std::istringstream lines(registry.exposition());
  for (std::string line; std::getline(lines, line);) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 && line[series.size()] == ' ') {
      return std::stoull(line.substr(series.size() + 1));
    }
  }
  return 0;
}

// `outcome` applied by a front end, and counted as it would count it.
Outcome answered(GatewayHarness& h, const mailkms::gateway::Transaction& tx, Outcome outcome) {
  h.gateway.account(tx, outcome.disposition());
  return outcome;
}

mailkms::gateway::Transaction inbound_at_final_hop(GatewayHarness& h, const std::string& recipient) {
  mailkms::gateway::Transaction tx;
  tx.connection.client_address = "192.0.2.50";
  tx.connection.final_hop = true;
  tx.sender = "zoe@partner.example";
  h.gateway.begin(tx);
  h.add_all(tx, {recipient});
  return tx;
}

}  // namespace

TEST_CASE("an outbound message signed and encrypted counts once, with one signature and one encryption", "[gateway][metrics]") {
  GatewayHarness h;
  auto tx = h.begin("alice@example.org");
  h.add_all(tx, {"zoe@partner.example"});
  const auto outcome = answered(h, tx, h.finish(tx, message_from("alice@example.org", "zoe@partner.example", body)));
  INFO(outcome.log);
  CHECK(outcome.action == Action::signed_encrypted);
  CHECK(sample(h.registry, R"(mailkms_messages_total{direction="outbound",action="signed_encrypted"})") == 1);
  CHECK(sample(h.registry, R"(mailkms_smime_operations_total{operation="sign",result="ok"})") == 1);
  CHECK(sample(h.registry, R"(mailkms_smime_operations_total{operation="encrypt",result="ok"})") == 1);
  // A TTL of zero: every lookup asks the keystore.
  CHECK(sample(h.registry, R"(mailkms_cache_lookups_total{cache="certificate",result="miss"})") >= 1);
  CHECK(sample(h.registry, R"(mailkms_failures_total{class="keystore"})") == 0);
}

TEST_CASE("outbound signed alone counts as signed, and treated apart per recipient as split", "[gateway][metrics]") {
  GatewayHarness h;
  auto tx = h.begin("alice@example.org");
  h.add_all(tx, {"x@signonly.example"});
  CHECK(answered(h, tx, h.finish(tx, message_from("alice@example.org", "x@signonly.example", body))).action ==
        Action::signed_);
  auto both = h.begin_local("alice@example.org");  // recipients it cannot refuse: copies apart
  h.add_all(both, {"x@signonly.example", "zoe@partner.example"});
  const auto split = answered(h, both, h.finish(both, message_from("alice@example.org", "x@signonly.example, zoe@partner.example", body)));
  INFO(split.log);
  CHECK(split.action == Action::split);
  CHECK(sample(h.registry, R"(mailkms_messages_total{direction="outbound",action="signed"})") == 1);
  CHECK(sample(h.registry, R"(mailkms_messages_total{direction="outbound",action="split"})") == 1);
}

TEST_CASE("inbound signed and verified, then encrypted and decrypted: each counted with its operation", "[gateway][metrics]") {
  GatewayHarness h;
  auto signed_tx = inbound_at_final_hop(h, "bob@example.org");
  const auto verified =
      answered(h, signed_tx, h.finish(signed_tx, signed_by("zoe", message_from("zoe@partner.example", "bob@example.org", body))));
  INFO(verified.log);
  CHECK(verified.action == Action::verified);
  auto encrypted_tx = inbound_at_final_hop(h, "bob@example.org");
  const auto decrypted = answered(
      h, encrypted_tx,
      h.finish(encrypted_tx, signed_and_encrypted_by_zoe({"bob"}, smime::Cipher::aes256_gcm,
                                                         message_from("zoe@partner.example", "bob@example.org", body))));
  INFO(decrypted.log);
  CHECK(decrypted.action == Action::decrypted);
  CHECK(sample(h.registry, R"(mailkms_messages_total{direction="inbound",action="verified"})") == 1);
  CHECK(sample(h.registry, R"(mailkms_messages_total{direction="inbound",action="decrypted"})") == 1);
  CHECK(sample(h.registry, R"(mailkms_smime_operations_total{operation="verify",result="pass"})") == 2);
  CHECK(sample(h.registry, R"(mailkms_smime_operations_total{operation="decrypt",result="ok"})") == 1);
}

TEST_CASE("inbound with the keystore away: deferred, and counted as a keystore failure", "[gateway][metrics]") {
  GatewayHarness h;
  auto tx = inbound_at_final_hop(h, "bob@example.org");
  h.keystore->set_reachable(false);
  const auto outcome = answered(
      h, tx,
      h.finish(tx, signed_and_encrypted_by_zoe({"bob"}, smime::Cipher::aes256_gcm,
                                               message_from("zoe@partner.example", "bob@example.org", body))));
  CHECK(outcome.verdict == Outcome::Verdict::tempfail);
  CHECK(outcome.failure == FailureClass::keystore);
  CHECK(sample(h.registry, R"(mailkms_messages_total{direction="inbound",action="deferred"})") == 1);
  CHECK(sample(h.registry, R"(mailkms_failures_total{class="keystore"})") == 1);
}

TEST_CASE("a front end's own trouble carries its failure class", "[gateway][metrics]") {
  GatewayHarness h;
  CHECK(h.gateway.answer_trouble(FrontEndTrouble::spool, "").failure == FailureClass::spool);
  CHECK(h.gateway.answer_trouble(FrontEndTrouble::too_big, "").failure == FailureClass::too_big);
  CHECK(h.gateway.answer_trouble(FrontEndTrouble::reinjection, "").failure == FailureClass::reinjection);
  CHECK(h.gateway.answer_trouble(FrontEndTrouble::next_hop, "").failure == FailureClass::next_hop);
  CHECK(h.gateway.answer_trouble(FrontEndTrouble::internal, "").failure == FailureClass::internal);
}

TEST_CASE("the action label is the verdict when the message did not go on as it came", "[gateway][metrics]") {
  using Verdict = Disposition::Verdict;
  using mailkms::gateway::action_label;
  CHECK(action_label({Verdict::reject, false, Action::signed_, FailureClass::malformed}) == "rejected");
  CHECK(action_label({Verdict::tempfail, false, Action::passed, FailureClass::keystore}) == "deferred");
  CHECK(action_label({Verdict::discard, false, Action::enrollment, FailureClass::none}) == "enrollment");
  CHECK(action_label({Verdict::discard, false, Action::passed, FailureClass::none}) == "discarded");
  CHECK(action_label({Verdict::deliver, true, Action::passed, FailureClass::bad_signature}) == "quarantined");
  CHECK(action_label({Verdict::deliver, false, Action::keystore_mail, FailureClass::none}) == "keystore_mail");
}

TEST_CASE("keystore requests are counted by operation and result, and timed", "[gateway][metrics]") {
  mailkms::metrics::Registry registry;
  mailkms::gateway::GatewayMetrics metrics(registry);
  metrics.keystore_request("sign", nullptr, std::chrono::milliseconds(3));
  const auto refused = mailkms::keystore::make_error(mailkms::keystore::Errc::sealed, "sealed");
  metrics.keystore_request("sign", &refused, std::chrono::milliseconds(1));
  CHECK(sample(registry, R"(mailkms_gateway_keystore_requests_total{operation="sign",result="ok"})") == 1);
  CHECK(sample(registry, R"(mailkms_gateway_keystore_requests_total{operation="sign",result="sealed"})") == 1);
  CHECK(sample(registry, R"(mailkms_gateway_keystore_request_duration_seconds_count{operation="sign"})") == 2);
}
