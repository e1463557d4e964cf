// The line between what storage may see and what it may not (after
// Vault's barrier): values put through it are encrypted with AES-256-GCM
// under the master key, with their storage key as associated data, so a
// changed row, or a row moved to another key (another owner's key id), is
// detected and never used. Sealed, it refuses everything.
#pragma once

#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>

#include "mailkms/keystore/error.hpp"
#include "mailkms/keystore/storage.hpp"
#include "mailkms/smime/decrypt.hpp"

namespace mailkms::keystore {

class Barrier {
 public:
  explicit Barrier(Storage& storage) : storage_(storage) {}

  [[nodiscard]] bool sealed() const;
  // Takes the 32-byte master key; the barrier is the only holder.
  Status unseal(smime::SecretBytes master_key);
  void seal();

  Status put(std::string_view key, std::string_view plaintext);
  Result<std::optional<smime::SecretBytes>> get(std::string_view key);

  // For a rotation of the master key. A record stored under `key` that the
  // current key opens, sealed again under `new_master_key`; nullopt for a
  // value the current key does not open (not a barrier record, or one no
  // longer readable, which stays as it is).
  Result<std::optional<std::string>> reseal(std::string_view key, std::string_view record,
                                            const smime::SecretBytes& new_master_key) const;
  // Takes `new_master_key` in place of the current one and hands that back,
  // for a rotation that fails to put back.
  Result<smime::SecretBytes> replace_master_key(smime::SecretBytes new_master_key);

 private:
  Storage& storage_;
  mutable std::shared_mutex mutex_;
  std::optional<smime::SecretBytes> master_key_;
};

}  // namespace mailkms::keystore
