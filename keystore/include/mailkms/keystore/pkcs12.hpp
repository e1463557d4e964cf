// PKCS#12 files for a user: the only form in which a private key ever
// leaves the keystore, always under the owner's password. The modern
// profile is PBES2 with AES-256-CBC and PBKDF2-HMAC-SHA256 and a SHA-256
// MAC; the legacy profile (PBE-SHA1-3DES, SHA-1 MAC) is for clients that
// cannot read the modern one (GnuPG 2.2's gpgsm, older Windows). Never
// RC2-40.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "mailkms/keystore/error.hpp"
#include "mailkms/smime/certificate.hpp"
#include "mailkms/smime/crypto_context.hpp"

namespace mailkms::keystore {

enum class Pkcs12Profile { modern, legacy };
std::optional<Pkcs12Profile> parse_pkcs12_profile(std::string_view name);

struct Pkcs12Entry {
  smime::PrivateKey key;
  smime::Certificate certificate;
  std::string friendly_name;
};

struct Pkcs12Options {
  Pkcs12Profile profile = Pkcs12Profile::modern;
  int iterations = 600'000;  // PBKDF2 rounds (modern); the legacy profile uses 2048 as clients expect
};

// DER of a PKCS#12 with every entry (key and certificate paired by
// localKeyId) and the CA certificates in `chain`.
Result<std::string> make_pkcs12(const smime::CryptoContext& ctx, std::span<const Pkcs12Entry> entries,
                                std::span<const smime::Certificate> chain, std::string_view password,
                                const Pkcs12Options& options = {});

}  // namespace mailkms::keystore
