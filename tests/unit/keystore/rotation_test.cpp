// Rotating the master key over the real SQLite storage: everything reads
// as before under the new key, what was stored before the rotation is
// refused, the same unseal secret opens the new key, and a storage failure
// at any write of the rotation leaves the old key in use and the database
// as it was.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <limits>
#include <map>
#include <thread>

#include "mailkms/keystore/audit.hpp"
#include "mailkms/keystore/authenticated_storage.hpp"
#include "mailkms/keystore/barrier.hpp"
#include "mailkms/keystore/rotation.hpp"
#include "mailkms/keystore/seal.hpp"
#include "mailkms/keystore/service.hpp"
#include "test_database.hpp"
#include "test_support.hpp"

using namespace mailkms;
using namespace mailkms::keystore;
using test::must;

namespace {

constexpr ScryptParameters kFast{1 << 10, 8, 1};  // the mechanism, not the cost
constexpr std::string_view kPassphrase = "the unseal passphrase of this keystore";

std::string text(const smime::SecretBytes& s) { return std::string(reinterpret_cast<const char*>(s.data()), s.size()); }
smime::SecretBytes copy_of(const smime::SecretBytes& s) { return smime::SecretBytes(text(s)); }

// The real storage, with a failure where a test wants one: the Nth put, or
// the end of the outermost transaction (as a commit that fails).
class FailingStorage final : public Storage {
 public:
  explicit FailingStorage(Storage& inner) : inner_(inner) {}

  std::size_t puts = 0;
  std::size_t fail_put = 0;  // fail the put with this number (counting from 1); 0: none
  bool fail_at_commit = false;
  std::size_t manifest_reads = 0;

  Result<std::optional<std::string>> get(std::string_view key) override {
    if (key == "core/manifest") ++manifest_reads;
    return inner_.get(key);
  }
  Status put(std::string_view key, std::string_view value) override {
    if (++puts == fail_put) return make_error(Errc::storage_failed, "injected: write " + std::to_string(puts) + " fails");
    return inner_.put(key, value);
  }
  Status remove(std::string_view key) override { return inner_.remove(key); }
  Result<std::vector<std::pair<std::string, std::string>>> scan(std::string_view prefix, std::string_view after,
                                                               std::size_t limit) override {
    return inner_.scan(prefix, after, limit);
  }
  Status transaction(const std::function<Status()>& work) override {
    const bool outermost = depth_ == 0;
    ++depth_;
    Status result = inner_.transaction([&]() -> Status {
      Status done = work();
      if (done && outermost && fail_at_commit) return make_error(Errc::storage_failed, "injected: the commit fails");
      return done;
    });
    --depth_;
    return result;
  }

 private:
  Storage& inner_;
  int depth_ = 0;
};

// The keystore's layers over one database, unsealed, with a row of each
// kind: tracked, authenticated, barrier records with and without a tag.
struct Keystore {
  test::TempDir dir;
  test::TestDatabase database{dir};
  std::unique_ptr<Storage> rows_below = database.open();
  FailingStorage failing{*rows_below};
  AuthenticatedStorage rows{failing};
  Barrier barrier{rows};
  AuditLog audit{rows, barrier};
  smime::SecretBytes master = new_master_key();
  SealRecord seal = must(seal_with_passphrase(master, kPassphrase, kFast));

  Keystore() {
    must(rows.put("core/seal", seal.to_json()));
    must(rows.unlock(master));
    must(barrier.unseal(copy_of(master)));
    must(rows.adopt_unauthenticated_rows());
    must(audit.append({"test", "init", "keystore", "ok", ""}));
    must(rows.put("admins/carol", R"({"name":"carol"})"));
    must(rows.put("sessions/0123", R"({"admin":"carol"})"));
    must(rows.put("users/alice@example.org", R"({"address":"alice@example.org"})"));
    must(barrier.put("keys/alice@example.org/enc-01", "alice's private key"));
    must(barrier.put("token/abcd", "alice's token"));
    must(audit.append({"admin:carol", "user-add", "alice@example.org", "ok", ""}));
  }

  // Every row as stored, by key.
  std::map<std::string, std::string> raw() {
    std::map<std::string, std::string> all;
    for (auto& [key, value] : must(rows_below->scan("", {}, std::numeric_limits<std::size_t>::max()))) all.emplace(std::move(key), std::move(value));
    return all;
  }
  std::string opened(std::string_view key) { return text(must(barrier.get(key)).value()); }
  void check_everything_reads() {
    CHECK(must(rows.get("admins/carol")) == R"({"name":"carol"})");
    CHECK(must(rows.get("sessions/0123")) == R"({"admin":"carol"})");
    CHECK(must(rows.get("users/alice@example.org")) == R"({"address":"alice@example.org"})");
    CHECK(opened("keys/alice@example.org/enc-01") == "alice's private key");
    CHECK(opened("token/abcd") == "alice's token");
    CHECK(must(audit.verify()).intact);
  }
  Result<RotationOutcome> rotate(const smime::SecretBytes& new_master) {
    const SealRecord stored = must(SealRecord::from_json(must(rows_below->get("core/seal")).value()));
    const auto seal_key = must(seal_key_from_passphrase(stored, kPassphrase));
    return rotate_master_key(rows, barrier, audit, must(reseal(stored, seal_key, new_master)), new_master,
                             "admin:carol");
  }
};

}  // namespace

TEST_CASE("a rotation seals and tags everything again under a new key, and copies from before it are refused",
          "[rotation]") {
  Keystore k;
  const auto before = k.raw();
  CHECK(must(key_generation(k.rows)).number == 1);
  const auto new_master = new_master_key();
  const RotationOutcome outcome = must(k.rotate(new_master));
  CHECK(outcome.generation.number == 2);
  CHECK(outcome.resealed == 3);  // alice's key, her token, the audit head
  CHECK(outcome.left == 0);
  k.check_everything_reads();
  const KeyGeneration generation = must(key_generation(k.rows));
  CHECK(generation.number == 2);
  CHECK(generation.rotated >= std::time(nullptr) - 60);

  // Audited: who and which generation, never key material.
  const auto records = must(k.audit.read(0, 100));
  const AuditRecord& last = records.back();
  CHECK(last.event.actor == "admin:carol");
  CHECK(last.event.action == "rekey");
  CHECK(last.event.detail.starts_with("generation 2; 3 barrier record(s) sealed again, "));
  for (const auto& r : records) {
    CHECK(r.event.detail.find(text(k.master)) == std::string::npos);
    CHECK(r.event.detail.find(text(new_master)) == std::string::npos);
  }

  // Every row but the audit records (hash-chained, not secret) changed.
  const auto after = k.raw();
  for (const auto& [key, value] : before) {
    INFO(key);
    if (key.starts_with("audit/")) {
      CHECK(after.at(key) == value);
    } else {
      CHECK(after.at(key) != value);
    }
  }

  SECTION("the same passphrase opens the new key, and only it, after a restart") {
    const SealRecord stored = must(SealRecord::from_json(after.at("core/seal")));
    auto master = must(unseal_with_passphrase(stored, kPassphrase));
    CHECK(text(master) == text(new_master));
    CHECK(unseal_with_passphrase(stored, "not the unseal passphrase").error().code == Errc::wrong_secret);
    AuthenticatedStorage rows{*k.rows_below};
    Barrier barrier{rows};
    must(rows.unlock(master));
    must(barrier.unseal(std::move(master)));
    CHECK(must(rows.get("admins/carol")) == R"({"name":"carol"})");
    CHECK(text(must(barrier.get("keys/alice@example.org/enc-01")).value()) == "alice's private key");
  }
  SECTION("rows copied from before the rotation are refused") {
    const auto refused = [](auto read) { return !read && read.error().code == Errc::corrupt; };
    // Each row, and what reads it.
    const std::vector<std::pair<std::string, std::function<bool()>>> copies{
        {"keys/alice@example.org/enc-01", [&] { return refused(k.barrier.get("keys/alice@example.org/enc-01")); }},
        {"token/abcd", [&] { return refused(k.barrier.get("token/abcd")); }},
        {"core/audit-head", [&] { return refused(k.audit.append({"test", "after", "keystore", "ok", ""})); }},
        {"admins/carol", [&] { return refused(k.rows.get("admins/carol")); }},
        {"sessions/0123", [&] { return refused(k.rows.get("sessions/0123")); }},
        {"users/alice@example.org", [&] { return refused(k.rows.get("users/alice@example.org")); }},
        {"core/manifest", [&] { return refused(k.rows.get("admins/carol")); }},
    };
    for (const auto& [key, read_is_refused] : copies) {
      INFO(key);
      must(k.rows_below->put(key, before.at(key)));
      CHECK(read_is_refused());
      must(k.rows_below->put(key, after.at(key)));
    }
    k.check_everything_reads();
  }
  SECTION("the seal from before the rotation opens only the old key, which opens nothing now") {
    const SealRecord old_seal = must(SealRecord::from_json(before.at("core/seal")));
    const auto old_master = must(unseal_with_passphrase(old_seal, kPassphrase));
    AuthenticatedStorage rows{*k.rows_below};
    Barrier barrier{rows};
    must(rows.unlock(old_master));
    must(barrier.unseal(copy_of(old_master)));
    CHECK(rows.get("admins/carol").error().code == Errc::corrupt);
    CHECK(barrier.get("keys/alice@example.org/enc-01").error().code == Errc::corrupt);
  }
}

TEST_CASE("rows that failed their check before a rotation are not made valid by it", "[rotation]") {
  Keystore k;
  const std::string first_session = must(k.rows_below->get("sessions/0123")).value();
  must(k.rows.put("sessions/0123", R"({"admin":"carol","ended":true})"));
  // A database writer's work: an inserted session, a changed user, an
  // older copy of a session put back.
  must(k.rows_below->put("sessions/forged", R"({"admin":"carol"})"));
  must(k.rows_below->put("users/alice@example.org", R"(mkms-auth-1 0 00 {"address":"mallory@example.org"})"));
  must(k.rows_below->put("sessions/0123", first_session));
  (void)k.rows.take_tamper_reports();

  const RotationOutcome outcome = must(k.rotate(new_master_key()));
  CHECK(outcome.left == 3);
  CHECK(must(k.audit.read(0, 100)).back().event.detail.ends_with(
      ", 3 row(s) that had failed their check left as they were"));
  CHECK(k.rows_below->get("sessions/forged").value() == R"({"admin":"carol"})");
  CHECK_FALSE(must(k.rows.get("sessions/forged")).has_value());
  CHECK(k.rows.get("users/alice@example.org").error().code == Errc::corrupt);
  CHECK(k.rows.get("sessions/0123").error().code == Errc::corrupt);
  CHECK(must(k.rows.get("admins/carol")) == R"({"name":"carol"})");
}

TEST_CASE("a storage failure at any write of a rotation, or at its commit, leaves the old key in use",
          "[rotation]") {
  Keystore k;
  const auto before = k.raw();
  std::size_t failures = 0;
  for (std::size_t n = 1;; ++n) {
    const auto new_master = new_master_key();
    k.failing.puts = 0;
    k.failing.fail_put = n;
    const auto outcome = k.rotate(new_master);
    k.failing.fail_put = 0;
    if (outcome) break;
    INFO("the rotation failed at write " << n);
    ++failures;
    CHECK(outcome.error().message.find("injected") != std::string::npos);
    CHECK(k.raw() == before);
    k.check_everything_reads();
    CHECK(must(key_generation(k.rows)).number == 1);
  }
  CHECK(failures >= 10);  // every row of each kind, the seal, the generation and the audit record

  // A commit that fails after every write, and after the keys were swapped.
  Keystore c;
  const auto untouched = c.raw();
  c.failing.fail_at_commit = true;
  const auto new_master = new_master_key();
  const auto outcome = c.rotate(new_master);
  REQUIRE_FALSE(outcome);
  CHECK(outcome.error().message == "injected: the commit fails");
  c.failing.fail_at_commit = false;
  CHECK(c.raw() == untouched);
  c.check_everything_reads();
  must(c.audit.append({"test", "after", "keystore", "ok", ""}));  // written under the old key, readable by it
  c.check_everything_reads();
  const SealRecord stored = must(SealRecord::from_json(c.raw().at("core/seal")));
  CHECK(text(must(unseal_with_passphrase(stored, kPassphrase))) == text(c.master));
}

TEST_CASE("the key is checked once per outermost transaction, not once per nested one", "[rotation]") {
  Keystore k;
  k.failing.manifest_reads = 0;
  must(k.rows.transaction([&]() -> Status {
    for (int i = 0; i < 5; ++i) MAILKMS_CHECK(k.rows.transaction([]() -> Status { return Ok{}; }));
    return Ok{};
  }));
  CHECK(k.failing.manifest_reads == 1);
  // An audit batch is one transaction with one nested transaction a record.
  k.failing.manifest_reads = 0;
  must(k.rows.transaction([]() -> Status { return Ok{}; }));
  CHECK(k.failing.manifest_reads == 1);
}

TEST_CASE("rekey needs an administrator's session and the unseal passphrase again", "[rotation]") {
  test::TempDir dir;
  const test::TestDatabase database(dir);
  KeystoreService::Policies policies;
  policies.admins.password_kdf = kFast;
  auto master = new_master_key();
  const auto seal = must(seal_with_passphrase(master, kPassphrase, kFast));
  auto service = must(KeystoreService::initialize(database.location(), test::context(), seal, std::move(master),
                                                  "carol", "carol's long password", {}, policies));
  const Caller administrator{1000, 1000, 1};
  std::uint64_t id = 0;
  const auto call = [&](const std::string& op, const nlohmann::json& params) {
    return service->handle(administrator, {++id, op, params});
  };
  const std::string session = must(call("login", {{"name", "carol"}, {"password", "carol's long password"}}))["token"];
  CHECK(must(call("status", nlohmann::json::object()))["key_generation"] == 1);

  const auto anonymous = call("rekey", {{"passphrase", std::string(kPassphrase)}});
  REQUIRE_FALSE(anonymous);
  CHECK(anonymous.error().code == Errc::permission_denied);

  const auto rotated = must(call("rekey", {{"session", session}, {"passphrase", std::string(kPassphrase)}}));
  CHECK(rotated["generation"] == 2);
  CHECK(rotated["left"] == 0);
  const auto status = must(call("status", nlohmann::json::object()));
  CHECK(status["key_generation"] == 2);
  CHECK(status["seal"] == "passphrase");
  CHECK(must(call("user-list", {{"session", session}})).is_array());  // the session outlives the rotation
  must(call("login", {{"name", "carol"}, {"password", "carol's long password"}}));

  const auto wrong = call("rekey", {{"session", session}, {"passphrase", "not the unseal passphrase"}});
  REQUIRE_FALSE(wrong);
  CHECK(wrong.error().code == Errc::wrong_secret);
  // The next try waits, as an unseal's would: a session is no faster way to guess.
  const auto again = call("rekey", {{"session", session}, {"passphrase", std::string(kPassphrase)}});
  REQUIRE_FALSE(again);
  CHECK(again.error().message.find("too many wrong attempts") != std::string::npos);
  CHECK(must(call("status", nlohmann::json::object()))["key_generation"] == 2);
  const auto refusal = must(service->audit().read(0, 1000)).back();
  CHECK(refusal.event.actor == "admin:carol");
  CHECK(refusal.event.action == "rekey");
  CHECK(refusal.event.outcome == "refused");
}

TEST_CASE("a rotation is not starved by requests that never pause", "[rotation]") {
  test::TempDir dir;
  const test::TestDatabase database(dir);
  KeystoreService::Policies policies;
  policies.admins.password_kdf = kFast;
  auto master = new_master_key();
  const auto seal = must(seal_with_passphrase(master, kPassphrase, kFast));
  auto service = must(KeystoreService::initialize(database.location(), test::context(), seal, std::move(master),
                                                  "carol", "carol's long password", {}, policies));
  const Caller administrator{1000, 1000, 1};
  const std::string session =
      must(service->handle(administrator, {1, "login", {{"name", "carol"}, {"password", "carol's long password"}}}))["token"];

  // Four clients asking for the status back to back, until the rotation is
  // done or, at the latest, for ten seconds.
  std::atomic<bool> rotated{false};
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  std::vector<std::thread> clients;
  clients.reserve(4);
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back([&] {
      while (!rotated && std::chrono::steady_clock::now() < give_up) {
        (void)service->handle(administrator, {2, "status", nlohmann::json::object()});
      }
    });
  }
  const auto rekey = service->handle(administrator, {3, "rekey", {{"session", session}, {"passphrase", std::string(kPassphrase)}}});
  const bool in_time = std::chrono::steady_clock::now() < give_up;
  rotated = true;
  for (auto& c : clients) c.join();
  CHECK(must(rekey)["generation"] == 2);
  CHECK(in_time);
}
