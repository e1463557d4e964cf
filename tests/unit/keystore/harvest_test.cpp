// Harvested certificates through the service, as gateways and
// administrators reach it: what is kept, what is refused and why, and that
// a lookup only hands out what still chains to today's trust anchors.
#include <catch2/catch.hpp>

#include <algorithm>

#include "mailkms/keystore/protocol.hpp"
#include "mailkms/keystore/seal.hpp"
#include "mailkms/keystore/service.hpp"
#include "test_database.hpp"
#include "test_support.hpp"

using namespace mailkms;
using namespace mailkms::keystore;
using nlohmann::json;
using test::must;

namespace {

const std::string kAdminPassword = "carol's long password";
const Caller kGateway{0, 0, 1};  // root counts as a gateway
const Caller kStranger{4242, 4242, 2};

std::string pem_of(const std::string& name) { return test::read_file(test::pki_path(name + ".pem")); }

// A keystore with our own CA and one local user, unsealed, carol logged in.
struct Fixture {
  test::TempDir dir;
  test::TestDatabase database{dir};
  std::unique_ptr<KeystoreService> service;
  std::string session;

  explicit Fixture(std::vector<std::string> local_domains = {}) {
    auto master = new_master_key();
    const auto seal = must(seal_with_passphrase(master, "a long enough passphrase", {1 << 10, 8, 1}));
    KeystoreService::Policies policies;
    policies.admins.password_kdf = {1 << 10, 8, 1};
    policies.local_domains = std::move(local_domains);
    service = must(KeystoreService::initialize(database.location(), test::context(), seal, std::move(master), "carol",
                                               kAdminPassword, {}, policies));
    must(service->ca().create_root("root", "Our Root", KeyType::ec_p256, 3650, "test"));
    must(service->ca().create_issuing("issuing", "root", "Our Issuing", KeyType::ec_p256, 1825, 1, "test"));
    must(service->users().add("local@corp.example", "test"));
    session = must(call("login", {{"name", "carol"}, {"password", kAdminPassword}}))["token"];
  }

  Result<json> call(const std::string& op, json params, const Caller& caller = kGateway) {
    return service->handle(caller, {1, op, std::move(params)});
  }
  json admin(const std::string& op, json params = json::object()) {
    params["session"] = session;
    return must(call(op, std::move(params)));
  }
  // Trusts a PKI root (the test PKI's "root" or "other-root"); returns its fingerprint.
  std::string trust(const std::string& root) { return admin("trust-add", {{"pem", pem_of(root)}})["added"].at(0); }

  Result<json> remember(const std::string& address, const std::string& who, const json& extra = json::object()) {
    json params{{"address", address}, {"certificate", pem_of(who)}, {"chain", json::array({pem_of("issuing")})}};
    params.update(extra);
    return call("remember-certificate", params);
  }
  json lookup(const std::vector<std::string>& addresses) {
    return must(call("lookup-certificates", {{"addresses", addresses}}));
  }
  std::size_t audit_records() { return must(service->audit().read(0, 100'000)).size(); }
};

bool mentions(const Error& e, const std::string& text) { return e.message.find(text) != std::string::npos; }

}  // namespace

TEST_CASE("a trusted sender's certificate is stored, then looked up as harvested with its capabilities",
          "[harvest]") {
  Fixture f;
  f.trust("root");
  const std::size_t audited = f.audit_records();
  const json capabilities{{"ciphers", {"aes-256-gcm", "no-such-cipher", "AES-128-CBC"}}, {"rsa_oaep", true}};
  json stored =
      must(f.remember("Alice@Example.org", "alice", {{"capabilities", capabilities}, {"signing_time", 1'700'000'000}}));
  CHECK(stored == json{{"stored", true}});
  // EC (keyAgreement) and encrypt-only certificates are kept too.
  CHECK(must(f.remember("carol@example.org", "carol"))["stored"] == true);
  CHECK(must(f.remember("frank@example.org", "frank"))["stored"] == true);
  CHECK(f.audit_records() == audited + 3);  // a new certificate for an address is audited
  const json again{{"capabilities", capabilities}, {"signing_time", 1'700'000'000}};
  CHECK(must(f.remember("alice@example.org", "alice", again))["stored"] == true);
  CHECK(f.audit_records() == audited + 3);  // the same one again, as most signed mail brings it, is not

  json found = f.lookup({"alice@EXAMPLE.org", "carol@example.org", "local@corp.example", "nobody@example.org"});
  const json& alice = found["certificates"]["alice@example.org"];
  CHECK(alice["source"] == "harvested");
  CHECK(alice["certificate"] == test::cert("alice").pem());
  CHECK(alice["chain"] == json::array({test::cert("issuing").pem()}));
  CHECK(alice["capabilities"] == json{{"ciphers", {"aes-256-gcm", "aes-128-cbc"}}, {"rsa_oaep", true}});
  CHECK(found["certificates"]["carol@example.org"]["source"] == "harvested");
  CHECK_FALSE(found["certificates"]["carol@example.org"].contains("capabilities"));
  CHECK(found["certificates"]["local@corp.example"]["source"] == "keystore");
  CHECK(found["missing"] == json::array({"nobody@example.org"}));

  // What administrators see.
  json listed = f.admin("harvested-list");
  REQUIRE(listed.size() == 3);
  CHECK(listed[0]["address"] == "alice@example.org");
  CHECK(listed[0]["subject"] == test::cert("alice").subject());
  CHECK(listed[0]["not_after"] == test::cert("alice").not_after());
  CHECK(listed[0]["signing_time"] == 1'700'000'000);
  CHECK(listed[0]["capabilities"]["ciphers"] == json::array({"aes-256-gcm", "aes-128-cbc"}));
  CHECK(listed[1]["capabilities"].is_null());
}

TEST_CASE("certificates the keystore cannot trust or use are refused, saying why", "[harvest]") {
  Fixture f;
  f.trust("root");

  SECTION("under a root not in the trust list") {
    const auto r = f.remember("mallory@example.org", "mallory", {{"chain", json::array()}});
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::permission_denied);
    CHECK(mentions(r.error(), "does not chain to a trust anchor"));
    // The same certificate once an administrator trusts its root.
    f.trust("other-root");
    CHECK(must(f.remember("mallory@example.org", "mallory", {{"chain", json::array()}}))["stored"] == true);
  }
  SECTION("a chain the gateway padded with an untrusted root does not help") {
    const auto r = f.remember("mallory@example.org", "mallory", {{"chain", json::array({pem_of("other-root")})}});
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::permission_denied);
  }
  SECTION("expired") {
    const auto r = f.remember("erin@example.org", "erin");
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::invalid_argument);
    CHECK(mentions(r.error(), "expired 2021-01-01"));
  }
  SECTION("for an address the certificate does not carry") {
    const auto r = f.remember("bob@example.org", "alice");
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::invalid_argument);
    CHECK(mentions(r.error(), "bob@example.org is not an address of"));
    CHECK(mentions(r.error(), "alice@example.org"));
  }
  SECTION("a key that may only sign") {
    const auto key = must(generate_key(*test::context(), KeyType::rsa2048));
    const auto issued = must(f.service->ca().issue(key.native(), "signer@example.org", Profile::signing, 30, "test"));
    const auto issuing = *must(f.service->ca().get("issuing")).certificate;
    const auto r = f.call("remember-certificate", {{"address", "signer@example.org"},
                                                   {"certificate", issued.certificate.pem()},
                                                   {"chain", {issuing.pem()}}});
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::invalid_argument);
    CHECK(mentions(r.error(), "keyUsage does not allow encryption"));
  }
  SECTION("malformed requests") {
    CHECK(f.call("remember-certificate", {{"address", "alice@example.org"}, {"certificate", "junk"}}).error().code ==
          Errc::invalid_argument);
    CHECK(f.remember("not an address", "alice").error().code == Errc::invalid_argument);
    CHECK(f.remember("alice@example.org", "alice", {{"chain", "junk"}}).error().code == Errc::invalid_argument);
    CHECK(f.remember("alice@example.org", "alice", {{"capabilities", {{"ciphers", "aes-256-cbc"}}}}).error().code ==
          Errc::invalid_argument);
    CHECK(f.remember("alice@example.org", "alice", {{"signing_time", "yesterday"}}).error().code == Errc::invalid_argument);
    CHECK(f.remember("alice@example.org", "alice", {{"signing_time", std::time(nullptr) + std::time_t{7} * 86400}}).error().code ==
          Errc::invalid_argument);
  }
  // Nothing refused was kept: at most mallory, once her root is trusted.
  CHECK(f.lookup({"erin@example.org", "bob@example.org", "signer@example.org"})["certificates"].empty());
  for (const auto& h : f.admin("harvested-list")) CHECK(h["address"] == "mallory@example.org");
}

TEST_CASE("a local user's address is never harvested", "[harvest]") {
  Fixture f;
  // Our own user's certificate, from our own trusted CA: still not kept.
  json ours = f.lookup({"local@corp.example"})["certificates"]["local@corp.example"];
  json r = must(f.call("remember-certificate", {{"address", "Local@Corp.Example"},
                                                      {"certificate", ours["certificate"]},
                                                      {"chain", ours["chain"]}}));
  CHECK(r["stored"] == false);
  CHECK(r["reason"] == "local@corp.example is a local user");
  CHECK(f.admin("harvested-list").empty());

  // Nor once they are disabled: a disabled user stays missing.
  f.admin("user-disable", {{"address", "local@corp.example"}});
  CHECK(must(f.call("remember-certificate", {{"address", "local@corp.example"},
                                             {"certificate", ours["certificate"]},
                                             {"chain", ours["chain"]}}))["stored"] == false);
  CHECK(f.lookup({"local@corp.example"})["missing"] == json::array({"local@corp.example"}));
}

TEST_CASE("no certificate is harvested in a domain the keystore serves: its users', local_domains', or below them",
          "[harvest]") {
  Fixture f({"example.net"});
  f.trust("root");
  const std::size_t audited = f.audit_records();
  // Whatever the certificate: the address alone decides, before anything else is looked at.
  for (const auto& [address, domain] : std::vector<std::pair<std::string, std::string>>{
           {"ceo@corp.example", "corp.example"},  // local@corp.example is a user
           {"CEO@HR.Corp.Example", "corp.example"},
           {"ceo@example.net", "example.net"},  // local_domains
           {"ceo@mail.example.net", "example.net"}}) {
    const auto r = f.remember(address, "alice");
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::permission_denied);
    CHECK(r.error().message == smime::normalize_address(address) + " is in " + domain +
                                   ", a domain this keystore serves: its certificates come from our CA, never from mail");
  }
  CHECK(f.admin("harvested-list").empty());
  json records = f.admin("audit-show", {{"after", audited}, {"limit", 100}});
  const auto refusals = std::count_if(records.begin(), records.end(), [](const json& r) {
    return r["action"] == "remember-certificate" && r["outcome"] == "refused";
  });
  CHECK(refusals == 4);

  // A domain is ours from its first user on.
  CHECK(must(f.remember("alice@example.org", "alice"))["stored"] == true);
  must(f.service->users().add("bob@example.org", "test"));
  const auto after = f.remember("alice@example.org", "alice");
  REQUIRE_FALSE(after);
  CHECK(after.error().code == Errc::permission_denied);
  // and the certificate kept before is no longer handed out.
  CHECK(f.lookup({"alice@example.org"})["missing"] == json::array({"alice@example.org"}));
}

TEST_CASE("a certificate from an older message does not replace one from a newer", "[harvest]") {
  Fixture f;
  f.trust("root");
  const json aes256{{"ciphers", {"aes-256-cbc"}}, {"rsa_oaep", true}};
  const json aes128{{"ciphers", {"aes-128-cbc"}}, {"rsa_oaep", false}};
  const auto capabilities = [&] {
    return f.lookup({"alice@example.org"})["certificates"]["alice@example.org"]["capabilities"];
  };
  const auto offer = [&](const json& capabilities_offered, std::optional<std::time_t> signed_at) {
    json extra{{"capabilities", capabilities_offered}};
    if (signed_at) extra["signing_time"] = *signed_at;
    return must(f.remember("alice@example.org", "alice", extra));
  };
  REQUIRE(offer(aes256, 2000)["stored"] == true);

  json replayed = offer(aes128, 1000);
  CHECK(replayed["stored"] == false);
  CHECK(replayed["reason"].get<std::string>().find("older message") != std::string::npos);
  json undated = offer(aes128, std::nullopt);
  CHECK(undated["stored"] == false);
  CHECK(capabilities() == aes256);

  CHECK(offer(aes128, 3000)["stored"] == true);
  CHECK(capabilities() == aes128);
}

TEST_CASE("an anchor removed after harvesting stops the certificates under it", "[harvest]") {
  Fixture f;
  const std::string root = f.trust("root");
  REQUIRE(must(f.remember("alice@example.org", "alice"))["stored"] == true);
  REQUIRE(f.lookup({"alice@example.org"})["certificates"].contains("alice@example.org"));

  f.admin("trust-remove", {{"fingerprint", root}});
  json after = f.lookup({"alice@example.org"});
  CHECK(after["certificates"].empty());
  CHECK(after["missing"] == json::array({"alice@example.org"}));
  // Kept, for when the anchor comes back.
  f.trust("root");
  CHECK(f.lookup({"alice@example.org"})["certificates"]["alice@example.org"]["source"] == "harvested");
}

TEST_CASE("administrators list and remove harvested certificates, gateways only remember", "[harvest]") {
  Fixture f;
  f.trust("root");
  REQUIRE(must(f.remember("alice@example.org", "alice"))["stored"] == true);
  REQUIRE(must(f.remember("bob@example.org", "bob"))["stored"] == true);

  CHECK(f.call("harvested-list", json::object()).error().code == Errc::permission_denied);  // no session
  CHECK(f.admin("harvested-list", {{"after", "alice@example.org"}}).size() == 1);

  f.admin("harvested-remove", {{"address", "Alice@Example.org"}});
  CHECK(f.lookup({"alice@example.org"})["missing"] == json::array({"alice@example.org"}));
  CHECK(f.call("harvested-remove", {{"session", f.session}, {"address", "alice@example.org"}}).error().code ==
        Errc::not_found);
  json left = f.admin("harvested-list");
  REQUIRE(left.size() == 1);
  CHECK(left[0]["address"] == "bob@example.org");

  // A peer that is not a gateway may not offer certificates, and is audited.
  const auto stranger = f.call("remember-certificate",
                               {{"address", "dave@example.org"}, {"certificate", pem_of("dave")}}, kStranger);
  REQUIRE_FALSE(stranger);
  CHECK(stranger.error().code == Errc::permission_denied);

  json records = f.admin("audit-show", {{"limit", 1000}});
  const auto has = [&](const std::string& action, const std::string& subject, const std::string& outcome) {
    return std::any_of(records.begin(), records.end(), [&](const json& r) {
      return r["action"] == action && r["subject"] == subject && r["outcome"] == outcome;
    });
  };
  CHECK(has("harvested-remove", "alice@example.org", "ok"));
  CHECK(has("remember-certificate", "", "denied"));
  CHECK(f.lookup({"dave@example.org"})["missing"] == json::array({"dave@example.org"}));
}
