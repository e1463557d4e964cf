// The keystore's schema, one versioned list for both backends. Each entry
// moves the schema one version up, written once per SQL dialect; released
// entries are never edited, only followed. SQLite records the version in
// PRAGMA user_version, PostgreSQL in the mailkms_schema table.
#pragma once

#include <array>
#include <string_view>

namespace mailkms::keystore::schema {

struct Migration {
  std::string_view purpose;
  std::string_view sqlite;
  std::string_view postgresql;
};

inline constexpr std::array kMigrations{
    // Keys order as bytes on both: SQLite's TEXT compares with memcmp, and
    // PostgreSQL's bytea does too (a text column would sort by collation).
    Migration{"the key-value table everything else is stored in",
              "CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;",
              "CREATE TABLE kv (key bytea PRIMARY KEY, value bytea NOT NULL);"},
};

inline constexpr int kVersion = static_cast<int>(kMigrations.size());

}  // namespace mailkms::keystore::schema
