// The Storage contract against the suite's database (a real SQLite file, or
// a real PostgreSQL server when the suite runs on it), and what is particular
// to each backend.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <thread>

#include "mailkms/keystore/postgres_storage.hpp"
#include "mailkms/keystore/sqlite_storage.hpp"
#include "mailkms/keystore/storage_copy.hpp"
#include "test_database.hpp"
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
  const test::TestDatabase database(dir);
  {
    auto db = database.open();
    must(db->put("users/alice@example.org", "alice"));
    must(db->put("users/bob@example.org", std::string("b\0b", 3)));
    must(db->put("users/alice@example.org", "alice v2"));
    CHECK(*must(db->get("users/alice@example.org")) == "alice v2");
    CHECK(*must(db->get("users/bob@example.org")) == std::string("b\0b", 3));
    CHECK_FALSE(must(db->get("users/carol@example.org")));
    must(db->remove("users/bob@example.org"));
    must(db->remove("users/nobody"));  // not an error
  }
  auto db = database.open();
  CHECK(*must(db->get("users/alice@example.org")) == "alice v2");
  CHECK_FALSE(must(db->get("users/bob@example.org")));
}

TEST_CASE("rows read together come in the order asked, missing ones empty", "[storage]") {
  test::TempDir dir;
  const test::TestDatabase database(dir);
  auto db = database.open();
  must(db->put("a", "1"));
  must(db->put("b", std::string("2\0", 2)));
  using Keys = std::vector<std::string_view>;
  using Rows = std::vector<std::optional<std::string>>;
  CHECK(must(db->read_together(Keys{"b", "missing", "a"})) == Rows{std::string("2\0", 2), std::nullopt, "1"});
  CHECK(must(db->read_together(Keys{"a"})) == Rows{"1"});
  CHECK(must(db->read_together(Keys{"missing", "b"})) == Rows{std::nullopt, std::string("2\0", 2)});
  CHECK(must(db->read_together(Keys{"a", "a", "b", "missing"})) == Rows{"1", "1", std::string("2\0", 2), std::nullopt});
  // Inside a transaction, what it wrote.
  must(db->transaction([&]() -> Status {
    MAILKMS_CHECK(db->put("a", "3"));
    CHECK(must(db->read_together(Keys{"a", "b"})) == Rows{"3", std::string("2\0", 2)});
    return Ok{};
  }));
}

TEST_CASE("the database file is created private", "[storage][sqlite]") {
  test::TempDir dir;
  const auto path = dir.path("keystore.db");
  auto db = open_db(path);
  must(db->put("k", "v"));
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
}

TEST_CASE("opening a missing database without create fails clearly", "[storage][sqlite]") {
  test::TempDir dir;
  const auto r = SqliteStorage::open(dir.path("absent.db"), {});
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::storage_failed);
}

TEST_CASE("scan lists a prefix in key order, in pages", "[storage]") {
  test::TempDir dir;
  const test::TestDatabase database(dir);
  auto db = database.open();
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
  const test::TestDatabase database(dir);
  auto db = database.open();
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
  const test::TestDatabase database(dir);
  auto db = database.open();
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
  auto other = database.open();
  CHECK(must(other->get("after")) == std::optional<std::string>("committed"));
  CHECK_FALSE(must(other->get("half")));
}

TEST_CASE("a database written by a newer mailkms is refused, not damaged", "[storage]") {
  test::TempDir dir;
  const test::TestDatabase database(dir);
  { auto db = database.open(); }
  database.execute(test::TestDatabase::postgresql() ? "UPDATE mailkms_schema SET version = 999"
                                                    : "PRAGMA user_version = 999");
  const auto r = open_storage(database.location(), OpenMode::existing);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::storage_failed);
  CHECK(r.error().message.find("newer") != std::string::npos);
}

TEST_CASE("the schema is at this build's version after open", "[storage]") {
  test::TempDir dir;
  const test::TestDatabase database(dir);
  auto db = database.open();
  if (auto* sqlite = dynamic_cast<SqliteStorage*>(db.get())) {
    CHECK(sqlite->schema_version() == SqliteStorage::current_schema_version());
  } else {
    auto* postgresql = dynamic_cast<PostgresStorage*>(db.get());
    REQUIRE(postgresql != nullptr);
    CHECK(postgresql->schema_version() == PostgresStorage::current_schema_version());
  }
}

TEST_CASE("keys are bytes: any byte, ordered as unsigned bytes", "[storage]") {
  test::TempDir dir;
  const test::TestDatabase database(dir);
  auto db = database.open();
  const std::string zero("k\0z", 3);
  const std::string high("k\xc3\x28", 3);  // not UTF-8
  const std::string top("k\xff", 2);
  for (const auto& key : {top, high, zero, std::string("kA")}) must(db->put(key, key));
  const auto all = must(db->scan("k", {}, 10));
  REQUIRE(all.size() == 4);
  CHECK(all[0].first == zero);
  CHECK(all[1].first == "kA");
  CHECK(all[2].first == high);
  CHECK(all[3].first == top);
  CHECK(*must(db->get(high)) == high);
}

TEST_CASE("transactions of two connections never interleave a read-modify-write", "[storage]") {
  // What two keystored instances on one database do to the audit chain's
  // head: read it, write after it. Each transaction must see the other's.
  test::TempDir dir;
  const test::TestDatabase database(dir);
  auto first = database.open();
  auto second = database.open();
  must(first->put("counter", "0"));
  const auto count = [](Storage& db) {
    for (int i = 0; i < 50; ++i) {
      must(db.transaction([&]() -> Status {
        const int seen = std::stoi(must(db.get("counter")).value());
        return db.put("counter", std::to_string(seen + 1));
      }));
    }
  };
  std::thread other([&] { count(*second); });
  count(*first);
  other.join();
  CHECK(*must(first->get("counter")) == "100");
}

TEST_CASE("a connection the server dropped is opened again, and a transaction it cut is undone", "[storage][postgresql]") {
  test::TempDir dir;
  const test::TestDatabase database(dir);
  auto db = database.open();
  const auto drop_connections = [&] {
    database.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = 'mailkms-keystored'");
  };
  must(db->put("before", "1"));
  drop_connections();
  CHECK(*must(db->get("before")) == "1");  // a read retried on a new connection
  drop_connections();
  must(db->put("after", "2"));
  drop_connections();
  must(db->transaction([&]() -> Status { return db->put("in a transaction", "3"); }));
  CHECK(*must(db->get("in a transaction")) == "3");

  const Status cut = db->transaction([&]() -> Status {
    MAILKMS_CHECK(db->put("half", "written"));
    drop_connections();
    return db->put("other half", "lost");
  });
  REQUIRE_FALSE(cut);
  CHECK(cut.error().code == Errc::storage_failed);
  CHECK_FALSE(must(db->get("half")));
  CHECK_FALSE(must(db->get("other half")));
}

TEST_CASE("one instance reads a snapshot while another holds the write lock", "[storage][postgresql]") {
  // Lookups and signatures read guarded rows (a row and the manifest that
  // vouches for it) in one snapshot: they must not wait for, or take, the
  // lock that serializes the instances' writes.
  test::TempDir dir;
  const test::TestDatabase database(dir);
  auto writer = database.open();
  auto reader = database.open();
  must(writer->put("row", "committed"));
  must(writer->transaction([&]() -> Status {
    MAILKMS_CHECK(writer->put("row", "not yet committed"));
    std::optional<std::string> seen;
    const Status read = reader->read_transaction([&]() -> Status {
      MAILKMS_TRY(value, reader->get("row"));
      seen = std::move(value);
      return Ok{};
    });
    REQUIRE(read);
    CHECK(seen == "committed");
    // And a snapshot is read-only: a write in it is refused by the server.
    const Status write = reader->read_transaction([&]() -> Status { return reader->put("row", "sneaked"); });
    CHECK_FALSE(write);
    return Ok{};
  }));
  CHECK(*must(reader->get("row")) == "not yet committed");
}

TEST_CASE("a PostgreSQL connection string's password is never in what is logged", "[storage][config]") {
  const auto location = must(DatabaseLocation::parse("postgresql://keystore:s3cret-pw@db1.example.org:5433/mailkms"));
  CHECK(location.kind == DatabaseLocation::Kind::postgresql);
  CHECK(location.describe() == "PostgreSQL database mailkms on db1.example.org port 5433");
  const auto keywords = must(DatabaseLocation::parse("host=db2 dbname=ks password=s3cret-pw"));
  CHECK(keywords.describe().find("s3cret") == std::string::npos);
  CHECK(must(DatabaseLocation::parse("/var/lib/mailkms/keystore.db")).is_file());
  CHECK(must(DatabaseLocation::parse("sqlite:relative.db")).file == "relative.db");
  const auto bad = DatabaseLocation::parse("postgresql://[::1");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message.find("not a valid PostgreSQL connection string") != std::string::npos);
}

TEST_CASE("a keystore's rows copy into an empty database, every byte, from a source opened read-only",
          "[storage][copy]") {
  test::TempDir dir;
  const test::TestDatabase source_database(dir);
  test::TempDir other_dir;
  const test::TestDatabase target_database(other_dir);
  {
    auto writer = source_database.open();
    must(writer->transaction([&]() -> Status {
      for (int i = 0; i < 2500; ++i) {  // more than a page
        MAILKMS_CHECK(writer->put("rows/" + std::to_string(i), std::string("v\0\xff", 3) + std::to_string(i)));
      }
      return Ok{};
    }));
  }
  auto source = must(open_storage(source_database.location(), OpenMode::read_only));
  CHECK_FALSE(source->put("rows/new", "refused"));
  auto target = target_database.open();
  const CopyReport copied = must(copy_storage(*source, *target));
  CHECK(copied.rows == 2500);
  const auto all = must(target->scan("", {}, 10000));
  REQUIRE(all.size() == 2500);
  CHECK(all == must(source->scan("", {}, 10000)));

  const auto again = copy_storage(*source, *target);
  REQUIRE_FALSE(again);
  CHECK(again.error().code == Errc::already_exists);
}
