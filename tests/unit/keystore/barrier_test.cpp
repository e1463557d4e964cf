// The barrier, adversarially (after Vault's barrier tests): flipped bytes,
// swapped rows, another key, nonce reuse.
#include <catch2/catch.hpp>

#include <set>

#include "mailkms/keystore/barrier.hpp"
#include "mailkms/keystore/seal.hpp"
#include "test_database.hpp"
#include "keystore_fixture.hpp"
#include "test_support.hpp"

using namespace mailkms;
using namespace mailkms::keystore;
using test::must;

namespace {

std::string text(const smime::SecretBytes& s) { return std::string(reinterpret_cast<const char*>(s.data()), s.size()); }

using Fixture = test::KeystoreFixture;

}  // namespace

TEST_CASE("sealed, the barrier refuses everything", "[barrier]") {
  test::TempDir dir;
  const test::TestDatabase database(dir);
  auto storage = database.open();
  Barrier barrier(*storage);
  CHECK(barrier.sealed());
  CHECK(barrier.put("keys/alice/1", "secret").error().code == Errc::sealed);
  CHECK(barrier.get("keys/alice/1").error().code == Errc::sealed);
  must(barrier.unseal(new_master_key()));
  must(barrier.put("keys/alice/1", "secret"));
  barrier.seal();
  CHECK(barrier.get("keys/alice/1").error().code == Errc::sealed);
}

TEST_CASE("what goes through the barrier is not in storage in the clear", "[barrier]") {
  Fixture f;
  const std::string secret = "-----BEGIN PRIVATE KEY----- alice's key";
  must(f.barrier.put("keys/alice@example.org/enc-1", secret));
  CHECK(text(*must(f.barrier.get("keys/alice@example.org/enc-1"))) == secret);
  const std::string raw = *must(f.storage->get("keys/alice@example.org/enc-1"));
  CHECK(raw.find("PRIVATE") == std::string::npos);
  CHECK(raw.size() == 1 + 12 + secret.size() + 16);
  CHECK_FALSE(must(f.barrier.get("keys/nobody/1")));
}

TEST_CASE("a flipped byte anywhere in a record is detected", "[barrier]") {
  Fixture f;
  must(f.barrier.put("keys/alice/1", "the private key"));
  const std::string raw = *must(f.storage->get("keys/alice/1"));
  for (std::size_t i = 0; i < raw.size(); ++i) {
    std::string flipped = raw;
    flipped[i] = static_cast<char>(flipped[i] ^ 0x01);
    must(f.storage->put("keys/alice/1", flipped));
    const auto r = f.barrier.get("keys/alice/1");
    INFO("byte " << i);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::corrupt);
  }
}

TEST_CASE("a record moved to another key (another owner) is detected", "[barrier]") {
  Fixture f;
  must(f.barrier.put("keys/alice/1", "alice's key"));
  must(f.barrier.put("keys/mallory/1", "mallory's key"));
  const std::string alice = *must(f.storage->get("keys/alice/1"));
  const std::string mallory = *must(f.storage->get("keys/mallory/1"));
  must(f.storage->put("keys/alice/1", mallory));
  must(f.storage->put("keys/mallory/1", alice));
  CHECK(f.barrier.get("keys/alice/1").error().code == Errc::corrupt);
  CHECK(f.barrier.get("keys/mallory/1").error().code == Errc::corrupt);
}

TEST_CASE("another master key opens nothing", "[barrier]") {
  Fixture f;
  must(f.barrier.put("keys/alice/1", "alice's key"));
  must(f.barrier.unseal(new_master_key()));
  CHECK(f.barrier.get("keys/alice/1").error().code == Errc::corrupt);
}

TEST_CASE("nonces never repeat", "[barrier]") {
  Fixture f;
  std::set<std::string> nonces;
  for (int i = 0; i < 2000; ++i) {
    must(f.barrier.put("k", "same plaintext every time"));
    nonces.insert((*must(f.storage->get("k"))).substr(1, 12));
  }
  CHECK(nonces.size() == 2000);
}
