// Interoperability with the real `openssl cms` command line, both ways:
// everything mailkms writes must verify and decrypt with openssl, and
// everything openssl writes must verify and decrypt with mailkms.
#include <catch2/catch.hpp>

#include "mailkms/smime/encrypt.hpp"
#include "mailkms/smime/open.hpp"
#include "test_support.hpp"

using namespace mailkms;
using namespace mailkms::smime;
using test::must;
using test::pki_path;
using test::run;

namespace {

const std::string kBody = "The figures are attached in spirit.\r\nRegards, Alice\r\n";
const std::string kEntity = "Content-Type: text/plain; charset=us-ascii\r\n\r\n" + kBody;

std::string openssl_verify(const std::string& file) {
  const auto r = run("openssl cms -verify -in '" + file + "' -CAfile " + pki_path("root.pem") + " -purpose smimesign");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  return r.out;
}

std::string openssl_decrypt(const std::string& file, const std::string& user) {
  const auto r = run("openssl cms -decrypt -in '" + file + "' -recip " + pki_path(user + ".pem") + " -inkey " +
                     pki_path(user + ".key"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  return r.out;
}

// openssl writes the inner entity with its own line endings; compare CRLF.
std::string crlf(const std::string& s) { return to_crlf(s); }

}  // namespace

TEST_CASE("openssl verifies our multipart/signed for every key type and digest", "[interop][sign]") {
  struct Case {
    std::string user;
    std::optional<SignatureScheme> scheme;
    Digest digest;
  };
  const std::vector<Case> cases{
      {"alice", std::nullopt, Digest::sha256},           {"alice", std::nullopt, Digest::sha384},
      {"alice", std::nullopt, Digest::sha512},           {"alice", SignatureScheme::rsa_pss, Digest::sha256},
      {"alice", SignatureScheme::rsa_pss, Digest::sha512}, {"carol", std::nullopt, Digest::sha256},
      {"dave", std::nullopt, Digest::sha384},
  };
  test::TempDir dir;
  for (const auto& c : cases) {
    DYNAMIC_SECTION(c.user << " " << name(c.digest) << (c.scheme == SignatureScheme::rsa_pss ? " pss" : "")) {
      auto signer = test::signer(c.user, c.scheme);
      SignOptions options;
      options.digest = c.digest;
      const std::string sender = c.user + "@example.org";
      const std::string signed_message =
          must(sign_message(*test::context(), test::sample_message(sender), signer, options));
      CHECK(signed_message.find("micalg=" + std::string(micalg(c.digest))) != std::string::npos);
      test::write_file(dir.path("signed.eml"), signed_message);
      CHECK(crlf(openssl_verify(dir.path("signed.eml").string())) == kEntity);
      // openssl smime (the PKCS#7 code) reads it too, except RSA-PSS, which it does not know
      if (c.scheme == SignatureScheme::rsa_pss) continue;
      const auto r = run("openssl smime -verify -in '" + dir.path("signed.eml").string() + "' -CAfile " +
                         pki_path("root.pem"));
      CHECK(r.exit_code == 0);
    }
  }
}

TEST_CASE("openssl verifies our opaque signed-data", "[interop][sign]") {
  test::TempDir dir;
  auto signer = test::signer("alice");
  SignOptions options;
  options.opaque = true;
  const std::string out = must(sign_message(*test::context(), test::sample_message(), signer, options));
  CHECK(out.find("smime-type=signed-data") != std::string::npos);
  test::write_file(dir.path("opaque.eml"), out);
  CHECK(crlf(openssl_verify(dir.path("opaque.eml").string())) == kEntity);
}

TEST_CASE("our signature carries the attributes RFC 8551 asks for", "[interop][sign]") {
  test::TempDir dir;
  auto signer = test::signer("alice");
  SignOptions options;
  options.opaque = true;
  const std::string out = must(sign_message(*test::context(), test::sample_message(), signer, options));
  test::write_file(dir.path("opaque.eml"), out);
  const auto r = run("openssl cms -cmsout -print -in '" + dir.path("opaque.eml").string() + "'");
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("signingTime") != std::string::npos);
  CHECK(r.out.find("S/MIME Capabilities") != std::string::npos);
  CHECK(r.out.find("id-smime-aa-signingCertificateV2") != std::string::npos);
  // Capabilities list the strongest first and never DES or RC2.
  const auto gcm = r.out.find("aes-256-gcm");
  const auto cbc = r.out.find("aes-256-cbc");
  CHECK(gcm != std::string::npos);
  CHECK(cbc != std::string::npos);
  CHECK(gcm < cbc);
  CHECK(r.out.find("rc2") == std::string::npos);
  CHECK(r.out.find("des-cbc") == std::string::npos);
  // The issuing CA travels with the signer.
  CHECK(r.out.find("CN=issuing") != std::string::npos);
}

TEST_CASE("openssl decrypts what we encrypt, with every cipher and key type", "[interop][encrypt]") {
  struct Case {
    std::string user;
    KeyTransport transport;
    Cipher cipher;
  };
  const std::vector<Case> cases{
      {"alice", KeyTransport::rsa_pkcs1v15, Cipher::aes256_cbc},    {"alice", KeyTransport::rsa_pkcs1v15, Cipher::aes128_cbc},
      {"alice", KeyTransport::rsa_pkcs1v15, Cipher::aes256_gcm},    {"alice", KeyTransport::rsa_pkcs1v15, Cipher::aes128_gcm},
      {"alice", KeyTransport::rsa_pkcs1v15, Cipher::des_ede3_cbc},  {"alice", KeyTransport::rsa_oaep_sha256, Cipher::aes256_cbc},
      {"alice", KeyTransport::rsa_oaep_sha256, Cipher::aes256_gcm}, {"carol", KeyTransport::rsa_pkcs1v15, Cipher::aes256_cbc},
      {"carol", KeyTransport::rsa_pkcs1v15, Cipher::aes128_gcm},    {"dave", KeyTransport::rsa_pkcs1v15, Cipher::aes256_cbc},
  };
  test::TempDir dir;
  for (const auto& c : cases) {
    DYNAMIC_SECTION(c.user << " " << name(c.cipher) << (c.transport == KeyTransport::rsa_oaep_sha256 ? " oaep" : "")) {
      const std::vector<Recipient> recipients{{test::cert(c.user), c.transport}};
      EncryptOptions options;
      options.cipher = c.cipher;
      const std::string out = must(encrypt_message(*test::context(), test::sample_message(), recipients, options));
      CHECK(out.find(is_aead(c.cipher) ? "smime-type=authEnveloped-data" : "smime-type=enveloped-data") !=
            std::string::npos);
      CHECK(out.find("Subject: quarterly figures") != std::string::npos);
      CHECK(out.find("Regards") == std::string::npos);
      test::write_file(dir.path("enc.eml"), out);
      CHECK(crlf(openssl_decrypt(dir.path("enc.eml").string(), c.user)) == kEntity);
    }
  }
}

TEST_CASE("one message to many recipients of mixed key types opens for each", "[interop][encrypt]") {
  test::TempDir dir;
  const std::vector<Recipient> recipients{{test::cert("alice"), KeyTransport::rsa_pkcs1v15},
                                          {test::cert("bob"), KeyTransport::rsa_oaep_sha256},
                                          {test::cert("carol"), KeyTransport::rsa_pkcs1v15},
                                          {test::cert("dave"), KeyTransport::rsa_pkcs1v15}};
  const std::string out = must(encrypt_message(*test::context(), test::sample_message(), recipients, {}));
  test::write_file(dir.path("enc.eml"), out);
  for (const char* user : {"alice", "bob", "carol", "dave"}) {
    INFO(user);
    CHECK(crlf(openssl_decrypt(dir.path("enc.eml").string(), user)) == kEntity);
    auto key = test::unwrapper(user);
    KeyUnwrapper* keys[] = {&key};
    const Opened opened = open_message(*test::context(), out, keys, {});
    REQUIRE_FALSE(opened.error);
    CHECK(opened.content.body == kBody);
  }
}

TEST_CASE("openssl decrypts and verifies our sign-then-encrypt", "[interop][encrypt][sign]") {
  test::TempDir dir;
  auto signer = test::signer("alice");
  const std::vector<Recipient> recipients{{test::cert("bob")}, {test::cert("alice")}};
  const std::string out =
      must(sign_and_encrypt_message(*test::context(), test::sample_message(), signer, {}, recipients, {}));
  test::write_file(dir.path("enc.eml"), out);
  test::write_file(dir.path("signed.eml"), openssl_decrypt(dir.path("enc.eml").string(), "bob"));
  CHECK(crlf(openssl_verify(dir.path("signed.eml").string())) == kEntity);
}

namespace {

std::string openssl_sign(test::TempDir& dir, const std::string& user, const std::string& extra) {
  test::write_file(dir.path("body.txt"), kBody);
  const auto r = run("openssl cms -sign -in '" + dir.path("body.txt").string() + "' -signer " + pki_path(user + ".pem") +
                     " -inkey " + pki_path(user + ".key") + " -certfile " + pki_path("chain.pem") + " -text -from " + user +
                     "@example.org -to bob@example.org -subject hello " + extra);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  return r.out;
}

VerifyResult verify_ours(const std::string& message) {
  VerifyOptions options;
  options.trust = &test::trust();
  return verify_message(*test::context(), message, options);
}

}  // namespace

TEST_CASE("we verify what openssl signs", "[interop][verify]") {
  test::TempDir dir;
  SECTION("detached RSA") {
    const VerifyResult v = verify_ours(openssl_sign(dir, "alice", ""));
    CHECK(v.status == SignatureStatus::pass);
    REQUIRE(v.signers.size() == 1);
    CHECK(v.signers[0].addresses == std::vector<std::string>{"alice@example.org"});
    CHECK(v.signers[0].signing_time.has_value());
    CHECK(v.signers[0].capabilities.has_value());
    REQUIRE(v.content);
    CHECK(v.content->body == "The figures are attached in spirit.\r\nRegards, Alice\r\n");
    CHECK_FALSE(v.weak);
  }
  SECTION("opaque (-nodetach)") {
    const VerifyResult v = verify_ours(openssl_sign(dir, "alice", "-nodetach"));
    CHECK(v.status == SignatureStatus::pass);
    CHECK(v.opaque);
    REQUIRE(v.content);
    CHECK(v.content->body == kBody);
  }
  SECTION("RSA-PSS") {
    const VerifyResult v = verify_ours(openssl_sign(dir, "alice", "-keyopt rsa_padding_mode:pss"));
    CHECK(v.status == SignatureStatus::pass);
  }
  SECTION("ECDSA P-256 and P-384") {
    CHECK(verify_ours(openssl_sign(dir, "carol", "")).status == SignatureStatus::pass);
    CHECK(verify_ours(openssl_sign(dir, "dave", "-md sha384")).status == SignatureStatus::pass);
  }
  SECTION("SHA-1, as old Outlook signs: passes, reported weak") {
    const VerifyResult v = verify_ours(openssl_sign(dir, "alice", "-md sha1"));
    CHECK(v.status == SignatureStatus::pass);
    CHECK(v.weak);
    REQUIRE(v.signers.size() == 1);
    CHECK(v.signers[0].digest == Digest::sha1);
  }
  SECTION("a tampered body fails") {
    std::string message = openssl_sign(dir, "alice", "");
    const auto at = message.find("figures are");
    REQUIRE(at != std::string::npos);
    message[at] = 'F';
    CHECK(verify_ours(message).status == SignatureStatus::fail);
  }
}

TEST_CASE("we decrypt what openssl encrypts", "[interop][decrypt]") {
  test::TempDir dir;
  test::write_file(dir.path("body.txt"), kBody);
  struct Case {
    std::string user;
    std::string options;
    Cipher expected;
    std::string key_options = "";
  };
  const std::vector<Case> cases{
      {"alice", "-aes-256-cbc", Cipher::aes256_cbc},
      {"alice", "-aes-128-cbc", Cipher::aes128_cbc},
      {"alice", "-aes-192-cbc", Cipher::aes192_cbc},
      {"alice", "-aes-256-gcm", Cipher::aes256_gcm},
      {"alice", "-aes-128-gcm", Cipher::aes128_gcm},
      {"alice", "-des3", Cipher::des_ede3_cbc},
      {"alice", "-aes-256-cbc", Cipher::aes256_cbc, "-keyopt rsa_padding_mode:oaep"},
      {"alice", "-aes-256-cbc", Cipher::aes256_cbc, "-keyopt rsa_padding_mode:oaep -keyopt rsa_oaep_md:sha256"},
      {"alice", "-aes-256-cbc -stream", Cipher::aes256_cbc},
      {"carol", "-aes-256-cbc", Cipher::aes256_cbc},
      {"carol", "-aes-128-gcm", Cipher::aes128_gcm},
      {"dave", "-aes-256-cbc", Cipher::aes256_cbc},
  };
  for (const auto& c : cases) {
    DYNAMIC_SECTION(c.user << " " << c.options) {
      const auto r = run("openssl cms -encrypt -text " + c.options + " -in '" + dir.path("body.txt").string() +
                         "' -from alice@example.org -to " + c.user + "@example.org -subject secret -recip " +
                         pki_path(c.user + ".pem") + " " + c.key_options);
      INFO(r.err);
      REQUIRE(r.exit_code == 0);
      auto key = test::unwrapper(c.user);
      KeyUnwrapper* keys[] = {&key};
      const Opened opened = open_message(*test::context(), r.out, keys, {});
      INFO((opened.error ? opened.error->describe() : std::string()));
      REQUIRE_FALSE(opened.error);
      REQUIRE(opened.layers.size() == 1);
      CHECK(opened.layers[0].cipher == c.expected);
      CHECK(opened.content.body == kBody);
    }
  }
}

TEST_CASE("legacy ciphers from archived mail need the legacy provider", "[interop][decrypt][legacy]") {
  test::TempDir dir;
  test::write_file(dir.path("body.txt"), kBody);
  struct Case {
    std::string option;
    Cipher expected;
  };
  for (const auto& c : std::vector<Case>{{"-rc2-40-cbc", Cipher::rc2_40},
                                         {"-rc2-64-cbc", Cipher::rc2_64},
                                         {"-rc2", Cipher::rc2_128},
                                         {"-des", Cipher::des_cbc}}) {
    DYNAMIC_SECTION(c.option) {
      const auto r = run("openssl cms -encrypt -provider legacy -provider default " + c.option + " -in '" +
                         dir.path("body.txt").string() + "' " + pki_path("alice.pem"));
      INFO(r.err);
      REQUIRE(r.exit_code == 0);
      auto key = test::unwrapper("alice");
      KeyUnwrapper* keys[] = {&key};

      const Opened strict = open_message(*test::context(), r.out, keys, {});
      REQUIRE(strict.error);
      CHECK(strict.error->code == Errc::legacy_cipher_disabled);

      const Opened permissive = open_message(*test::legacy_context(), r.out, keys, {});
      INFO((permissive.error ? permissive.error->describe() : std::string()));
      REQUIRE_FALSE(permissive.error);
      CHECK(permissive.layers.at(0).cipher == c.expected);
      CHECK(permissive.content.body == kBody);
    }
  }
}

TEST_CASE("we open openssl's sign-then-encrypt down to the content", "[interop][decrypt][verify]") {
  test::TempDir dir;
  test::write_file(dir.path("signed.eml"), openssl_sign(dir, "alice", ""));
  const auto r = run("openssl cms -encrypt -aes-256-cbc -in '" + dir.path("signed.eml").string() + "' " +
                     pki_path("bob.pem"));
  REQUIRE(r.exit_code == 0);
  const std::string message = "From: alice@example.org\r\nTo: bob@example.org\r\nSubject: both\r\n" + r.out;
  auto key = test::unwrapper("bob");
  KeyUnwrapper* keys[] = {&key};
  VerifyOptions options;
  options.trust = &test::trust();
  const Opened opened = open_message(*test::context(), message, keys, options);
  REQUIRE_FALSE(opened.error);
  REQUIRE(opened.layers.size() == 2);
  CHECK(opened.layers[0].kind == LayerKind::enveloped);
  CHECK(opened.layers[1].kind == LayerKind::signed_multipart);
  CHECK(opened.layers[1].verification->status == SignatureStatus::pass);
  CHECK(opened.content.body == kBody);
}
