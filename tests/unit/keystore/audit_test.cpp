// The audit log's hash chain against every kind of tampering.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "mailkms/keystore/audit.hpp"
#include "mailkms/keystore/audit_checkpoint.hpp"
#include "mailkms/keystore/seal.hpp"
#include "mailkms/keystore/sqlite_storage.hpp"
#include "keystore_fixture.hpp"
#include "test_support.hpp"

using namespace mailkms;
using namespace mailkms::keystore;
using test::must;

namespace {

struct Fixture : test::KeystoreFixture {
  AuditLog& log = audit;
  Fixture() {
    for (int i = 1; i <= 5; ++i) {
      must(log.append({"admin:carol", "issue", "user" + std::to_string(i) + "@example.org", "ok", "encryption certificate"}));
    }
  }
  std::string raw(int sequence) {
    return *must(storage->get("audit/" + std::string(20 - std::to_string(sequence).size(), '0') + std::to_string(sequence)));
  }
  void put_raw(int sequence, const std::string& value) {
    must(storage->put("audit/" + std::string(20 - std::to_string(sequence).size(), '0') + std::to_string(sequence), value));
  }
  void remove_raw(int sequence) {
    must(storage->remove("audit/" + std::string(20 - std::to_string(sequence).size(), '0') + std::to_string(sequence)));
  }
};

}  // namespace

TEST_CASE("an untouched log verifies and reads back in order", "[audit]") {
  Fixture f;
  const auto v = must(f.log.verify());
  CHECK(v.intact);
  CHECK(v.records == 5);
  const auto records = must(f.log.read(0, 100));
  REQUIRE(records.size() == 5);
  CHECK(records[0].sequence == 1);
  CHECK(records[0].previous_hash.empty());
  CHECK(records[1].previous_hash == records[0].hash);
  CHECK(records[4].event.subject == "user5@example.org");
  CHECK(must(f.log.read(3, 100)).size() == 2);
}

TEST_CASE("tampering of every kind is found", "[audit]") {
  Fixture f;
  SECTION("an edited record") {
    auto j = nlohmann::json::parse(f.raw(3));
    j["outcome"] = "denied";
    f.put_raw(3, j.dump());
    const auto v = must(f.log.verify());
    CHECK_FALSE(v.intact);
    CHECK(v.problem.find("record 3 was changed") != std::string::npos);
  }
  SECTION("an edited record with a forged hash") {
    auto j = nlohmann::json::parse(f.raw(3));
    j["subject"] = "someone-else@example.org";
    j["hash"] = "0000";
    f.put_raw(3, j.dump());
    CHECK_FALSE(must(f.log.verify()).intact);
  }
  SECTION("a deleted record in the middle") {
    f.remove_raw(2);
    const auto v = must(f.log.verify());
    CHECK_FALSE(v.intact);
    CHECK(v.problem.find("record 2") != std::string::npos);
  }
  SECTION("an inserted record") {
    f.put_raw(6, f.raw(5));
    CHECK_FALSE(must(f.log.verify()).intact);
  }
  SECTION("the last records cut off") {
    f.remove_raw(5);
    f.remove_raw(4);
    const auto v = must(f.log.verify());
    CHECK_FALSE(v.intact);
    CHECK(v.problem.find("removed from the end") != std::string::npos);
  }
  SECTION("an older head put back: verify says so, and nothing more is appended over history") {
    const std::string head = must(f.storage->get("core/audit-head")).value();
    must(f.log.append({"carol", "admin-add", "erin", "ok", ""}));
    must(f.storage->put("core/audit-head", head));
    const auto v = must(f.log.verify());
    CHECK_FALSE(v.intact);
    CHECK(v.problem.find("an older head was put back") != std::string::npos);
    const auto appended = f.log.append({"carol", "admin-add", "frank", "ok", ""});
    REQUIRE_FALSE(appended);
    CHECK(appended.error().code == Errc::corrupt);
    CHECK(nlohmann::json::parse(f.raw(6)).at("subject") == "erin");
  }
  SECTION("two records swapped") {
    const std::string two = f.raw(2);
    f.put_raw(2, f.raw(4));
    f.put_raw(4, two);
    CHECK_FALSE(must(f.log.verify()).intact);
  }
}

TEST_CASE("an operation that cannot be audited does not happen", "[audit]") {
  Fixture f;
  f.barrier.seal();
  const Status s = f.storage->transaction([&]() -> Status {
    MAILKMS_CHECK(f.storage->put("users/mallory@example.org", "enrolled"));
    return f.log.append({"admin:mallory", "add-user", "mallory@example.org", "ok", ""});
  });
  REQUIRE_FALSE(s);
  CHECK(s.error().code == Errc::sealed);
  CHECK_FALSE(must(f.storage->get("users/mallory@example.org")));
}

TEST_CASE("secrets appear in the log only as fingerprints", "[audit]") {
  const std::string fp = AuditLog::fingerprint("token-4f9a");
  CHECK(fp.rfind("sha256:", 0) == 0);
  CHECK(fp.find("4f9a") == std::string::npos);
  CHECK(fp == AuditLog::fingerprint("token-4f9a"));
}

TEST_CASE("events anyone can cause are recorded a few a window, then counted", "[audit]") {
  Fixture f;
  AuditLimiter limiter(f.log);
  for (int i = 0; i < 1000; ++i) {
    must(limiter.record({"gateway:uid 107", "redeem-token", "sender" + std::to_string(i % 300) + "@flood.example",
                         "ignored", "no token in the reply"}));
  }
  must(limiter.record({"uid 1000", "signing-identity", "", "denied", "not a gateway"}));
  CHECK(must(f.log.verify()).records == 5 + AuditLimiter::kPerWindow + 1);
  CHECK(limiter.counted() == 1000 - AuditLimiter::kPerWindow);

  must(limiter.write_counts(false));  // the window has not ended
  CHECK(must(f.log.verify()).records == 5 + AuditLimiter::kPerWindow + 1);
  must(limiter.write_counts(true));
  const auto records = must(f.log.read(0, 1000));
  REQUIRE(records.size() == 5 + AuditLimiter::kPerWindow + 2);
  const AuditRecord& count = records.back();
  CHECK(count.event.action == "redeem-token");
  CHECK(count.event.outcome == "ignored");
  CHECK(count.event.subject == "300 subject(s)");
  CHECK(count.event.detail.rfind("980 more like this in the window from ", 0) == 0);
  must(limiter.write_counts(true));  // written once
  CHECK(must(f.log.verify()).records == records.size());
}

namespace {

struct CheckpointFixture : Fixture {
  smime::CryptoContextPtr ctx = must(smime::CryptoContext::create({}));
  AuditCheckpoints checkpoints{*storage, barrier, log, ctx};
  std::vector<std::string> logged;
  CheckpointFixture() {
    checkpoints.set_output(dir.path("audit-checkpoints"), [this](const std::string& line) { logged.push_back(line); });
  }
};

}  // namespace

TEST_CASE("a checkpoint signs the head, and a log rolled back is found by it", "[audit]") {
  CheckpointFixture f;
  const auto made = must(f.checkpoints.checkpoint(false));
  REQUIRE(made);
  CHECK(made->sequence == 5);
  CHECK(made->hash == must(f.log.head()).hash);
  CHECK_FALSE(must(f.checkpoints.checkpoint(false)));  // the head did not move
  REQUIRE(f.logged.size() == 1);
  CHECK(f.logged[0] == "audit checkpoint " + made->to_line());
  const auto own = must(f.checkpoints.read_own());
  REQUIRE(own.size() == 1);
  CHECK(own[0].to_line() == made->to_line());
  CHECK(must(f.checkpoints.check(own, 5)).empty());

  SECTION("records cut from the end") {
    CHECK(must(f.checkpoints.check(own, 4)).find("the log ends at record 4, but the checkpoint of record 5") == 0);
  }
  SECTION("the record replaced") {
    f.put_raw(5, f.raw(4));
    CHECK(must(f.checkpoints.check(own, 5)).find("record 5 is not the one the checkpoint of record 5") == 0);
  }
  SECTION("a checkpoint of another time, or of another key") {
    AuditCheckpoint forged = own[0];
    forged.time += 1;
    CHECK(must(f.checkpoints.check({forged}, 5)).find("is not signed by this keystore's audit key") !=
          std::string::npos);
    forged = own[0];
    forged.key = "sha256:" + std::string(64, '0');
    CHECK(must(f.checkpoints.check({forged}, 5)).find("is not signed") != std::string::npos);
  }
  SECTION("lines that are not checkpoints are named") {
    const auto parsed = parse_checkpoints(made->to_line() + "\n{\"audit_checkpoint\":1}\n", 10);
    REQUIRE_FALSE(parsed);
    CHECK(parsed.error().message == "line 2 of the checkpoints is not an audit checkpoint");
  }
}
