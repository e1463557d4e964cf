// Rotating the master key, after Vault's "rotate": a new random encryption
// key, the same unseal secret. In one storage transaction every barrier
// record is sealed again under the new key, every authenticated row tagged
// again under the key derived from it (versions and manifest carried over,
// so an older copy of a row is still seen), the seal rewritten over the new
// key, its generation counted and the rotation audited. What was stored
// before the rotation opens or authenticates nothing after it. A failure
// anywhere leaves the database as it was and the old key in use. Never runs
// beside other users of the storage: the caller keeps them out.
#pragma once

#include <cstdint>
#include <ctime>
#include <string>

#include "mailkms/keystore/audit.hpp"
#include "mailkms/keystore/authenticated_storage.hpp"
#include "mailkms/keystore/barrier.hpp"
#include "mailkms/keystore/error.hpp"
#include "mailkms/keystore/seal.hpp"
#include "mailkms/smime/decrypt.hpp"

namespace mailkms::keystore {

struct KeyGeneration {
  std::uint64_t number = 1;  // 1: the key made at init
  std::time_t rotated = 0;   // 0: never rotated
};

struct RotationOutcome {
  KeyGeneration generation;  // the new key's
  std::size_t resealed = 0;  // barrier records sealed again
  std::size_t tagged = 0;    // authenticated rows tagged again
  std::size_t left = 0;      // rows that failed their check before, left as they were
};

// The master key's generation, from its authenticated row.
Result<KeyGeneration> key_generation(Storage& rows);

// `new_seal` wraps `new_master_key` under the seal in use (see reseal()).
// On success the barrier and `rows` hold the new key, and the old one is
// wiped; `actor` is who the audit record names.
Result<RotationOutcome> rotate_master_key(AuthenticatedStorage& rows, Barrier& barrier, AuditLog& audit,
                                          const SealRecord& new_seal, const smime::SecretBytes& new_master_key,
                                          const std::string& actor);

}  // namespace mailkms::keystore
