// What every keystore unit test starts from: a fresh database (SQLite, or
// PostgreSQL when the suite runs on it), the
// barrier unsealed with a new master key, and the audit log; and a clock
// the test moves.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <memory>

#include "mailkms/keystore/audit.hpp"
#include "mailkms/keystore/barrier.hpp"
#include "mailkms/keystore/clock.hpp"
#include "mailkms/keystore/seal.hpp"
#include "test_database.hpp"
#include "test_support.hpp"

namespace mailkms::test {

// Starts at the real time and stands still until the test advances it;
// both of the keystore's clocks move together. Copies of `clock()` follow it.
class ManualClock {
 public:
  [[nodiscard]] keystore::Clock clock() const {
    return {[offset = offset_, wall = wall_] { return wall + static_cast<std::time_t>(offset->load()); },
            [offset = offset_, steady = steady_] { return steady + std::chrono::seconds(offset->load()); }};
  }
  void advance(std::chrono::seconds by) { *offset_ += by.count(); }

 private:
  std::shared_ptr<std::atomic<std::int64_t>> offset_ = std::make_shared<std::atomic<std::int64_t>>(0);
  std::time_t wall_ = std::time(nullptr);
  std::chrono::steady_clock::time_point steady_ = std::chrono::steady_clock::now();
};

struct KeystoreFixture {
  TempDir dir;
  TestDatabase database{dir};
  std::unique_ptr<keystore::Storage> storage = database.open();
  keystore::Barrier barrier{*storage};
  keystore::AuditLog audit{*storage, barrier};

  KeystoreFixture() { must(barrier.unseal(keystore::new_master_key())); }
};

}  // namespace mailkms::test
