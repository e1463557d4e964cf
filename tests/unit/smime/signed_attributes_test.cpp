// What a key holder accepts to sign for someone else: the engine's signed
// attributes, and nothing that could be a certificate, a request or a
// handshake.
#include <catch2/catch.hpp>

#include <openssl/x509.h>

#include "mailkms/smime/sign.hpp"
#include "mailkms/smime/signed_attributes.hpp"
#include "test_support.hpp"

using namespace mailkms;
using namespace mailkms::smime;
using test::must;

namespace {

// Keeps what the engine asks the signer to sign.
class RecordingSigner final : public Signer {
 public:
  explicit RecordingSigner(LocalSigner inner) : inner_(std::move(inner)) {}
  const Certificate& certificate() const override { return inner_.certificate(); }
  const std::vector<Certificate>& chain() const override { return inner_.chain(); }
  SignatureScheme scheme() const override { return inner_.scheme(); }
  Result<std::string> sign(Digest digest, std::string_view to_be_signed) override {
    signed_attributes = std::string(to_be_signed);
    return inner_.sign(digest, to_be_signed);
  }
  std::string signed_attributes;

 private:
  LocalSigner inner_;
};

std::string attributes_of_a_message(Digest digest = Digest::sha256) {
  RecordingSigner signer(test::signer("alice"));
  SignOptions options;
  options.digest = digest;
  must(sign_message(*test::context(), test::sample_message(), signer, options));
  REQUIRE_FALSE(signer.signed_attributes.empty());
  return signer.signed_attributes;
}

std::string refusal(std::string_view der, Digest digest, std::time_t now) {
  const auto checked = check_signed_attributes(der, digest, now, std::chrono::minutes(5));
  if (checked) return "accepted";
  CHECK(checked.error().code == Errc::invalid_argument);
  return checked.error().message;
}

}  // namespace

TEST_CASE("the engine's signed attributes are accepted, for their digest and fresh", "[sign]") {
  const std::time_t now = std::time(nullptr);
  CHECK(refusal(attributes_of_a_message(), Digest::sha256, now) == "accepted");
  CHECK(refusal(attributes_of_a_message(Digest::sha384), Digest::sha384, now) == "accepted");
  CHECK(refusal(attributes_of_a_message(), Digest::sha256, now + 200) == "accepted");
}

TEST_CASE("a key holder refuses to sign what is not S/MIME signed attributes", "[sign]") {
  const std::time_t now = std::time(nullptr);
  const std::string attributes = attributes_of_a_message();

  SECTION("a TBSCertificate") {
    unsigned char* der = nullptr;
    const int length = i2d_re_X509_tbs(test::cert("bob").native(), &der);
    REQUIRE(length > 0);
    const std::string tbs(reinterpret_cast<const char*>(der), static_cast<std::size_t>(length));
    OPENSSL_free(der);
    CHECK(refusal(tbs, Digest::sha256, now) == "not S/MIME signed attributes: not one SET OF Attribute");
  }
  SECTION("arbitrary bytes, as a TLS handshake's") {
    CHECK(refusal(std::string(64, '\x31'), Digest::sha256, now).starts_with("not S/MIME signed attributes"));
    CHECK(refusal("", Digest::sha256, now).starts_with("not S/MIME signed attributes"));
  }
  SECTION("attributes with something after them") {
    CHECK(refusal(attributes + std::string("\x05\x00", 2), Digest::sha256, now) ==
          "not S/MIME signed attributes: not one SET OF Attribute");
  }
  SECTION("a messageDigest of another length than the digest's") {
    CHECK(refusal(attributes, Digest::sha512, now) ==
          "not S/MIME signed attributes: the messageDigest is not a sha512 digest");
  }
  SECTION("a signingTime more than five minutes away") {
    // The signingTime is the clock's when the attributes were made: `now`,
    // or a second later if the clock ticked in between.
    const std::string said = refusal(attributes, Digest::sha256, now + 3600);
    CHECK((said == "not S/MIME signed attributes: the signingTime is -3600 s from now, more than 300 s" ||
           said == "not S/MIME signed attributes: the signingTime is -3599 s from now, more than 300 s"));
    CHECK(refusal(attributes, Digest::sha256, now - 400).find("more than 300 s") != std::string::npos);
  }
  SECTION("a contentType alone") {
    // SET { SEQUENCE { contentType, SET { id-data } } }
    const std::string id_data("\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x01", 11);
    const std::string content_type("\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x09\x03", 11);
    const std::string values = "\x31\x0b" + id_data;
    const std::string attribute = "\x30\x18" + content_type + values;
    CHECK(refusal("\x31\x1a" + attribute, Digest::sha256, now) ==
          "not S/MIME signed attributes: contentType, messageDigest and signingTime are required");
  }
}
