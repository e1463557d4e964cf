#include "mailkms/smime/algorithms.hpp"

#include <openssl/obj_mac.h>

#include <algorithm>
#include <array>
#include <cctype>

namespace mailkms::smime {
namespace {

struct DigestRow {
  Digest digest;
  std::string_view name;
  std::string_view micalg;
  const char* openssl;
  int nid;
};

constexpr std::array kDigests{
    DigestRow{Digest::sha1, "sha1", "sha-1", "SHA1", NID_sha1},
    DigestRow{Digest::sha256, "sha256", "sha-256", "SHA256", NID_sha256},
    DigestRow{Digest::sha384, "sha384", "sha-384", "SHA384", NID_sha384},
    DigestRow{Digest::sha512, "sha512", "sha-512", "SHA512", NID_sha512},
};

struct CipherRow {
  Cipher cipher;
  std::string_view name;
  const char* openssl;
  int nid;
};

// RC2 variants share one OID; the effective key size is a parameter.
constexpr std::array kCiphers{
    CipherRow{Cipher::aes256_gcm, "aes-256-gcm", "AES-256-GCM", NID_aes_256_gcm},
    CipherRow{Cipher::aes128_gcm, "aes-128-gcm", "AES-128-GCM", NID_aes_128_gcm},
    CipherRow{Cipher::aes256_cbc, "aes-256-cbc", "AES-256-CBC", NID_aes_256_cbc},
    CipherRow{Cipher::aes192_cbc, "aes-192-cbc", "AES-192-CBC", NID_aes_192_cbc},
    CipherRow{Cipher::aes128_cbc, "aes-128-cbc", "AES-128-CBC", NID_aes_128_cbc},
    CipherRow{Cipher::des_ede3_cbc, "3des", "DES-EDE3-CBC", NID_des_ede3_cbc},
    CipherRow{Cipher::des_cbc, "des", "DES-CBC", NID_des_cbc},
    CipherRow{Cipher::rc2_128, "rc2-128", "RC2-CBC", NID_rc2_cbc},
    CipherRow{Cipher::rc2_64, "rc2-64", "RC2-64-CBC", NID_rc2_64_cbc},
    CipherRow{Cipher::rc2_40, "rc2-40", "RC2-40-CBC", NID_rc2_40_cbc},
};

constexpr std::array kDefaultPreference{Cipher::aes256_gcm, Cipher::aes128_gcm, Cipher::aes256_cbc,
                                        Cipher::aes128_cbc};

// Lower-case and drop '-' and '_', so "AES_256-CBC" and "aes256cbc" compare equal.
std::string fold(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
    if (c == '-' || c == '_') continue;
    out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  return out;
}

const DigestRow& row(Digest d) { return kDigests[static_cast<std::size_t>(d)]; }
const CipherRow& row(Cipher c) { return kCiphers[static_cast<std::size_t>(c)]; }

}  // namespace

std::optional<Digest> parse_digest(std::string_view text) {
  const std::string key = fold(text);
  for (const auto& r : kDigests) {
    if (fold(r.name) == key) return r.digest;
  }
  return std::nullopt;
}

std::string_view name(Digest digest) { return row(digest).name; }
std::string_view micalg(Digest digest) { return row(digest).micalg; }
const char* openssl_name(Digest digest) { return row(digest).openssl; }
bool is_weak(Digest digest) { return digest == Digest::sha1; }
int nid(Digest digest) { return row(digest).nid; }

std::optional<Digest> digest_from_nid(int nid) {
  for (const auto& r : kDigests) {
    if (r.nid == nid) return r.digest;
  }
  return std::nullopt;
}

std::optional<Cipher> parse_cipher(std::string_view text) {
  const std::string key = fold(text);
  if (key == "3des" || key == "desede3cbc" || key == "tripledes") return Cipher::des_ede3_cbc;
  if (key == "rc2" || key == "rc2cbc") return Cipher::rc2_128;
  for (const auto& r : kCiphers) {
    if (fold(r.name) == key || fold(r.openssl) == key) return r.cipher;
  }
  return std::nullopt;
}

std::string_view name(Cipher cipher) { return row(cipher).name; }
const char* openssl_name(Cipher cipher) { return row(cipher).openssl; }
int nid(Cipher cipher) { return row(cipher).nid; }
bool is_aead(Cipher cipher) { return cipher == Cipher::aes256_gcm || cipher == Cipher::aes128_gcm; }

bool is_legacy(Cipher cipher) {
  return cipher == Cipher::des_cbc || cipher == Cipher::rc2_128 || cipher == Cipher::rc2_64 ||
         cipher == Cipher::rc2_40;
}

bool is_decrypt_only(Cipher cipher) { return is_legacy(cipher); }

std::optional<Cipher> cipher_from_nid(int nid) {
  for (const auto& r : kCiphers) {
    if (r.nid == nid) return r.cipher;
  }
  return std::nullopt;
}

std::span<const Cipher> default_cipher_preference() { return kDefaultPreference; }

std::span<const Cipher> all_ciphers() {
  static constexpr auto all = [] {
    std::array<Cipher, kCiphers.size()> out{};
    for (std::size_t i = 0; i < kCiphers.size(); ++i) out[i] = kCiphers[i].cipher;
    return out;
  }();
  return all;
}

Result<Cipher> choose_cipher(std::span<const std::optional<Capabilities>> recipients,
                             std::span<const Cipher> preference, Cipher fallback) {
  const auto readable_by_all = [&](Cipher c) {
    return std::all_of(recipients.begin(), recipients.end(), [c](const auto& caps) {
      return !caps || std::find(caps->ciphers.begin(), caps->ciphers.end(), c) != caps->ciphers.end();
    });
  };
  const bool any_unknown = std::any_of(recipients.begin(), recipients.end(), [](const auto& c) { return !c; });
  if (any_unknown) {
    if (readable_by_all(fallback)) return fallback;
    return make_error(Errc::unsupported_algorithm,
                      "no cipher is readable by every recipient: some advertise no " + std::string(name(fallback)));
  }
  for (const Cipher c : preference) {
    if (readable_by_all(c)) return c;
  }
  return make_error(Errc::unsupported_algorithm, "the recipients advertise no cipher in common that policy allows");
}

}  // namespace mailkms::smime
