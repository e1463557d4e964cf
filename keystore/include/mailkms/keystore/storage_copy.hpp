// Copying a keystore's records from one database to another (mailkmsctl
// storage migrate): SQLite to PostgreSQL when a site outgrows one host, or
// back, or into a file for a copy kept aside.
#pragma once

#include <cstddef>

#include "mailkms/keystore/error.hpp"
#include "mailkms/keystore/storage.hpp"

namespace mailkms::keystore {

struct CopyReport {
  std::size_t rows = 0;
  std::size_t bytes = 0;  // keys and values
};

// Copies every row of `from` into `to`, which must hold none: all of them
// from one snapshot of `from` (its transaction), landing in `to` all at once
// or not at all (one transaction of `to`); then reads every row of `to` back
// and compares it, byte for byte, with `from`'s. Rows are copied as they
// are stored — sealed, authenticated and chained as they were — so the
// copy needs no key, and `from` is only read.
Result<CopyReport> copy_storage(Storage& from, Storage& to);

}  // namespace mailkms::keystore
