// A stored row of the wrong shape, as a bug or someone holding the master
// key could leave it: the request that reads it fails with a corrupt-row
// error naming the row, never an exception; the transaction it was read in
// is rolled back, the next request commits, and the audit log verifies.
#include <catch2/catch.hpp>

#include "mailkms/keystore/service.hpp"
#include "test_database.hpp"
#include "test_support.hpp"

using namespace mailkms;
using namespace mailkms::keystore;
using nlohmann::json;
using test::must;

namespace {

const std::string kAdminPassword = "carol's long password";
const Caller kRoot{0, 0, 1};

struct Fixture {
  test::TempDir dir;
  test::TestDatabase database{dir};
  std::unique_ptr<KeystoreService> service;
  std::string session;

  Fixture() {
    auto master = new_master_key();
    const auto seal = must(seal_with_passphrase(master, "a long enough passphrase", {1 << 10, 8, 1}));
    KeystoreService::Policies policies;
    policies.admins.password_kdf = {1 << 10, 8, 1};
    service = must(KeystoreService::initialize(database.location(), test::context(), seal, std::move(master), "carol",
                                               kAdminPassword, {}, policies));
    must(service->ca().create_root("root", "Our Root", KeyType::ec_p256, 3650, "test"));
    must(service->ca().create_issuing("issuing", "root", "Our Issuing", KeyType::ec_p256, 1825, 1, "test"));
    session = must(call("login", {{"name", "carol"}, {"password", kAdminPassword}}))["token"];
  }

  Result<json> call(const std::string& op, json params) { return service->handle(kRoot, {1, op, std::move(params)}); }
  Result<json> admin(const std::string& op, json params = json::object()) {
    params["session"] = session;
    return call(op, std::move(params));
  }
  // Writes a row as the keystore itself would: tagged, so only its shape is wrong.
  void overwrite(const std::string& key, const std::string& value) { must(service->storage().put(key, value)); }

  // The request failed as a corrupt row named `key`; the next one commits
  // and the audit log still verifies.
  void check_contained(const Result<json>& failed, const std::string& key) {
    REQUIRE_FALSE(failed);
    CHECK(failed.error().code == Errc::corrupt);
    CHECK_THAT(failed.error().message, Catch::Contains(key));
    auto next = admin("user-add", {{"addresses", {"next@example.org"}}});
    INFO((next ? std::string() : std::to_string(static_cast<int>(next.error().code)) + ": " + next.error().message));
    REQUIRE(next);
    const json added = must(std::move(next));  // not inside CHECK, which spells its expression twice
    CHECK(added["added"] == 1);
    CHECK(must(admin("user-show", {{"address", "next@example.org"}}))["address"] == "next@example.org");
    CHECK(admin("audit-verify"));
  }
};

}  // namespace

TEST_CASE("a stored row that is not JSON fails its request, naming the row", "[corrupt-rows]") {
  Fixture f;
  f.overwrite("config/approvals", "{\"recover\": 2");
  f.check_contained(f.admin("approvals-set", {{"task", "revoke"}, {"count", 1}}), "config/approvals");
}

TEST_CASE("an administrator's row that is not an object fails a password change, naming the row", "[corrupt-rows]") {
  Fixture f;
  REQUIRE(f.admin("admin-add", {{"name", "dave"}, {"password", "dave's long password"}}));
  f.overwrite("admins/dave", "[1, 2, 3]");
  f.check_contained(f.admin("admin-passwd", {{"name", "dave"}, {"password", "dave's new long password"}}), "admins/dave");
}

TEST_CASE("a user's row with a field of the wrong type fails the lookup, naming the row", "[corrupt-rows]") {
  Fixture f;
  REQUIRE(f.admin("user-add", {{"addresses", {"alice@example.org"}}}));
  f.overwrite("users/alice@example.org", R"({"address": 5, "enabled": "yes"})");
  f.check_contained(f.admin("user-show", {{"address", "alice@example.org"}}), "users/alice@example.org");
}

TEST_CASE("a request's parameter of the wrong type is refused as such, not taken for a corrupt row", "[corrupt-rows]") {
  Fixture f;
  for (const auto& [op, params] : std::vector<std::pair<std::string, json>>{
           {"ca-create-root", {{"id", "second"}, {"name", 5}}},
           {"user-list", {{"after", json::array()}}},
           {"users-export", {{"password", "a long export password"}, {"addresses", {"a@example.org", 7}}}},
           {"revoke", {{"reason", true}, {"serial", "01"}}}}) {
    const auto refused = f.admin(op, params);
    INFO(op);
    REQUIRE_FALSE(refused);
    CHECK(refused.error().code == Errc::invalid_argument);
  }
  CHECK(f.admin("audit-verify"));
}

TEST_CASE("a field of the wrong type read deep in a request is a corrupt row, not an exception", "[corrupt-rows]") {
  Fixture f;
  f.overwrite("config/approvals", R"({"recover": "two"})");
  f.check_contained(f.admin("approvals-set", {{"task", "revoke"}, {"count", 1}}), "approvals-set");
}
