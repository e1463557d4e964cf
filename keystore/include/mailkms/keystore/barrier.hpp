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

 private:
  Storage& storage_;
  mutable std::shared_mutex mutex_;
  std::optional<smime::SecretBytes> master_key_;
};

}  // namespace mailkms::keystore
