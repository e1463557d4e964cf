// The algorithms the engine speaks, as closed enums with their names, OIDs
// and MIME labels. What may be *used* is the caller's policy; this file only
// says what exists and how it is spelled.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mailkms/smime/result.hpp"

namespace mailkms::smime {

enum class Digest { sha1, sha256, sha384, sha512 };

// Content-encryption algorithms. The ones after des_ede3_cbc are read-only:
// they are found in archived mail and need OpenSSL's legacy provider.
enum class Cipher {
  aes256_gcm,
  aes128_gcm,
  aes256_cbc,
  aes192_cbc,
  aes128_cbc,
  des_ede3_cbc,
  des_cbc,
  rc2_128,
  rc2_64,
  rc2_40,
};

enum class KeyTransport { rsa_pkcs1v15, rsa_oaep_sha256 };
enum class SignatureScheme { rsa_pkcs1v15, rsa_pss, ecdsa };

// "sha256", "sha-256", "SHA256", "sha1"… as written by clients and admins.
std::optional<Digest> parse_digest(std::string_view name);
std::string_view name(Digest digest);    // "sha256"
std::string_view micalg(Digest digest);  // "sha-256" (RFC 8551 §3.5.3.2)
const char* openssl_name(Digest digest); // "SHA256"
bool is_weak(Digest digest);

// "aes-256-cbc", "aes256-gcm", "3des", "des-ede3-cbc", "rc2-40"…
std::optional<Cipher> parse_cipher(std::string_view name);
std::string_view name(Cipher cipher);    // "aes-256-cbc"
const char* openssl_name(Cipher cipher); // "AES-256-CBC"
bool is_aead(Cipher cipher);
// Ciphers that need OpenSSL's legacy provider (DES, RC2).
bool is_legacy(Cipher cipher);
// Ciphers mailkms will never encrypt with, whatever the configuration.
bool is_decrypt_only(Cipher cipher);

std::optional<Cipher> cipher_from_nid(int nid);
int nid(Cipher cipher);
std::optional<Digest> digest_from_nid(int nid);
int nid(Digest digest);

// Every cipher the engine knows, strongest first.
std::span<const Cipher> all_ciphers();

// Ciphers we advertise in SMIMECapabilities and pick from by default,
// strongest first (RFC 8551 §2.5.2).
std::span<const Cipher> default_cipher_preference();

// What a correspondent said it can read, from the SMIMECapabilities signed
// attribute of their last signed message (RFC 8551 §2.5.2).
struct Capabilities {
  std::vector<Cipher> ciphers;  // in their order of preference
  bool rsa_oaep = false;        // they listed RSAES-OAEP for key transport
};

// Chooses the content-encryption cipher for a set of recipients: the first of
// `preference` that every recipient with known capabilities can read. If any
// recipient's capabilities are unknown, only `fallback` is known to be safe
// for them, so it is the answer if the others can read it. Fails when no
// cipher fits all: the caller must then split the recipients.
Result<Cipher> choose_cipher(std::span<const std::optional<Capabilities>> recipients,
                             std::span<const Cipher> preference, Cipher fallback);

}  // namespace mailkms::smime
