#include "bench_postgres.hpp"

#include <libpq-fe.h>

#include <stdexcept>

#include "bench_cpu.hpp"

namespace mailkms::bench {
namespace {

std::string trimmed(const char* text) {
  std::string out = text != nullptr ? text : "";
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

}  // namespace

PostgresServer::PostgresServer(std::string conninfo) : conninfo_(std::move(conninfo)), conn_(PQconnectdb(conninfo_.c_str())) {
  if (PQstatus(conn_) != CONNECTION_OK) {
    const std::string problem = trimmed(PQerrorMessage(conn_));
    PQfinish(conn_);
    throw std::runtime_error("cannot connect to the PostgreSQL server for the benchmark: " + problem);
  }
  PQsetNoticeProcessor(conn_, [](void*, const char*) {}, nullptr);  // "database does not exist, skipping"
  // This connection's backend is a child of the postmaster. On another
  // host the pid would name some process of ours, or none: both are
  // checked to be PostgreSQL's.
  const auto backend = read_process(static_cast<pid_t>(std::stol(value("SELECT pg_backend_pid()"))));
  if (backend && backend->name == "postgres") {
    const auto postmaster = read_process(backend->parent);
    if (postmaster && postmaster->name == "postgres") postmaster_ = backend->parent;
  }
}

PostgresServer::~PostgresServer() { PQfinish(conn_); }

std::string PostgresServer::value(const std::string& sql) {
  PGresult* result = PQexec(conn_, sql.c_str());
  if (PQresultStatus(result) != PGRES_TUPLES_OK || PQntuples(result) != 1) {
    const std::string problem = trimmed(PQresultErrorMessage(result));
    PQclear(result);
    throw std::runtime_error(sql + ": " + (problem.empty() ? "not one row" : problem));
  }
  std::string out = PQgetvalue(result, 0, 0);
  PQclear(result);
  return out;
}

void PostgresServer::execute(const std::string& sql) {
  PGresult* result = PQexec(conn_, sql.c_str());
  const bool done = PQresultStatus(result) == PGRES_COMMAND_OK;
  const std::string problem = trimmed(PQresultErrorMessage(result));
  PQclear(result);
  if (!done) throw std::runtime_error(sql + ": " + problem);
}

std::string PostgresServer::create_database(const std::string& name) {
  drop_database(name);
  execute("CREATE DATABASE " + name);
  // libpq keeps the last of a repeated keyword: this dbname wins.
  return conninfo_ + " dbname=" + name;
}

void PostgresServer::drop_database(const std::string& name) { execute("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)"); }

std::string PostgresServer::durability() {
  return "PostgreSQL " + value("SHOW server_version") + ", fsync=" + value("SHOW fsync") +
         ", synchronous_commit=" + value("SHOW synchronous_commit") + ", full_page_writes=" + value("SHOW full_page_writes");
}

std::uint64_t PostgresServer::wal_bytes() {
  return std::stoull(value("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"));
}

}  // namespace mailkms::bench
