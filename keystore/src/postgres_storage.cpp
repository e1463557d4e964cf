#include "mailkms/keystore/postgres_storage.hpp"

#include <libpq-fe.h>

#include <array>
#include <charconv>
#include <cstdint>
#include <cstring>

#include "key_range.hpp"
#include "schema.hpp"

namespace mailkms::keystore {
namespace {

// The advisory lock every outermost transaction holds ("mailkms" in ASCII):
// writers on one database, in any number of keystored instances, take turns.
constexpr const char* kWriteLock = "SELECT pg_advisory_xact_lock(30792318981647731)";

constexpr unsigned kByteaOid = 17;
constexpr unsigned kInt8Oid = 20;

struct ResultDeleter {
  void operator()(PGresult* result) const { PQclear(result); }
};
using PgResult = std::unique_ptr<PGresult, ResultDeleter>;

// The statements the hot paths use, prepared once per connection. Four
// scans, so that each has exactly one lower and one upper bound the planner
// can walk the primary key's index with.
struct Prepared {
  const char* name;
  const char* sql;
  int params;
  std::array<unsigned, 3> types;
};
constexpr std::array kPrepared{
    Prepared{"get", "SELECT value FROM kv WHERE key = $1", 1, {kByteaOid}},
    Prepared{"put",
             "INSERT INTO kv (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value", 2,
             {kByteaOid, kByteaOid}},
    Prepared{"remove", "DELETE FROM kv WHERE key = $1", 1, {kByteaOid}},
    Prepared{"get_together", "SELECT key, value FROM kv WHERE key IN ($1, $2, $3)", 3,
             {kByteaOid, kByteaOid, kByteaOid}},
    Prepared{"scan_from_to", "SELECT key, value FROM kv WHERE key >= $1 AND key < $2 ORDER BY key LIMIT $3", 3,
             {kByteaOid, kByteaOid, kInt8Oid}},
    Prepared{"scan_after_to", "SELECT key, value FROM kv WHERE key > $1 AND key < $2 ORDER BY key LIMIT $3", 3,
             {kByteaOid, kByteaOid, kInt8Oid}},
    Prepared{"scan_from", "SELECT key, value FROM kv WHERE key >= $1 ORDER BY key LIMIT $2", 2,
             {kByteaOid, kInt8Oid}},
    Prepared{"scan_after", "SELECT key, value FROM kv WHERE key > $1 ORDER BY key LIMIT $2", 2,
             {kByteaOid, kInt8Oid}},
};

std::string trimmed(const char* text) {
  std::string out = text != nullptr ? text : "";
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

Error pg_error(PGconn* conn, const PGresult* result, std::string_view what) {
  std::string message(what);
  message += ": ";
  std::string detail = result != nullptr ? trimmed(PQresultErrorMessage(result)) : std::string();
  if (detail.empty()) detail = trimmed(PQerrorMessage(conn));
  message += detail.empty() ? "no reply from the database server" : detail;
  const char* state = result != nullptr ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  const std::string_view sqlstate = state != nullptr ? state : "";
  if (sqlstate == "53100") message += " (the database server's disk is full)";
  if (sqlstate == "25006") {
    message += " (a read-only server, a standby: name the primary, or add target_session_attrs=read-write)";
  }
  return make_error(Errc::storage_failed, std::move(message));
}

// A limit as the big-endian int8 that a binary parameter carries.
std::array<char, 8> int8_bytes(std::size_t limit) {
  const auto value = static_cast<std::uint64_t>(limit > INT64_MAX ? INT64_MAX : limit);
  std::array<char, 8> out{};
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<char>((value >> (8 * (7 - i))) & 0xff);
  return out;
}

// Runs a prepared statement with binary parameters, asking binary results
// (bytea arrives as its bytes, no escaping either way).
PgResult run(PGconn* conn, const char* name, std::initializer_list<std::string_view> params) {
  std::array<const char*, 3> values{};
  std::array<int, 3> lengths{};
  std::array<int, 3> formats{1, 1, 1};
  std::size_t i = 0;
  for (const auto param : params) {
    values[i] = param.empty() ? "" : param.data();  // a null pointer would be SQL NULL
    lengths[i] = static_cast<int>(param.size());
    ++i;
  }
  return PgResult(PQexecPrepared(conn, name, static_cast<int>(params.size()), values.data(), lengths.data(),
                                 formats.data(), 1));
}

bool succeeded(const PgResult& result) {
  const auto status = result ? PQresultStatus(result.get()) : PGRES_FATAL_ERROR;
  return status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK;
}

std::string column(const PgResult& result, int row, int field) {
  return {PQgetvalue(result.get(), row, field), static_cast<std::size_t>(PQgetlength(result.get(), row, field))};
}

}  // namespace

int PostgresStorage::current_schema_version() { return schema::kVersion; }

Result<std::unique_ptr<PostgresStorage>> PostgresStorage::open(const std::string& conninfo, bool read_only) {
  // Ours first, then "dbname" with the administrator's string expanded in
  // its place: libpq keeps the last value of a repeated keyword.
  const std::array<const char*, 8> keys{"application_name", "connect_timeout",  "keepalives_idle", "keepalives_interval",
                                        "keepalives_count", "tcp_user_timeout", "dbname",          nullptr};
  const std::array<const char*, 8> values{"mailkms-keystored", "5", "10", "5", "3", "15000", conninfo.c_str(), nullptr};
  PGconn* conn = PQconnectdbParams(keys.data(), values.data(), 1);
  if (conn == nullptr) return make_error(Errc::storage_failed, "cannot connect to the database: out of memory");
  std::unique_ptr<PostgresStorage> storage(new PostgresStorage(conn, read_only));
  if (PQstatus(conn) != CONNECTION_OK) return pg_error(conn, nullptr, "cannot connect to the database");
  // Notices ("there is no transaction in progress") are not errors and go
  // nowhere; libpq would print them on stderr.
  PQsetNoticeProcessor(conn, [](void*, const char*) {}, nullptr);
  if (read_only) {
    if (auto refused = schema::refusal(storage->schema_version(), false)) return *refused;
  } else {
    MAILKMS_CHECK(storage->migrate());
  }
  storage->schema_ready_ = true;
  MAILKMS_CHECK(storage->configure_session());
  return storage;
}

PostgresStorage::~PostgresStorage() { PQfinish(conn_); }

Status PostgresStorage::configure_session() {
  // A writer that waits on another instance's lock for long is stuck, and a
  // transaction left open by a stuck instance must not hold the lock forever.
  MAILKMS_CHECK(command("SET lock_timeout = '10s'"));
  MAILKMS_CHECK(command("SET idle_in_transaction_session_timeout = '60s'"));
  if (read_only_) MAILKMS_CHECK(command("SET default_transaction_read_only = on"));
  if (!schema_ready_) return Ok{};  // the statements name tables the migration makes
  for (const auto& statement : kPrepared) {
    const PgResult result(PQprepare(conn_, statement.name, statement.sql, statement.params, statement.types.data()));
    if (!succeeded(result)) return pg_error(conn_, result.get(), std::string("cannot prepare ") + statement.name);
  }
  session_ready_ = true;
  return Ok{};
}

void PostgresStorage::set_events(Events events) {
  const std::lock_guard lock(mutex_);
  events_ = std::move(events);
}

Status PostgresStorage::ensure_connected() {
  if (depth_ > 0) return Ok{};  // mid-transaction: a lost connection fails the transaction
  if (PQstatus(conn_) != CONNECTION_OK) {
    if (!lost_told_ && events_) events_("lost the connection to the database; opening it again before the next request");
    lost_told_ = true;
    PQreset(conn_);
    session_ready_ = false;
    if (PQstatus(conn_) != CONNECTION_OK) return pg_error(conn_, nullptr, "cannot reconnect to the database");
    if (events_) {
      const char* host = PQhost(conn_);
      const char* port = PQport(conn_);
      events_("connected to the database again: " + std::string(host != nullptr ? host : "?") + " port " +
              std::string(port != nullptr ? port : "?"));
    }
    lost_told_ = false;
  }
  return session_ready_ ? Status(Ok{}) : configure_session();
}

Status PostgresStorage::command(const std::string& sql) {
  const PgResult result(PQexec(conn_, sql.c_str()));
  if (!succeeded(result)) return pg_error(conn_, result.get(), sql);
  return Ok{};
}

template <class Work>
auto PostgresStorage::retried(Work&& work) -> decltype(work()) {
  const std::lock_guard lock(mutex_);
  MAILKMS_CHECK(ensure_connected());
  auto result = work();
  if (result || depth_ > 0 || PQstatus(conn_) == CONNECTION_OK) return result;
  MAILKMS_CHECK(ensure_connected());
  return work();
}

Result<std::optional<std::string>> PostgresStorage::get(std::string_view key) {
  return retried([&]() -> Result<std::optional<std::string>> {
    const PgResult result = run(conn_, "get", {key});
    if (!succeeded(result)) return pg_error(conn_, result.get(), "cannot read");
    if (PQntuples(result.get()) == 0) return std::optional<std::string>();
    return std::optional<std::string>(column(result, 0, 0));
  });
}

Result<std::vector<std::optional<std::string>>> PostgresStorage::read_together(std::span<const std::string_view> keys) {
  if (keys.empty() || keys.size() > 3) return Storage::read_together(keys);
  return retried([&]() -> Result<std::vector<std::optional<std::string>>> {
    // Fewer than three keys: the last one again fills the statement.
    const PgResult result = run(conn_, "get_together", {keys[0], keys[std::min<std::size_t>(1, keys.size() - 1)],
                                                        keys[keys.size() - 1]});
    if (!succeeded(result)) return pg_error(conn_, result.get(), "cannot read");
    std::vector<std::optional<std::string>> rows(keys.size());
    for (int r = 0; r < PQntuples(result.get()); ++r) {
      const std::string key = column(result, r, 0);
      for (std::size_t i = 0; i < keys.size(); ++i) {
        if (keys[i] == key) rows[i] = column(result, r, 1);
      }
    }
    return rows;
  });
}

Status PostgresStorage::put(std::string_view key, std::string_view value) {
  return retried([&]() -> Status {
    const PgResult result = run(conn_, "put", {key, value});
    if (!succeeded(result)) return pg_error(conn_, result.get(), "cannot write");
    return Ok{};
  });
}

Status PostgresStorage::remove(std::string_view key) {
  return retried([&]() -> Status {
    const PgResult result = run(conn_, "remove", {key});
    if (!succeeded(result)) return pg_error(conn_, result.get(), "cannot delete");
    return Ok{};
  });
}

Result<std::vector<std::pair<std::string, std::string>>> PostgresStorage::scan(std::string_view prefix,
                                                                              std::string_view after,
                                                                              std::size_t limit) {
  const auto end = prefix_end(std::string(prefix));
  const bool after_within = !after.empty() && after >= prefix;
  const std::string_view from = after_within ? after : prefix;
  const auto count = int8_bytes(limit);
  const std::string_view count_bytes(count.data(), count.size());
  const char* name = after_within ? (end ? "scan_after_to" : "scan_after") : (end ? "scan_from_to" : "scan_from");
  return retried([&]() -> Result<std::vector<std::pair<std::string, std::string>>> {
    const PgResult result = end ? run(conn_, name, {from, *end, count_bytes}) : run(conn_, name, {from, count_bytes});
    if (!succeeded(result)) return pg_error(conn_, result.get(), "cannot list");
    std::vector<std::pair<std::string, std::string>> out;
    const int rows = PQntuples(result.get());
    out.reserve(static_cast<std::size_t>(rows));
    for (int row = 0; row < rows; ++row) out.emplace_back(column(result, row, 0), column(result, row, 1));
    return out;
  });
}

Status PostgresStorage::begin(bool snapshot) {
  MAILKMS_CHECK(ensure_connected());
  // Read-only: one snapshot for the whole transaction, and no write lock.
  snapshot = snapshot || read_only_;
  const char* sql = snapshot ? "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" : "BEGIN";
  Status begun = command(sql);
  if (!begun && PQstatus(conn_) != CONNECTION_OK) {
    // Nothing ran yet: a connection found dead here is safe to replace.
    MAILKMS_CHECK(ensure_connected());
    begun = command(sql);
  }
  MAILKMS_CHECK(begun);
  if (snapshot) return Ok{};
  if (Status locked = command(kWriteLock); !locked) {
    (void)command("ROLLBACK");
    return locked;
  }
  return Ok{};
}

Status PostgresStorage::commit() {
  const PgResult result(PQexec(conn_, "COMMIT"));
  if (!succeeded(result)) {
    return pg_error(conn_, result.get(),
                    PQstatus(conn_) == CONNECTION_OK ? "cannot commit"
                                                     : "cannot commit (the connection was lost: the outcome is unknown)");
  }
  // COMMIT of a transaction an earlier statement failed in answers
  // "ROLLBACK", without an error.
  if (std::strcmp(PQcmdStatus(result.get()), "COMMIT") != 0) {
    return make_error(Errc::storage_failed, "cannot commit: the database rolled the transaction back");
  }
  return Ok{};
}

Status PostgresStorage::transaction(const std::function<Status()>& work) {
  const std::lock_guard lock(mutex_);
  const bool outermost = depth_ == 0;
  const std::string name = "s" + std::to_string(depth_);
  MAILKMS_CHECK(outermost ? begin(false) : command("SAVEPOINT " + name));
  // Undone unless committed, however `work` leaves, exceptions included.
  struct Scope {
    PostgresStorage& self;
    bool outermost;
    const std::string& name;
    bool committed = false;
    ~Scope() {
      --self.depth_;
      if (committed) return;
      if (outermost) {
        (void)self.command("ROLLBACK");
      } else {
        (void)self.command("ROLLBACK TO SAVEPOINT " + name);
        (void)self.command("RELEASE SAVEPOINT " + name);
      }
    }
  } scope{*this, outermost, name};
  ++depth_;
  Status result = work();
  if (!result) return result;
  const Status committed = outermost ? commit() : command("RELEASE SAVEPOINT " + name);
  scope.committed = static_cast<bool>(committed);
  return committed ? result : committed;
}

Status PostgresStorage::read_transaction(const std::function<Status()>& work) {
  const std::lock_guard lock(mutex_);
  if (depth_ > 0) return work();  // inside a transaction, which sees its own writes
  MAILKMS_CHECK(begin(true));
  struct Scope {
    PostgresStorage& self;
    ~Scope() {
      --self.depth_;
      // Nothing was written: ending the snapshot either way is the same.
      (void)self.command("ROLLBACK");
    }
  } scope{*this};
  ++depth_;
  return work();
}

int PostgresStorage::schema_version() {
  const std::lock_guard lock(mutex_);
  const PgResult result(PQexec(conn_, "SELECT version FROM mailkms_schema"));
  if (!succeeded(result) || PQntuples(result.get()) != 1) return -1;
  const std::string text = column(result, 0, 0);
  int version = -1;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), version);
  return error == std::errc() && end == text.data() + text.size() ? version : -1;
}

Status PostgresStorage::migrate() {
  // Under the write lock: instances starting together migrate once.
  return transaction([&]() -> Status {
    MAILKMS_CHECK(command("CREATE TABLE IF NOT EXISTS mailkms_schema (version integer NOT NULL)"));
    MAILKMS_CHECK(command("INSERT INTO mailkms_schema (version) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM mailkms_schema)"));
    const int found = schema_version();
    if (auto refused = schema::refusal(found, true)) return *refused;
    for (int version = found; version < current_schema_version(); ++version) {
      MAILKMS_CHECK(command(std::string(schema::kMigrations[static_cast<std::size_t>(version)].postgresql)));
    }
    return command("UPDATE mailkms_schema SET version = " + std::to_string(current_schema_version()));
  });
}

}  // namespace mailkms::keystore
