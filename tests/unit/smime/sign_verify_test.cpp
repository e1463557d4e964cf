// Sign → verify within the engine, and every verdict the verifier can give.
#include <catch2/catch.hpp>

#include <gmime/gmime.h>

#include "mailkms/smime/open.hpp"
#include "mailkms/smime/sign.hpp"
#include "mailkms/smime/verify.hpp"
#include "test_support.hpp"

using namespace mailkms;
using namespace mailkms::smime;
using test::must;

namespace {

VerifyResult sign_and_verify(const std::string& user, const std::string& from, const VerifyOptions& base = {},
                             const SignOptions& sign_options = {}) {
  auto signer = test::signer(user);
  const std::string signed_message =
      must(sign_message(*test::context(), test::sample_message(from), signer, sign_options));
  VerifyOptions options = base;
  if (options.trust == nullptr) options.trust = &test::trust();
  return verify_message(*test::context(), signed_message, options);
}

class RevokedList final : public RevocationChecker {
 public:
  explicit RevokedList(Certificate revoked) : revoked_(std::move(revoked)) {}
  Revocation check(const Certificate& certificate, const Certificate&) override {
    return certificate == revoked_ ? Revocation::revoked : Revocation::good;
  }

 private:
  Certificate revoked_;
};

}  // namespace

TEST_CASE("a signature we make verifies, with its signer", "[sign][verify]") {
  const VerifyResult v = sign_and_verify("alice", "alice@example.org");
  CHECK(v.status == SignatureStatus::pass);
  INFO(v.reason);
  REQUIRE(v.signers.size() == 1);
  CHECK(v.signers[0].addresses == std::vector<std::string>{"alice@example.org"});
  CHECK(v.signers[0].digest == Digest::sha256);
  REQUIRE(v.signers[0].capabilities);
  CHECK(v.signers[0].capabilities->ciphers.front() == Cipher::aes256_gcm);
  CHECK(v.signers[0].capabilities->rsa_oaep);
  REQUIRE(v.signers[0].signing_time);
  CHECK(std::abs(*v.signers[0].signing_time - std::time(nullptr)) < 300);
  REQUIRE(v.content);
  CHECK(v.content->body == "The figures are attached in spirit.\r\nRegards, Alice\r\n");
}

TEST_CASE("every verdict of the verifier", "[verify]") {
  SECTION("signed by someone else than From: signer-mismatch") {
    const VerifyResult v = sign_and_verify("alice", "ceo@example.org");
    CHECK(v.status == SignatureStatus::signer_mismatch);
    CHECK(v.reason.find("ceo@example.org") != std::string::npos);
  }
  SECTION("a From that hides the author: signer-mismatch, never pass") {
    auto signer = test::signer("mallory");
    VerifyOptions options;
    smime::TrustStore both;
    both.add(test::cert("root"));
    both.add(test::cert("other-root"));  // mallory's certificate is valid here
    options.trust = &both;
    const std::string body = "Content-Type: text/plain\r\n\r\npay the invoice\r\n";
    for (const std::string& headers : {std::string("To: bob@example.org\r\n"),
                                      std::string("From: <>\r\nFrom: ceo@example.org\r\n"),
                                      std::string("From: mallory@example.org, ceo@example.org\r\n")}) {
      const std::string m = must(sign_message(*test::context(), headers + body, signer, {}));
      const VerifyResult v = verify_message(*test::context(), m, options);
      INFO(headers);
      CHECK(v.status == SignatureStatus::signer_mismatch);
    }
    const std::string honest = must(sign_message(*test::context(), "From: mallory@example.org\r\n" + body, signer, {}));
    CHECK(verify_message(*test::context(), honest, options).status == SignatureStatus::pass);
  }
  SECTION("a root we do not trust: untrusted") {
    const VerifyResult v = sign_and_verify("mallory", "mallory@example.org");
    CHECK(v.status == SignatureStatus::untrusted);
  }
  SECTION("no trust anchors at all: untrusted") {
    smime::TrustStore empty;
    VerifyOptions options;
    options.trust = &empty;
    CHECK(sign_and_verify("alice", "alice@example.org", options).status == SignatureStatus::untrusted);
  }
  SECTION("an expired signer: expired") {
    const VerifyResult v = sign_and_verify("erin", "erin@example.org");
    CHECK(v.status == SignatureStatus::expired);
  }
  SECTION("judged at a time inside the validity, the expired signer passes") {
    VerifyOptions options;
    options.at = 1593561600;  // 2020-07-01
    CHECK(sign_and_verify("erin", "erin@example.org", options).status == SignatureStatus::pass);
  }
  SECTION("a certificate without digitalSignature may not sign (RFC 8550)") {
    const VerifyResult v = sign_and_verify("frank", "frank@example.org");
    CHECK(v.status == SignatureStatus::untrusted);
    CHECK(v.reason.find("keyUsage") != std::string::npos);
  }
  SECTION("a revoked signer: revoked") {
    RevokedList revoked(test::cert("alice"));
    VerifyOptions options;
    options.revocation = &revoked;
    CHECK(sign_and_verify("alice", "alice@example.org", options).status == SignatureStatus::revoked);
  }
  SECTION("a revoked issuing CA: revoked") {
    RevokedList revoked(test::cert("issuing"));
    VerifyOptions options;
    options.revocation = &revoked;
    CHECK(sign_and_verify("alice", "alice@example.org", options).status == SignatureStatus::revoked);
  }
  SECTION("an unsigned message: no-signature") {
    VerifyOptions options;
    options.trust = &test::trust();
    CHECK(verify_message(*test::context(), test::sample_message(), options).status == SignatureStatus::no_signature);
  }
  SECTION("altered content: fail") {
    auto signer = test::signer("alice");
    std::string m = must(sign_message(*test::context(), test::sample_message(), signer, {}));
    m.replace(m.find("in spirit"), 9, "in Spirit");
    VerifyOptions options;
    options.trust = &test::trust();
    CHECK(verify_message(*test::context(), m, options).status == SignatureStatus::fail);
  }
}

TEST_CASE("an anchor scoped to domains vouches for addresses there alone", "[verify]") {
  const auto verify_under = [](const TrustStore& trust, const std::string& user, const std::string& from) {
    VerifyOptions options;
    options.trust = &trust;
    return sign_and_verify(user, from, options);
  };
  TrustStore partner;
  partner.add(test::cert("root"), {"partner.example", ".partner.example"});
  const VerifyResult outside = verify_under(partner, "alice", "alice@example.org");
  CHECK(outside.status == SignatureStatus::untrusted);
  CHECK(outside.reason.find("vouches only for partner.example, .partner.example, not alice@example.org") !=
        std::string::npos);
  CHECK(verify_under(partner, "zoe", "zoe@partner.example").status == SignatureStatus::pass);

  // "example.org" is that domain; ".example.org" only those below it.
  TrustStore exact;
  exact.add(test::cert("root"), {"Example.ORG"});
  CHECK(verify_under(exact, "alice", "alice@example.org").status == SignatureStatus::pass);
  TrustStore below;
  below.add(test::cert("root"), {".example.org"});
  CHECK(verify_under(below, "alice", "alice@example.org").status == SignatureStatus::untrusted);

  // A scope holds even where the same anchor is also trusted without one.
  TrustStore both;
  both.add(test::cert("root"));
  both.add(test::cert("root"), {"partner.example"});
  CHECK(verify_under(both, "alice", "alice@example.org").status == SignatureStatus::untrusted);
}

TEST_CASE("signatures survive what mail transport does to line endings", "[sign][verify]") {
  auto signer = test::signer("alice");
  std::string m = must(sign_message(*test::context(), test::sample_message(), signer, {}));
  // Delivery to a mailbox stores LF line endings.
  std::string lf;
  for (const char c : m) {
    if (c != '\r') lf.push_back(c);
  }
  VerifyOptions options;
  options.trust = &test::trust();
  CHECK(verify_message(*test::context(), lf, options).status == SignatureStatus::pass);
}

TEST_CASE("opaque and PSS and EC signatures verify in the engine", "[sign][verify]") {
  for (const auto& [user, scheme] : std::vector<std::pair<std::string, std::optional<SignatureScheme>>>{
           {"alice", SignatureScheme::rsa_pss}, {"carol", std::nullopt}, {"dave", std::nullopt}}) {
    auto signer = test::signer(user, scheme);
    SignOptions options;
    options.opaque = true;
    const std::string m =
        must(sign_message(*test::context(), test::sample_message(user + "@example.org"), signer, options));
    VerifyOptions verify;
    verify.trust = &test::trust();
    const VerifyResult v = verify_message(*test::context(), m, verify);
    INFO(user << ": " << v.reason);
    CHECK(v.status == SignatureStatus::pass);
    CHECK(v.opaque);
  }
}

namespace {

// The decoded content of the MIME part at `index` of a multipart entity.
std::string decoded_part(const std::string& entity, int index) {
  g_mime_init();
  GMimeStream* stream = g_mime_stream_mem_new_with_buffer(entity.data(), entity.size());
  GMimeParser* parser = g_mime_parser_new_with_stream(stream);
  GMimeObject* root = g_mime_parser_construct_part(parser, nullptr);
  REQUIRE(GMIME_IS_MULTIPART(root));
  GMimeObject* part = g_mime_multipart_get_part(GMIME_MULTIPART(root), index);
  REQUIRE(GMIME_IS_PART(part));
  GMimeDataWrapper* content = g_mime_part_get_content(GMIME_PART(part));
  GMimeStream* out = g_mime_stream_mem_new();
  g_mime_data_wrapper_write_to_stream(content, out);
  GByteArray* bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(out));
  std::string decoded(reinterpret_cast<const char*>(bytes->data), bytes->len);
  g_object_unref(out);
  g_object_unref(root);
  g_object_unref(parser);
  g_object_unref(stream);
  return decoded;
}

}  // namespace

TEST_CASE("8bit text, a 998-character line, binary data and RFC 2047 headers survive sign and verify",
          "[sign][verify][canonical]") {
  std::string binary;
  for (int i = 0; i < 3000; ++i) binary.push_back(static_cast<char>((i * 7919) & 0xff));
  const std::string long_line(998, 'y');
  const std::string text = "Gr\xc3\xbc\xc3\x9f" "e aus K\xc3\xb6ln\r\n" + long_line + "\r\nFrom the start\r\n";
  std::string base64_binary;
  {
    std::string b = base64_encode_mime(binary);
    base64_binary = b;
  }
  const std::string message =
      "From: =?utf-8?q?J=C3=BCrgen?= <alice@example.org>\r\n"
      "To: bob@example.org\r\n"
      "Subject: =?utf-8?b?w5xiZXJzaWNodA==?=\r\n"
      "MIME-Version: 1.0\r\n"
      "Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
      "\r\n"
      "--outer\r\n"
      "Content-Type: text/plain; charset=utf-8\r\n"
      "Content-Transfer-Encoding: 8bit\r\n"
      "\r\n" + text +
      "--outer\r\n"
      "Content-Type: application/octet-stream; name=\"data.bin\"\r\n"
      "Content-Transfer-Encoding: base64\r\n"
      "\r\n" + base64_binary +
      "--outer--\r\n";

  auto signer = test::signer("alice");
  const std::string signed_message = must(sign_message(*test::context(), message, signer, {}));
  // Nothing 8bit left for a transport to mangle.
  for (const char c : signed_message) REQUIRE(static_cast<unsigned char>(c) < 0x80);
  CHECK(signed_message.find("Subject: =?utf-8?b?w5xiZXJzaWNodA==?=\r\n") != std::string::npos);

  VerifyOptions options;
  options.trust = &test::trust();
  const VerifyResult v = verify_message(*test::context(), signed_message, options);
  INFO(v.reason);
  REQUIRE(v.status == SignatureStatus::pass);
  REQUIRE(v.content);
  const std::string content = v.content->serialize();
  // Quoted-printable line breaks are hard line breaks: canonical CRLF. The
  // CRLF before a boundary belongs to the boundary, not to the part.
  CHECK(to_crlf(decoded_part(content, 0)) == text.substr(0, text.size() - 2));
  CHECK(decoded_part(content, 1) == binary);
}

TEST_CASE("the system's roots load, and do not vouch for our test CA", "[verify]") {
  smime::TrustStore system;
  REQUIRE(system.add_system_roots());
  VerifyOptions options;
  options.trust = &system;
  auto signer = test::signer("alice");
  const std::string m = must(sign_message(*test::context(), test::sample_message(), signer, {}));
  CHECK(verify_message(*test::context(), m, options).status == SignatureStatus::untrusted);
  system.add(test::cert("root"));  // an administrator adds an anchor
  CHECK(verify_message(*test::context(), m, options).status == SignatureStatus::pass);
}
