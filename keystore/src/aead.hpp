// AES-256-GCM with a random 96-bit nonce and associated data, in one
// versioned record: version (1 byte) | nonce (12) | ciphertext | tag (16).
// The barrier and the seal both use it.
#pragma once

#include <string>
#include <string_view>

#include "mailkms/keystore/error.hpp"
#include "mailkms/smime/decrypt.hpp"

namespace mailkms::keystore::detail {

inline constexpr std::size_t kKeyBytes = 32;

Result<std::string> seal_record(const smime::SecretBytes& key, std::string_view plaintext, std::string_view aad);
// Fails with Errc::corrupt when the record was changed, moved (other aad)
// or made with another key.
Result<smime::SecretBytes> open_record(const smime::SecretBytes& key, std::string_view record, std::string_view aad);

smime::SecretBytes random_secret(std::size_t bytes);

// SHA-256 of `data`, in lower-case hex.
std::string hex_sha256(std::string_view data);
// HMAC-SHA256 of `data` under `key`, in lower-case hex.
Result<std::string> hex_hmac_sha256(const smime::SecretBytes& key, std::string_view data);

}  // namespace mailkms::keystore::detail
