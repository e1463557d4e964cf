#include "mailkms/smime/sign.hpp"

#include <openssl/rsa.h>

#include <algorithm>
#include <cstring>

#include "der.hpp"
#include "mailkms/smime/ossl.hpp"
#include "sign_internal.hpp"
#include "smime_entity.hpp"
#include "text.hpp"

namespace mailkms::smime {
namespace {

std::string oid_der(int nid) {
  return ossl::to_der<ASN1_OBJECT>(OBJ_nid2obj(nid), i2d_ASN1_OBJECT);
}

// RSASSA-PSS-params (RFC 4055 §3.1) for `digest`, MGF1 with the same
// digest and a salt as long as the digest: what LocalSigner and the
// keystore produce.
std::string pss_parameters(Digest digest, int salt_length) {
  const std::string hash_alg = der::encode(der::tag::sequence, oid_der(nid(digest)));
  const std::string mgf = der::encode(der::tag::sequence, oid_der(NID_mgf1) + hash_alg);
  const std::string salt = der::encode(der::tag::integer, std::string(1, static_cast<char>(salt_length)));
  return der::encode(der::tag::sequence, der::encode(der::tag::context(0, true), hash_alg) +
                                             der::encode(der::tag::context(1, true), mgf) +
                                             der::encode(der::tag::context(2, true), salt));
}

// DER of the signed attributes as a SET OF, sorted as DER requires: the
// exact bytes a CMS signature covers (RFC 5652 §5.4).
Result<std::string> signed_attributes_der(CMS_SignerInfo* si) {
  std::vector<std::string> encoded;
  for (int i = 0; i < CMS_signed_get_attr_count(si); ++i) {
    std::string one = ossl::to_der<X509_ATTRIBUTE>(CMS_signed_get_attr(si, i), i2d_X509_ATTRIBUTE);
    if (one.empty()) return ossl::error(Errc::internal, "cannot encode a signed attribute");
    encoded.push_back(std::move(one));
  }
  std::sort(encoded.begin(), encoded.end(), [](const std::string& a, const std::string& b) {
    const int c = std::memcmp(a.data(), b.data(), std::min(a.size(), b.size()));
    return c != 0 ? c < 0 : a.size() < b.size();
  });
  std::string all;
  for (const auto& e : encoded) all += e;
  return der::encode(der::tag::set, all);
}

Status add_signed_attributes(CMS_SignerInfo* si, std::string_view message_digest, const SignOptions& options) {
  if (CMS_signed_add1_attr_by_NID(si, NID_pkcs9_contentType, V_ASN1_OBJECT, OBJ_nid2obj(NID_pkcs7_data), -1) != 1) {
    return ossl::error(Errc::internal, "cannot add contentType");
  }
  ASN1_TIME* now = X509_gmtime_adj(nullptr, 0);
  const int time_ok = now != nullptr && CMS_signed_add1_attr_by_NID(si, NID_pkcs9_signingTime, now->type, now, -1) == 1;
  ASN1_TIME_free(now);
  if (!time_ok) return ossl::error(Errc::internal, "cannot add signingTime");
  if (CMS_signed_add1_attr_by_NID(si, NID_pkcs9_messageDigest, V_ASN1_OCTET_STRING, message_digest.data(),
                                  static_cast<int>(message_digest.size())) != 1) {
    return ossl::error(Errc::internal, "cannot add messageDigest");
  }
  ossl::AlgorStack capabilities(sk_X509_ALGOR_new_null());
  STACK_OF(X509_ALGOR)* raw = capabilities.get();
  if (raw == nullptr) return ossl::error(Errc::internal, "cannot add capabilities");
  for (const Cipher c : options.capabilities) {
    if (is_decrypt_only(c)) continue;  // never invite anyone to use DES or RC2
    if (CMS_add_simple_smimecap(&raw, nid(c), -1) != 1) return ossl::error(Errc::internal, "cannot add capability");
  }
  if (options.advertise_rsa_oaep && CMS_add_simple_smimecap(&raw, NID_rsaesOaep, -1) != 1) {
    return ossl::error(Errc::internal, "cannot add capability");
  }
  if (sk_X509_ALGOR_num(raw) > 0 && CMS_add_smimecap(si, raw) != 1) {
    return ossl::error(Errc::internal, "cannot add SMIMECapabilities");
  }
  return Ok{};
}

}  // namespace

Result<LocalSigner> LocalSigner::create(CryptoContextPtr ctx, Certificate certificate, PrivateKey key,
                                        std::vector<Certificate> chain, std::optional<SignatureScheme> scheme) {
  if (!key.matches(certificate)) {
    ERR_clear_error();
    return make_error(Errc::invalid_certificate, "the private key does not belong to the certificate");
  }
  const SignatureScheme natural = certificate.is_ec() ? SignatureScheme::ecdsa : SignatureScheme::rsa_pkcs1v15;
  const SignatureScheme chosen = scheme.value_or(natural);
  if ((chosen == SignatureScheme::ecdsa) != certificate.is_ec()) {
    return make_error(Errc::invalid_argument, "signature scheme does not fit the key type");
  }
  return LocalSigner(std::move(ctx), std::move(certificate), std::move(key), std::move(chain), chosen);
}

LocalSigner::LocalSigner(CryptoContextPtr ctx, Certificate certificate, PrivateKey key,
                         std::vector<Certificate> chain, SignatureScheme scheme)
    : ctx_(std::move(ctx)),
      certificate_(std::move(certificate)),
      key_(std::move(key)),
      chain_(std::move(chain)),
      scheme_(scheme) {}

Result<std::string> LocalSigner::sign(Digest digest, std::string_view to_be_signed) {
  ossl::MdCtx md(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;
  if (!md || EVP_DigestSignInit_ex(md.get(), &pctx, openssl_name(digest), ctx_->libctx(), nullptr, key_.native(),
                                   nullptr) != 1) {
    return ossl::error(Errc::key_operation_failed, "cannot start signing");
  }
  if (scheme_ == SignatureScheme::rsa_pss &&
      (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
       EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1)) {
    return ossl::error(Errc::key_operation_failed, "cannot select RSA-PSS");
  }
  const auto data = ossl::as_bytes(to_be_signed);
  std::size_t length = 0;
  if (EVP_DigestSign(md.get(), nullptr, &length, data.data(), data.size()) != 1) {
    return ossl::error(Errc::key_operation_failed, "cannot size the signature");
  }
  std::string signature(length, '\0');
  if (EVP_DigestSign(md.get(), reinterpret_cast<unsigned char*>(signature.data()), &length, data.data(),
                     data.size()) != 1) {
    return ossl::error(Errc::key_operation_failed, "signing failed");
  }
  signature.resize(length);
  return signature;
}

namespace detail {

// (c) assembly, given (a) the content's digest; (b) happens inside.
Result<std::string> signed_data_from_digest(const CryptoContext& ctx, std::string_view digest,
                                            std::optional<std::string_view> embedded, Signer& signer,
                                            const SignOptions& options) {
  ossl::Md md(EVP_MD_fetch(ctx.libctx(), openssl_name(options.digest), nullptr));
  if (!md) return ossl::error(Errc::unsupported_algorithm, "digest unavailable");
  ossl::X509Stack certs(sk_X509_new_null());
  for (const auto& c : signer.chain()) {
    X509_up_ref(c.native());
    sk_X509_push(certs.get(), c.native());
  }
  const unsigned flags = CMS_PARTIAL | CMS_BINARY | (embedded ? 0u : CMS_DETACHED);
  ossl::Cms cms(CMS_sign_ex(nullptr, nullptr, certs.get(), nullptr, flags, ctx.libctx(), nullptr));
  if (!cms) return ossl::error(Errc::internal, "cannot start SignedData");

  X509* cert = signer.certificate().native();
  // The public key stands in for the private one: CMS_add1_signer only
  // checks that it matches the certificate.
  CMS_SignerInfo* si = CMS_add1_signer(cms.get(), cert, X509_get0_pubkey(cert), md.get(),
                                       CMS_PARTIAL | CMS_BINARY | CMS_NOSMIMECAP | CMS_CADES);
  if (si == nullptr) return ossl::error(Errc::invalid_certificate, "cannot add the signer");
  MAILKMS_CHECK(add_signed_attributes(si, digest, options));

  // (b) the signature, from wherever the key lives
  MAILKMS_TRY(to_be_signed, signed_attributes_der(si));
  MAILKMS_TRY(signature, signer.sign(options.digest, to_be_signed));

  if (ASN1_STRING_set(CMS_SignerInfo_get0_signature(si), signature.data(), static_cast<int>(signature.size())) != 1) {
    return ossl::error(Errc::internal, "cannot store the signature");
  }
  if (signer.scheme() == SignatureScheme::rsa_pss) {
    X509_ALGOR* algorithm = nullptr;
    CMS_SignerInfo_get0_algs(si, nullptr, nullptr, nullptr, &algorithm);
    const std::string params = pss_parameters(options.digest, static_cast<int>(digest.size()));
    ASN1_STRING* seq = ASN1_STRING_new();
    if (seq == nullptr || ASN1_STRING_set(seq, params.data(), static_cast<int>(params.size())) != 1 ||
        X509_ALGOR_set0(algorithm, OBJ_nid2obj(NID_rsassaPss), V_ASN1_SEQUENCE, seq) != 1) {
      ASN1_STRING_free(seq);
      return ossl::error(Errc::internal, "cannot set the RSA-PSS parameters");
    }
  }
  if (embedded) {
    ASN1_OCTET_STRING** slot = CMS_get0_content(cms.get());
    if (slot == nullptr) return ossl::error(Errc::internal, "SignedData has no content slot");
    ASN1_OCTET_STRING_free(*slot);
    *slot = ASN1_OCTET_STRING_new();
    if (*slot == nullptr ||
        ASN1_OCTET_STRING_set(*slot, reinterpret_cast<const unsigned char*>(embedded->data()),
                              static_cast<int>(embedded->size())) != 1) {
      return ossl::error(Errc::internal, "cannot embed the content");
    }
  }
  std::string der = ossl::to_der<CMS_ContentInfo>(cms.get(), i2d_CMS_ContentInfo);
  if (der.empty()) return ossl::error(Errc::internal, "cannot encode SignedData");
  return der;
}

Result<std::string> digest_pieces(const CryptoContext& ctx, const Pieces& content, Digest digest) {
  ossl::Md md(EVP_MD_fetch(ctx.libctx(), openssl_name(digest), nullptr));
  ossl::MdCtx mctx(EVP_MD_CTX_new());
  if (!md || !mctx || EVP_DigestInit_ex2(mctx.get(), md.get(), nullptr) != 1) {
    return ossl::error(Errc::unsupported_algorithm, "digest unavailable");
  }
  MAILKMS_CHECK(content.for_each_chunk([&mctx](std::string_view chunk) -> Status {
    if (EVP_DigestUpdate(mctx.get(), chunk.data(), chunk.size()) != 1) {
      return ossl::error(Errc::internal, "cannot digest the content");
    }
    return Ok{};
  }));
  std::string out(static_cast<std::size_t>(EVP_MAX_MD_SIZE), '\0');
  unsigned int length = 0;
  if (EVP_DigestFinal_ex(mctx.get(), reinterpret_cast<unsigned char*>(out.data()), &length) != 1) {
    return ossl::error(Errc::internal, "cannot digest the content");
  }
  out.resize(length);
  return out;
}

Result<SignedEntity> sign_pieces(const CryptoContext& ctx, const Pieces& canonical, Signer& signer,
                                 const SignOptions& options) {
  ERR_clear_error();  // whatever an earlier caller left must not become our reason
  if (is_weak(options.digest)) return make_error(Errc::unsupported_algorithm, "refusing to sign with SHA-1");
  // (a) the content's digest
  MAILKMS_TRY(digest, digest_pieces(ctx, canonical, options.digest));

  SignedEntity out;
  if (options.opaque) {
    // Opaque signing embeds the content in the SignedData: in memory.
    std::string content;
    content.reserve(canonical.size());
    MAILKMS_CHECK(canonical.for_each_chunk([&content](std::string_view chunk) -> Status {
      content.append(chunk);
      return Ok{};
    }));
    MAILKMS_TRY(der, signed_data_from_digest(ctx, digest, content, signer, options));
    Entity wrapped = pkcs7_mime_entity("signed-data", der);
    out.headers = std::move(wrapped.headers);
    out.body.add(std::move(wrapped.body));
    return out;
  }

  MAILKMS_TRY(der, signed_data_from_digest(ctx, digest, std::nullopt, signer, options));
  const std::string boundary = make_boundary();
  std::string type = "multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=";
  type += micalg(options.digest);
  type += "; boundary=\"";
  type += boundary;
  type += '"';
  out.headers.push_back(make_field("Content-Type", type));
  out.body.add("This is an S/MIME signed message\r\n\r\n--" + boundary + "\r\n");
  out.body.add(canonical);
  out.body.add("\r\n--" + boundary +
               "\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n"
               "Content-Transfer-Encoding: base64\r\n"
               "Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n" +
               base64_encode_mime(der) + "--" + boundary + "--\r\n");
  return out;
}

Result<SignedEntity> sign_spooled(const CryptoContext& ctx, const SpooledMessage& message, Spool& scratch,
                                  Signer& signer, const SignOptions& options) {
  if (message.needs_encoding) {
    // 8bit or binary content is re-encoded first (RFC 8551 §3.1.2), which
    // needs the MIME tree: the rare case, done in memory.
    MAILKMS_TRY(entity, load_entity(message));
    MAILKMS_TRY(canonical, canonicalize_for_signing(entity, options.limits));
    Pieces pieces;
    pieces.add(canonical.serialize());
    return sign_pieces(ctx, pieces, signer, options);
  }
  MAILKMS_TRY(canonical, canonical_entity(message, scratch));
  return sign_pieces(ctx, canonical, signer, options);
}

}  // namespace detail

Result<std::string> build_signed_data(const CryptoContext& ctx, std::string_view content, bool detached,
                                      Signer& signer, const SignOptions& options) {
  if (is_weak(options.digest)) return make_error(Errc::unsupported_algorithm, "refusing to sign with SHA-1");
  detail::Pieces pieces;
  pieces.add(std::string(content));
  MAILKMS_TRY(digest, detail::digest_pieces(ctx, pieces, options.digest));
  return detail::signed_data_from_digest(ctx, digest, detached ? std::nullopt : std::optional(content), signer,
                                         options);
}

Result<Entity> sign_entity(const CryptoContext& ctx, const Entity& entity, Signer& signer,
                           const SignOptions& options) {
  MAILKMS_TRY(canonical, canonicalize_for_signing(entity, options.limits));
  detail::Pieces pieces;
  pieces.add(canonical.serialize());
  MAILKMS_TRY(signed_entity, detail::sign_pieces(ctx, pieces, signer, options));
  Entity out{std::move(signed_entity.headers), {}};
  out.body.reserve(signed_entity.body.size());
  MAILKMS_CHECK(signed_entity.body.for_each_chunk([&out](std::string_view chunk) -> Status {
    out.body.append(chunk);
    return Ok{};
  }));
  return out;
}

Status sign_message(const CryptoContext& ctx, const Spool& message, Spool& out, Signer& signer,
                    const SignOptions& options) {
  MAILKMS_TRY(parsed, detail::parse_spooled_message(message, options.limits));
  Spool scratch;
  MAILKMS_TRY(signed_entity, detail::sign_spooled(ctx, parsed, scratch, signer, options));
  MAILKMS_CHECK(out.append(detail::header_section(parsed.outer, signed_entity.headers)));
  return signed_entity.body.for_each_chunk([&out](std::string_view chunk) { return out.append(chunk); });
}

Result<std::string> sign_message(const CryptoContext& ctx, std::string_view message, Signer& signer,
                                 const SignOptions& options) {
  const Spool in = Spool::borrow(message);
  Spool out({.memory_limit = static_cast<std::size_t>(-1)});
  out.reserve(message.size() / 3 * 4 + 8192);  // base64 growth plus the CMS and signature
  MAILKMS_CHECK(sign_message(ctx, in, out, signer, options));
  return out.take_string();
}

}  // namespace mailkms::smime
