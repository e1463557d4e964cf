// Unwrapping whatever S/MIME a message carries: any nesting of signed and
// encrypted layers (sign-then-encrypt, encrypt-then-sign, triple wrapping),
// each verified or decrypted in turn, down to the content a reader sees.
// Also describes layers without keys, for administrators.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mailkms/smime/decrypt.hpp"
#include "mailkms/smime/verify.hpp"

namespace mailkms::smime {

enum class LayerKind { signed_multipart, signed_opaque, enveloped, auth_enveloped };
std::string_view to_string(LayerKind kind) noexcept;

// The S/MIME layer an entity is, or nullopt if it is plain content.
Result<std::optional<LayerKind>> classify(const CryptoContext& ctx, const Entity& entity);

// Whether an application/pkcs7-mime entity is, to its last byte, an
// EnvelopedData or AuthEnvelopedData naming at least one recipient and
// carrying its encrypted content: what may pass as already encrypted. A
// label, or a CMS prefix with something else behind it, is not enough.
bool is_complete_encryption(const CryptoContext& ctx, const Entity& entity);

struct Layer {
  LayerKind kind;
  std::optional<VerifyResult> verification;  // signed layers (content moved out)
  std::optional<Cipher> cipher;              // encrypted layers
  std::optional<Certificate> recipient;      // encrypted layers: whose key opened it
};

struct Opened {
  std::vector<Layer> layers;  // outermost first
  Entity content;             // innermost content reached
  std::optional<Error> error; // why unwrapping stopped early, if it did
};

Opened open_entity(const CryptoContext& ctx, const Entity& entity, std::span<KeyUnwrapper* const> keys,
                   const VerifyOptions& options);
// `options.from` defaults to the message's From.
Opened open_message(const CryptoContext& ctx, std::string_view message, std::span<KeyUnwrapper* const> keys,
                    VerifyOptions options);

struct LayerDescription {
  std::string title;  // "encrypted (enveloped-data)", or "content" for what is inside
  std::vector<std::string> lines;  // "cipher: aes-256-cbc", "recipient: issuer CN=…, serial 0A (RSA-OAEP)" …
};

// Each layer's type, cipher or digest, recipients, signers and the
// certificates it carries; stops at an encrypted layer none of `keys` opens.
Result<std::vector<LayerDescription>> inspect_entity(const CryptoContext& ctx, const Entity& entity,
                                                     std::span<KeyUnwrapper* const> keys, const MimeLimits& limits);

}  // namespace mailkms::smime
