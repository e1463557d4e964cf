// The master key at rest. It is never stored in the clear: a random
// key-encryption key wraps it, and that key comes from what the
// administrators chose at init — a passphrase (through scrypt), a key file
// of mode 0600, or Shamir shares of which any `threshold` suffice. The
// record that says how, with the KDF parameters and the wrapped master key,
// is stored beside the data ("core/seal").
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mailkms/keystore/error.hpp"
#include "mailkms/keystore/kdf.hpp"
#include "mailkms/keystore/shamir.hpp"
#include "mailkms/smime/decrypt.hpp"

namespace mailkms::keystore {

enum class SealMethod { passphrase, key_file, shares };
std::string_view to_string(SealMethod method) noexcept;

struct SealRecord {
  SealMethod method = SealMethod::passphrase;
  ScryptParameters scrypt;  // passphrase only
  std::string salt;         // passphrase only
  int share_count = 0;      // shares only
  int threshold = 0;        // shares only
  std::string wrapped_master_key;

  [[nodiscard]] std::string to_json() const;
  static Result<SealRecord> from_json(std::string_view text);
};

// A new random master key.
smime::SecretBytes new_master_key();

Result<SealRecord> seal_with_passphrase(const smime::SecretBytes& master_key, std::string_view passphrase,
                                        const ScryptParameters& parameters = {});
// Returns the record and the key file's contents, to be written with mode 0600.
Result<std::pair<SealRecord, std::string>> seal_with_key_file(const smime::SecretBytes& master_key);
// Returns the record and `count` shares for as many administrators.
Result<std::pair<SealRecord, std::vector<std::string>>> seal_with_shares(const smime::SecretBytes& master_key,
                                                                         int count, int threshold);

// Each fails with Errc::wrong_secret when what was given does not open the seal.
Result<smime::SecretBytes> unseal_with_passphrase(const SealRecord& record, std::string_view passphrase);
// Refuses a key file that its group or others may read.
Result<smime::SecretBytes> unseal_with_key_file(const SealRecord& record, const std::filesystem::path& path);
Result<smime::SecretBytes> unseal_with_shares(const SealRecord& record, std::span<const std::string> shares);

// For a rotation of the master key: the key-encryption key the unseal
// secret gives, once it has opened the seal (Errc::wrong_secret if not).
// The keystore drops it after unsealing, so a rotation asks for the secret
// again.
Result<smime::SecretBytes> seal_key_from_passphrase(const SealRecord& record, std::string_view passphrase);
Result<smime::SecretBytes> seal_key_from_key_file(const SealRecord& record, const std::filesystem::path& path);
Result<smime::SecretBytes> seal_key_from_shares(const SealRecord& record, std::span<const std::string> shares);
// The master key `record` wraps, opened with its key-encryption key.
Result<smime::SecretBytes> open_seal(const SealRecord& record, const smime::SecretBytes& seal_key);
// The same seal (method, KDF parameters, salt, shares) over another master
// key: the unseal secret stays what it was.
Result<SealRecord> reseal(const SealRecord& record, const smime::SecretBytes& seal_key,
                          const smime::SecretBytes& new_master_key);

}  // namespace mailkms::keystore
