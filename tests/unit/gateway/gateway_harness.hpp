// A Gateway over the in-memory keystore, and what its tests ask of a
// message: the transaction as a front end builds it, the message it
// produced, decrypted and verified with the test PKI.
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "in_memory_keystore.hpp"
#include "mailkms/gateway/gateway.hpp"
#include "mailkms/smime/decrypt.hpp"
#include "mailkms/smime/encrypt.hpp"
#include "mailkms/smime/mime.hpp"
#include "mailkms/smime/sign.hpp"
#include "mailkms/smime/verify.hpp"
#include "message_text.hpp"
#include "test_support.hpp"

namespace mailkms::test {

// example.org is ours (the test PKI's users live there); 127.0.0.0/8 may
// have mail signed without SMTP AUTH, 10.0.0.0/8 is internal but may not.
inline constexpr const char* gateway_test_policy = R"(
[local]
domains = ["example.org"]
networks = ["127.0.0.0/8", "10.0.0.0/8"]

[signing]
unauthenticated_networks = ["127.0.0.0/8"]
local_submission = true

[defaults]
sign = "if-possible"
encrypt = "if-possible"
decrypt = true

# A tag, known only at the end of the message, that keeps carol's copy
# plain: then she needs a copy of her own.
[[rule]]
name = "plain-on-request"
direction = "outbound"
to = "carol@example.org"
subject_tag = "[noencrypt]"
encrypt = "never"
on_missing_certificate = "tempfail"

[[rule]]
name = "must-encrypt-reject"
to = "*@reject.example"
encrypt = "always"
on_missing_certificate = "reject"

[[rule]]
name = "must-encrypt-tempfail"
to = "*@tempfail.example"
encrypt = "always"
on_missing_certificate = "tempfail"

[[rule]]
name = "must-encrypt-hold"
to = "*@hold.example"
encrypt = "always"
on_missing_certificate = "quarantine"

[[rule]]
name = "must-encrypt-or-plain"
to = "*@plain.example"
encrypt = "always"
on_missing_certificate = "send-plain"

[[rule]]
name = "secure-on-request"
direction = "outbound"
to = "*@secret.example"
subject_tag = "[secure]"
encrypt = "always"
on_missing_certificate = "reject"

[[rule]]
name = "must-sign"
to = "*@signed.example"
sign = "always"
encrypt = "never"

[[rule]]
name = "sign-only"
to = "*@signonly.example"
encrypt = "never"
)";

struct GatewayHarness {
  explicit GatewayHarness(const std::function<void(gateway::Settings&)>& adjust = {},
                          const std::string& policy_text = gateway_test_policy)
      : keystore(std::make_shared<InMemoryKeystore>()),
        metrics(std::make_shared<gateway::GatewayMetrics>(registry)),
        gateway(make(adjust, policy_text, keystore, spool, [this] { return now; }, metrics)) {
    keystore->add_user("alice@example.org", "alice");
    keystore->add_user("bob@example.org", "bob");
    keystore->add_user("carol@example.org", "carol");
    keystore->add_certificate("zoe@partner.example", "zoe");
    keystore->trust_test_root();
  }

  // MAIL FROM `sender` over SMTP from `client` (with a SASL `login`, if any).
  gateway::Transaction begin(const std::string& sender, const std::string& client = "127.0.0.1",
                             const std::string& login = "") {
    gateway::Transaction tx;
    tx.queue_id = "TESTQUEUE";
    tx.connection.client_address = client;
    tx.connection.login = login;
    tx.connection.authenticated = !login.empty();
    tx.sender = sender;
    gateway.begin(tx);
    return tx;
  }
  // The same, submitted locally without SMTP (Postfix's sendmail).
  gateway::Transaction begin_local(const std::string& sender) {
    gateway::Transaction tx;
    tx.queue_id = "TESTQUEUE";
    tx.connection.client_address = "127.0.0.1";
    tx.connection.local_submission = true;
    tx.refusable_recipients = false;
    tx.sender = sender;
    gateway.begin(tx);
    return tx;
  }
  gateway::RecipientVerdict add(gateway::Transaction& tx, const std::string& recipient) {
    return gateway.add_recipient(tx, recipient);
  }
  // Every recipient accepted at RCPT, or the test fails.
  void add_all(gateway::Transaction& tx, const std::vector<std::string>& recipients) {
    for (const auto& r : recipients) {
      const auto verdict = add(tx, r);
      INFO(verdict.log);
      REQUIRE(verdict.kind == gateway::RecipientVerdict::Kind::accept);
    }
  }
  gateway::Outcome finish(const gateway::Transaction& tx, const std::string& message) {
    auto spooled = smime::Spool::from(std::string(message));
    // The header fields as the MTA hands them over, one by one.
    auto section = gateway::read_header_section(spooled);
    REQUIRE(section);
    return gateway.finish(tx, section->fields, spooled);
  }

  // The gateway's caches count their TTLs on this clock; it moves only
  // when a test moves it.
  void advance(std::chrono::seconds by) { now += by; }

  TempDir spool;
  std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now();
  std::shared_ptr<InMemoryKeystore> keystore;
  metrics::Registry registry;  // what the gateway counted, for the metrics tests
  std::shared_ptr<gateway::GatewayMetrics> metrics;
  gateway::Gateway gateway;

 private:
  static gateway::Gateway make(const std::function<void(gateway::Settings&)>& adjust, const std::string& policy_text,
                               std::shared_ptr<InMemoryKeystore> keystore, const TempDir& spool,
                               gateway::Clock clock, std::shared_ptr<gateway::GatewayMetrics> metrics) {
    gateway::Settings settings;
    settings.authserv_id = "mx.example.org";
    settings.enrollment_address = "mailkms-enroll@example.org";
    settings.spool_directory = spool.path("");
    settings.certificate_ttl = std::chrono::seconds(0);  // every message asks the port afresh
    settings.missing_certificate_ttl = std::chrono::seconds(0);
    if (adjust) adjust(settings);
    auto policy = policy::parse_policy(policy_text, "policy.toml");
    if (!policy) FAIL(policy.error().message);
    auto mark = gateway::ReinjectionMark::create({});
    if (!mark) FAIL(mark.error().message);
    return gateway::Gateway(std::move(settings), std::move(*policy), context(), *mark, std::move(keystore),
                            std::move(clock), std::move(metrics));
  }
};

inline std::string message_from(const std::string& from, const std::string& to, const std::string& body,
                                const std::string& subject = "Quarterly figures", const std::string& extra = "") {
  return "From: " + from + "\r\nTo: " + to + "\r\nSubject: " + subject + "\r\nMessage-ID: <m1@example.org>\r\n" + extra +
         "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body;
}

// The whole message an outcome delivers in this transaction (its new body
// carries the transformed header section too).
inline std::string delivered(const gateway::Outcome& outcome) {
  REQUIRE(outcome.message);
  return must(outcome.message->to_string());
}

// `message` opened with the test PKI key of `user`.
inline smime::Entity decrypt_as(const std::string& message, const std::string& user) {
  auto parsed = must(smime::parse_message(message));
  auto key = unwrapper(user);
  smime::KeyUnwrapper* keys[] = {&key};
  return must(smime::decrypt_entity(*context(), parsed.entity, keys)).content;
}

// `message` signed by zoe (a trusted outsider) and encrypted to `users`.
inline std::string signed_and_encrypted_by_zoe(const std::vector<std::string>& users, smime::Cipher cipher,
                                               const std::string& message) {
  auto signer = mailkms::test::signer("zoe");
  std::vector<smime::Recipient> recipients;
  recipients.reserve(users.size());
  for (const auto& u : users) recipients.push_back({cert(u)});
  smime::EncryptOptions options;
  options.cipher = cipher;
  return must(smime::sign_and_encrypt_message(*context(), message, signer, {}, recipients, options));
}

inline bool opens_for(const std::string& message, const std::string& user) {
  auto parsed = must(smime::parse_message(message));
  auto key = unwrapper(user);
  smime::KeyUnwrapper* keys[] = {&key};
  return smime::decrypt_entity(*context(), parsed.entity, keys).has_value();
}

// `message` signed with the test PKI key of `user`.
inline std::string signed_by(const std::string& user, const std::string& message) {
  auto key = signer(user);
  return must(smime::sign_message(*context(), message, key, {}));
}

// The Authentication-Results the outcome adds (there is one).
inline std::string results_of(const gateway::Outcome& outcome) {
  const auto it = std::find_if(outcome.header_edits.begin(), outcome.header_edits.end(), [](const gateway::HeaderEdit& e) {
    return e.kind == gateway::HeaderEdit::Kind::prepend && e.name == "Authentication-Results";
  });
  REQUIRE(it != outcome.header_edits.end());
  return it->value;
}

// The verification of a signed entity against the test root, for `author`.
inline smime::VerifyResult verify_for(const smime::Entity& entity, const std::string& author) {
  smime::VerifyOptions options;
  options.trust = &trust();
  options.from = std::vector<std::string>{author};
  return smime::verify_entity(*context(), entity, options);
}

inline std::string body_of(const smime::Entity& entity) { return entity.body; }

}  // namespace mailkms::test
