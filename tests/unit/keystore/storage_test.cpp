// SqliteStorage against a real SQLite file.
#include <catch2/catch.hpp>

#include <sqlite3.h>
#include <sys/stat.h>

#include "mailkms/keystore/sqlite_storage.hpp"
#include "test_support.hpp"

using namespace mailkms;
using namespace mailkms::keystore;
using test::must;

namespace {

std::unique_ptr<SqliteStorage> open_db(const std::filesystem::path& path) {
  return must(SqliteStorage::open(path, {.create = true}));
}

}  // namespace

TEST_CASE("values go in, come out, and stay after reopening", "[storage]") {
  test::TempDir dir;
  const auto path = dir.path("keystore.db");
  {
    auto db = open_db(path);
    must(db->put("users/alice@example.org", "alice"));
    must(db->put("users/bob@example.org", std::string("b\0b", 3)));
    must(db->put("users/alice@example.org", "alice v2"));
    CHECK(*must(db->get("users/alice@example.org")) == "alice v2");
    CHECK(*must(db->get("users/bob@example.org")) == std::string("b\0b", 3));
    CHECK_FALSE(must(db->get("users/carol@example.org")));
    must(db->remove("users/bob@example.org"));
    must(db->remove("users/nobody"));  // not an error
  }
  auto db = must(SqliteStorage::open(path, {}));
  CHECK(*must(db->get("users/alice@example.org")) == "alice v2");
  CHECK_FALSE(must(db->get("users/bob@example.org")));
  CHECK(db->schema_version() == SqliteStorage::current_schema_version());
}

TEST_CASE("the database file is created private", "[storage]") {
  test::TempDir dir;
  const auto path = dir.path("keystore.db");
  auto db = open_db(path);
  must(db->put("k", "v"));
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
}

TEST_CASE("opening a missing database without create fails clearly", "[storage]") {
  test::TempDir dir;
  const auto r = SqliteStorage::open(dir.path("absent.db"), {});
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::storage_failed);
}

TEST_CASE("scan lists a prefix in key order, in pages", "[storage]") {
  test::TempDir dir;
  auto db = open_db(dir.path("keystore.db"));
  for (const char* key : {"a/1", "a/3", "a/2", "b/1", "a", "a0"}) must(db->put(key, key));
  must(db->put(std::string("\xff\xff", 2), "top"));
  const auto all = must(db->scan("a/", {}, 100));
  REQUIRE(all.size() == 3);
  CHECK(all[0].first == "a/1");
  CHECK(all[2].first == "a/3");
  const auto page = must(db->scan("a/", "a/1", 1));
  REQUIRE(page.size() == 1);
  CHECK(page[0].first == "a/2");
  CHECK(must(db->scan(std::string("\xff", 1), {}, 10)).size() == 1);
  CHECK(must(db->scan("", {}, 100)).size() == 7);
}

TEST_CASE("a transaction lands whole or not at all, and nests", "[storage]") {
  test::TempDir dir;
  auto db = open_db(dir.path("keystore.db"));
  const Status failed = db->transaction([&]() -> Status {
    must(db->put("x", "1"));
    must(db->put("y", "2"));
    return make_error(Errc::invalid_argument, "changed my mind");
  });
  REQUIRE_FALSE(failed);
  CHECK(failed.error().message == "changed my mind");
  CHECK_FALSE(must(db->get("x")));
  CHECK_FALSE(must(db->get("y")));

  must(db->transaction([&]() -> Status {
    must(db->put("outer", "kept"));
    const Status inner = db->transaction([&]() -> Status {
      must(db->put("inner", "undone"));
      return make_error(Errc::invalid_argument, "inner fails");
    });
    CHECK_FALSE(inner);
    return Ok{};
  }));
  CHECK(*must(db->get("outer")) == "kept");
  CHECK_FALSE(must(db->get("inner")));
}

TEST_CASE("a transaction that throws is rolled back, and the next one commits", "[storage]") {
  test::TempDir dir;
  auto db = open_db(dir.path("keystore.db"));
  const auto throws_inside = [&](bool nested) {
    return db->transaction([&]() -> Status {
      must(db->put("half", "written"));
      if (!nested) throw std::runtime_error("a stored row that does not parse");
      return db->transaction([&]() -> Status { throw std::runtime_error("deeper"); });
    });
  };
  CHECK_THROWS_WITH(throws_inside(false), "a stored row that does not parse");
  CHECK_THROWS_WITH(throws_inside(true), "deeper");
  CHECK_FALSE(must(db->get("half")));

  must(db->transaction([&]() -> Status { return db->put("after", "committed"); }));
  // Committed for everyone, not a savepoint inside a transaction left open.
  auto other = open_db(dir.path("keystore.db"));
  CHECK(must(other->get("after")) == std::optional<std::string>("committed"));
  CHECK_FALSE(must(other->get("half")));
}

TEST_CASE("a database written by a newer mailkms is refused, not damaged", "[storage]") {
  test::TempDir dir;
  const auto path = dir.path("keystore.db");
  { auto db = open_db(path); }
  sqlite3* raw = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &raw) == SQLITE_OK);
  REQUIRE(sqlite3_exec(raw, "PRAGMA user_version = 999", nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(raw);
  const auto r = SqliteStorage::open(path, {});
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::storage_failed);
  CHECK(r.error().message.find("newer") != std::string::npos);
}
