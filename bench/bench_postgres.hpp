// The PostgreSQL server the keystore benchmark runs against (the private
// cluster scripts/bench.sh starts): databases of the benchmark's own on
// it, the settings that decide what its commits cost, and what it wrote.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

struct pg_conn;

namespace mailkms::bench {

class PostgresServer {
 public:
  // `conninfo`: a libpq connection string to a database the benchmark's
  // role may CREATE DATABASE from (the cluster's maintenance database).
  // Throws std::runtime_error when the server cannot be reached.
  explicit PostgresServer(std::string conninfo);
  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  // A new, empty database `name` (an earlier one of that name dropped
  // first); returns its connection string.
  std::string create_database(const std::string& name);
  void drop_database(const std::string& name);

  // "PostgreSQL 15.8, fsync=off, synchronous_commit=on, full_page_writes=off":
  // whether a commit waits for the disk here.
  [[nodiscard]] std::string durability();
  // Bytes of WAL written since the cluster began: a phase's difference is
  // what it wrote, all databases together.
  [[nodiscard]] std::uint64_t wal_bytes();
  // The postmaster, whose children are the server's processes; nullopt when
  // the server is not on this host (its processes cannot be seen).
  [[nodiscard]] std::optional<pid_t> postmaster() const { return postmaster_; }

 private:
  std::string value(const std::string& sql);
  void execute(const std::string& sql);

  std::string conninfo_;
  pg_conn* conn_;
  std::optional<pid_t> postmaster_;
};

}  // namespace mailkms::bench
