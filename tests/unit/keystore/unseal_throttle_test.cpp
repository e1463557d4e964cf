// A wrong unseal secret slows the next attempt of whoever sent it, on the
// service's clock: tested by moving that clock, not by waiting.
#include <catch2/catch.hpp>

#include "mailkms/keystore/seal.hpp"
#include "mailkms/keystore/service.hpp"
#include "keystore_fixture.hpp"
#include "test_support.hpp"

using namespace mailkms;
using namespace mailkms::keystore;
using test::must;
using namespace std::chrono_literals;

namespace {

constexpr std::string_view kPassphrase = "the keystore's long passphrase";

// A keystore made and closed, then opened sealed on `clock`.
std::unique_ptr<KeystoreService> sealed_keystore(const test::TestDatabase& database, Clock clock) {
  KeystoreService::Policies policies;
  policies.admins.password_kdf = {1 << 10, 8, 1};
  auto master = new_master_key();
  const auto seal = must(seal_with_passphrase(master, kPassphrase, {1 << 10, 8, 1}));
  must(KeystoreService::initialize(database.location(), test::context(), seal, std::move(master), "carol",
                                   "carol's long password", {}, policies));
  policies.clock = std::move(clock);
  return must(KeystoreService::open(database.location(), test::context(), {}, std::move(policies)));
}

}  // namespace

TEST_CASE("each wrong unseal secret doubles that peer's wait, and no one else's", "[keystore][seal]") {
  test::TempDir dir;
  const test::TestDatabase database(dir);
  test::ManualClock time;
  auto service = sealed_keystore(database, time.clock());
  const Caller guesser{4242, 4242, 7};
  const Caller administrator{1000, 1000, 8};
  const auto unseal = [&](const Caller& who, std::string_view passphrase) {
    return service->handle(who, {1, "unseal", {{"passphrase", passphrase}}});
  };
  const auto too_soon = [&](const Caller& who) {
    const auto refused = unseal(who, kPassphrase);
    return !refused && refused.error().code == Errc::permission_denied &&
           refused.error().message.find("too many wrong attempts") != std::string::npos;
  };

  for (int failures = 1; failures <= 7; ++failures) {
    const auto wrong = unseal(guesser, "not the passphrase");
    REQUIRE_FALSE(wrong);
    CHECK(wrong.error().code == Errc::wrong_secret);
    const auto wait = std::chrono::seconds(std::min(60, 1 << std::min(failures, 6)));
    CHECK(too_soon(guesser));
    time.advance(wait - 1s);
    CHECK(too_soon(guesser));
    time.advance(1s);
  }
  const auto wrong = unseal(guesser, "not the passphrase");
  REQUIRE_FALSE(wrong);
  CHECK(too_soon(guesser));

  // The administrator, guessing nothing, is not held up by the guesser.
  CHECK(must(unseal(administrator, kPassphrase))["sealed"] == false);
  CHECK(must(service->handle(administrator, {2, "status", nlohmann::json::object()}))["sealed"] == false);
}
