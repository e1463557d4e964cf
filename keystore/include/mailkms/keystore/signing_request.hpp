// A user's own PKCS#10 request, as it arrives by mail: only its public key
// is taken (subject and extensions come from our profile), and only once
// the request shows it holds the private key and the key is one we certify.
// Reads untrusted bytes: every failure is an error value.
#pragma once

#include <openssl/evp.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "mailkms/keystore/error.hpp"

namespace mailkms::keystore {

// A PEM request of a 16384-bit RSA key is under 6 KiB.
inline constexpr std::size_t kMaxSigningRequest = std::size_t{64} * 1024;

struct PublicKeyFree {
  void operator()(EVP_PKEY* key) const noexcept { EVP_PKEY_free(key); }
};
using PublicKey = std::unique_ptr<EVP_PKEY, PublicKeyFree>;

// Why a user's own signing key is too weak (or too costly) for us to
// certify, or nothing: RSA of 2048 to 16384 bits, or EC on P-256 or P-384.
std::optional<std::string> unacceptable_key(const EVP_PKEY* key);

// The request's public key, checked as above; the key type is judged
// before the signature, so no other kind of key is ever computed with.
Result<PublicKey> read_signing_request(std::string_view csr_pem);

}  // namespace mailkms::keystore
