// The database a keystore test runs on, so that one suite tests both
// backends. By default a fresh SQLite file in the test's directory. When
// MAILKMS_TEST_POSTGRESQL names a file holding a libpq connection string to
// a server (tests/support/postgresql-cluster.sh writes one for the private
// cluster it starts), a fresh database of the test's own on that server,
// dropped when the test ends.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "mailkms/keystore/database.hpp"
#include "test_support.hpp"

namespace mailkms::test {

class TestDatabase {
 public:
  explicit TestDatabase(const TempDir& dir);
  ~TestDatabase();
  TestDatabase(const TestDatabase&) = delete;
  TestDatabase& operator=(const TestDatabase&) = delete;

  // Whether this run tests PostgreSQL (MAILKMS_TEST_POSTGRESQL is set).
  static bool postgresql();

  [[nodiscard]] const keystore::DatabaseLocation& location() const { return location_; }
  // What mailkms.conf's `database` says for it, quoted for TOML.
  [[nodiscard]] std::string toml() const;
  // A new connection (or SQLite handle) to it, schema migrated.
  [[nodiscard]] std::unique_ptr<keystore::Storage> open() const;
  // Every byte stored, as a database writer would see it: the SQLite file
  // and its WAL, or every key and value of the PostgreSQL table.
  [[nodiscard]] std::string raw_contents() const;
  // Runs SQL as a database writer would (sqlite3 or psql in the shell tests).
  void execute(const std::string& sql) const;

 private:
  keystore::DatabaseLocation location_;
  std::string name_;  // PostgreSQL: the database made for this test
  std::string server_;  // PostgreSQL: the connection string to the server's maintenance database
};

}  // namespace mailkms::test
