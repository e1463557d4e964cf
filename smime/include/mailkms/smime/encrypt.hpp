// Encryption: EnvelopedData (CBC ciphers) or AuthEnvelopedData (AES-GCM,
// RFC 5083/5084) to any number of recipients, each with the key transport
// it can read. Needs only public certificates.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "mailkms/smime/algorithms.hpp"
#include "mailkms/smime/certificate.hpp"
#include "mailkms/smime/crypto_context.hpp"
#include "mailkms/smime/mime.hpp"
#include "mailkms/smime/result.hpp"
#include "mailkms/smime/sign.hpp"
#include "mailkms/smime/spool.hpp"

namespace mailkms::smime {

struct Recipient {
  Certificate certificate;
  // For RSA certificates; EC certificates always use ECDH (RFC 5753) with
  // the X9.63 KDF over SHA-256 and AES key wrap.
  KeyTransport transport = KeyTransport::rsa_pkcs1v15;
};

// RSA-OAEP for recipients who advertised it, PKCS#1 v1.5 otherwise (what
// every deployed client reads).
KeyTransport choose_key_transport(const std::optional<Capabilities>& capabilities);

struct EncryptOptions {
  // aes-256-cbc by default: Outlook and GnuPG 2.2's gpgsm cannot read
  // AuthEnvelopedData, so GCM is used only when chosen (see choose_cipher).
  Cipher cipher = Cipher::aes256_cbc;
  MimeLimits limits;
};

// The DER of an (Auth)EnvelopedData over `content`.
Result<std::string> build_enveloped_data(const CryptoContext& ctx, std::string_view content,
                                         std::span<const Recipient> recipients, const EncryptOptions& options);

Result<Entity> encrypt_entity(const CryptoContext& ctx, const Entity& entity, std::span<const Recipient> recipients,
                              const EncryptOptions& options);

Result<std::string> encrypt_message(const CryptoContext& ctx, std::string_view message,
                                    std::span<const Recipient> recipients, const EncryptOptions& options);

// Signs first, then encrypts the signed entity (RFC 8551 §3.7).
Result<std::string> sign_and_encrypt_message(const CryptoContext& ctx, std::string_view message, Signer& signer,
                                             const SignOptions& sign_options, std::span<const Recipient> recipients,
                                             const EncryptOptions& encrypt_options);

// Streaming forms: from one spool to another in fixed-size chunks, so a
// message with a 100 MB attachment needs no more than a few buffers.
Status encrypt_message(const CryptoContext& ctx, const Spool& message, Spool& out,
                       std::span<const Recipient> recipients, const EncryptOptions& options);
Status sign_and_encrypt_message(const CryptoContext& ctx, const Spool& message, Spool& out, Signer& signer,
                                const SignOptions& sign_options, std::span<const Recipient> recipients,
                                const EncryptOptions& encrypt_options);

}  // namespace mailkms::smime
