// What every keystore unit test starts from: a fresh SQLite file, the
// barrier unsealed with a new master key, and the audit log.
#pragma once

#include "mailkms/keystore/audit.hpp"
#include "mailkms/keystore/barrier.hpp"
#include "mailkms/keystore/seal.hpp"
#include "mailkms/keystore/sqlite_storage.hpp"
#include "test_support.hpp"

namespace mailkms::test {

struct KeystoreFixture {
  TempDir dir;
  std::unique_ptr<keystore::SqliteStorage> storage =
      must(keystore::SqliteStorage::open(dir.path("keystore.db"), {.create = true}));
  keystore::Barrier barrier{*storage};
  keystore::AuditLog audit{*storage, barrier};

  KeystoreFixture() { must(barrier.unseal(keystore::new_master_key())); }
};

}  // namespace mailkms::test
