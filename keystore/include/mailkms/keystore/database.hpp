// Where the keystore's records live, as mailkms.conf's `database` names it:
// an SQLite file (a path, or sqlite:PATH), the embedded default; or a
// PostgreSQL database (a postgresql:// or postgres:// URI, or a libpq
// key=value connection string), which several keystored instances can share.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "mailkms/keystore/error.hpp"
#include "mailkms/keystore/storage.hpp"

namespace mailkms::keystore {

struct DatabaseLocation {
  enum class Kind { sqlite, postgresql };
  Kind kind = Kind::sqlite;
  std::filesystem::path file;  // sqlite
  std::string conninfo;        // postgresql: may hold a password; never log it

  static Result<DatabaseLocation> parse(std::string_view text);
  static DatabaseLocation sqlite(std::filesystem::path file) { return {Kind::sqlite, std::move(file), {}}; }

  [[nodiscard]] bool is_file() const { return kind == Kind::sqlite; }
  // For logs and messages: the file, or the server and database without
  // any password.
  [[nodiscard]] std::string describe() const;
  bool operator==(const DatabaseLocation&) const = default;
};

enum class OpenMode {
  existing,   // migrated to this build's schema at open
  create,     // the same, making an SQLite file that is missing (mailkmsctl
              // init); a PostgreSQL database is made by its administrator
              // (createdb) and only ever filled
  read_only,  // never written, nor migrated: the schema must be this build's;
              // a transaction reads one snapshot (mailkmsctl storage migrate)
};

Result<std::unique_ptr<Storage>> open_storage(const DatabaseLocation& location, OpenMode mode);

}  // namespace mailkms::keystore
