#include "mailkms/keystore/database.hpp"

#include <libpq-fe.h>

#include <cctype>

#include "mailkms/keystore/postgres_storage.hpp"
#include "mailkms/keystore/sqlite_storage.hpp"

namespace mailkms::keystore {
namespace {

bool starts_with(std::string_view text, std::string_view prefix) { return text.substr(0, prefix.size()) == prefix; }

// "host=db1 dbname=mailkms": a libpq key=value string begins with a keyword
// and an equals sign; no path an administrator writes does.
bool looks_like_keywords(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size() && (std::islower(static_cast<unsigned char>(text[i])) != 0 || text[i] == '_')) ++i;
  while (i < text.size() && text[i] == ' ') ++i;
  return i > 0 && i < text.size() && text[i] == '=';
}

}  // namespace

Result<DatabaseLocation> DatabaseLocation::parse(std::string_view text) {
  if (text.empty()) return make_error(Errc::invalid_argument, "empty: name a file or a PostgreSQL database");
  if (starts_with(text, "sqlite:")) return sqlite(std::string(text.substr(7)));
  if (!starts_with(text, "postgresql://") && !starts_with(text, "postgres://") && !looks_like_keywords(text)) {
    return sqlite(std::string(text));
  }
  char* problem = nullptr;
  PQconninfoOption* options = PQconninfoParse(std::string(text).c_str(), &problem);
  if (options == nullptr) {
    std::string message = "not a valid PostgreSQL connection string";
    if (problem != nullptr) {
      std::string detail = problem;
      while (!detail.empty() && detail.back() == '\n') detail.pop_back();
      message += ": " + detail;
      PQfreemem(problem);
    }
    return make_error(Errc::invalid_argument, std::move(message));
  }
  PQconninfoFree(options);
  return DatabaseLocation{Kind::postgresql, {}, std::string(text)};
}

std::string DatabaseLocation::describe() const {
  if (kind == Kind::sqlite) return file.string();
  PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), nullptr);
  if (options == nullptr) return "a PostgreSQL database";
  std::string host;
  std::string port;
  std::string dbname;
  for (const PQconninfoOption* option = options; option->keyword != nullptr; ++option) {
    if (option->val == nullptr) continue;
    const std::string_view keyword = option->keyword;
    if (keyword == "host" || (keyword == "hostaddr" && host.empty())) host = option->val;
    if (keyword == "port") port = option->val;
    if (keyword == "dbname") dbname = option->val;
  }
  PQconninfoFree(options);
  std::string out = "PostgreSQL database " + (dbname.empty() ? std::string("(default)") : dbname);
  if (!host.empty()) out += " on " + host + (port.empty() ? "" : " port " + port);
  return out;
}

Result<std::unique_ptr<Storage>> open_storage(const DatabaseLocation& location, OpenMode mode) {
  if (location.kind == DatabaseLocation::Kind::postgresql) {
    MAILKMS_TRY(storage, PostgresStorage::open(location.conninfo, mode == OpenMode::read_only));
    return std::unique_ptr<Storage>(std::move(storage));
  }
  MAILKMS_TRY(storage, SqliteStorage::open(location.file, {.create = mode == OpenMode::create,
                                                           .read_only = mode == OpenMode::read_only}));
  return std::unique_ptr<Storage>(std::move(storage));
}

}  // namespace mailkms::keystore
