// Decryption, split so that the private key can live in another process.
// The engine parses the (Auth)EnvelopedData and decrypts the content; a
// KeyUnwrapper — in-process (LocalKeyUnwrapper) or the keystore's client —
// only turns the wrapped content-encryption key into the key. It never
// sees the message, so the keystore never parses untrusted CMS.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "mailkms/smime/algorithms.hpp"
#include "mailkms/smime/certificate.hpp"
#include "mailkms/smime/crypto_context.hpp"
#include "mailkms/smime/mime.hpp"
#include "mailkms/smime/result.hpp"

namespace mailkms::smime {

// Key material that wipes itself.
class SecretBytes {
 public:
  SecretBytes() = default;
  explicit SecretBytes(std::string bytes) : bytes_(std::move(bytes)) {}
  SecretBytes(SecretBytes&& other) noexcept;
  SecretBytes& operator=(SecretBytes&& other) noexcept;
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;
  ~SecretBytes();

  [[nodiscard]] const unsigned char* data() const { return reinterpret_cast<const unsigned char*>(bytes_.data()); }
  [[nodiscard]] std::size_t size() const { return bytes_.size(); }

 private:
  void wipe() noexcept;
  std::string bytes_;
};

// RSA key transport (RFC 5652 §6.2.1, RFC 8017 for OAEP).
struct KeyTransportInput {
  bool oaep = false;
  Digest oaep_digest = Digest::sha1;  // RSAES-OAEP-params defaults
  Digest mgf1_digest = Digest::sha1;
  std::string encrypted_key;
  std::size_t content_key_length = 0;  // a PKCS#1 v1.5 failure yields a random key this long
};

// ECDH key agreement (RFC 5753): ephemeral-static, X9.63 KDF, AES key wrap.
struct KeyAgreementInput {
  std::string originator_point;   // the sender's ephemeral public key, an EC point
  std::string ukm;                // user keying material, may be empty
  Digest kdf_digest = Digest::sha1;
  std::string key_wrap_algorithm; // DER AlgorithmIdentifier, part of the KDF input
  enum class Wrap { aes128, aes192, aes256, des_ede3 } wrap = Wrap::aes256;
  std::size_t kek_length = 0;     // 16, 24 or 32
  std::string encrypted_key;
};

using WrappedKey = std::variant<KeyTransportInput, KeyAgreementInput>;

class KeyUnwrapper {
 public:
  virtual ~KeyUnwrapper() = default;
  // The certificate whose key this unwrapper holds: how recipients match.
  [[nodiscard]] virtual const Certificate& certificate() const = 0;
  virtual Result<SecretBytes> unwrap(const WrappedKey& wrapped) = 0;
};

// What a KeyUnwrapper does with the private key in hand; used by
// LocalKeyUnwrapper and by the keystore.
Result<SecretBytes> unwrap_content_key(const CryptoContext& ctx, EVP_PKEY* key, const WrappedKey& wrapped);

class LocalKeyUnwrapper final : public KeyUnwrapper {
 public:
  static Result<LocalKeyUnwrapper> create(CryptoContextPtr ctx, Certificate certificate, PrivateKey key);
  [[nodiscard]] const Certificate& certificate() const override { return certificate_; }
  Result<SecretBytes> unwrap(const WrappedKey& wrapped) override;

 private:
  LocalKeyUnwrapper(CryptoContextPtr ctx, Certificate certificate, PrivateKey key)
      : ctx_(std::move(ctx)), certificate_(std::move(certificate)), key_(std::move(key)) {}
  CryptoContextPtr ctx_;
  Certificate certificate_;
  PrivateKey key_;
};

struct Decrypted {
  Entity content;
  Cipher cipher;
  bool authenticated = false;  // AuthEnvelopedData: the content's integrity was checked
  Certificate recipient;       // the certificate whose key opened it
  // The indexes in `keys` of those that can read it: whose own recipient
  // entries unwrap to the key that opened it. Recipient entries are not
  // protected: one that only names a certificate makes it no reader.
  std::vector<std::size_t> readers;
};

// Decrypts an application/pkcs7-mime enveloped-data or authEnveloped-data
// entity with whichever of `keys` is a recipient. Every key named among the
// recipients is asked to unwrap its entry, to tell the readers.
Result<Decrypted> decrypt_entity(const CryptoContext& ctx, const Entity& entity, std::span<KeyUnwrapper* const> keys,
                                 const MimeLimits& limits = {});

// The same on DER or BER CMS bytes; returns the decrypted content bytes.
struct DecryptedBytes {
  std::string content;
  Cipher cipher;
  bool authenticated = false;
  Certificate recipient;
  std::vector<std::size_t> readers;
};
Result<DecryptedBytes> decrypt_cms(const CryptoContext& ctx, std::string_view cms_der,
                                   std::span<KeyUnwrapper* const> keys);

}  // namespace mailkms::smime
