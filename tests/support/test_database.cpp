#include "test_database.hpp"

#include <libpq-fe.h>
#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace mailkms::test {
namespace {

std::string server_conninfo() {
  const char* file = std::getenv("MAILKMS_TEST_POSTGRESQL");
  if (file == nullptr) return {};
  std::string conninfo = read_file(file);
  while (!conninfo.empty() && (conninfo.back() == '\n' || conninfo.back() == ' ')) conninfo.pop_back();
  if (conninfo.empty()) throw std::runtime_error(std::string("MAILKMS_TEST_POSTGRESQL: ") + file + " is empty");
  return conninfo;
}

// A connection for the test's own SQL, closed on scope exit.
class Connection {
 public:
  explicit Connection(const std::string& conninfo) : conn_(PQconnectdb(conninfo.c_str())) {
    if (PQstatus(conn_) != CONNECTION_OK) {
      const std::string message = PQerrorMessage(conn_);
      PQfinish(conn_);
      throw std::runtime_error("cannot connect to the test's PostgreSQL server: " + message);
    }
    PQsetNoticeProcessor(conn_, [](void*, const char*) {}, nullptr);
  }
  ~Connection() { PQfinish(conn_); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // The rows of `sql`, one line per row with its columns joined; `binary`
  // gives bytea columns as the bytes they hold.
  std::string run(const std::string& sql, bool binary = false) {
    PGresult* result = binary ? PQexecParams(conn_, sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 1)
                              : PQexec(conn_, sql.c_str());
    const auto status = PQresultStatus(result);
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
      const std::string message = PQresultErrorMessage(result);
      PQclear(result);
      throw std::runtime_error(sql + ": " + message);
    }
    std::string out;
    for (int row = 0; row < PQntuples(result); ++row) {
      for (int field = 0; field < PQnfields(result); ++field) {
        out.append(PQgetvalue(result, row, field), static_cast<std::size_t>(PQgetlength(result, row, field)));
      }
      out += '\n';
    }
    PQclear(result);
    return out;
  }

 private:
  PGconn* conn_;
};

std::string with_dbname(const std::string& server, const std::string& name) { return server + " dbname=" + name; }

}  // namespace

bool TestDatabase::postgresql() { return std::getenv("MAILKMS_TEST_POSTGRESQL") != nullptr; }

TestDatabase::TestDatabase(const TempDir& dir) : server_(server_conninfo()) {
  if (server_.empty()) {
    location_ = keystore::DatabaseLocation::sqlite(dir.path("keystore.db"));
    return;
  }
  static std::atomic<int> made{0};
  name_ = "mailkms_test_" + std::to_string(::getpid()) + "_" + std::to_string(made++);
  Connection server(server_);
  server.run("DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
  server.run("CREATE DATABASE " + name_);
  location_ = must(keystore::DatabaseLocation::parse(with_dbname(server_, name_)));
}

TestDatabase::~TestDatabase() {
  if (name_.empty()) return;
  try {
    Connection(server_).run("DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
  } catch (const std::exception&) {
    // The server is gone already: the cluster's teardown removes it all.
  }
}

std::string TestDatabase::toml() const {
  const std::string text = location_.is_file() ? location_.file.string() : location_.conninfo;
  std::string quoted = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') quoted += '\\';
    quoted += c;
  }
  return quoted + "\"";
}

std::unique_ptr<keystore::Storage> TestDatabase::open() const { return must(keystore::open_storage(location_, keystore::OpenMode::create)); }

std::string TestDatabase::raw_contents() const {
  if (location_.is_file()) {
    std::string all = read_file(location_.file);
    const auto wal = location_.file.string() + "-wal";
    if (std::filesystem::exists(wal)) all += read_file(wal);
    return all;
  }
  return Connection(location_.conninfo).run("SELECT key, value FROM kv", true);
}

void TestDatabase::execute(const std::string& sql) const {
  if (!location_.is_file()) {
    Connection(location_.conninfo).run(sql);
    return;
  }
  sqlite3* db = nullptr;
  if (sqlite3_open(location_.file.c_str(), &db) != SQLITE_OK) throw std::runtime_error("cannot open the test database");
  char* message = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &message);
  const std::string problem = message != nullptr ? message : "";
  sqlite3_free(message);
  sqlite3_close(db);
  if (rc != SQLITE_OK) throw std::runtime_error(sql + ": " + problem);
}

}  // namespace mailkms::test
