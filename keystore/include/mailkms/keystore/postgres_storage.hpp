// Storage in a PostgreSQL database, through libpq: the same key-value table
// and versioned schema as SqliteStorage (bytea keys, so that keys order as
// bytes on both), migrated at open. One connection, used by one thread at a
// time as SqliteStorage's is. Every outermost transaction first takes the
// keystore's advisory lock, so that several keystored instances on one
// database write one at a time, as SQLite's BEGIN IMMEDIATE makes processes
// do: a read-modify-write (the audit chain's head, a token's use count) in
// one transaction is never interleaved with another instance's. Reads
// that need one consistent view (a row and the manifest that vouches for it)
// take a read-only snapshot instead, without the lock: readers on every
// instance go on while one instance writes.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "mailkms/keystore/storage.hpp"

struct pg_conn;

namespace mailkms::keystore {

class PostgresStorage final : public Storage {
 public:
  // `conninfo`: a postgresql:// URI or a libpq key=value string. The
  // keystore's own connection defaults (a 5 s connect timeout, TCP keepalives
  // and a 15 s TCP user timeout, so that a dead server is noticed within
  // seconds) come first; anything the string names overrides them.
  // `read_only`: nothing is written or migrated (the schema must be this
  // build's), and a transaction reads one snapshot without the write lock.
  static Result<std::unique_ptr<PostgresStorage>> open(const std::string& conninfo, bool read_only = false);
  ~PostgresStorage() override;
  PostgresStorage(const PostgresStorage&) = delete;
  PostgresStorage& operator=(const PostgresStorage&) = delete;

  Result<std::optional<std::string>> get(std::string_view key) override;
  Status put(std::string_view key, std::string_view value) override;
  Status remove(std::string_view key) override;
  Result<std::vector<std::pair<std::string, std::string>>> scan(std::string_view prefix, std::string_view after,
                                                               std::size_t limit) override;
  Status transaction(const std::function<Status()>& work) override;
  Status read_transaction(const std::function<Status()>& work) override;
  // One statement: one snapshot, one round trip.
  Result<std::vector<std::optional<std::string>>> read_together(std::span<const std::string_view> keys) override;

  static int current_schema_version();
  [[nodiscard]] int schema_version();  // -1 when it cannot be read

  // Where a connection lost and opened again is told: keystored logs it
  // (which server it reached matters after a failover); by default nobody.
  // Each change is told once: not every request that fails while the
  // server is away.
  void set_events(Events events) override;

 private:
  PostgresStorage(pg_conn* conn, bool read_only) : conn_(conn), read_only_(read_only) {}
  // Outside a transaction: a connection the server dropped (a restart, a
  // failover) is opened again, to whichever host the string now leads to.
  Status ensure_connected();
  Status configure_session();
  Status command(const std::string& sql);
  // `snapshot`: a read-only transaction on one snapshot, without the lock.
  Status begin(bool snapshot);
  Status commit();
  Status migrate();
  // get/put/remove/scan outside a transaction are retried once on a fresh
  // connection when the old one turned out dead: each is idempotent.
  template <class Work>
  auto retried(Work&& work) -> decltype(work());

  pg_conn* conn_;
  bool read_only_;
  std::recursive_mutex mutex_;  // one connection; transactions nest on one thread
  int depth_ = 0;               // transaction nesting: savepoints inside
  bool schema_ready_ = false;   // migrated: the statements can be prepared
  bool session_ready_ = false;  // this connection's settings made, statements prepared
  bool lost_told_ = false;      // the loss was told; the next reconnection will be
  Events events_;
};

}  // namespace mailkms::keystore
