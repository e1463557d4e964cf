#include "mailkms/smime/open.hpp"

#include "enveloped.hpp"
#include "mailkms/smime/ossl.hpp"
#include "smime_entity.hpp"

namespace mailkms::smime {
namespace {

std::optional<LayerKind> kind_of_cms(const CryptoContext& ctx, const Entity& entity) {
  auto der = detail::decode_cms_body(entity);
  if (!der) return std::nullopt;
  auto cms = detail::parse_cms(ctx, *der);
  if (!cms) return std::nullopt;
  switch (OBJ_obj2nid(CMS_get0_type(cms->get()))) {
    case NID_pkcs7_signed: return LayerKind::signed_opaque;
    case NID_pkcs7_enveloped: return LayerKind::enveloped;
    case NID_id_smime_ct_authEnvelopedData: return LayerKind::auth_enveloped;
    default: return std::nullopt;
  }
}

std::string algorithm_name(const std::string& algorithm_der) {
  auto a = detail::parse_algorithm(algorithm_der);
  if (!a) return "malformed";
  if (a->nid == NID_rsaEncryption) return "RSA PKCS#1 v1.5";
  if (a->nid == NID_rsaesOaep) return "RSA-OAEP";
  return OBJ_nid2ln(a->nid);
}

}  // namespace

std::string_view to_string(LayerKind kind) noexcept {
  switch (kind) {
    case LayerKind::signed_multipart: return "signed (multipart/signed)";
    case LayerKind::signed_opaque: return "signed (opaque signed-data)";
    case LayerKind::enveloped: return "encrypted (enveloped-data)";
    case LayerKind::auth_enveloped: return "encrypted (authEnveloped-data)";
  }
  return "unknown";
}

Result<std::optional<LayerKind>> classify(const CryptoContext& ctx, const Entity& entity) {
  MAILKMS_TRY(type, content_type(entity));
  if (type.is("multipart", "signed")) {
    const auto protocol = type.parameter("protocol").value_or("");
    if (protocol == "application/pkcs7-signature" || protocol == "application/x-pkcs7-signature") {
      return std::optional<LayerKind>(LayerKind::signed_multipart);
    }
    return std::optional<LayerKind>();
  }
  const bool pkcs7 = type.is("application", "pkcs7-mime") || type.is("application", "x-pkcs7-mime");
  // Some old clients label it application/octet-stream with a .p7m name.
  const auto name = type.parameter("name").value_or("");
  const bool p7m_file = type.is("application", "octet-stream") && name.size() > 4 &&
                        normalize_address(name.substr(name.size() - 4)) == ".p7m";
  if (!pkcs7 && !p7m_file) return std::optional<LayerKind>();
  const std::string smime_type = normalize_address(type.parameter("smime-type").value_or(""));
  if (smime_type == "signed-data") return std::optional<LayerKind>(LayerKind::signed_opaque);
  if (smime_type == "enveloped-data") return std::optional<LayerKind>(LayerKind::enveloped);
  if (smime_type == "authenveloped-data") return std::optional<LayerKind>(LayerKind::auth_enveloped);
  if (smime_type == "certs-only") return std::optional<LayerKind>();
  // No or unknown smime-type: the CMS itself says what it is.
  if (const auto kind = kind_of_cms(ctx, entity)) return std::optional<LayerKind>(*kind);
  return make_error(Errc::malformed_cms, "application/pkcs7-mime body is not a CMS structure we know");
}

bool is_complete_encryption(const CryptoContext& ctx, const Entity& entity) {
  auto der = detail::decode_cms_body(entity);
  if (!der) return false;
  std::size_t consumed = 0;
  auto cms = detail::parse_cms(ctx, *der, &consumed);
  if (!cms || consumed != der->size()) return false;  // not CMS, or something behind it
  const int type = OBJ_obj2nid(CMS_get0_type(cms->get()));
  if (type != NID_pkcs7_enveloped && type != NID_id_smime_ct_authEnvelopedData) return false;
  const STACK_OF(CMS_RecipientInfo)* recipients = CMS_get0_RecipientInfos(cms->get());
  ASN1_OCTET_STRING** content = CMS_get0_content(cms->get());
  return recipients != nullptr && sk_CMS_RecipientInfo_num(recipients) > 0 && content != nullptr &&
         *content != nullptr && ASN1_STRING_length(*content) > 0;
}

Opened open_entity(const CryptoContext& ctx, const Entity& entity, std::span<KeyUnwrapper* const> keys,
                   const VerifyOptions& options) {
  Opened opened;
  opened.content = entity;
  for (std::size_t depth = 0;; ++depth) {
    auto kind = classify(ctx, opened.content);
    if (!kind) {
      opened.error = std::move(kind).error();
      return opened;
    }
    if (!*kind) return opened;
    if (depth >= options.limits.max_depth) {
      opened.error = make_error(Errc::limit_exceeded, "more than " + std::to_string(options.limits.max_depth) +
                                                          " nested S/MIME layers");
      return opened;
    }
    Layer layer{**kind, std::nullopt, std::nullopt, std::nullopt};
    if (layer.kind == LayerKind::signed_multipart || layer.kind == LayerKind::signed_opaque) {
      VerifyResult verdict = verify_entity(ctx, opened.content, options);
      std::optional<Entity> inner = std::move(verdict.content);
      verdict.content.reset();
      const std::optional<Error> error = verdict.error;
      layer.verification = std::move(verdict);
      opened.layers.push_back(std::move(layer));
      if (!inner) {
        opened.error = error.value_or(make_error(Errc::malformed_cms, "the signed content could not be read"));
        return opened;
      }
      opened.content = std::move(*inner);
      continue;
    }
    auto decrypted = decrypt_entity(ctx, opened.content, keys, options.limits);
    if (!decrypted) {
      opened.layers.push_back(std::move(layer));
      opened.error = std::move(decrypted).error();
      return opened;
    }
    layer.cipher = decrypted->cipher;
    layer.recipient = decrypted->recipient;
    opened.layers.push_back(std::move(layer));
    opened.content = std::move(decrypted->content);
  }
}

Opened open_message(const CryptoContext& ctx, std::string_view message, std::span<KeyUnwrapper* const> keys,
                    VerifyOptions options) {
  auto parsed = parse_message(message, options.limits);
  if (!parsed) {
    Opened opened;
    opened.error = std::move(parsed).error();
    return opened;
  }
  if (!options.from) options.from = author_addresses(*parsed);
  return open_entity(ctx, parsed->entity, keys, options);
}

Result<std::vector<LayerDescription>> inspect_entity(const CryptoContext& ctx, const Entity& entity,
                                                     std::span<KeyUnwrapper* const> keys, const MimeLimits& limits) {
  std::vector<LayerDescription> layers;
  Entity current = entity;
  for (std::size_t depth = 0;; ++depth) {
    MAILKMS_TRY(kind, classify(ctx, current));
    if (!kind) {
      MAILKMS_TRY(type, content_type(current));
      layers.push_back({"content", {"type: " + type.type + "/" + type.subtype}});
      return layers;
    }
    if (depth >= limits.max_depth) return make_error(Errc::limit_exceeded, "too many nested S/MIME layers");
    LayerDescription d{std::string(to_string(*kind)), {}};
    if (*kind == LayerKind::enveloped || *kind == LayerKind::auth_enveloped) {
      MAILKMS_TRY(der, detail::decode_cms_body(current));
      MAILKMS_TRY(cms, detail::parse_cms(ctx, der));
      MAILKMS_TRY(parts, detail::parse_enveloped(ossl::to_der<CMS_ContentInfo>(cms.get(), i2d_CMS_ContentInfo)));
      MAILKMS_TRY(algorithm, detail::parse_algorithm(parts.content_encryption_algorithm));
      const auto cipher = detail::content_cipher(algorithm);
      d.lines.push_back("cipher: " + (cipher ? std::string(name(*cipher)) : std::string(OBJ_nid2sn(algorithm.nid))));
      for (const auto& r : parts.recipients) {
        if (r.kind == detail::RecipientEntry::Kind::unsupported) {
          d.lines.push_back("recipient: (" + r.kind_name + ")");
        } else {
          d.lines.push_back("recipient: " + r.id.describe() + " (" + algorithm_name(r.key_encryption_algorithm) + ")");
        }
      }
      layers.push_back(std::move(d));
      if (keys.empty()) return layers;
      auto decrypted = decrypt_entity(ctx, current, keys, limits);
      if (!decrypted) {
        layers.back().lines.push_back("not opened: " + decrypted.error().message);
        return layers;
      }
      layers.back().lines.push_back("opened with: " + decrypted->recipient.subject());
      current = std::move(decrypted->content);
      continue;
    }
    // Signed: describe without judging trust.
    VerifyOptions options;
    options.limits = limits;
    VerifyResult verdict = verify_entity(ctx, current, options);
    for (const auto& s : verdict.signers) {
      d.lines.push_back("signer: " + s.certificate.subject() + " (digest " + std::string(name(s.digest)) + ")");
    }
    for (const auto& c : verdict.certificates) {
      d.lines.push_back("certificate: " + c.subject() + " (issuer " + c.issuer() + ")");
    }
    if (verdict.intact) {
      d.lines.push_back("signature: intact");
    } else if (verdict.status == SignatureStatus::fail) {
      d.lines.push_back("signature: fail: " + verdict.reason);
    } else {
      d.lines.push_back("signature: not verified (" + std::string(to_string(verdict.status)) + "): " + verdict.reason);
    }
    layers.push_back(std::move(d));
    if (!verdict.content) return layers;
    current = std::move(*verdict.content);
  }
}

}  // namespace mailkms::smime
