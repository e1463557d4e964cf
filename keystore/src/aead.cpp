#include "aead.hpp"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <memory>

#include "mailkms/smime/ossl.hpp"

namespace mailkms::keystore::detail {
namespace {

constexpr char kVersion = 1;
constexpr std::size_t kNonce = 12;
constexpr std::size_t kTag = 16;

using smime::ossl::CipherCtx;

const unsigned char* bytes(std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); }

}  // namespace

smime::SecretBytes random_secret(std::size_t n) {
  std::string out(n, '\0');
  if (RAND_priv_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) std::abort();
  return smime::SecretBytes(std::move(out));
}

namespace {

std::string lower_hex(const unsigned char* data, std::size_t size) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < size; ++i) {
    out.push_back(kHex[data[i] >> 4]);
    out.push_back(kHex[data[i] & 15]);
  }
  return out;
}

}  // namespace

std::string hex_sha256(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr);
  return lower_hex(digest, length);
}

Result<std::string> hex_hmac_sha256(const smime::SecretBytes& key, std::string_view data) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  std::size_t length = 0;
  if (EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, key.data(), key.size(),
                reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, sizeof mac, &length) == nullptr) {
    return make_error(Errc::crypto_failed, "HMAC-SHA256 failed");
  }
  return lower_hex(mac, length);
}

Result<std::string> seal_record(const smime::SecretBytes& key, std::string_view plaintext, std::string_view aad) {
  if (key.size() != kKeyBytes) return make_error(Errc::internal, "wrong key size for AES-256-GCM");
  std::string out(1 + kNonce + plaintext.size() + kTag, '\0');
  out[0] = kVersion;
  auto* nonce = reinterpret_cast<unsigned char*>(out.data() + 1);
  if (RAND_bytes(nonce, kNonce) != 1) return make_error(Errc::crypto_failed, "no randomness for a nonce");
  const CipherCtx ctx(EVP_CIPHER_CTX_new());
  int n = 0;
  auto* body = reinterpret_cast<unsigned char*>(out.data() + 1 + kNonce);
  if (!ctx || EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), nonce) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &n, bytes(aad), static_cast<int>(aad.size())) != 1 ||
      EVP_EncryptUpdate(ctx.get(), body, &n, bytes(plaintext), static_cast<int>(plaintext.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), body + n, &n) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_GET_TAG, kTag, body + plaintext.size()) != 1) {
    return make_error(Errc::crypto_failed, "AES-256-GCM encryption failed");
  }
  return out;
}

Result<smime::SecretBytes> open_record(const smime::SecretBytes& key, std::string_view record, std::string_view aad) {
  if (key.size() != kKeyBytes) return make_error(Errc::internal, "wrong key size for AES-256-GCM");
  if (record.size() < 1 + kNonce + kTag || record[0] != kVersion) {
    return make_error(Errc::corrupt, "not a sealed record of a version we know");
  }
  const std::string_view nonce = record.substr(1, kNonce);
  const std::string_view ciphertext = record.substr(1 + kNonce, record.size() - 1 - kNonce - kTag);
  std::string tag(record.substr(record.size() - kTag));
  std::string plain(ciphertext.size(), '\0');
  const CipherCtx ctx(EVP_CIPHER_CTX_new());
  int n = 0;
  auto* out = reinterpret_cast<unsigned char*>(plain.data());
  const bool ok = ctx && EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), bytes(nonce)) == 1 &&
                  EVP_DecryptUpdate(ctx.get(), nullptr, &n, bytes(aad), static_cast<int>(aad.size())) == 1 &&
                  EVP_DecryptUpdate(ctx.get(), out, &n, bytes(ciphertext), static_cast<int>(ciphertext.size())) == 1 &&
                  EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_SET_TAG, kTag, tag.data()) == 1 &&
                  EVP_DecryptFinal_ex(ctx.get(), out + n, &n) == 1;
  if (!ok) {
    OPENSSL_cleanse(plain.data(), plain.size());
    return make_error(Errc::corrupt, "sealed record failed authentication: changed, moved, or another key");
  }
  return smime::SecretBytes(std::move(plain));
}

}  // namespace mailkms::keystore::detail
