// Shared by the sign, encrypt and open units: building and reading the MIME
// entities that carry CMS (RFC 8551 §3.2–3.5).
#pragma once

#include <string>
#include <string_view>

#include "mailkms/smime/crypto_context.hpp"
#include "mailkms/smime/mime.hpp"
#include "mailkms/smime/result.hpp"
#include "mailkms/smime/ossl.hpp"

namespace mailkms::smime::detail {

// application/pkcs7-mime entity with the given smime-type and DER body.
Entity pkcs7_mime_entity(std::string_view smime_type, std::string_view der);

// A fresh multipart boundary. It contains "=_", which neither base64 nor
// quoted-printable can produce, and 96 random bits, so it cannot occur in
// the content without a scan of it.
std::string make_boundary();

// The CMS carried in a body encoded per `entity`'s Content-Transfer-Encoding.
Result<std::string> decode_cms_body(const Entity& entity);

// Parses DER or BER into a CMS structure bound to `ctx`.
// With `consumed`, the number of bytes the DER took (anything after it is
// not CMS).
Result<ossl::Cms> parse_cms(const CryptoContext& ctx, std::string_view der, std::size_t* consumed = nullptr);

}  // namespace mailkms::smime::detail
