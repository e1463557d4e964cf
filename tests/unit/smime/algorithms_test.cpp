#include <catch2/catch.hpp>

#include "mailkms/smime/algorithms.hpp"
#include "mailkms/smime/encrypt.hpp"

using namespace mailkms::smime;

TEST_CASE("digest and cipher names are read as clients and admins write them", "[algorithms]") {
  CHECK(parse_digest("sha-256") == Digest::sha256);
  CHECK(parse_digest("SHA256") == Digest::sha256);
  CHECK(parse_digest("sha1") == Digest::sha1);
  CHECK(parse_digest("SHA-1") == Digest::sha1);
  CHECK_FALSE(parse_digest("md5"));
  CHECK(micalg(Digest::sha512) == "sha-512");
  CHECK(parse_cipher("aes-256-cbc") == Cipher::aes256_cbc);
  CHECK(parse_cipher("AES256-GCM") == Cipher::aes256_gcm);
  CHECK(parse_cipher("3des") == Cipher::des_ede3_cbc);
  CHECK(parse_cipher("des-ede3-cbc") == Cipher::des_ede3_cbc);
  CHECK(parse_cipher("rc2-40") == Cipher::rc2_40);
  CHECK_FALSE(parse_cipher("rot13"));
  CHECK(is_decrypt_only(Cipher::rc2_40));
  CHECK_FALSE(is_decrypt_only(Cipher::des_ede3_cbc));
}

TEST_CASE("the cipher is chosen from what the recipients advertise", "[algorithms]") {
  const auto preference = default_cipher_preference();
  const Capabilities modern{{Cipher::aes256_gcm, Cipher::aes256_cbc}, true};
  const Capabilities outlook{{Cipher::aes256_cbc, Cipher::aes128_cbc, Cipher::des_ede3_cbc}, false};
  const Capabilities old{{Cipher::des_ede3_cbc}, false};

  SECTION("nobody known: the caller's setting") {
    const std::vector<std::optional<Capabilities>> r{std::nullopt, std::nullopt};
    CHECK(*choose_cipher(r, preference, Cipher::aes256_cbc) == Cipher::aes256_cbc);
  }
  SECTION("everyone reads GCM: the strongest") {
    const std::vector<std::optional<Capabilities>> r{modern, modern};
    CHECK(*choose_cipher(r, preference, Cipher::aes256_cbc) == Cipher::aes256_gcm);
  }
  SECTION("one Outlook: the strongest they share") {
    const std::vector<std::optional<Capabilities>> r{modern, outlook};
    CHECK(*choose_cipher(r, preference, Cipher::aes256_cbc) == Cipher::aes256_cbc);
  }
  SECTION("an unknown recipient limits the choice to the caller's setting") {
    const std::vector<std::optional<Capabilities>> r{modern, std::nullopt};
    CHECK(*choose_cipher(r, preference, Cipher::aes256_cbc) == Cipher::aes256_cbc);
  }
  SECTION("no common cipher within policy is an error, never a weaker fallback") {
    const std::vector<std::optional<Capabilities>> r{modern, old};
    const auto chosen = choose_cipher(r, preference, Cipher::aes256_cbc);
    REQUIRE_FALSE(chosen);
    CHECK(chosen.error().code == Errc::unsupported_algorithm);
  }
  SECTION("RSA-OAEP only for those who advertise it") {
    CHECK(choose_key_transport(modern) == KeyTransport::rsa_oaep_sha256);
    CHECK(choose_key_transport(outlook) == KeyTransport::rsa_pkcs1v15);
    CHECK(choose_key_transport(std::nullopt) == KeyTransport::rsa_pkcs1v15);
  }
}
