// Authentication-Results as we write it (RFC 8601 with RFC 7281's smime
// method), and the authserv-id we read from received ones to remove
// forgeries in our name: a reader that misses an equivalent spelling of our
// id leaves a forged result in place.
#include <catch2/catch.hpp>

#include "pipeline.hpp"
#include "test_support.hpp"

using namespace mailkms::gateway;

TEST_CASE("one result with a signer", "[authentication_results]") {
  CHECK(authentication_results("mx.example", {{"pass", "", "alice@example.org"}}) ==
        "mx.example;\r\n\tsmime=pass\r\n\tbody.smime-identifier=alice@example.org");
}

TEST_CASE("a signer address that is no plain local-part@domain is quoted", "[authentication_results]") {
  const auto identifier = [](const std::string& address) {
    const std::string value = authentication_results("mx", {{"pass", "", address}});
    const std::string prefix = "mx;\r\n\tsmime=pass\r\n\tbody.smime-identifier=";
    REQUIRE(value.starts_with(prefix));
    return value.substr(prefix.size());
  };
  CHECK(identifier("first.last+tag@mail.example.org") == "first.last+tag@mail.example.org");
  CHECK(identifier("mallory") == "mallory");
  CHECK(identifier("\"odd local\"@example.org") == "\"\\\"odd local\\\"@example.org\"");
  CHECK(identifier("user@") == "\"user@\"");
  CHECK(identifier("@example.org") == "\"@example.org\"");
  CHECK(identifier("j\xc3\xb6rg@example.org") == "\"j\xc3\xb6rg@example.org\"");
}

TEST_CASE("results without reason or signer", "[authentication_results]") {
  CHECK(authentication_results("mx.example", {{"none", "", ""}}) == "mx.example;\r\n\tsmime=none");
  CHECK(authentication_results("mx.example", {{"fail", "expired", ""}}) == "mx.example;\r\n\tsmime=fail reason=expired");
}

TEST_CASE("several results are separated by a semicolon and a folded line", "[authentication_results]") {
  CHECK(authentication_results("mx.example.org", {{"pass", "", "alice@example.org"}, {"fail", "bad", "mallory"}}) ==
        "mx.example.org;\r\n\tsmime=pass\r\n\tbody.smime-identifier=alice@example.org;\r\n"
        "\tsmime=fail reason=bad\r\n\tbody.smime-identifier=mallory");
}

TEST_CASE("a reason that is no token is quoted, with quotes and backslashes escaped", "[authentication_results]") {
  CHECK(authentication_results("mx", {{"temperror", "keystore unavailable", ""}}) ==
        "mx;\r\n\tsmime=temperror reason=\"keystore unavailable\"");
  CHECK(authentication_results("mx", {{"none", "decrypted; not signed", ""}}) ==
        "mx;\r\n\tsmime=none reason=\"decrypted; not signed\"");
  CHECK(authentication_results("mx", {{"fail", R"(says "hi" \ then)", ""}}) ==
        "mx;\r\n\tsmime=fail reason=\"says \\\"hi\\\" \\\\ then\"");
  CHECK(authentication_results("mx", {{"fail", "a=b", ""}}) == "mx;\r\n\tsmime=fail reason=\"a=b\"");
  CHECK(authentication_results("mx", {{"fail", "caf\xc3\xa9", ""}}) == "mx;\r\n\tsmime=fail reason=\"caf\xc3\xa9\"");
}

TEST_CASE("line breaks in a reason cannot start a new header field", "[authentication_results]") {
  CHECK(authentication_results("mx", {{"fail", "one\r\nX-Injected: yes", ""}}) ==
        "mx;\r\n\tsmime=fail reason=\"oneX-Injected: yes\"");
  CHECK(authentication_results("mx", {{"pass", "", "a\nb@example.org"}}) ==
        "mx;\r\n\tsmime=pass\r\n\tbody.smime-identifier=\"ab@example.org\"");
  CHECK(authentication_results("mx", {{"pass", "", "a@example.org\r\nX-Injected: yes"}}) ==
        "mx;\r\n\tsmime=pass\r\n\tbody.smime-identifier=\"a@example.orgX-Injected: yes\"");
}

TEST_CASE("authserv_id_of reads the id a value starts with", "[authentication_results]") {
  CHECK(authserv_id_of("mx.example.org; smime=pass") == "mx.example.org");
  CHECK(authserv_id_of("mx.example.org;smime=pass") == "mx.example.org");
  CHECK(authserv_id_of(" MX.Example.ORG 1; smime=pass") == "mx.example.org");
  CHECK(authserv_id_of("(comment) mx.example.org; smime=pass") == "mx.example.org");
  CHECK(authserv_id_of("mx.example.org") == "mx.example.org");
  CHECK(authserv_id_of("mx.example.org(comment); smime=pass") == "mx.example.org");
  CHECK(authserv_id_of("\r\n\tmx.example.org\r\n\t; smime=pass") == "mx.example.org");
  CHECK(authserv_id_of("") == "");
  CHECK(authserv_id_of("; smime=pass") == "");
}

TEST_CASE("authserv_id_of sees through every spelling RFC 8601 allows", "[authentication_results]") {
  // authserv-id is a token or a quoted-string, after any comments.
  CHECK(authserv_id_of("\"mx.example.org\"; smime=pass") == "mx.example.org");
  CHECK(authserv_id_of("\"MX.example.org\" 1; smime=pass") == "mx.example.org");
  CHECK(authserv_id_of("\"mx\\.example.org\"; smime=pass") == "mx.example.org");
  CHECK(authserv_id_of("(c) \"mx.example.org\"(c); smime=pass") == "mx.example.org");
  CHECK(authserv_id_of("(one) (two) mx.example.org; smime=pass") == "mx.example.org");
  CHECK(authserv_id_of("(one)(two)mx.example.org; smime=pass") == "mx.example.org");
  CHECK(authserv_id_of("(outer (inner) still) mx.example.org; smime=pass") == "mx.example.org");
  CHECK(authserv_id_of("(a \\) b) mx.example.org; smime=pass") == "mx.example.org");
  CHECK(authserv_id_of("(never closed mx.example.org; smime=pass") == "");
}

TEST_CASE("a header without results says none (RFC 8601)", "[authentication-results]") {
  CHECK(authentication_results("mx.example", {}) == "mx.example; none");
}

TEST_CASE("a pass names the signer that passed as the author, not the first signer", "[authentication_results]") {
  using mailkms::smime::SignatureStatus;
  mailkms::smime::VerifyResult verified;
  verified.status = SignatureStatus::pass;
  verified.intact = true;
  // A self-signed signer for ceo@bank.example first, then alice, who wrote it.
  mailkms::smime::SignerReport ceo{mailkms::test::cert("mallory"), {"ceo@bank.example"}, {}, {}, {},
                                   SignatureStatus::untrusted, "self-signed"};
  mailkms::smime::SignerReport alice{mailkms::test::cert("alice"), {"alice.smith@example.org", "alice@example.org"}, {},
                                     {}, {}, SignatureStatus::pass, "signed by alice@example.org"};
  verified.signers = {ceo, alice};
  const SmimeResult r = smime_result(verified, {"alice@example.org"});
  CHECK(r.result == "pass");
  CHECK(r.identifier == "alice@example.org");  // the address that matched the author, of the signer that passed
  CHECK(authentication_results("mx", {r}) == "mx;\r\n\tsmime=pass\r\n\tbody.smime-identifier=alice@example.org");
  // An author in capitals is the same mailbox.
  CHECK(smime_result(verified, {"Alice@Example.ORG"}).identifier == "alice@example.org");
}

TEST_CASE("a failure names the signer whose verdict it is", "[authentication_results]") {
  using mailkms::smime::SignatureStatus;
  mailkms::smime::VerifyResult verified;
  verified.status = SignatureStatus::untrusted;
  verified.reason = "self-signed";
  verified.signers = {{mailkms::test::cert("mallory"), {}, {}, {}, {}, SignatureStatus::untrusted, "self-signed"},
                      {mailkms::test::cert("alice"), {"alice@example.org"}, {}, {}, {}, SignatureStatus::untrusted, "x"}};
  const SmimeResult r = smime_result(verified, {"alice@example.org"});
  CHECK(r.result == "fail");
  CHECK(r.identifier.empty());  // the first signer, which has no address: not another signer's
}
