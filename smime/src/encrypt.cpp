#include "mailkms/smime/encrypt.hpp"

#include <openssl/rsa.h>

#include "mailkms/smime/ossl.hpp"
#include "sign_internal.hpp"
#include "smime_entity.hpp"
#include "spooled_message.hpp"
#include "stream.hpp"
#include "text.hpp"

namespace mailkms::smime {
namespace {

Status add_recipient(CMS_ContentInfo* cms, const Recipient& recipient) {
  const Certificate& cert = recipient.certificate;
  if (!cert.is_rsa() && !cert.is_ec()) {
    return make_error(Errc::invalid_certificate, "recipient key is neither RSA nor EC: " + cert.subject());
  }
  // RFC 8550 §4.4.2: a key whose keyUsage forbids it is not encrypted to.
  // Validity and revocation are the caller's (the certificate cache's).
  const unsigned needed = cert.is_ec() ? KU_KEY_AGREEMENT : KU_KEY_ENCIPHERMENT;
  if ((X509_get_extension_flags(cert.native()) & EXFLAG_KUSAGE) != 0 && (X509_get_key_usage(cert.native()) & needed) == 0) {
    return make_error(Errc::invalid_certificate, "the certificate's keyUsage does not allow encryption: " + cert.subject());
  }
  CMS_RecipientInfo* ri = CMS_add1_recipient_cert(cms, cert.native(), CMS_KEY_PARAM);
  if (ri == nullptr) return ossl::error(Errc::invalid_certificate, "cannot encrypt to " + cert.subject());
  EVP_PKEY_CTX* pctx = CMS_RecipientInfo_get0_pkey_ctx(ri);
  if (pctx == nullptr) return ossl::error(Errc::internal, "recipient has no key context");
  if (cert.is_ec()) {
    // OpenSSL would default to the SHA-1 KDF; RFC 8551 §2.7.1 wants SHA-256.
    if (EVP_PKEY_CTX_set_ecdh_kdf_md(pctx, EVP_sha256()) <= 0) {
      return ossl::error(Errc::internal, "cannot select the ECDH KDF");
    }
  } else if (recipient.transport == KeyTransport::rsa_oaep_sha256) {
    if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_OAEP_PADDING) <= 0 ||
        EVP_PKEY_CTX_set_rsa_oaep_md(pctx, EVP_sha256()) <= 0 ||
        EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) <= 0) {
      return ossl::error(Errc::internal, "cannot select RSA-OAEP");
    }
  }
  return Ok{};
}

}  // namespace

KeyTransport choose_key_transport(const std::optional<Capabilities>& capabilities) {
  return capabilities && capabilities->rsa_oaep ? KeyTransport::rsa_oaep_sha256 : KeyTransport::rsa_pkcs1v15;
}

namespace {

Result<ossl::Cms> start_enveloped_data(const CryptoContext& ctx, std::span<const Recipient> recipients,
                                       const EncryptOptions& options) {
  ERR_clear_error();  // whatever an earlier caller left must not become our reason
  if (recipients.empty()) return make_error(Errc::invalid_argument, "no recipients to encrypt to");
  if (is_decrypt_only(options.cipher)) {
    return make_error(Errc::unsupported_algorithm,
                      std::string(name(options.cipher)) + " is only ever used to read old mail, never to encrypt");
  }
  ossl::Cipher cipher(EVP_CIPHER_fetch(ctx.libctx(), openssl_name(options.cipher), nullptr));
  if (!cipher) return ossl::error(Errc::unsupported_algorithm, "cipher unavailable");
  ossl::Cms cms(is_aead(options.cipher) ? CMS_AuthEnvelopedData_create_ex(cipher.get(), ctx.libctx(), nullptr)
                                        : CMS_EnvelopedData_create_ex(cipher.get(), ctx.libctx(), nullptr));
  if (!cms) return ossl::error(Errc::internal, "cannot start EnvelopedData");
  for (const auto& r : recipients) MAILKMS_CHECK(add_recipient(cms.get(), r));
  // Created enveloped data starts out detached; the content belongs inside.
  if (CMS_set_detached(cms.get(), 0) != 1) return ossl::error(Errc::internal, "cannot embed the content");
  return cms;
}

std::string_view smime_type(const EncryptOptions& options) {
  return is_aead(options.cipher) ? "authEnveloped-data" : "enveloped-data";
}

// Encrypts `content` as it streams, writing the base64 body into `out`.
Status encrypt_pieces(const CryptoContext& ctx, const detail::Pieces& content, std::span<const Recipient> recipients,
                      const EncryptOptions& options, Spool& out) {
  MAILKMS_TRY(cms, start_enveloped_data(ctx, recipients, options));
  detail::Base64Sink sink(out);
  detail::PiecesSource in(content);
  if (in.bio() == nullptr || sink.bio() == nullptr) return ossl::error(Errc::internal, "cannot set up streaming");
  const bool encoded = i2d_CMS_bio_stream(sink.bio(), cms.get(), in.bio(), CMS_STREAM | CMS_BINARY) == 1;
  // A spool that cannot be read or written (a full disk) is the cause,
  // whatever OpenSSL made of it.
  if (in.error()) return *in.error();
  if (sink.error()) return *sink.error();
  if (!encoded) return ossl::error(Errc::internal, "encryption failed");
  return sink.finish();
}

// The header fields of an encrypted layer.
std::vector<HeaderField> enveloped_headers(const EncryptOptions& options) {
  return detail::pkcs7_mime_entity(smime_type(options), {}).headers;
}

}  // namespace

Result<std::string> build_enveloped_data(const CryptoContext& ctx, std::string_view content,
                                         std::span<const Recipient> recipients, const EncryptOptions& options) {
  MAILKMS_TRY(cms, start_enveloped_data(ctx, recipients, options));
  auto in = ossl::memory_bio(content);
  if (!in || CMS_final(cms.get(), in.get(), nullptr, CMS_BINARY) != 1) {
    return ossl::error(Errc::internal, "encryption failed");
  }
  std::string der = ossl::to_der<CMS_ContentInfo>(cms.get(), i2d_CMS_ContentInfo);
  if (der.empty()) return ossl::error(Errc::internal, "cannot encode EnvelopedData");
  return der;
}

Result<Entity> encrypt_entity(const CryptoContext& ctx, const Entity& entity, std::span<const Recipient> recipients,
                              const EncryptOptions& options) {
  detail::Pieces content;
  content.add(entity.serialize());
  Spool body({.memory_limit = static_cast<std::size_t>(-1)});
  MAILKMS_CHECK(encrypt_pieces(ctx, content, recipients, options, body));
  MAILKMS_TRY(text, body.to_string());
  return Entity{enveloped_headers(options), std::move(text)};
}

Status encrypt_message(const CryptoContext& ctx, const Spool& message, Spool& out,
                       std::span<const Recipient> recipients, const EncryptOptions& options) {
  MAILKMS_TRY(parsed, detail::parse_spooled_message(message, options.limits));
  // Inside CMS any octets travel safely: only line ends are made canonical.
  Spool scratch;
  MAILKMS_TRY(content, detail::canonical_entity(parsed, scratch));
  MAILKMS_CHECK(out.append(detail::header_section(parsed.outer, enveloped_headers(options))));
  return encrypt_pieces(ctx, content, recipients, options, out);
}

Status sign_and_encrypt_message(const CryptoContext& ctx, const Spool& message, Spool& out, Signer& signer,
                                const SignOptions& sign_options, std::span<const Recipient> recipients,
                                const EncryptOptions& encrypt_options) {
  MAILKMS_TRY(parsed, detail::parse_spooled_message(message, sign_options.limits));
  Spool scratch;
  MAILKMS_TRY(signed_entity, detail::sign_spooled(ctx, parsed, scratch, signer, sign_options));
  detail::Pieces content;
  std::string headers;
  detail::append_fields(headers, signed_entity.headers);
  content.add(headers + "\r\n");
  content.add(signed_entity.body);
  MAILKMS_CHECK(out.append(detail::header_section(parsed.outer, enveloped_headers(encrypt_options))));
  return encrypt_pieces(ctx, content, recipients, encrypt_options, out);
}

Result<std::string> encrypt_message(const CryptoContext& ctx, std::string_view message,
                                    std::span<const Recipient> recipients, const EncryptOptions& options) {
  const Spool in = Spool::borrow(message);
  Spool out({.memory_limit = static_cast<std::size_t>(-1)});
  out.reserve(message.size() / 3 * 4 + 8192);  // base64 growth plus the CMS and signature
  MAILKMS_CHECK(encrypt_message(ctx, in, out, recipients, options));
  return out.take_string();
}

Result<std::string> sign_and_encrypt_message(const CryptoContext& ctx, std::string_view message, Signer& signer,
                                             const SignOptions& sign_options, std::span<const Recipient> recipients,
                                             const EncryptOptions& encrypt_options) {
  const Spool in = Spool::borrow(message);
  Spool out({.memory_limit = static_cast<std::size_t>(-1)});
  out.reserve(message.size() / 3 * 4 + 8192);  // base64 growth plus the CMS and signature
  MAILKMS_CHECK(sign_and_encrypt_message(ctx, in, out, signer, sign_options, recipients, encrypt_options));
  return out.take_string();
}

}  // namespace mailkms::smime
