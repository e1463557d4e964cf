// Storage in one SQLite file: WAL journal, full fsync on commit, schema
// versioned with migrations applied at open. The only place mailkms opens a
// database, and only mailkms-keystored (and mailkmsctl init) use it.
#pragma once

#include <filesystem>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "mailkms/keystore/storage.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace mailkms::keystore {

class SqliteStorage final : public Storage {
 public:
  struct Options {
    bool create = false;  // create the file if it is missing (mailkmsctl init)
    bool read_only = false;  // never written nor migrated; transactions read one snapshot
    int busy_timeout_ms = 5000;
  };

  static Result<std::unique_ptr<SqliteStorage>> open(const std::filesystem::path& path, const Options& options);
  ~SqliteStorage() override;

  Result<std::optional<std::string>> get(std::string_view key) override;
  Status put(std::string_view key, std::string_view value) override;
  Status remove(std::string_view key) override;
  Result<std::vector<std::pair<std::string, std::string>>> scan(std::string_view prefix, std::string_view after,
                                                               std::size_t limit) override;
  Status transaction(const std::function<Status()>& work) override;

  // The schema version this build writes; older files are migrated at open.
  static int current_schema_version();
  [[nodiscard]] int schema_version() const;

 private:
  SqliteStorage(sqlite3* db, bool read_only) : db_(db), read_only_(read_only) {}
  Status execute(const char* sql);
  Status migrate();
  // Prepared once per connection and kept: lookups are the hot path.
  sqlite3_stmt* prepared(const char* sql);

  sqlite3* db_;
  bool read_only_;
  std::recursive_mutex mutex_;  // one connection; transactions nest on one thread
  int depth_ = 0;               // transaction nesting: savepoints inside
  std::unordered_map<const char*, sqlite3_stmt*> statements_;  // keyed by the SQL literal
};

}  // namespace mailkms::keystore
