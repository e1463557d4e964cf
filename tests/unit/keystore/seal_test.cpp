// Sealing the master key: passphrase, key file, Shamir shares.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <set>

#include "mailkms/keystore/seal.hpp"
#include "mailkms/keystore/shamir.hpp"
#include "test_support.hpp"

using namespace mailkms;
using namespace mailkms::keystore;
using test::must;

namespace {

std::string text(const smime::SecretBytes& s) { return std::string(reinterpret_cast<const char*>(s.data()), s.size()); }

// Cheap parameters: the tests check the mechanism, not the cost.
constexpr ScryptParameters kFast{1 << 10, 8, 1};

}  // namespace

TEST_CASE("a passphrase seal opens with the passphrase and nothing else", "[seal]") {
  const auto master = new_master_key();
  const SealRecord record = must(seal_with_passphrase(master, "correct horse battery staple", kFast));
  CHECK(record.wrapped_master_key.find(text(master)) == std::string::npos);
  const SealRecord stored = must(SealRecord::from_json(record.to_json()));
  CHECK(text(must(unseal_with_passphrase(stored, "correct horse battery staple"))) == text(master));
  const auto wrong = unseal_with_passphrase(stored, "correct horse battery stapler");
  REQUIRE_FALSE(wrong);
  CHECK(wrong.error().code == Errc::wrong_secret);
  CHECK(seal_with_passphrase(master, "short", kFast).error().code == Errc::invalid_argument);
}

TEST_CASE("the default scrypt cost is stored with the seal", "[seal]") {
  const ScryptParameters defaults;
  CHECK(defaults.n >= (std::uint64_t{1} << 17));
  SealRecord record;
  record.scrypt = defaults;
  record.salt = "0123456789abcdef";
  record.wrapped_master_key = "x";
  const std::string json = record.to_json();
  CHECK(json.find("\"n\":131072") != std::string::npos);
  CHECK(must(SealRecord::from_json(json)).scrypt.n == defaults.n);
}

TEST_CASE("a key file seal needs the file, private", "[seal]") {
  test::TempDir dir;
  const auto master = new_master_key();
  auto [record, contents] = must(seal_with_key_file(master));
  const auto path = dir.path("master.key");
  test::write_file(path, contents);
  REQUIRE(::chmod(path.c_str(), 0600) == 0);
  CHECK(text(must(unseal_with_key_file(record, path))) == text(master));

  REQUIRE(::chmod(path.c_str(), 0640) == 0);
  const auto exposed = unseal_with_key_file(record, path);
  REQUIRE_FALSE(exposed);
  CHECK(exposed.error().code == Errc::permission_denied);

  auto [other_record, other_contents] = must(seal_with_key_file(new_master_key()));
  (void)other_record;
  test::write_file(path, other_contents);
  REQUIRE(::chmod(path.c_str(), 0600) == 0);
  CHECK(unseal_with_key_file(record, path).error().code == Errc::wrong_secret);
  test::write_file(path, "garbage");
  CHECK(unseal_with_key_file(record, path).error().code == Errc::wrong_secret);
  CHECK(unseal_with_key_file(record, dir.path("absent")).error().code == Errc::not_found);
}

TEST_CASE("any three of five shares open the seal, two do not", "[seal][shamir]") {
  const auto master = new_master_key();
  auto [record, shares] = must(seal_with_shares(master, 5, 3));
  REQUIRE(shares.size() == 5);
  for (int a = 0; a < 5; ++a) {
    for (int b = a + 1; b < 5; ++b) {
      for (int c = b + 1; c < 5; ++c) {
        const std::vector<std::string> three{shares[static_cast<std::size_t>(a)], shares[static_cast<std::size_t>(b)],
                                             shares[static_cast<std::size_t>(c)]};
        INFO(a << b << c);
        CHECK(text(must(unseal_with_shares(record, three))) == text(master));
      }
    }
  }
  const std::vector<std::string> two{shares[0], shares[1]};
  CHECK(unseal_with_shares(record, two).error().code == Errc::wrong_secret);
  std::string tampered = shares[2];
  tampered.back() = tampered.back() == '0' ? '1' : '0';
  const std::vector<std::string> bad{shares[0], shares[1], tampered};
  CHECK(unseal_with_shares(record, bad).error().code == Errc::wrong_secret);
  const std::vector<std::string> repeated{shares[0], shares[0], shares[1]};
  CHECK(unseal_with_shares(record, repeated).error().code == Errc::invalid_argument);
  CHECK(unseal_with_shares(record, std::vector<std::string>{"not a share", shares[0], shares[1]}).error().code ==
        Errc::invalid_argument);
}

TEST_CASE("fewer shares than the threshold reveal nothing of the secret byte", "[shamir]") {
  // With threshold 2, one share's byte is uniform whatever the secret: the
  // same share value is consistent with every secret.
  const smime::SecretBytes zero(std::string(1, '\0'));
  std::set<std::uint8_t> seen;
  for (int i = 0; i < 4000 && seen.size() < 256; ++i) {
    const auto shares = must(split_secret(zero, 2, 2));
    seen.insert(static_cast<std::uint8_t>(shares[0].bytes[0]));
  }
  CHECK(seen.size() == 256);
}

TEST_CASE("shares encode and decode", "[shamir]") {
  const Share share{7, std::string("\x00\xff\x10", 3)};
  const std::string encoded = encode_share(share);
  CHECK(encoded == "mailkms-share-1-7-00ff10");
  const Share back = must(decode_share(encoded + "\n"));
  CHECK(back.index == 7);
  CHECK(back.bytes == share.bytes);
  CHECK_FALSE(decode_share("mailkms-share-1-0-00"));
  CHECK_FALSE(decode_share("mailkms-share-1-7-0g"));
  CHECK(split_secret(smime::SecretBytes(std::string(4, 'x')), 2, 3).error().code == Errc::invalid_argument);
}

TEST_CASE("a seal over a new master key opens with the same secret, whichever the method", "[seal]") {
  const auto master = new_master_key();
  const auto next = new_master_key();
  SECTION("passphrase") {
    const SealRecord record = must(seal_with_passphrase(master, "correct horse battery staple", kFast));
    CHECK(seal_key_from_passphrase(record, "correct horse battery stapler").error().code == Errc::wrong_secret);
    const auto seal_key = must(seal_key_from_passphrase(record, "correct horse battery staple"));
    CHECK(text(must(open_seal(record, seal_key))) == text(master));
    const SealRecord resealed = must(SealRecord::from_json(must(reseal(record, seal_key, next)).to_json()));
    CHECK(resealed.salt == record.salt);
    CHECK(text(must(unseal_with_passphrase(resealed, "correct horse battery staple"))) == text(next));
  }
  SECTION("key file") {
    test::TempDir dir;
    auto [record, contents] = must(seal_with_key_file(master));
    test::write_file(dir.path("master.key"), contents);
    REQUIRE(::chmod(dir.path("master.key").c_str(), 0600) == 0);
    const auto seal_key = must(seal_key_from_key_file(record, dir.path("master.key")));
    const SealRecord resealed = must(reseal(record, seal_key, next));
    CHECK(text(must(unseal_with_key_file(resealed, dir.path("master.key")))) == text(next));
  }
  SECTION("shares") {
    auto [record, shares] = must(seal_with_shares(master, 5, 3));
    const std::vector<std::string> two(shares.begin(), shares.begin() + 2);
    CHECK(seal_key_from_shares(record, two).error().code == Errc::wrong_secret);
    const std::vector<std::string> three(shares.begin(), shares.begin() + 3);
    const auto seal_key = must(seal_key_from_shares(record, three));
    const SealRecord resealed = must(reseal(record, seal_key, next));
    CHECK(resealed.threshold == 3);
    const std::vector<std::string> other_three(shares.begin() + 2, shares.end());
    CHECK(text(must(unseal_with_shares(resealed, other_three))) == text(next));
  }
  SECTION("not another seal's key") {
    const SealRecord record = must(seal_with_passphrase(master, "correct horse battery staple", kFast));
    const SealRecord other = must(seal_with_passphrase(master, "another long passphrase", kFast));
    const auto other_key = must(seal_key_from_passphrase(other, "another long passphrase"));
    CHECK(reseal(record, other_key, next).error().code == Errc::wrong_secret);
  }
}
