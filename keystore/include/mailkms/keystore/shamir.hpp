// Shamir's secret sharing over GF(2^8), the AES field: any `threshold` of
// `count` shares rebuild the secret, and fewer say nothing about it. Used to
// split the key that seals the master key among administrators.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mailkms/keystore/error.hpp"
#include "mailkms/smime/decrypt.hpp"

namespace mailkms::keystore {

struct Share {
  std::uint8_t index = 0;  // the x coordinate, 1..255
  std::string bytes;       // one y coordinate per secret byte
};

Result<std::vector<Share>> split_secret(const smime::SecretBytes& secret, int count, int threshold);
// Needs at least the threshold of distinct shares; with fewer, or with a
// wrong one, the result is some other value (the seal then fails to open).
Result<smime::SecretBytes> combine_shares(std::span<const Share> shares);

// "mailkms-share-1-3-<hex>": the format version, the index, the bytes.
std::string encode_share(const Share& share);
Result<Share> decode_share(std::string_view text);

}  // namespace mailkms::keystore
