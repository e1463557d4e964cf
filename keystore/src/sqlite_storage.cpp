#include "mailkms/keystore/sqlite_storage.hpp"
#include "mailkms/errno_text.hpp"
#include "key_range.hpp"
#include "schema.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

namespace mailkms::keystore {
namespace {

Error sqlite_error(sqlite3* db, std::string_view what) {
  const int code = sqlite3_extended_errcode(db);
  std::string message(what);
  message += ": ";
  message += sqlite3_errmsg(db);
  if ((code & 0xff) == SQLITE_FULL) message += " (the disk is full)";
  if ((code & 0xff) == SQLITE_READONLY) message += " (the database is read-only)";
  return make_error(Errc::storage_failed, std::move(message));
}

// A prepared statement, finalized on scope exit (rare statements).
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : owned_(true) {
    if (sqlite3_prepare_v3(db, sql, -1, 0, &stmt_, nullptr) != SQLITE_OK) stmt_ = nullptr;
  }
  // A cached statement, reset for its next use on scope exit.
  explicit Statement(sqlite3_stmt* cached) : stmt_(cached), owned_(false) {}
  ~Statement() {
    if (owned_) {
      sqlite3_finalize(stmt_);
    } else if (stmt_ != nullptr) {
      sqlite3_reset(stmt_);
      sqlite3_clear_bindings(stmt_);
    }
  }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  [[nodiscard]] bool ok() const { return stmt_ != nullptr; }
  // A null data pointer would bind SQL NULL: bind "" for an empty view.
  void bind(int index, std::string_view text) {
    sqlite3_bind_text(stmt_, index, text.empty() ? "" : text.data(), static_cast<int>(text.size()), SQLITE_STATIC);
  }
  void bind_blob(int index, std::string_view bytes) {
    sqlite3_bind_blob(stmt_, index, bytes.empty() ? "" : bytes.data(), static_cast<int>(bytes.size()), SQLITE_STATIC);
  }
  void bind_int(int index, long long value) { sqlite3_bind_int64(stmt_, index, value); }
  void bind_null(int index) { sqlite3_bind_null(stmt_, index); }
  int step() { return sqlite3_step(stmt_); }
  [[nodiscard]] std::string column(int index) const {
    const auto* data = static_cast<const char*>(sqlite3_column_blob(stmt_, index));
    return data != nullptr ? std::string(data, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, index)))
                           : std::string();
  }
  [[nodiscard]] long long column_int(int index) const { return sqlite3_column_int64(stmt_, index); }

 private:
  sqlite3_stmt* stmt_ = nullptr;
  bool owned_;
};

}  // namespace

int SqliteStorage::current_schema_version() { return schema::kVersion; }

Result<std::unique_ptr<SqliteStorage>> SqliteStorage::open(const std::filesystem::path& path,
                                                           const Options& options) {
  if (options.create && !options.read_only) {
    // Created here with mode 0600, before SQLite sees it: the file holds
    // wrapped keys and the audit log. SQLite gives its -wal and -shm files
    // the same mode.
    const int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) return make_error(Errc::storage_failed, "cannot create " + path.string() + ": " + mailkms::errno_text(errno));
    ::close(fd);
  }
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db,
                                 (options.read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) | SQLITE_OPEN_NOMUTEX,
                                 nullptr);
  if (rc != SQLITE_OK) {
    Error e = db != nullptr ? sqlite_error(db, "cannot open " + path.string())
                            : make_error(Errc::storage_failed, "cannot open " + path.string());
    sqlite3_close(db);
    return e;
  }
  std::unique_ptr<SqliteStorage> storage(new SqliteStorage(db, options.read_only));
  sqlite3_busy_timeout(db, options.busy_timeout_ms);
  sqlite3_extended_result_codes(db, 1);
  if (options.read_only) {
    if (auto refused = schema::refusal(storage->schema_version(), false)) return *refused;
    return storage;
  }
  // SQLite quietly opens what it cannot write read-only; a keystore that
  // cannot record what it does must not start.
  if (sqlite3_db_readonly(db, "main") == 1) {
    return make_error(Errc::storage_failed, "the database " + path.string() +
                                                " is read-only (file system or permissions): it must be writable");
  }
  MAILKMS_CHECK(storage->execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"));
  MAILKMS_CHECK(storage->migrate());
  return storage;
}

SqliteStorage::~SqliteStorage() {
  for (const auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
  sqlite3_close(db_);
}

sqlite3_stmt* SqliteStorage::prepared(const char* sql) {
  const auto it = statements_.find(sql);
  if (it != statements_.end()) return it->second;
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr) != SQLITE_OK) return nullptr;
  statements_.emplace(sql, stmt);
  return stmt;
}

Status SqliteStorage::execute(const char* sql) {
  char* message = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &message) != SQLITE_OK) {
    Error e = sqlite_error(db_, sql);
    sqlite3_free(message);
    return e;
  }
  return Ok{};
}

int SqliteStorage::schema_version() const {
  Statement version(db_, "PRAGMA user_version;");
  return version.ok() && version.step() == SQLITE_ROW ? static_cast<int>(version.column_int(0)) : -1;
}

Status SqliteStorage::migrate() {
  const int found = schema_version();
  if (auto refused = schema::refusal(found, true)) return *refused;
  for (int version = found; version < current_schema_version(); ++version) {
    MAILKMS_CHECK(transaction([&]() -> Status {
      MAILKMS_CHECK(execute(std::string(schema::kMigrations[static_cast<std::size_t>(version)].sqlite).c_str()));
      return execute(("PRAGMA user_version = " + std::to_string(version + 1) + ";").c_str());
    }));
  }
  return Ok{};
}

Result<std::optional<std::string>> SqliteStorage::get(std::string_view key) {
  const std::lock_guard lock(mutex_);
  Statement s(prepared("SELECT value FROM kv WHERE key = ?1"));
  if (!s.ok()) return sqlite_error(db_, "cannot read");
  s.bind(1, key);
  const int rc = s.step();
  if (rc == SQLITE_ROW) return std::optional<std::string>(s.column(0));
  if (rc == SQLITE_DONE) return std::optional<std::string>();
  return sqlite_error(db_, "cannot read");
}

Status SqliteStorage::put(std::string_view key, std::string_view value) {
  const std::lock_guard lock(mutex_);
  Statement s(prepared("INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value"));
  if (!s.ok()) return sqlite_error(db_, "cannot write");
  s.bind(1, key);
  s.bind_blob(2, value);
  if (s.step() != SQLITE_DONE) return sqlite_error(db_, "cannot write");
  return Ok{};
}

Status SqliteStorage::remove(std::string_view key) {
  const std::lock_guard lock(mutex_);
  Statement s(prepared("DELETE FROM kv WHERE key = ?1"));
  if (!s.ok()) return sqlite_error(db_, "cannot delete");
  s.bind(1, key);
  if (s.step() != SQLITE_DONE) return sqlite_error(db_, "cannot delete");
  return Ok{};
}

Result<std::vector<std::pair<std::string, std::string>>> SqliteStorage::scan(std::string_view prefix,
                                                                            std::string_view after,
                                                                            std::size_t limit) {
  const std::lock_guard lock(mutex_);
  // One lower and one upper bound, known here, so SQLite walks exactly the
  // range: "(?3 IS NULL OR key < ?3)" or two lower bounds make it read on
  // to the end of the table.
  const auto end = prefix_end(std::string(prefix));
  const bool after_within = !after.empty() && after >= prefix;
  const char* sql = after_within ? (end ? "SELECT key, value FROM kv WHERE key > ?1 AND key < ?2 ORDER BY key LIMIT ?3"
                                        : "SELECT key, value FROM kv WHERE key > ?1 ORDER BY key LIMIT ?3")
                                 : (end ? "SELECT key, value FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key LIMIT ?3"
                                        : "SELECT key, value FROM kv WHERE key >= ?1 ORDER BY key LIMIT ?3");
  Statement s(prepared(sql));
  if (!s.ok()) return sqlite_error(db_, "cannot list");
  s.bind(1, after_within ? after : prefix);
  if (end) s.bind(2, *end);
  s.bind_int(3, limit > static_cast<std::size_t>(INT64_MAX) ? INT64_MAX : static_cast<long long>(limit));
  std::vector<std::pair<std::string, std::string>> out;
  int rc = 0;
  while ((rc = s.step()) == SQLITE_ROW) out.emplace_back(s.column(0), s.column(1));
  if (rc != SQLITE_DONE) return sqlite_error(db_, "cannot list");
  return out;
}

Status SqliteStorage::transaction(const std::function<Status()>& work) {
  const std::lock_guard lock(mutex_);
  const bool outermost = depth_ == 0;
  const std::string name = "s" + std::to_string(depth_);
  // Read-only, a deferred transaction: one snapshot, and no write lock.
  const char* begin = read_only_ ? "BEGIN" : "BEGIN IMMEDIATE";
  MAILKMS_CHECK(execute(outermost ? begin : ("SAVEPOINT " + name).c_str()));
  // Undone unless committed, however `work` leaves: an exception (a stored
  // row that does not parse) must not leave BEGIN IMMEDIATE open, which
  // would turn every later write, audit included, into a savepoint that
  // never commits.
  struct Scope {
    SqliteStorage& self;
    bool outermost;
    const std::string& name;
    bool committed = false;
    ~Scope() {
      if (!committed && outermost) (void)self.execute("ROLLBACK");
      if (!committed && !outermost) {
        (void)self.execute(("ROLLBACK TO " + name).c_str());
        (void)self.execute(("RELEASE " + name).c_str());
      }
      --self.depth_;
    }
  } scope{*this, outermost, name};
  ++depth_;
  Status result = work();
  if (!result) return result;
  // A full disk shows up here, as a commit that fails: undone too.
  const Status committed = execute(outermost ? "COMMIT" : ("RELEASE " + name).c_str());
  scope.committed = static_cast<bool>(committed);
  return committed ? result : committed;
}

}  // namespace mailkms::keystore
