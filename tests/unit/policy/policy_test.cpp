#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include "mailkms/policy/policy.hpp"

using namespace mailkms::policy;
using mailkms::smime::Cipher;
using mailkms::smime::Digest;

namespace {

std::shared_ptr<const Policy> must_parse(std::string_view text) {
  auto policy = parse_policy(text, "policy.toml");
  if (!policy) FAIL(policy.error().message);
  return *policy;
}

// The error message for `text`, which must be refused.
std::string refusal(std::string_view text) {
  auto policy = parse_policy(text, "policy.toml");
  if (policy) FAIL("accepted:\n" << text);
  return policy.error().message;
}

const AddressPattern pattern(std::string_view text) {
  auto p = AddressPattern::parse(text);
  if (!p) FAIL("not a pattern: " << text);
  return *p;
}

}  // namespace

// ---- reading the file

TEST_CASE("a file with every key is read into the right values", "[policy]") {
  const auto policy = must_parse(R"(
[local]
domains = ["Example.ORG", "example.net"]
networks = ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]

[defaults]
sign = "always"
encrypt = "never"
cipher = ["aes-256-gcm", "3des"]
digest = "sha512"
on_missing_certificate = "quarantine"
encrypt_to_sender = false
exempt_calendar = false
verify = false
decrypt = true
harvest = false

[[rule]]
name = "partners"
direction = "outbound"
from = "*@example.org"
to = ["*@partner.example", "ceo@other.example"]
subject_tag = "[secure]"
header = { name = "X-Secure", contains = "yes" }
encrypt = "always"
on_missing_certificate = "reject"

[[rule]]
direction = "inbound"
sign = "if-possible"
encrypt = "if-possible"
cipher = "aes-128-cbc"
digest = "sha384"
on_missing_certificate = "send-plain"
encrypt_to_sender = true
exempt_calendar = true
verify = true
decrypt = false
harvest = true
)");
  CHECK(policy->source == "policy.toml");
  CHECK(policy->locality.domains == std::vector<std::string>{"example.org", "example.net"});
  REQUIRE(policy->locality.networks.size() == 5);
  const auto& ten = policy->locality.networks[2];
  CHECK(ten.prefix == 104);
  CHECK(ten.address == std::array<std::uint8_t, 16>{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 0});
  CHECK(policy->locality.networks[1].prefix == 128);
  CHECK(policy->locality.networks[1].address[15] == 1);
  CHECK(policy->locality.networks[3].prefix == 128);  // a bare IPv4 address is a /32
  CHECK(policy->locality.networks[4].prefix == 32);

  const Settings& d = policy->defaults;
  CHECK(d.sign == Mode::always);
  CHECK(d.encrypt == Mode::never);
  CHECK(d.ciphers == std::vector<Cipher>{Cipher::aes256_gcm, Cipher::des_ede3_cbc});
  CHECK(d.digest == Digest::sha512);
  CHECK(d.on_missing_certificate == MissingCertificate::quarantine);
  CHECK_FALSE(d.encrypt_to_sender);
  CHECK_FALSE(d.exempt_calendar);
  CHECK_FALSE(d.verify);
  CHECK(d.decrypt);
  CHECK_FALSE(d.harvest);

  REQUIRE(policy->rules.size() == 2);
  const Rule& partners = policy->rules[0];
  CHECK(partners.name == "partners");
  CHECK(partners.line == 18);
  CHECK(partners.direction == Direction::outbound);
  REQUIRE(partners.from.size() == 1);
  CHECK(partners.from[0].text() == "*@example.org");
  REQUIRE(partners.to.size() == 2);
  CHECK(partners.to[0].text() == "*@partner.example");
  CHECK(partners.to[1].text() == "ceo@other.example");
  CHECK(partners.subject_tag == "[secure]");
  REQUIRE(partners.header);
  CHECK(partners.header->name == "X-Secure");
  CHECK(partners.header->contains == "yes");
  CHECK(partners.needs_headers());
  // The rule's own keys over [defaults].
  CHECK(partners.settings.encrypt == Mode::always);
  CHECK(partners.settings.on_missing_certificate == MissingCertificate::reject);
  CHECK(partners.settings.sign == Mode::always);
  CHECK(partners.settings.digest == Digest::sha512);
  CHECK(partners.settings.ciphers == d.ciphers);
  CHECK(partners.settings.decrypt);

  const Rule& second = policy->rules[1];
  CHECK(second.name == "rule 2");
  CHECK(second.line == 28);
  CHECK(second.direction == Direction::inbound);
  CHECK(second.from.empty());
  CHECK(second.to.empty());
  CHECK_FALSE(second.needs_headers());
  CHECK(second.settings.sign == Mode::if_possible);
  CHECK(second.settings.encrypt == Mode::if_possible);
  CHECK(second.settings.ciphers == std::vector<Cipher>{Cipher::aes128_cbc});
  CHECK(second.settings.digest == Digest::sha384);
  CHECK(second.settings.on_missing_certificate == MissingCertificate::send_plain);
  CHECK(second.settings.encrypt_to_sender);
  CHECK(second.settings.exempt_calendar);
  CHECK(second.settings.verify);
  CHECK_FALSE(second.settings.decrypt);
  CHECK(second.settings.harvest);
}

TEST_CASE("an empty file is a policy of defaults and no rules", "[policy]") {
  const auto policy = must_parse("");
  const Settings expected;
  CHECK(policy->rules.empty());
  CHECK(policy->locality.domains.empty());
  CHECK(policy->locality.networks.empty());
  CHECK(policy->defaults.sign == Mode::if_possible);
  CHECK(policy->defaults.encrypt == Mode::if_possible);
  CHECK(policy->defaults.ciphers == expected.ciphers);
  CHECK(policy->defaults.digest == Digest::sha256);
  CHECK(policy->defaults.on_missing_certificate == MissingCertificate::tempfail);
  CHECK(policy->defaults.encrypt_to_sender);
  CHECK(policy->defaults.exempt_calendar);
  CHECK(policy->defaults.verify);
  CHECK_FALSE(policy->defaults.decrypt);
  CHECK_FALSE(policy->defaults.decrypt_unauthenticated);
  CHECK(policy->defaults.harvest);
  CHECK(policy->decryption == DecryptionPlace::final_hop);
}

TEST_CASE("a table that sets encrypt always exempts invitations only if it says so too", "[policy]") {
  const auto policy = must_parse(R"(
[defaults]
exempt_calendar = true

[[rule]]
name = "partners"
to = "*@partner.example"
encrypt = "always"

[[rule]]
name = "partners on Outlook"
to = "*@outlook.example"
encrypt = "always"
exempt_calendar = true

[[rule]]
name = "signed"
to = "*@signed.example"
sign = "always"
)");
  CHECK(policy->defaults.exempt_calendar);
  CHECK_FALSE(policy->rules[0].settings.exempt_calendar);
  CHECK(policy->rules[1].settings.exempt_calendar);
  CHECK(policy->rules[2].settings.exempt_calendar);

  const auto strict = must_parse("[defaults]\nencrypt = \"always\"\n\n[[rule]]\nto = \"*@x.example\"\ndigest = \"sha384\"\n");
  CHECK_FALSE(strict->defaults.exempt_calendar);
  CHECK_FALSE(strict->rules[0].settings.exempt_calendar);  // inherited, as [defaults] has it
}

TEST_CASE("rules start from [defaults] wherever it is in the file", "[policy]") {
  const auto policy = must_parse(R"(
[[rule]]
name = "first"
sign = "never"

[defaults]
digest = "sha384"
encrypt = "always"
)");
  REQUIRE(policy->rules.size() == 1);
  CHECK(policy->rules[0].settings.digest == Digest::sha384);
  CHECK(policy->rules[0].settings.encrypt == Mode::always);
  CHECK(policy->rules[0].settings.sign == Mode::never);
  CHECK(policy->defaults.sign == Mode::if_possible);
}

TEST_CASE("enum names read back as they are written", "[policy]") {
  CHECK(to_string(Direction::outbound) == "outbound");
  CHECK(to_string(Direction::inbound) == "inbound");
  CHECK(to_string(Mode::never) == "never");
  CHECK(to_string(Mode::if_possible) == "if-possible");
  CHECK(to_string(Mode::always) == "always");
  CHECK(to_string(MissingCertificate::send_plain) == "send-plain");
  CHECK(to_string(MissingCertificate::reject) == "reject");
  CHECK(to_string(MissingCertificate::tempfail) == "tempfail");
  CHECK(to_string(MissingCertificate::quarantine) == "quarantine");
}

// ---- errors: file, line, column and what was expected

TEST_CASE("unknown keys are refused wherever they are", "[policy]") {
  CHECK(refusal("[local]\ndomains = []\n\n[default]\nsign = \"always\"\n") ==
        "policy.toml:4:2: unknown key \"default\"; expected one of local, signing, decryption, defaults, rule");
  CHECK(refusal("verbose = true\n") ==
        "policy.toml:1:1: unknown key \"verbose\"; expected one of local, signing, decryption, defaults, rule");
  CHECK(refusal("[local]\ndomain = [\"example.org\"]\n") ==
        "policy.toml:2:1: [local]: unknown key \"domain\"; expected one of domains, networks");
  CHECK(refusal("[defaults]\nsign = \"always\"\n  signing = \"always\"\n") ==
        "policy.toml:3:3: [defaults]: unknown key \"signing\"; expected one of sign, encrypt, cipher, digest, "
        "on_missing_certificate, encrypt_to_sender, exempt_calendar, verify, decrypt, decrypt_unauthenticated, harvest");
  // Keys that only rules have are unknown in [defaults].
  CHECK(refusal("[defaults]\nto = \"*\"\n").starts_with("policy.toml:2:1: [defaults]: unknown key \"to\";"));
  CHECK(refusal("[[rule]]\nname = \"partners\"\nencrypt = \"always\"\n\n\n\n\n\n\n\n\n  encrypted = \"always\"\n") ==
        "policy.toml:12:3: rule \"partners\": unknown key \"encrypted\"; expected one of name, direction, from, to, "
        "subject_tag, header, sign, encrypt, cipher, digest, on_missing_certificate, encrypt_to_sender, "
        "exempt_calendar, verify, decrypt, decrypt_unauthenticated, harvest");
  CHECK(refusal("[[rule]]\nto = \"*\"\nheader = { name = \"X-Secure\", value = \"yes\" }\n") ==
        "policy.toml:3:31: rule 1: header: unknown key \"value\"; expected one of name, contains");
}

TEST_CASE("the first error in file order is the one reported", "[policy]") {
  // toml++ keeps keys sorted; "aaa" sorts first but comes last.
  CHECK(refusal("[defaults]\nzzz = 1\naaa = 2\n").starts_with("policy.toml:2:1: [defaults]: unknown key \"zzz\""));
}

TEST_CASE("values of the wrong type or spelling are refused", "[policy]") {
  CHECK(refusal("[defaults]\nverify = \"yes\"\n") == "policy.toml:2:10: [defaults]: verify: expected true or false");
  CHECK(refusal("[defaults]\nsign = true\n") ==
        "policy.toml:2:8: [defaults]: sign: expected never, if-possible or always");
  CHECK(refusal("[defaults]\nencrypt = \"sometimes\"\n") ==
        "policy.toml:2:11: [defaults]: encrypt: expected never, if-possible or always, not \"sometimes\"");
  CHECK(refusal("[[rule]]\nname = \"x\"\non_missing_certificate = \"bounce\"\n") ==
        "policy.toml:3:26: rule \"x\": on_missing_certificate: expected send-plain, reject, tempfail or quarantine, "
        "not \"bounce\"");
  CHECK(refusal("[[rule]]\nname = 7\n") == "policy.toml:2:8: rule 1: name: expected a string");
  CHECK(refusal("[[rule]]\nname = \"\"\n") == "policy.toml:2:8: rule 1: name: expected a non-empty string");
  CHECK(refusal("[[rule]]\ndirection = \"outgoing\"\n") ==
        "policy.toml:2:13: rule 1: direction: expected outbound or inbound");
  CHECK(refusal("[[rule]]\nsubject_tag = \"\"\n") ==
        "policy.toml:2:15: rule 1: subject_tag: expected a non-empty tag such as \"[secure]\"");
  CHECK(refusal("[[rule]]\nsubject_tag = 1\n") == "policy.toml:2:15: rule 1: subject_tag: expected a string");
  CHECK(refusal("[[rule]]\nheader = \"X-Secure\"\n") ==
        "policy.toml:2:10: rule 1: header: expected a table such as { name = \"X-Secure\", contains = \"yes\" }");
  CHECK(refusal("[[rule]]\nheader = { name = \"X-Secure\" }\n") ==
        "policy.toml:2:10: rule 1: header: expected both name and contains; missing contains");
  CHECK(refusal("[[rule]]\nheader = { name = \"X Secure:\", contains = \"\" }\n") ==
        "policy.toml:2:19: rule 1: header: name: expected a header field name such as \"X-Secure\"");
  CHECK(refusal("[[rule]]\nheader = { name = \"X-Secure\", contains = 1 }\n") ==
        "policy.toml:2:42: rule 1: header: contains: expected a string");
  CHECK(refusal("local = 1\n") == "policy.toml:1:9: local: expected a table");
  CHECK(refusal("defaults = \"x\"\n") == "policy.toml:1:12: defaults: expected a table");
  CHECK(refusal("[rule]\nname = \"x\"\n") == "policy.toml:1:1: rule: expected [[rule]] tables, not [rule]");
  CHECK(refusal("[local]\ndomains = \"example.org\"\n") ==
        "policy.toml:2:11: [local]: domains: expected a list of domain names such as [\"example.org\"]");
  CHECK(refusal("[local]\ndomains = [\"example.org\", \"@example.net\"]\n") ==
        "policy.toml:2:27: [local]: domains: expected a domain name such as \"example.org\", not \"@example.net\"");
  CHECK(refusal("[local]\nnetworks = \"10.0.0.0/8\"\n") ==
        "policy.toml:2:12: [local]: networks: expected a list of networks such as [\"10.0.0.0/8\"]");
}

TEST_CASE("two rules may not share a name", "[policy]") {
  CHECK(refusal("[[rule]]\nname = \"a\"\n[[rule]]\nname = \"a\"\n") ==
        "policy.toml:4:8: rule \"a\": the name is already used by the rule at line 1");
}

TEST_CASE("bad address patterns are refused where they are written", "[policy]") {
  const std::string shapes = "expected alice@example.org, *@example.org, *@*.example.org or *";
  CHECK(refusal("[[rule]]\nname = \"p\"\nfrom = \"foo\"\n") ==
        "policy.toml:3:8: rule \"p\": from: \"foo\" is not an address pattern; " + shapes);
  CHECK(refusal("[[rule]]\nto = [\"*@ok.example\", \"a@*\"]\n") ==
        "policy.toml:2:23: rule 1: to: \"a@*\" is not an address pattern; " + shapes);
  CHECK(refusal("[[rule]]\nto = []\n") ==
        "policy.toml:2:6: rule 1: to: expected at least one pattern (leave the key out to match anyone)");
  CHECK(refusal("[[rule]]\nfrom = 3\n") ==
        "policy.toml:2:8: rule 1: from: expected an address pattern such as \"*@example.org\"");
  for (const std::string_view bad : {"foo", "a@*", "*@", "@x", "", "*.example.org", "*@*", "*@*.", "a@b@c", "**",
                                     "a b@example.org", "*@exa*mple.org", "a@.example.org"}) {
    INFO(bad);
    CHECK_FALSE(AddressPattern::parse(bad));
  }
}

TEST_CASE("bad networks are refused with what is wrong", "[policy]") {
  CHECK(refusal("[local]\nnetworks = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n") ==
        "policy.toml:2:27: [local]: networks: \"10.0.0.0/33\": the prefix length must be 0 to 32");
  CHECK(refusal("[local]\nnetworks = [\"2001:db8::/129\"]\n") ==
        "policy.toml:2:13: [local]: networks: \"2001:db8::/129\": the prefix length must be 0 to 128");
  CHECK(refusal("[local]\nnetworks = [\"10.0.0/8\"]\n") ==
        "policy.toml:2:13: [local]: networks: \"10.0.0/8\": not an IPv4 or IPv6 address");
  CHECK(refusal("[local]\nnetworks = [\"10.0.0.0/\"]\n") ==
        "policy.toml:2:13: [local]: networks: \"10.0.0.0/\": the prefix length must be 0 to 32");
  CHECK(refusal("[local]\nnetworks = [\"10.1.2.3/8\"]\n") ==
        "policy.toml:2:13: [local]: networks: \"10.1.2.3/8\": host bits are set; did you mean 10.0.0.0/8?");
  CHECK(refusal("[local]\nnetworks = [\"2001:db8::1/32\"]\n") ==
        "policy.toml:2:13: [local]: networks: \"2001:db8::1/32\": host bits are set; did you mean 2001:db8::/32?");
  CHECK(refusal("[local]\nnetworks = [10]\n") ==
        "policy.toml:2:13: [local]: networks: expected networks such as \"10.0.0.0/8\" or \"::1/128\"");
}

TEST_CASE("ciphers and digests that must not be used are refused", "[policy]") {
  const std::string usable = "aes-256-gcm, aes-128-gcm, aes-256-cbc, aes-192-cbc, aes-128-cbc or 3des";
  CHECK(refusal("[defaults]\ncipher = [\"aes-256-cbc\", \"rc2-40\"]\n") ==
        "policy.toml:2:26: [defaults]: cipher: rc2-40 is only used to read old mail; expected " + usable);
  CHECK(refusal("[[rule]]\ncipher = \"des\"\n") ==
        "policy.toml:2:10: rule 1: cipher: des is only used to read old mail; expected " + usable);
  CHECK(refusal("[defaults]\ncipher = []\n") == "policy.toml:2:10: [defaults]: cipher: expected at least one cipher");
  CHECK(refusal("[defaults]\ncipher = [\"aes-256-cbc\", \"AES256-CBC\"]\n") ==
        "policy.toml:2:26: [defaults]: cipher: aes-256-cbc is listed twice");
  CHECK(refusal("[defaults]\ncipher = [\"rot13\"]\n") ==
        "policy.toml:2:11: [defaults]: cipher: expected " + usable + ", not \"rot13\"");
  CHECK(refusal("[defaults]\ndigest = \"sha1\"\n") ==
        "policy.toml:2:10: [defaults]: digest: sha1 is too weak to sign with; expected sha256, sha384 or sha512");
  CHECK(refusal("[defaults]\ndigest = \"md5\"\n") ==
        "policy.toml:2:10: [defaults]: digest: expected sha256, sha384 or sha512, not \"md5\"");
}

TEST_CASE("TOML syntax errors name the file, line and column", "[policy]") {
  CHECK(refusal("[defaults]\nsign = \n") ==
        "policy.toml:2:8: Error while parsing key-value pair: expected value, saw '\\n'");
  CHECK(refusal("[defaults]\nsign = \"always\"\nsign = \"never\"\n").starts_with("policy.toml:3:"));
}

TEST_CASE("a file that cannot be read is an error that names it", "[policy]") {
  const auto missing = load_policy("/nonexistent/policy.toml");
  REQUIRE_FALSE(missing);
  CHECK(missing.error().message == "/nonexistent/policy.toml: cannot read: No such file or directory");
  const auto directory = load_policy("/");
  REQUIRE_FALSE(directory);
  CHECK(directory.error().message == "/: cannot read: it is a directory");
}

// ---- address patterns

TEST_CASE("address patterns", "[policy]") {
  SECTION("an address matches itself, in any case, with or without <>") {
    const auto p = pattern("Alice@Example.org");
    CHECK(p.text() == "Alice@Example.org");
    CHECK(p.matches("alice@example.org"));
    CHECK(p.matches("ALICE@EXAMPLE.ORG"));
    CHECK(p.matches("<alice@example.org>"));
    CHECK_FALSE(p.matches("alice@example.org.evil"));
    CHECK_FALSE(p.matches("malice@example.org"));
    CHECK_FALSE(p.matches("bob@example.org"));
  }
  SECTION("*@domain matches that domain only") {
    const auto p = pattern("*@example.org");
    CHECK(p.matches("bob@example.org"));
    CHECK(p.matches("<Bob@EXAMPLE.org>"));
    CHECK_FALSE(p.matches("bob@sub.example.org"));
    CHECK_FALSE(p.matches("bob@notexample.org"));
    CHECK_FALSE(p.matches("example.org"));
    CHECK_FALSE(p.matches(""));
  }
  SECTION("*@*.domain matches subdomains, not the domain itself") {
    const auto p = pattern("*@*.Example.org");
    CHECK(p.matches("bob@sub.example.org"));
    CHECK(p.matches("bob@a.b.EXAMPLE.ORG"));
    CHECK_FALSE(p.matches("bob@example.org"));
    CHECK_FALSE(p.matches("bob@badexample.org"));
    CHECK_FALSE(p.matches("bob@.example.org"));
  }
  SECTION("* matches anything, even the null sender") {
    const auto p = pattern("*");
    CHECK(p.matches("anyone@anywhere.example"));
    CHECK(p.matches(""));
    CHECK(p.matches("<>"));
  }
}

// ---- direction

namespace {

const char* const kLocality = R"(
[local]
domains = ["example.org"]
networks = ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "2001:db8:10::/48"]
)";

}  // namespace

TEST_CASE("direction: outbound only for local senders from trusted clients", "[policy]") {
  const auto policy = must_parse(kLocality);
  const auto decide = [&](std::string_view sender, std::string client, bool authenticated = false) {
    return decide_direction(*policy, sender, Connection{std::move(client), authenticated, {}, false});
  };

  auto d = decide("alice@example.org", "10.1.2.3");
  CHECK(d.direction == Direction::outbound);
  CHECK(d.reason == "sender domain example.org is local and client 10.1.2.3 is in 10.0.0.0/8");

  d = decide("<Alice@EXAMPLE.org>", "2001:db8:10:5::25");
  CHECK(d.direction == Direction::outbound);
  CHECK(d.reason == "sender domain example.org is local and client 2001:db8:10:5::25 is in 2001:db8:10::/48");

  d = decide("alice@example.org", "::1");
  CHECK(d.direction == Direction::outbound);
  CHECK(d.reason == "sender domain example.org is local and client ::1 is in ::1/128");

  d = decide("alice@example.org", "::ffff:10.9.8.7");
  CHECK(d.direction == Direction::outbound);
  CHECK(d.reason == "sender domain example.org is local and client ::ffff:10.9.8.7 is in 10.0.0.0/8");

  d = decide("alice@example.org", "203.0.113.9", true);
  CHECK(d.direction == Direction::outbound);
  CHECK(d.reason == "sender domain example.org is local and client authenticated");

  // No address known (a PROXY "UNKNOWN", an XCLIENT ADDR=[UNAVAILABLE]) is
  // not local submission: that is said explicitly.
  d = decide("alice@example.org", "");
  CHECK(d.direction == Direction::inbound);
  CHECK(d.reason ==
        "sender domain example.org is local but the client address is unknown, and the client neither internal nor "
        "authenticated");

  Connection local;
  local.local_submission = true;
  d = decide_direction(*policy, "alice@example.org", local);
  CHECK(d.direction == Direction::outbound);
  CHECK(d.reason == "sender domain example.org is local and the message was submitted locally");

  d = decide("alice@example.org", "203.0.113.9");
  CHECK(d.direction == Direction::inbound);
  CHECK(d.reason == "sender domain example.org is local but client 203.0.113.9 is neither internal nor authenticated");

  d = decide("alice@example.org", "2001:db8:11::1");
  CHECK(d.direction == Direction::inbound);
  CHECK(d.reason ==
        "sender domain example.org is local but client 2001:db8:11::1 is neither internal nor authenticated");

  d = decide("alice@example.org", "not an address");
  CHECK(d.direction == Direction::inbound);

  d = decide("friend@gmail.com", "10.1.2.3", true);
  CHECK(d.direction == Direction::inbound);
  CHECK(d.reason == "sender domain gmail.com is not local");

  d = decide("alice@sub.example.org", "10.1.2.3");
  CHECK(d.direction == Direction::inbound);
  CHECK(d.reason == "sender domain sub.example.org is not local");

  d = decide("<>", "");
  CHECK(d.direction == Direction::inbound);
  CHECK(d.reason == "sender <> has no domain, so it is not local");
}

TEST_CASE("an IPv6 client is not in an IPv4 network by accident", "[policy]") {
  // ::a01:203 has the bytes of 10.1.2.3 in its last four, but is not IPv4-mapped.
  const auto policy = must_parse(kLocality);
  CHECK(decide_direction(*policy, "alice@example.org", Connection{"::a01:203", false, {}, false}).direction == Direction::inbound);
  CHECK(decide_direction(*policy, "alice@example.org", Connection{"[10.1.2.3]", false, {}, false}).direction == Direction::outbound);
  CHECK(decide_direction(*policy, "alice@example.org", Connection{"IPv6:::1", false, {}, false}).direction == Direction::outbound);
}

TEST_CASE("internal_network_of names the [local] network that holds a client, and nothing for others", "[policy]") {
  const auto policy = must_parse(kLocality);
  CHECK(internal_network_of(*policy, "10.1.2.3") == "10.0.0.0/8");
  CHECK(internal_network_of(*policy, "::ffff:127.0.0.2") == "127.0.0.0/8");
  CHECK(internal_network_of(*policy, "::1") == "::1/128");
  CHECK(!internal_network_of(*policy, "203.0.113.9"));
  CHECK(!internal_network_of(*policy, ""));
  CHECK(!internal_network_of(*policy, "not an address"));
}

// ---- decisions

TEST_CASE("the first matching rule wins", "[policy]") {
  const auto policy = must_parse(R"(
[defaults]
encrypt = "if-possible"

[[rule]]
name = "ceo"
to = "ceo@partner.example"
encrypt = "always"

[[rule]]
name = "partners"
to = ["*@partner.example", "*@*.partner.example"]
encrypt = "never"

[[rule]]
name = "outbound only"
direction = "outbound"
from = "*@example.org"
sign = "always"

[[rule]]
direction = "inbound"
decrypt = true
)");
  auto d = decide(*policy, Direction::outbound, "alice@example.org", "CEO@partner.example", nullptr);
  REQUIRE(d.rule == &policy->rules[0]);
  CHECK(d.settings == &policy->rules[0].settings);
  CHECK(d.settings->encrypt == Mode::always);
  CHECK(d.recipient == "CEO@partner.example");
  CHECK(d.rule_name() == "ceo");
  CHECK(d.reason == "rule \"ceo\" (line 5): to matches ceo@partner.example");

  d = decide(*policy, Direction::outbound, "alice@example.org", "bob@eu.partner.example", nullptr);
  REQUIRE(d.rule == &policy->rules[1]);
  CHECK(d.settings->encrypt == Mode::never);
  CHECK(d.reason == "rule \"partners\" (line 10): to matches *@*.partner.example");

  d = decide(*policy, Direction::outbound, "alice@example.org", "someone@else.example", nullptr);
  REQUIRE(d.rule == &policy->rules[2]);
  CHECK(d.reason == "rule \"outbound only\" (line 15): outbound, from matches *@example.org");

  d = decide(*policy, Direction::inbound, "friend@gmail.com", "alice@example.org", nullptr);
  REQUIRE(d.rule == &policy->rules[3]);
  CHECK(d.rule_name() == "rule 4");
  CHECK(d.settings->decrypt);
  CHECK(d.reason == "rule 4 (line 21): inbound");
}

TEST_CASE("no matching rule: the defaults apply", "[policy]") {
  const auto policy = must_parse("[[rule]]\nname = \"x\"\nto = \"*@partner.example\"\n");
  bool uncertain = false;
  const auto d = decide(*policy, Direction::outbound, "a@example.org", "b@other.example", nullptr, &uncertain);
  CHECK(d.rule == nullptr);
  CHECK(d.settings == &policy->defaults);
  CHECK(d.rule_name() == "defaults");
  CHECK(d.reason == "no rule matched; defaults apply");
  CHECK_FALSE(d.matched_subject_tag);
  CHECK_FALSE(uncertain);
}

TEST_CASE("a rule without conditions matches every message", "[policy]") {
  const auto policy = must_parse("[[rule]]\nname = \"all\"\n");
  const auto d = decide(*policy, Direction::inbound, "", "a@example.org", nullptr);
  REQUIRE(d.rule == &policy->rules[0]);
  CHECK(d.reason == "rule \"all\" (line 1): it has no conditions");
}

TEST_CASE("rules that look at headers", "[policy]") {
  const auto policy = must_parse(R"(
[[rule]]
name = "tagged"
direction = "outbound"
subject_tag = "[secure]"
encrypt = "always"

[[rule]]
name = "header"
header = { name = "X-Secure", contains = "Yes" }
encrypt = "always"
sign = "never"

[[rule]]
name = "inbound tagged"
direction = "inbound"
subject_tag = "[secure]"

[[rule]]
name = "partners"
to = "*@partner.example"
encrypt = "never"
)");
  SECTION("without headers they are skipped, and the decision is uncertain") {
    bool uncertain = false;
    const auto d = decide(*policy, Direction::outbound, "a@example.org", "b@partner.example", nullptr, &uncertain);
    REQUIRE(d.rule == &policy->rules[3]);
    CHECK(uncertain);
    CHECK_FALSE(d.matched_subject_tag);
  }
  SECTION("a header rule that cannot match anyway leaves it certain") {
    const auto inbound = must_parse(R"(
[[rule]]
direction = "outbound"
subject_tag = "[secure]"
[[rule]]
to = "*@example.org"
)");
    bool uncertain = false;
    const auto d = decide(*inbound, Direction::inbound, "x@gmail.com", "a@example.org", nullptr, &uncertain);
    REQUIRE(d.rule == &inbound->rules[1]);
    CHECK_FALSE(uncertain);
  }
  SECTION("a header rule after the chosen one leaves it certain") {
    const auto later = must_parse("[[rule]]\nto = \"*@example.org\"\n[[rule]]\nsubject_tag = \"[secure]\"\n");
    bool uncertain = false;
    const auto d = decide(*later, Direction::inbound, "x@gmail.com", "a@example.org", nullptr, &uncertain);
    REQUIRE(d.rule == &later->rules[0]);
    CHECK_FALSE(uncertain);
  }
  SECTION("the subject tag matches in any case") {
    Headers headers{{{"From", "a@example.org"}, {"subject", "Re: [SECURE] plans"}}};
    CHECK(headers.find("SUBJECT") == std::optional<std::string_view>("Re: [SECURE] plans"));
    bool uncertain = false;
    const auto d = decide(*policy, Direction::outbound, "a@example.org", "b@partner.example", &headers, &uncertain);
    REQUIRE(d.rule == &policy->rules[0]);
    CHECK(d.matched_subject_tag);
    CHECK(d.reason == "rule \"tagged\" (line 2): outbound, subject has [secure]");
    CHECK_FALSE(uncertain);
  }
  SECTION("a header field whose value contains the text, in any of its fields") {
    Headers headers{{{"Subject", "plans"}, {"x-secure", "no"}, {"X-SECURE", "oh YES please"}}};
    const auto d = decide(*policy, Direction::outbound, "a@example.org", "b@partner.example", &headers);
    REQUIRE(d.rule == &policy->rules[1]);
    CHECK_FALSE(d.matched_subject_tag);
    CHECK(d.settings->sign == Mode::never);
    CHECK(d.reason == "rule \"header\" (line 8): X-Secure contains \"Yes\"");
  }
  SECTION("with headers that match no header rule, the envelope rule") {
    Headers headers{{{"Subject", "secure plans"}, {"X-Secure", "no"}}};
    const auto d = decide(*policy, Direction::outbound, "a@example.org", "b@partner.example", &headers);
    REQUIRE(d.rule == &policy->rules[3]);
    CHECK(d.reason == "rule \"partners\" (line 19): to matches *@partner.example");
  }
  SECTION("no Subject at all") {
    Headers headers;
    CHECK_FALSE(headers.find("Subject"));
    const auto d = decide(*policy, Direction::inbound, "x@gmail.com", "a@example.org", &headers);
    CHECK(d.rule == nullptr);
  }
  SECTION("Headers::find returns the first field of that name") {
    Headers headers{{{"X-A", "1"}, {"x-a", "2"}}};
    CHECK(headers.find("x-A") == std::optional<std::string_view>("1"));
    CHECK_FALSE(headers.find("X-B"));
  }
}

TEST_CASE("a header condition with empty text asks only that the field is present", "[policy]") {
  const auto policy = must_parse("[[rule]]\nname = \"h\"\nheader = { name = \"X-Encrypt\", contains = \"\" }\n");
  Headers with{{{"X-Encrypt", ""}}};
  Headers without{{{"Subject", "x"}}};
  const auto d = decide(*policy, Direction::outbound, "a@example.org", "b@x.example", &with);
  REQUIRE(d.rule == &policy->rules[0]);
  CHECK(d.reason == "rule \"h\" (line 1): X-Encrypt is present");
  CHECK(decide(*policy, Direction::outbound, "a@example.org", "b@x.example", &without).rule == nullptr);
}

// ---- subject tags

TEST_CASE("the subject tag is removed and the spacing tidied", "[policy]") {
  CHECK(remove_subject_tag("Re: [secure] Plans", "[secure]") == "Re: Plans");
  CHECK(remove_subject_tag("[SECURE] Plans", "[secure]") == "Plans");
  CHECK(remove_subject_tag("Plans [Secure]", "[secure]") == "Plans");
  CHECK(remove_subject_tag("Plans", "[secure]") == "Plans");
  CHECK(remove_subject_tag("Re:[secure]Plans", "[secure]") == "Re:Plans");
  CHECK(remove_subject_tag("[secure]", "[secure]") == "");
  CHECK(remove_subject_tag("[secure] a [secure] b", "[secure]") == "a [secure] b");
  CHECK(remove_subject_tag("Re:  two  spaces [secure]  kept", "[secure]") == "Re:  two  spaces kept");
  CHECK(remove_subject_tag("Plans", "") == "Plans");
}

// ---- who may sign as whom

namespace {

std::filesystem::path write_file(const std::string& name, std::string_view text) {
  auto path = std::filesystem::temp_directory_path() / name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

Connection authenticated_as(std::string login) {
  Connection c;
  c.client_address = "203.0.113.9";
  c.authenticated = true;
  c.login = std::move(login);
  return c;
}

Connection from_client(std::string address) {
  Connection c;
  c.client_address = std::move(address);
  return c;
}

}  // namespace

TEST_CASE("the login map: Postfix's form, comments, continuation lines", "[policy][signing]") {
  const auto owners = parse_login_map(
      "# shared addresses\n"
      "Sales@Example.org   alice, bob@example.org\n"
      "\n"
      "ceo@example.org\tassistant,\n"
      "  deputy\r\n"
      "@branch.example.org branch-office\n",
      "logins");
  REQUIRE(owners);
  CHECK(owners->size() == 3);
  CHECK(owners->at("sales@example.org") == std::vector<std::string>{"alice", "bob@example.org"});
  CHECK(owners->at("ceo@example.org") == std::vector<std::string>{"assistant", "deputy"});
  CHECK(owners->at("@branch.example.org") == std::vector<std::string>{"branch-office"});
}

TEST_CASE("login map errors name the file and the line", "[policy][signing]") {
  const auto error = [](std::string_view text) {
    auto owners = parse_login_map(text, "/etc/mailkms/logins");
    REQUIRE_FALSE(owners);
    return owners.error().message;
  };
  CHECK(error("# a comment\nceo alice\n") ==
        "/etc/mailkms/logins:2: \"ceo\" is not an address such as \"sales@example.org\" or a domain such as "
        "\"@example.org\"");
  CHECK(error("ceo@example.org\n") == "/etc/mailkms/logins:1: ceo@example.org: expected the logins that may sign as it");
  CHECK(error("a@example.org x\n\nA@EXAMPLE.ORG y\n") ==
        "/etc/mailkms/logins:3: A@EXAMPLE.ORG is already listed at line 1");
  CHECK(error("*@example.org x\n").starts_with("/etc/mailkms/logins:1: \"*@example.org\" is not an address"));
  CHECK(error("a@b@example.org x\n").starts_with("/etc/mailkms/logins:1: \"a@b@example.org\" is not an address"));
}

TEST_CASE("[signing] is read with the login map it names", "[policy][signing]") {
  write_file("mailkms-policy-test-logins", "ceo@example.org assistant\n");
  const auto policy_file = write_file("mailkms-policy-test-signing.toml",
                                      "[local]\ndomains = [\"example.org\"]\nnetworks = [\"10.0.0.0/8\"]\n"
                                      "[signing]\nlogin_map = \"mailkms-policy-test-logins\"\n"
                                      "unauthenticated_networks = [\"10.1.0.0/16\"]\nlocal_submission = true\n");
  auto loaded = load_policy(policy_file);
  REQUIRE(loaded);
  const auto& signing = (*loaded)->signing;
  CHECK(signing.login_map == std::filesystem::temp_directory_path() / "mailkms-policy-test-logins");
  CHECK(signing.owners.at("ceo@example.org") == std::vector<std::string>{"assistant"});
  CHECK(signing.unauthenticated_networks.size() == 1);
  CHECK(signing.local_submission);

  write_file("mailkms-policy-test-logins", "ceo@example.org assistant\nceo deputy\n");
  auto refused = load_policy(policy_file);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().message.starts_with(
      (std::filesystem::temp_directory_path() / "mailkms-policy-test-logins").string() + ":2: \"ceo\""));
}

TEST_CASE("[signing] refuses what cannot be meant", "[policy][signing]") {
  CHECK(refusal("[local]\nnetworks = [\"10.0.0.0/8\"]\n[signing]\nunauthenticated_networks = [\"192.0.2.0/24\"]\n") ==
        "policy.toml:4:29: [signing]: unauthenticated_networks: \"192.0.2.0/24\" is not inside [local] networks: mail "
        "from it is inbound, never signed");
  CHECK(refusal("[local]\nnetworks = [\"10.1.0.0/16\"]\n[signing]\nunauthenticated_networks = [\"10.0.0.0/8\"]\n")
            .find("is not inside [local] networks") != std::string::npos);
  CHECK(refusal("[signing]\nlocal_submission = \"yes\"\n").find("local_submission: expected") != std::string::npos);
  CHECK(refusal("[signing]\nlogin_map = \"/nonexistent/logins\"\n") ==
        "policy.toml:2:13: [signing]: login_map: cannot read /nonexistent/logins: No such file or directory");
  CHECK(refusal("[signing]\nlogin_maps = \"x\"\n").find("unknown key \"login_maps\"") != std::string::npos);
}

TEST_CASE("an authenticated client signs only as what its login owns", "[policy][signing]") {
  auto policy = std::make_shared<Policy>(*must_parse(kLocality));
  policy->signing.login_map = "logins";
  policy->signing.owners = *parse_login_map("ceo@example.org assistant\n@sales.example.org Seller\n", "logins");

  auto a = authorize_signer(*policy, authenticated_as("bob@example.org"), "bob@example.org", "Bob@Example.ORG");
  CHECK(a.authorized);
  CHECK(a.identity == "Bob@Example.ORG");
  CHECK(a.reason == "login bob@example.org signs as itself");

  a = authorize_signer(*policy, authenticated_as("bob@example.org"), "bob@example.org", "ceo@example.org");
  CHECK_FALSE(a.authorized);
  CHECK(a.reason == "login bob@example.org does not own it");

  // The envelope sender does not make an author of it.
  a = authorize_signer(*policy, authenticated_as("bob@example.org"), "ceo@example.org", "ceo@example.org");
  CHECK_FALSE(a.authorized);

  // Without a single author in From, the envelope sender is the identity.
  a = authorize_signer(*policy, authenticated_as("bob@example.org"), "<bob@example.org>", std::nullopt);
  CHECK(a.authorized);
  CHECK(a.identity == "bob@example.org");

  a = authorize_signer(*policy, authenticated_as("Assistant"), "x@example.org", "CEO@example.org");
  CHECK(a.authorized);
  CHECK(a.reason == "logins gives it to login Assistant");
  a = authorize_signer(*policy, authenticated_as("assistant"), "assistant@example.org", "bob@example.org");
  CHECK_FALSE(a.authorized);

  a = authorize_signer(*policy, authenticated_as("seller"), "x@example.org", "orders@sales.example.org");
  CHECK(a.authorized);
  CHECK(a.reason == "logins gives @sales.example.org to login seller");
  a = authorize_signer(*policy, authenticated_as("seller"), "x@example.org", "orders@example.org");
  CHECK_FALSE(a.authorized);

  // Authentication decides alone: an allowed network adds nothing to it.
  policy->signing.unauthenticated_networks = policy->locality.networks;
  Connection internal = authenticated_as("bob@example.org");
  internal.client_address = "10.1.2.3";
  CHECK_FALSE(authorize_signer(*policy, internal, "ceo@example.org", "ceo@example.org").authorized);

  CHECK(addresses_of_login(*policy, "Seller") == std::vector<std::string>{"@sales.example.org"});
  CHECK(addresses_of_login(*policy, "bob@Example.org") == std::vector<std::string>{"bob@example.org"});
  CHECK(addresses_of_login(*policy, "nobody").empty());
}

TEST_CASE("unauthenticated clients sign only where allowed, and only as their envelope sender", "[policy][signing]") {
  auto policy = std::make_shared<Policy>(*must_parse(kLocality));

  auto a = authorize_signer(*policy, from_client("10.1.2.3"), "bob@example.org", "bob@example.org");
  CHECK_FALSE(a.authorized);  // off by default
  CHECK(a.reason == "client 10.1.2.3 is in none of [signing] unauthenticated_networks");

  Connection local;
  local.local_submission = true;
  a = authorize_signer(*policy, local, "bob@example.org", "bob@example.org");
  CHECK_FALSE(a.authorized);  // off by default
  CHECK(a.reason == "local submission signs only with [signing] local_submission = true");

  policy->signing.unauthenticated_networks = {policy->locality.networks[2]};  // 10.0.0.0/8
  policy->signing.local_submission = true;
  a = authorize_signer(*policy, from_client("10.1.2.3"), "bob@example.org", "Bob@example.org");
  CHECK(a.authorized);
  CHECK(a.reason == "client 10.1.2.3 is in 10.0.0.0/8 of [signing] unauthenticated_networks and From is the envelope sender");
  a = authorize_signer(*policy, from_client("10.1.2.3"), "bob@example.org", "alice@example.org");
  CHECK_FALSE(a.authorized);
  CHECK(a.reason == "From alice@example.org is not the envelope sender bob@example.org");
  a = authorize_signer(*policy, from_client("10.1.2.3"), "bob@example.org", std::nullopt);
  CHECK_FALSE(a.authorized);
  CHECK(a.reason == "From names no single author");
  CHECK_FALSE(authorize_signer(*policy, from_client("::1"), "bob@example.org", "bob@example.org").authorized);
  a = authorize_signer(*policy, from_client(""), "bob@example.org", "bob@example.org");
  CHECK_FALSE(a.authorized);
  CHECK(a.reason == "the client's address is unknown and it did not authenticate");

  a = authorize_signer(*policy, local, "bob@example.org", "bob@example.org");
  CHECK(a.authorized);
  CHECK(a.reason == "submitted locally, [signing] local_submission = true, and From is the envelope sender");
  a = authorize_signer(*policy, local, "bob@example.org", "ceo@example.org");
  CHECK_FALSE(a.authorized);
}

TEST_CASE("decrypt_unauthenticated is off unless a rule or [defaults] turns it on", "[policy]") {
  const auto policy = must_parse(
      "[defaults]\ndecrypt = true\n\n[[rule]]\nname = \"legacy clients\"\nto = \"*@old.example.org\"\n"
      "decrypt_unauthenticated = true\n");
  CHECK_FALSE(policy->defaults.decrypt_unauthenticated);
  CHECK(decide(*policy, Direction::inbound, "x@gmail.com", "bob@old.example.org", nullptr).settings->decrypt_unauthenticated);
  CHECK_FALSE(decide(*policy, Direction::inbound, "x@gmail.com", "bob@example.org", nullptr).settings->decrypt_unauthenticated);
}

// ---- where decryption happens

TEST_CASE("decryption happens only at the final hop unless the policy says anywhere", "[policy][decryption]") {
  const auto by_default = must_parse("[defaults]\ndecrypt = true\n");
  Connection entry{"203.0.113.9", false, {}, false};
  Connection final_hop{"127.0.0.1", false, {}, false};
  final_hop.final_hop = true;

  auto here = decryption_here(*by_default, entry);
  CHECK_FALSE(here.allowed);
  CHECK(here.reason ==
        "decryption happens at the final hop ({daemon_name} mailkms-final-hop), after the MTA has expanded aliases "
        "and forwarding; this connection is not it");
  here = decryption_here(*by_default, final_hop);
  CHECK(here.allowed);
  CHECK(here.reason == "this is the final hop ({daemon_name} mailkms-final-hop)");

  const auto anywhere = must_parse("[decryption]\nat = \"anywhere\"\n");
  CHECK(anywhere->decryption == DecryptionPlace::anywhere);
  here = decryption_here(*anywhere, entry);
  CHECK(here.allowed);
  CHECK(here.reason == "[decryption] at = \"anywhere\"");
  CHECK(must_parse("[decryption]\nat = \"final-hop\"\n")->decryption == DecryptionPlace::final_hop);
  CHECK(to_string(DecryptionPlace::final_hop) == "final-hop");
  CHECK(to_string(DecryptionPlace::anywhere) == "anywhere");
}

TEST_CASE("[decryption] refuses what cannot be meant", "[policy][decryption]") {
  CHECK(refusal("[decryption]\nat = \"entry\"\n") ==
        "policy.toml:2:6: [decryption]: at: expected final-hop or anywhere, not \"entry\"");
  CHECK(refusal("[decryption]\nat = true\n") == "policy.toml:2:6: [decryption]: at: expected a string");
  CHECK(refusal("[decryption]\nwhere = \"anywhere\"\n") ==
        "policy.toml:2:1: [decryption]: unknown key \"where\"; expected at");
  CHECK(refusal("decryption = \"anywhere\"\n") == "policy.toml:1:14: decryption: expected a table");
}

TEST_CASE("the final hop signs nothing, whoever its client says it is", "[policy][decryption]") {
  const auto policy = must_parse(
      "[local]\ndomains = [\"example.org\"]\nnetworks = [\"127.0.0.0/8\"]\n\n"
      "[signing]\nunauthenticated_networks = [\"127.0.0.0/8\"]\nlocal_submission = true\n");
  // The MTA's own smtp client on loopback, where clients may sign as their
  // envelope sender: at the entry it would; at the final hop it says
  // nothing of who submitted the mail.
  Connection entry{"127.0.0.1", false, {}, false};
  CHECK(authorize_signer(*policy, entry, "alice@example.org", "alice@example.org").authorized);
  Connection final_hop = entry;
  final_hop.final_hop = true;
  auto a = authorize_signer(*policy, final_hop, "alice@example.org", "alice@example.org");
  CHECK_FALSE(a.authorized);
  CHECK(a.identity == "alice@example.org");
  CHECK(a.reason == "the final hop signs nothing: its client is the MTA itself");
  final_hop.authenticated = true;
  final_hop.login = "alice@example.org";
  CHECK_FALSE(authorize_signer(*policy, final_hop, "alice@example.org", "alice@example.org").authorized);
  // The direction is decided as anywhere: mail among our users stays outbound.
  CHECK(decide_direction(*policy, "alice@example.org", final_hop).direction == Direction::outbound);
}
