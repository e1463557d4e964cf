// The rows that grant authority, against a database writer without the
// master key: inserted, changed, moved, deleted, put back older; and the
// adoption of a database written before rows were authenticated.
#include <catch2/catch.hpp>

#include "mailkms/keystore/authenticated_storage.hpp"
#include "mailkms/keystore/seal.hpp"
#include "test_database.hpp"
#include "test_support.hpp"

using namespace mailkms;
using namespace mailkms::keystore;
using test::must;

namespace {

struct Guarded {
  test::TempDir dir;
  test::TestDatabase database{dir};
  std::unique_ptr<Storage> raw = database.open();
  AuthenticatedStorage guarded{*raw};
  smime::SecretBytes master = new_master_key();

  Guarded() { must(guarded.unlock(master)); }
  std::string raw_row(std::string_view key) { return must(raw->get(key)).value(); }
};

bool reported(AuthenticatedStorage& s, std::string_view key, std::string_view problem) {
  for (const auto& r : s.take_tamper_reports()) {
    if (r.key == key && r.problem.find(problem) != std::string::npos) return true;
  }
  return false;
}

}  // namespace

TEST_CASE("rows written before authentication are adopted once, a removed manifest is not made again",
          "[authenticated-storage]") {
  Guarded g;
  must(g.raw->put("admins/carol", R"({"name":"carol"})"));
  must(g.raw->put("users/alice@example.org", R"({"address":"alice@example.org"})"));
  must(g.raw->put("audit/00000000000000000001", "{}"));
  CHECK_FALSE(must(g.guarded.has_manifest()));
  CHECK(must(g.guarded.adopt_unauthenticated_rows()) == 2);
  CHECK(must(g.guarded.has_manifest()));
  CHECK(must(g.guarded.get("admins/carol")) == R"({"name":"carol"})");
  CHECK(must(g.guarded.get("users/alice@example.org")) == R"({"address":"alice@example.org"})");
  CHECK(g.raw_row("admins/carol").starts_with("mkms-auth-1 "));
  CHECK(g.raw_row("audit/00000000000000000001") == "{}");  // the audit log is hash-chained on its own
  CHECK(must(g.guarded.adopt_unauthenticated_rows()) == 0);

  // A writer removes the manifest to have a forged row adopted with the rest.
  must(g.raw->remove("core/manifest"));
  must(g.raw->put("sessions/forged", R"({"admin":"carol","expires":4102444800})"));
  const auto again = g.guarded.adopt_unauthenticated_rows();
  REQUIRE_FALSE(again);
  CHECK(again.error().code == Errc::corrupt);
  CHECK(again.error().message.find("the manifest was removed") != std::string::npos);
}

TEST_CASE("an inserted row is ignored, and a changed, moved, deleted or older one refused", "[authenticated-storage]") {
  Guarded g;
  must(g.guarded.adopt_unauthenticated_rows());
  must(g.guarded.put("sessions/a", "first"));
  const std::string first = g.raw_row("sessions/a");
  must(g.guarded.put("sessions/a", "second"));
  must(g.guarded.put("sessions/b", "other"));

  SECTION("inserted") {
    must(g.raw->put("sessions/c", "forged"));
    CHECK_FALSE(must(g.guarded.get("sessions/c")).has_value());
    CHECK(reported(g.guarded, "sessions/c", "inserted"));
    const auto rows = must(g.guarded.scan("sessions/"));
    REQUIRE(rows.size() == 2);
    CHECK(rows[0].second == "second");
    CHECK(rows[1].second == "other");
  }
  SECTION("an older copy put back") {
    must(g.raw->put("sessions/a", first));
    const auto got = g.guarded.get("sessions/a");
    REQUIRE_FALSE(got);
    CHECK(got.error().code == Errc::corrupt);
    CHECK(reported(g.guarded, "sessions/a", "older copy"));
    CHECK_FALSE(g.guarded.scan("sessions/"));
  }
  SECTION("deleted") {
    must(g.raw->remove("sessions/b"));
    CHECK_FALSE(g.guarded.get("sessions/b"));
    CHECK_FALSE(g.guarded.scan("sessions/"));
    CHECK(reported(g.guarded, "sessions/b", "deleted"));
  }
  SECTION("changed, or moved to another key") {
    std::string changed = g.raw_row("sessions/a");
    changed.back() = 'X';
    must(g.raw->put("sessions/a", changed));
    CHECK_FALSE(g.guarded.get("sessions/a"));
    must(g.raw->put("sessions/a", g.raw_row("sessions/b")));
    CHECK_FALSE(g.guarded.get("sessions/a"));
    CHECK(reported(g.guarded, "sessions/a", "changed"));
  }
  SECTION("the whole list of a collection put back older") {
    const std::string list = g.raw_row("manifest/sessions");
    must(g.guarded.remove("sessions/b"));
    must(g.raw->put("manifest/sessions", list));
    CHECK_FALSE(g.guarded.get("sessions/a"));
  }
  SECTION("removed through the guard, it is gone for good") {
    must(g.guarded.remove("sessions/b"));
    CHECK_FALSE(must(g.guarded.get("sessions/b")).has_value());
    CHECK(must(g.guarded.scan("sessions/")).size() == 1);
  }
}

TEST_CASE("a revocation deleted is seen by a scan of any page that should hold it", "[authenticated-storage]") {
  Guarded g;
  must(g.guarded.adopt_unauthenticated_rows());
  for (int i = 10; i < 40; ++i) must(g.guarded.put("revoked/issuing/" + std::to_string(i), "1700000000:1"));
  CHECK(must(g.guarded.scan("revoked/issuing/", "revoked/issuing/19", 10)).size() == 10);
  must(g.raw->remove("revoked/issuing/25"));
  CHECK(must(g.guarded.scan("revoked/issuing/", {}, 10)).size() == 10);  // 10-19: the page lacks nothing
  CHECK_FALSE(g.guarded.scan("revoked/issuing/", "revoked/issuing/19", 10));
  CHECK_FALSE(g.guarded.scan("revoked/issuing/", "revoked/issuing/20"));
  CHECK(must(g.guarded.scan("revoked/issuing/", "revoked/issuing/30")).size() == 9);
  CHECK_FALSE(g.guarded.scan("revoked/issuing/"));
  CHECK(reported(g.guarded, "revoked/issuing/25", "deleted"));
}

TEST_CASE("authenticated rows need the master key, other rows pass through", "[authenticated-storage]") {
  Guarded g;
  must(g.guarded.adopt_unauthenticated_rows());
  must(g.guarded.put("certs/01", "certificate"));
  must(g.guarded.put("audit/00000000000000000001", "record"));
  CHECK(g.raw_row("audit/00000000000000000001") == "record");

  // Another master key: nothing of this keystore reads.
  AuthenticatedStorage other(*g.raw);
  must(other.unlock(new_master_key()));
  CHECK_FALSE(other.get("certs/01"));

  g.guarded.lock();
  CHECK(g.guarded.get("certs/01").error().code == Errc::sealed);
  CHECK(g.guarded.put("admins/x", "{}").error().code == Errc::sealed);
  CHECK(must(g.guarded.get("audit/00000000000000000001")) == "record");
  CHECK(g.guarded.scan("").error().code == Errc::invalid_argument);  // would mix guarded rows with others
}
