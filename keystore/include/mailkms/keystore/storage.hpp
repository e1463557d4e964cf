// Persistence, and nothing else: byte-string keys to byte-string values,
// ordered by key, with atomic transactions. Storage is untrusted: secrets
// reach it only through the Barrier, sealed. The interface is small so that
// a PostgreSQL backend can stand in for SQLite.
#pragma once

#include <cstddef>
#include <functional>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mailkms/keystore/error.hpp"

namespace mailkms::keystore {

class Storage {
 public:
  virtual ~Storage() = default;

  virtual Result<std::optional<std::string>> get(std::string_view key) = 0;
  virtual Status put(std::string_view key, std::string_view value) = 0;
  // Removing a key that is not there is not an error.
  virtual Status remove(std::string_view key) = 0;
  // Keys and values under `prefix`, in key order, starting after `after`.
  virtual Result<std::vector<std::pair<std::string, std::string>>> scan(
      std::string_view prefix, std::string_view after = {},
      std::size_t limit = std::numeric_limits<std::size_t>::max()) = 0;
  // Runs `work`; all of its changes land, or none do. Nests.
  virtual Status transaction(const std::function<Status()>& work) = 0;
  // Runs `work`, which only reads, over one consistent view of the rows.
  // Inside a transaction it is part of that transaction. A backend shared by
  // several processes reads a snapshot here without taking the write lock
  // that `transaction` takes; by default it is a transaction.
  virtual Status read_transaction(const std::function<Status()>& work) { return transaction(work); }
  // Up to three rows, in the order of `keys`, as one consistent view: a
  // backend that can reads them in one statement, without a transaction's
  // extra round trips; by default they are read in a read_transaction.
  virtual Result<std::vector<std::optional<std::string>>> read_together(std::span<const std::string_view> keys) {
    std::vector<std::optional<std::string>> rows;
    MAILKMS_CHECK(read_transaction([&]() -> Status {
      for (const auto key : keys) {
        MAILKMS_TRY(row, get(key));
        rows.push_back(std::move(row));
      }
      return Ok{};
    }));
    return rows;
  }
  // Where a storage that keeps a connection says it lost and opened it
  // again (PostgreSQL); a file needs none, and says nothing.
  using Events = std::function<void(const std::string&)>;
  // NOLINTNEXTLINE(performance-unnecessary-value-param): a sink, which PostgresStorage keeps
  virtual void set_events(Events events) { (void)events; }
  // A row a caller found tampered with, for a storage that keeps such
  // reports (AuthenticatedStorage); others forget it.
  // NOLINTNEXTLINE(performance-unnecessary-value-param): a sink, which AuthenticatedStorage keeps
  virtual void report_tamper(std::string_view key, std::string problem) {
    (void)key;
    (void)problem;
  }
};

}  // namespace mailkms::keystore
