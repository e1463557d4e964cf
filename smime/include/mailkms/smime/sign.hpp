// Signing, split so that the private key can live in another process:
//   (a) the entity is canonicalized and digested here,
//   (b) a Signer — in-process (LocalSigner) or the keystore's client —
//       signs the DER of the signed attributes,
//   (c) the SignedData and its MIME wrapping are assembled here.
// Nothing in this unit needs a private key.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mailkms/smime/algorithms.hpp"
#include "mailkms/smime/certificate.hpp"
#include "mailkms/smime/crypto_context.hpp"
#include "mailkms/smime/mime.hpp"
#include "mailkms/smime/result.hpp"
#include "mailkms/smime/spool.hpp"

namespace mailkms::smime {

class Signer {
 public:
  virtual ~Signer() = default;
  [[nodiscard]] virtual const Certificate& certificate() const = 0;
  // Intermediate CA certificates to carry in the message, nearest first.
  [[nodiscard]] virtual const std::vector<Certificate>& chain() const = 0;
  [[nodiscard]] virtual SignatureScheme scheme() const = 0;
  // The signature over `to_be_signed` (DER of the signed attributes) with
  // `digest` and this signer's scheme. Hashing is the signer's job, so a
  // remote signer sees what it signs.
  virtual Result<std::string> sign(Digest digest, std::string_view to_be_signed) = 0;
};

// A Signer whose key is in this process.
class LocalSigner final : public Signer {
 public:
  // `scheme` must fit the key: rsa_pkcs1v15 or rsa_pss for RSA, ecdsa for EC.
  static Result<LocalSigner> create(CryptoContextPtr ctx, Certificate certificate, PrivateKey key,
                                    std::vector<Certificate> chain = {},
                                    std::optional<SignatureScheme> scheme = std::nullopt);

  [[nodiscard]] const Certificate& certificate() const override { return certificate_; }
  [[nodiscard]] const std::vector<Certificate>& chain() const override { return chain_; }
  [[nodiscard]] SignatureScheme scheme() const override { return scheme_; }
  Result<std::string> sign(Digest digest, std::string_view to_be_signed) override;

 private:
  LocalSigner(CryptoContextPtr ctx, Certificate certificate, PrivateKey key, std::vector<Certificate> chain,
              SignatureScheme scheme);
  CryptoContextPtr ctx_;
  Certificate certificate_;
  PrivateKey key_;
  std::vector<Certificate> chain_;
  SignatureScheme scheme_;
};

struct SignOptions {
  Digest digest = Digest::sha256;
  // application/pkcs7-mime; smime-type=signed-data instead of multipart/signed.
  bool opaque = false;
  // Advertised in SMIMECapabilities: the ciphers we can read, strongest first.
  std::vector<Cipher> capabilities{default_cipher_preference().begin(), default_cipher_preference().end()};
  bool advertise_rsa_oaep = true;
  MimeLimits limits;
};

// The entity wrapped in a signature layer: a new entity (content headers
// and body) to replace the old one.
Result<Entity> sign_entity(const CryptoContext& ctx, const Entity& entity, Signer& signer, const SignOptions& options);

// A whole RFC 5322 message in, the signed message out; the outer header
// fields are kept byte for byte.
Result<std::string> sign_message(const CryptoContext& ctx, std::string_view message, Signer& signer,
                                 const SignOptions& options);

// The same, streaming from one spool to another: the body is never loaded
// into memory unless it must be re-encoded (8bit or binary bodies).
Status sign_message(const CryptoContext& ctx, const Spool& message, Spool& out, Signer& signer,
                    const SignOptions& options);

// The DER of a SignedData over `content` (its digest computed here; the
// content embedded unless `detached`). Exposed for the keystore and tests.
Result<std::string> build_signed_data(const CryptoContext& ctx, std::string_view content, bool detached,
                                      Signer& signer, const SignOptions& options);

}  // namespace mailkms::smime
