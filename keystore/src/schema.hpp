// The keystore's schema, one versioned list for both backends. Each entry
// moves the schema one version up, written once per SQL dialect; released
// entries are never edited, only followed. SQLite records the version in
// PRAGMA user_version, PostgreSQL in the mailkms_schema table.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>

#include "mailkms/keystore/error.hpp"

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

// Why a database at schema version `found` (-1: unreadable) cannot be used:
// a newer one never, an older one not where nothing may be migrated.
inline std::optional<Error> refusal(int found, bool may_migrate) {
  const std::string versions = "schema version " + std::to_string(found) + ", this mailkms " + std::to_string(kVersion);
  if (found < 0) return make_error(Errc::storage_failed, "cannot read the database's schema version");
  if (found > kVersion) return make_error(Errc::storage_failed, "the database is newer than this mailkms understands (" + versions + ")");
  if (found < kVersion && !may_migrate) {
    return make_error(Errc::storage_failed, "the database is older than this mailkms (" + versions +
                                                "): start this version's mailkms-keystored on it once, which migrates it");
  }
  return std::nullopt;
}

}  // namespace mailkms::keystore::schema
