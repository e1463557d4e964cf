#include <catch2/catch.hpp>

#include "mailkms/smime/encrypt.hpp"
#include "mailkms/smime/open.hpp"
#include "mailkms/smime/sign.hpp"
#include "test_support.hpp"

using namespace mailkms;
using namespace mailkms::smime;
using test::must;

namespace {

// Counts unwrap requests and passes them on, like a keystore client would.
class CountingUnwrapper final : public KeyUnwrapper {
 public:
  explicit CountingUnwrapper(LocalKeyUnwrapper inner) : inner_(std::move(inner)) {}
  const Certificate& certificate() const override { return inner_.certificate(); }
  Result<SecretBytes> unwrap(const WrappedKey& wrapped) override {
    ++calls;
    last_was_agreement = std::holds_alternative<KeyAgreementInput>(wrapped);
    return inner_.unwrap(wrapped);
  }
  int calls = 0;
  bool last_was_agreement = false;

 private:
  LocalKeyUnwrapper inner_;
};

}  // namespace

TEST_CASE("encrypt then decrypt in the engine, through the unwrap interface", "[decrypt]") {
  for (const Cipher cipher : {Cipher::aes256_cbc, Cipher::aes128_cbc, Cipher::aes256_gcm, Cipher::aes128_gcm,
                              Cipher::des_ede3_cbc}) {
    for (const std::string user : {"alice", "carol"}) {
      DYNAMIC_SECTION(name(cipher) << " to " << user) {
        const std::vector<Recipient> to{{test::cert(user), KeyTransport::rsa_oaep_sha256}};
        EncryptOptions options;
        options.cipher = cipher;
        const std::string m = must(encrypt_message(*test::context(), test::sample_message(), to, options));
        CountingUnwrapper key(test::unwrapper(user));
        KeyUnwrapper* keys[] = {&key};
        const Opened opened = open_message(*test::context(), m, keys, {});
        REQUIRE_FALSE(opened.error);
        CHECK(key.calls == 1);
        CHECK(key.last_was_agreement == (user == "carol"));
        CHECK(opened.layers.at(0).cipher == cipher);
        CHECK(opened.layers.at(0).recipient == test::cert(user));
        CHECK(opened.content.body == "The figures are attached in spirit.\r\nRegards, Alice\r\n");
      }
    }
  }
}

TEST_CASE("legacy ciphers are never used to encrypt", "[encrypt]") {
  const std::vector<Recipient> to{{test::cert("alice")}};
  EncryptOptions options;
  options.cipher = Cipher::rc2_40;
  const auto r = encrypt_message(*test::legacy_context(), test::sample_message(), to, options);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::unsupported_algorithm);
}

TEST_CASE("a message for someone else is refused with the recipients named", "[decrypt]") {
  const std::vector<Recipient> to{{test::cert("bob")}};
  const std::string m = must(encrypt_message(*test::context(), test::sample_message(), to, {}));
  auto key = test::unwrapper("alice");
  KeyUnwrapper* keys[] = {&key};
  const Opened opened = open_message(*test::context(), m, keys, {});
  REQUIRE(opened.error);
  CHECK(opened.error->code == Errc::no_matching_recipient);
  CHECK(opened.error->message.find("CN=issuing") != std::string::npos);
}

TEST_CASE("altered ciphertext never yields content", "[decrypt]") {
  for (const Cipher cipher : {Cipher::aes256_cbc, Cipher::aes256_gcm}) {
    DYNAMIC_SECTION(name(cipher)) {
      const std::vector<Recipient> to{{test::cert("alice")}};
      EncryptOptions options;
      options.cipher = cipher;
      const std::string der = must(build_enveloped_data(*test::context(), std::string(4096, 'a'), to, options));
      auto key = test::unwrapper("alice");
      KeyUnwrapper* keys[] = {&key};
      std::string tampered = der;
      tampered[tampered.size() - (cipher == Cipher::aes256_gcm ? 30 : 5)] ^= 0x01;
      const auto r = decrypt_cms(*test::context(), tampered, keys);
      if (cipher == Cipher::aes256_gcm) {
        REQUIRE_FALSE(r);  // GCM authenticates: any change is caught
        CHECK(r.error().code == Errc::decryption_failed);
      } else if (r) {
        CHECK(r->content != std::string(4096, 'a'));  // CBC: garbage, never the plaintext
      }
    }
  }
}

TEST_CASE("a wrong key-transport block looks like any wrong key (no padding oracle)", "[decrypt]") {
  const std::vector<Recipient> to{{test::cert("alice")}};
  const std::string der = must(build_enveloped_data(*test::context(), "secret\r\n", to, {}));
  auto key = test::unwrapper("alice");
  KeyTransportInput garbage;
  garbage.encrypted_key = std::string(256, '\x42');
  garbage.content_key_length = 32;
  // The unwrapper answers with a random key of the right size, not an error.
  const auto cek = key.unwrap(garbage);
  REQUIRE(cek);
  CHECK(cek->size() == 32);
}

TEST_CASE("binary content inside CMS comes out byte for byte", "[decrypt]") {
  std::string binary;
  for (int i = 0; i < 4096; ++i) binary.push_back(static_cast<char>((i * 31) & 0xff));  // has lone LFs and CRs
  const std::string entity = "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n" + binary;
  const std::vector<Recipient> to{{test::cert("alice")}};
  const std::string der = must(build_enveloped_data(*test::context(), entity, to, {}));
  auto key = test::unwrapper("alice");
  KeyUnwrapper* keys[] = {&key};
  const auto bytes = must(decrypt_cms(*test::context(), der, keys));
  CHECK(bytes.content == entity);
  const Entity parsed = must(parse_entity(bytes.content));
  CHECK(parsed.body == binary);
}

TEST_CASE("a certificate whose keyUsage forbids encryption is not encrypted to", "[encrypt]") {
  const std::vector<Recipient> to{{test::cert("root")}};  // keyCertSign and cRLSign only
  const auto r = encrypt_message(*test::context(), test::sample_message(), to, {});
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::invalid_certificate);
}

TEST_CASE("only a whole enveloped or authEnveloped CMS counts as already encrypted", "[open]") {
  const auto entity_of = [](const std::string& message) { return must(parse_message(message)).entity; };
  for (const Cipher cipher : {Cipher::aes256_cbc, Cipher::aes256_gcm}) {
    EncryptOptions options;
    options.cipher = cipher;
    const std::string m = must(encrypt_message(*test::context(), test::sample_message(),
                                               std::vector<Recipient>{{test::cert("alice")}}, options));
    CHECK(is_complete_encryption(*test::context(), entity_of(m)));
  }
  const std::string m = must(encrypt_message(*test::context(), test::sample_message(),
                                             std::vector<Recipient>{{test::cert("alice")}}, {}));
  Entity real = entity_of(m);
  const std::string der = must(base64_decode(real.body));
  const auto with_body = [&](const std::string& bytes) {
    Entity e = real;
    e.body = base64_encode_mime(bytes);
    return e;
  };
  // The first bytes of a real EnvelopedData, then the plain text.
  CHECK_FALSE(is_complete_encryption(*test::context(), with_body(der.substr(0, 64) + "The plain secret.\r\n")));
  CHECK_FALSE(is_complete_encryption(*test::context(), with_body(der + "trailing plain text")));
  CHECK_FALSE(is_complete_encryption(*test::context(), with_body("The plain secret.\r\n")));
  CHECK_FALSE(is_complete_encryption(*test::context(), with_body("")));
  // Signed-data is not encryption, whatever its label says.
  auto signer = test::signer("alice");
  SignOptions opaque;
  opaque.opaque = true;
  const std::string signed_message = must(sign_message(*test::context(), test::sample_message(), signer, opaque));
  CHECK_FALSE(is_complete_encryption(*test::context(), entity_of(signed_message)));
}

namespace {

// Hands the unwrapper a key-agreement input with a different KEK length,
// as a keystore peer could: the wrap algorithm stays what the sender chose.
class KekLengthChanger final : public KeyUnwrapper {
 public:
  KekLengthChanger(LocalKeyUnwrapper inner, std::size_t kek_length)
      : inner_(std::move(inner)), kek_length_(kek_length) {}
  const Certificate& certificate() const override { return inner_.certificate(); }
  Result<SecretBytes> unwrap(const WrappedKey& wrapped) override {
    KeyAgreementInput changed = std::get<KeyAgreementInput>(wrapped);
    wrap = changed.wrap;
    changed.kek_length = kek_length_;
    return inner_.unwrap(changed);
  }
  KeyAgreementInput::Wrap wrap = KeyAgreementInput::Wrap::aes128;

 private:
  LocalKeyUnwrapper inner_;
  std::size_t kek_length_;
};

}  // namespace

TEST_CASE("a key wrap whose KEK length is not its algorithm's is refused, never read past", "[decrypt]") {
  const std::vector<Recipient> to{{test::cert("carol")}};  // EC: key agreement, AES-256 key wrap
  const std::string der = must(build_enveloped_data(*test::context(), "secret\r\n", to, {}));
  for (const std::size_t kek_length : {std::size_t{16}, std::size_t{24}}) {
    DYNAMIC_SECTION("a " << kek_length << "-byte KEK") {
      KekLengthChanger key(test::unwrapper("carol"), kek_length);
      KeyUnwrapper* keys[] = {&key};
      const auto r = decrypt_cms(*test::context(), der, keys);
      CHECK(key.wrap == KeyAgreementInput::Wrap::aes256);
      REQUIRE_FALSE(r);
      CHECK(r.error().code == Errc::invalid_argument);
      CHECK(r.error().message.find("KEK of " + std::to_string(kek_length) + " bytes") != std::string::npos);
    }
  }
}

TEST_CASE("the readers are the keys whose own recipient entries open the message", "[decrypt]") {
  const std::vector<Recipient> to{{test::cert("alice")}, {test::cert("bob")}};
  const std::string der = must(build_enveloped_data(*test::context(), "for alice and bob\r\n", to, {}));
  auto carol = test::unwrapper("carol");
  auto bob = test::unwrapper("bob");
  auto alice = test::unwrapper("alice");
  KeyUnwrapper* keys[] = {&carol, &bob, &alice};
  const auto bytes = must(decrypt_cms(*test::context(), der, keys));
  CHECK(bytes.content == "for alice and bob\r\n");
  CHECK(bytes.readers == std::vector<std::size_t>{1, 2});
}

TEST_CASE("an entry that names a key but does not unwrap to the content key makes it no reader", "[decrypt]") {
  // PKCS#1 v1.5 entries: a damaged one unwraps to a random key, as any
  // entry an attacker adds for a certificate of their choice would.
  const std::vector<Recipient> to{{test::cert("alice"), KeyTransport::rsa_pkcs1v15},
                                  {test::cert("bob"), KeyTransport::rsa_pkcs1v15}};
  const std::string der = must(build_enveloped_data(*test::context(), "for alice only\r\n", to, {}));
  auto alice = test::unwrapper("alice");
  auto bob = test::unwrapper("bob");
  // The two encryptedKey OCTET STRINGs (2048-bit RSA): damage the one alice does not need.
  const std::string marker("\x04\x82\x01\x00", 4);
  std::optional<std::string> damaged;
  for (auto at = der.find(marker); at != std::string::npos && !damaged; at = der.find(marker, at + 1)) {
    std::string candidate = der;
    candidate[at + 4 + 100] ^= 0x5a;
    KeyUnwrapper* only_alice[] = {&alice};
    const auto r = decrypt_cms(*test::context(), candidate, only_alice);
    if (r && r->content == "for alice only\r\n") damaged = std::move(candidate);
  }
  REQUIRE(damaged);
  KeyUnwrapper* keys[] = {&bob, &alice};
  const auto bytes = must(decrypt_cms(*test::context(), *damaged, keys));
  CHECK(bytes.content == "for alice only\r\n");
  CHECK(bytes.readers == std::vector<std::size_t>{1});
  CHECK(bytes.recipient == test::cert("alice"));
}
