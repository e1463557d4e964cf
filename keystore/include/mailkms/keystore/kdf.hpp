// Deriving keys from things people type: scrypt (RFC 7914) through
// OpenSSL, with its cost parameters kept beside what it protects.
#pragma once

#include <cstdint>
#include <string_view>

#include "mailkms/keystore/error.hpp"
#include "mailkms/smime/decrypt.hpp"

namespace mailkms::keystore {

struct ScryptParameters {
  std::uint64_t n = std::uint64_t{1} << 17;  // 128 MiB with r = 8: costly to guess
  std::uint32_t r = 8;
  std::uint32_t p = 1;
};

// 32 bytes from `secret` and `salt`.
Result<smime::SecretBytes> scrypt(std::string_view secret, std::string_view salt, const ScryptParameters& parameters);

// 32 bytes for one purpose, named by `label`, from a key that is already
// uniformly random (HKDF-SHA256, RFC 5869): never from something typed.
Result<smime::SecretBytes> hkdf_sha256(const smime::SecretBytes& key, std::string_view label);

}  // namespace mailkms::keystore
