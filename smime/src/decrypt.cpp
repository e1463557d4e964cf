#include "mailkms/smime/decrypt.hpp"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/kdf.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include <algorithm>
#include <climits>

#include "der.hpp"
#include "enveloped.hpp"
#include "mailkms/smime/ossl.hpp"
#include "smime_entity.hpp"

namespace mailkms::smime {
namespace {

using detail::Algorithm;
using detail::parse_algorithm;

std::string random_bytes(std::size_t n) {
  std::string out(n, '\0');
  RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n));
  return out;
}

Result<SecretBytes> unwrap_key_transport(const CryptoContext& ctx, EVP_PKEY* key, const KeyTransportInput& in) {
  ossl::PkeyCtx pctx(EVP_PKEY_CTX_new_from_pkey(ctx.libctx(), key, nullptr));
  if (!pctx || EVP_PKEY_decrypt_init(pctx.get()) != 1) {
    return ossl::error(Errc::key_operation_failed, "key cannot decrypt");
  }
  if (in.oaep) {
    if (EVP_PKEY_CTX_set_rsa_padding(pctx.get(), RSA_PKCS1_OAEP_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_oaep_md_name(pctx.get(), openssl_name(in.oaep_digest), nullptr) != 1 ||
        EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx.get(), openssl_name(in.mgf1_digest), nullptr) != 1) {
      return ossl::error(Errc::key_operation_failed, "cannot set up RSA-OAEP");
    }
  } else if (EVP_PKEY_CTX_set_rsa_padding(pctx.get(), RSA_PKCS1_PADDING) != 1) {
    return ossl::error(Errc::key_operation_failed, "cannot set up RSA PKCS#1 v1.5");
  }
  const auto wrapped = ossl::as_bytes(in.encrypted_key);
  std::size_t length = 0;
  if (EVP_PKEY_decrypt(pctx.get(), nullptr, &length, wrapped.data(), wrapped.size()) != 1) {
    return ossl::error(Errc::key_operation_failed, "cannot size the key");
  }
  // The answer for failure is drawn before we know whether we fail, so
  // both outcomes take the same path through the random generator.
  std::string fallback = random_bytes(in.content_key_length);
  std::string out(length, '\0');
  const int ok = EVP_PKEY_decrypt(pctx.get(), reinterpret_cast<unsigned char*>(out.data()), &length, wrapped.data(),
                                  wrapped.size());
  ERR_clear_error();
  // Whatever went wrong, answer with a key of the right length: the content
  // then fails to decrypt like any wrong key, so no padding oracle
  // (Bleichenbacher) is offered to whoever sends us mail.
  if (ok != 1 || length != in.content_key_length) {
    OPENSSL_cleanse(out.data(), out.size());
    return SecretBytes(std::move(fallback));
  }
  OPENSSL_cleanse(fallback.data(), fallback.size());
  out.resize(length);
  return SecretBytes(std::move(out));
}

// The key length each wrap algorithm takes. The two travel apart (the
// keystore's protocol carries both), so they are checked to agree: a
// shorter KEK would be read past its end.
std::size_t kek_length_of(KeyAgreementInput::Wrap wrap) {
  switch (wrap) {
    case KeyAgreementInput::Wrap::aes128: return 16;
    case KeyAgreementInput::Wrap::aes192: return 24;
    case KeyAgreementInput::Wrap::aes256: return 32;
    case KeyAgreementInput::Wrap::des_ede3: return 24;
  }
  return 0;
}

// ECC-CMS-SharedInfo (RFC 5753 §7.2), the X9.63 KDF's "info".
std::string shared_info(const KeyAgreementInput& in) {
  std::string fields = in.key_wrap_algorithm;
  if (!in.ukm.empty()) {
    fields += der::encode(der::tag::context(0, true), der::encode(der::tag::octet_string, in.ukm));
  }
  const auto bits = static_cast<std::uint32_t>(in.kek_length * 8);
  const std::string length{static_cast<char>(bits >> 24), static_cast<char>((bits >> 16) & 0xff),
                           static_cast<char>((bits >> 8) & 0xff), static_cast<char>(bits & 0xff)};
  fields += der::encode(der::tag::context(2, true), der::encode(der::tag::octet_string, length));
  return der::encode(der::tag::sequence, fields);
}

Result<SecretBytes> unwrap_key_agreement(const CryptoContext& ctx, EVP_PKEY* key, const KeyAgreementInput& in) {
  if (in.kek_length != kek_length_of(in.wrap)) {
    return make_error(Errc::invalid_argument, "a KEK of " + std::to_string(in.kek_length) +
                                                  " bytes for a key wrap that takes " +
                                                  std::to_string(kek_length_of(in.wrap)));
  }
  char group[80] = {};
  std::size_t group_length = 0;
  if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &group_length) != 1) {
    return ossl::error(Errc::key_operation_failed, "key is not an EC key");
  }
  // The sender's ephemeral key, on our key's curve.
  OSSL_PARAM_BLD* build = OSSL_PARAM_BLD_new();
  OSSL_PARAM_BLD_push_utf8_string(build, OSSL_PKEY_PARAM_GROUP_NAME, group, 0);
  OSSL_PARAM_BLD_push_octet_string(build, OSSL_PKEY_PARAM_PUB_KEY, in.originator_point.data(),
                                   in.originator_point.size());
  OSSL_PARAM* params = OSSL_PARAM_BLD_to_param(build);
  OSSL_PARAM_BLD_free(build);
  ossl::PkeyCtx from_data(EVP_PKEY_CTX_new_from_name(ctx.libctx(), "EC", nullptr));
  EVP_PKEY* peer_raw = nullptr;
  const bool peer_ok = from_data && params != nullptr && EVP_PKEY_fromdata_init(from_data.get()) == 1 &&
                       EVP_PKEY_fromdata(from_data.get(), &peer_raw, EVP_PKEY_PUBLIC_KEY, params) == 1;
  OSSL_PARAM_free(params);
  ossl::Pkey peer(peer_raw);
  if (!peer_ok) return ossl::error(Errc::decryption_failed, "the sender's ephemeral key is not on our curve");

  ossl::PkeyCtx derive(EVP_PKEY_CTX_new_from_pkey(ctx.libctx(), key, nullptr));
  std::size_t z_length = 0;
  if (!derive || EVP_PKEY_derive_init(derive.get()) != 1 || EVP_PKEY_derive_set_peer(derive.get(), peer.get()) != 1 ||
      EVP_PKEY_derive(derive.get(), nullptr, &z_length) != 1) {
    return ossl::error(Errc::decryption_failed, "ECDH failed");
  }
  SecretBytes z(std::string(z_length, '\0'));
  if (EVP_PKEY_derive(derive.get(), const_cast<unsigned char*>(z.data()), &z_length) != 1) {
    return ossl::error(Errc::decryption_failed, "ECDH failed");
  }

  ossl::Kdf kdf(EVP_KDF_fetch(ctx.libctx(), "X963KDF", nullptr));
  ossl::KdfCtx kctx(kdf ? EVP_KDF_CTX_new(kdf.get()) : nullptr);
  const std::string info = shared_info(in);
  const OSSL_PARAM kdf_params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, const_cast<char*>(openssl_name(in.kdf_digest)), 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<unsigned char*>(z.data()), z_length),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, const_cast<char*>(info.data()), info.size()),
      OSSL_PARAM_construct_end(),
  };
  SecretBytes kek(std::string(in.kek_length, '\0'));
  if (!kctx || EVP_KDF_derive(kctx.get(), const_cast<unsigned char*>(kek.data()), kek.size(), kdf_params) != 1) {
    return ossl::error(Errc::decryption_failed, "key derivation failed");
  }

  const char* wrap_name = "AES-256-WRAP";
  switch (in.wrap) {
    case KeyAgreementInput::Wrap::aes128: wrap_name = "AES-128-WRAP"; break;
    case KeyAgreementInput::Wrap::aes192: wrap_name = "AES-192-WRAP"; break;
    case KeyAgreementInput::Wrap::aes256: wrap_name = "AES-256-WRAP"; break;
    case KeyAgreementInput::Wrap::des_ede3: wrap_name = "DES3-WRAP"; break;  // RFC 3217, with 3DES content
  }
  ossl::Cipher wrap(EVP_CIPHER_fetch(ctx.libctx(), wrap_name, nullptr));
  ossl::CipherCtx cctx(EVP_CIPHER_CTX_new());
  std::string cek(in.encrypted_key.size(), '\0');
  int n = 0;
  int tail = 0;
  if (!wrap || !cctx || EVP_DecryptInit_ex2(cctx.get(), wrap.get(), kek.data(), nullptr, nullptr) != 1 ||
      EVP_DecryptUpdate(cctx.get(), reinterpret_cast<unsigned char*>(cek.data()), &n,
                        reinterpret_cast<const unsigned char*>(in.encrypted_key.data()),
                        static_cast<int>(in.encrypted_key.size())) != 1 ||
      EVP_DecryptFinal_ex(cctx.get(), reinterpret_cast<unsigned char*>(cek.data()) + n, &tail) != 1) {
    OPENSSL_cleanse(cek.data(), cek.size());
    return ossl::error(Errc::decryption_failed, "the wrapped key does not unwrap: not for this key, or altered");
  }
  cek.resize(static_cast<std::size_t>(n) + static_cast<std::size_t>(tail));
  return SecretBytes(std::move(cek));
}

std::optional<Digest> digest_of(const std::string& algorithm_der) {
  auto a = parse_algorithm(algorithm_der);
  if (!a) return std::nullopt;
  return digest_from_nid(a->nid);
}

// What the unwrapper needs for one recipient entry, read from its algorithms.
Result<WrappedKey> wrapped_key_for(const detail::RecipientEntry& entry, std::size_t content_key_length) {
  MAILKMS_TRY(algorithm, parse_algorithm(entry.key_encryption_algorithm));
  if (entry.kind == detail::RecipientEntry::Kind::key_transport) {
    KeyTransportInput in;
    in.encrypted_key = entry.encrypted_key;
    in.content_key_length = content_key_length;
    if (algorithm.nid == NID_rsaEncryption) return WrappedKey{in};
    if (algorithm.nid != NID_rsaesOaep) {
      return make_error(Errc::unsupported_algorithm, "key transport algorithm " + std::string(OBJ_nid2sn(algorithm.nid)));
    }
    in.oaep = true;
    // RSAES-OAEP-params ::= SEQUENCE { [0] hash, [1] mgf, [2] pSource }
    der::Reader outer(algorithm.parameters);
    if (const auto seq = outer.next_if(der::tag::sequence)) {
      der::Reader r(seq->value);
      if (const auto hash = r.next_if(der::tag::context(0, true))) {
        const auto d = digest_of(std::string(hash->value));
        if (!d) return make_error(Errc::unsupported_algorithm, "OAEP with an unknown digest");
        in.oaep_digest = *d;
      }
      if (const auto mgf = r.next_if(der::tag::context(1, true))) {
        MAILKMS_TRY(mgf_algorithm, parse_algorithm(mgf->value));
        const auto d = digest_of(mgf_algorithm.parameters);
        if (mgf_algorithm.nid != NID_mgf1 || !d) return make_error(Errc::unsupported_algorithm, "OAEP with an unknown MGF");
        in.mgf1_digest = *d;
      }
    }
    return WrappedKey{in};
  }
  KeyAgreementInput in;
  in.originator_point = entry.originator_point;
  in.ukm = entry.ukm;
  in.encrypted_key = entry.encrypted_key;
  switch (algorithm.nid) {
    case NID_dhSinglePass_stdDH_sha1kdf_scheme:
    case NID_dhSinglePass_cofactorDH_sha1kdf_scheme: in.kdf_digest = Digest::sha1; break;
    case NID_dhSinglePass_stdDH_sha256kdf_scheme:
    case NID_dhSinglePass_cofactorDH_sha256kdf_scheme: in.kdf_digest = Digest::sha256; break;
    case NID_dhSinglePass_stdDH_sha384kdf_scheme:
    case NID_dhSinglePass_cofactorDH_sha384kdf_scheme: in.kdf_digest = Digest::sha384; break;
    case NID_dhSinglePass_stdDH_sha512kdf_scheme:
    case NID_dhSinglePass_cofactorDH_sha512kdf_scheme: in.kdf_digest = Digest::sha512; break;
    default:
      return make_error(Errc::unsupported_algorithm, "key agreement algorithm " + std::string(OBJ_nid2sn(algorithm.nid)));
  }
  MAILKMS_TRY(wrap, parse_algorithm(algorithm.parameters));
  switch (wrap.nid) {
    case NID_id_aes128_wrap: in.wrap = KeyAgreementInput::Wrap::aes128; break;
    case NID_id_aes192_wrap: in.wrap = KeyAgreementInput::Wrap::aes192; break;
    case NID_id_aes256_wrap: in.wrap = KeyAgreementInput::Wrap::aes256; break;
    case NID_id_smime_alg_CMS3DESwrap: in.wrap = KeyAgreementInput::Wrap::des_ede3; break;
    default: return make_error(Errc::unsupported_algorithm, "key wrap algorithm " + std::string(OBJ_nid2sn(wrap.nid)));
  }
  in.kek_length = kek_length_of(in.wrap);
  in.key_wrap_algorithm = algorithm.parameters;
  return WrappedKey{in};
}

struct GcmParameters {
  std::string nonce;
  std::size_t tag_length = 12;
};

Result<GcmParameters> parse_gcm_parameters(std::string_view der_params) {
  // GCMParameters ::= SEQUENCE { aes-nonce OCTET STRING, aes-ICVlen INTEGER DEFAULT 12 }
  der::Reader outer(der_params);
  const auto seq = outer.expect(der::tag::sequence);
  if (!seq) return make_error(Errc::malformed_cms, "bad GCM parameters");
  der::Reader r(seq->value);
  const auto nonce = r.expect(der::tag::octet_string);
  if (!nonce || nonce->value.empty() || nonce->value.size() > 64) return make_error(Errc::malformed_cms, "bad GCM nonce");
  GcmParameters p{std::string(nonce->value), 12};
  if (const auto icv = r.next_if(der::tag::integer)) {
    const auto length = icv->value.size() == 1 ? static_cast<unsigned char>(icv->value[0]) : 0U;
    if (length < 12 || length > 16) return make_error(Errc::malformed_cms, "bad GCM tag length");
    p.tag_length = length;
  }
  return p;
}

bool same_key(const SecretBytes& a, const SecretBytes& b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// A context for the content cipher, set up from its parameters (the IV,
// RC2's key size, GCM's nonce length), still without a key.
Result<ossl::CipherCtx> content_context(const CryptoContext& ctx, const detail::EnvelopedParts& parts, Cipher cipher,
                                        const GcmParameters& gcm) {
  // Every RC2 variant is RC2-CBC; the key size comes from its parameters.
  const bool rc2 = cipher == Cipher::rc2_40 || cipher == Cipher::rc2_64 || cipher == Cipher::rc2_128;
  ossl::Cipher evp(EVP_CIPHER_fetch(ctx.libctx(), rc2 ? "RC2-CBC" : openssl_name(cipher), nullptr));
  if (!evp) return ossl::error(Errc::unsupported_algorithm, "cipher unavailable");
  ossl::CipherCtx cctx(EVP_CIPHER_CTX_new());
  if (!cctx || EVP_DecryptInit_ex2(cctx.get(), evp.get(), nullptr, nullptr, nullptr) != 1) {
    return ossl::error(Errc::internal, "cannot start decryption");
  }
  if (parts.authenticated) {
    if (EVP_CIPHER_CTX_ctrl(cctx.get(), EVP_CTRL_AEAD_SET_IVLEN, static_cast<int>(gcm.nonce.size()), nullptr) != 1) {
      return ossl::error(Errc::malformed_cms, "unusable GCM nonce");
    }
    return cctx;
  }
  const auto* p = reinterpret_cast<const unsigned char*>(parts.content_encryption_algorithm.data());
  X509_ALGOR* alg = d2i_X509_ALGOR(nullptr, &p, static_cast<long>(parts.content_encryption_algorithm.size()));
  const int ok = alg != nullptr && EVP_CIPHER_asn1_to_param(cctx.get(), alg->parameter) > 0;
  X509_ALGOR_free(alg);
  if (!ok) return ossl::error(Errc::malformed_cms, "bad content-encryption parameters");
  return cctx;
}

// Each key's content-encryption key, unwrapped from the recipient entries
// that name its certificate (every one in turn: one unreadable entry must
// not hide a good one); none for a key that has no such entry, or none that
// unwraps.
Result<std::vector<std::optional<SecretBytes>>> unwrap_each(const detail::EnvelopedParts& parts,
                                                           std::span<KeyUnwrapper* const> keys,
                                                           std::size_t key_length) {
  std::vector<std::optional<SecretBytes>> content_keys(keys.size());
  std::optional<Error> last_error;
  bool any = false;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    for (const auto& entry : parts.recipients) {
      if (entry.kind == detail::RecipientEntry::Kind::unsupported || !entry.id.matches(keys[i]->certificate())) continue;
      auto wrapped = wrapped_key_for(entry, key_length);
      auto unwrapped = wrapped ? keys[i]->unwrap(*wrapped) : Result<SecretBytes>(std::move(wrapped).error());
      if (unwrapped && unwrapped->size() != key_length) {
        unwrapped = make_error(Errc::decryption_failed, "content-encryption key has the wrong length");
      }
      if (!unwrapped) {
        last_error = std::move(unwrapped).error();
        continue;
      }
      content_keys[i] = std::move(*unwrapped);
      any = true;
      break;
    }
  }
  if (any) return content_keys;
  if (last_error) return *last_error;
  std::string listed;
  for (const auto& entry : parts.recipients) {
    if (!listed.empty()) listed += "; ";
    listed += entry.kind == detail::RecipientEntry::Kind::unsupported ? entry.kind_name : entry.id.describe();
  }
  return make_error(Errc::no_matching_recipient, "none of our keys is a recipient (recipients: " + listed + ")");
}

// The content, decrypted and (AuthEnvelopedData) authenticated with `cek`.
Result<std::string> decrypt_content(ossl::CipherCtx& cctx, const detail::EnvelopedParts& parts,
                                    const GcmParameters& gcm, const SecretBytes& cek) {
  const auto* nonce = parts.authenticated ? reinterpret_cast<const unsigned char*>(gcm.nonce.data()) : nullptr;
  if (EVP_DecryptInit_ex2(cctx.get(), nullptr, cek.data(), nonce, nullptr) != 1) {
    return ossl::error(Errc::decryption_failed, "cannot key the cipher");
  }
  const auto ciphertext = ossl::as_bytes(parts.encrypted_content);
  if (ciphertext.size() > static_cast<std::size_t>(INT_MAX - 64)) return make_error(Errc::limit_exceeded, "content too large");
  int n = 0;
  if (parts.authenticated && !parts.auth_attributes.empty()) {
    const auto aad = ossl::as_bytes(parts.auth_attributes);
    if (EVP_DecryptUpdate(cctx.get(), nullptr, &n, aad.data(), static_cast<int>(aad.size())) != 1) {
      return ossl::error(Errc::decryption_failed, "cannot authenticate attributes");
    }
  }
  std::string plain(ciphertext.size() + static_cast<std::size_t>(EVP_MAX_BLOCK_LENGTH), '\0');
  auto* out = reinterpret_cast<unsigned char*>(plain.data());
  if (EVP_DecryptUpdate(cctx.get(), out, &n, ciphertext.data(), static_cast<int>(ciphertext.size())) != 1) {
    OPENSSL_cleanse(plain.data(), plain.size());
    return ossl::error(Errc::decryption_failed, "decryption failed");
  }
  if (parts.authenticated &&
      EVP_CIPHER_CTX_ctrl(cctx.get(), EVP_CTRL_AEAD_SET_TAG, static_cast<int>(parts.mac.size()),
                          const_cast<char*>(parts.mac.data())) != 1) {
    OPENSSL_cleanse(plain.data(), plain.size());
    return ossl::error(Errc::decryption_failed, "cannot set the GCM tag");
  }
  int tail = 0;
  if (EVP_DecryptFinal_ex(cctx.get(), out + n, &tail) != 1) {
    OPENSSL_cleanse(plain.data(), plain.size());
    ERR_clear_error();
    return make_error(Errc::decryption_failed, parts.authenticated
                                                   ? "authentication failed: the message was altered or the key is wrong"
                                                   : "decryption failed: wrong key or corrupted content");
  }
  plain.resize(static_cast<std::size_t>(n) + static_cast<std::size_t>(tail));
  return plain;
}

}  // namespace

SecretBytes::SecretBytes(SecretBytes&& other) noexcept : bytes_(std::move(other.bytes_)) { other.wipe(); }

SecretBytes& SecretBytes::operator=(SecretBytes&& other) noexcept {
  if (this != &other) {
    wipe();
    bytes_ = std::move(other.bytes_);
    other.wipe();
  }
  return *this;
}

SecretBytes::~SecretBytes() { wipe(); }

void SecretBytes::wipe() noexcept {
  OPENSSL_cleanse(bytes_.data(), bytes_.size());
  bytes_.clear();
}

Result<SecretBytes> unwrap_content_key(const CryptoContext& ctx, EVP_PKEY* key, const WrappedKey& wrapped) {
  if (const auto* kt = std::get_if<KeyTransportInput>(&wrapped)) return unwrap_key_transport(ctx, key, *kt);
  return unwrap_key_agreement(ctx, key, std::get<KeyAgreementInput>(wrapped));
}

Result<LocalKeyUnwrapper> LocalKeyUnwrapper::create(CryptoContextPtr ctx, Certificate certificate, PrivateKey key) {
  if (!key.matches(certificate)) {
    ERR_clear_error();
    return make_error(Errc::invalid_certificate, "the private key does not belong to the certificate");
  }
  return LocalKeyUnwrapper(std::move(ctx), std::move(certificate), std::move(key));
}

Result<SecretBytes> LocalKeyUnwrapper::unwrap(const WrappedKey& wrapped) {
  return unwrap_content_key(*ctx_, key_.native(), wrapped);
}

Result<DecryptedBytes> decrypt_cms(const CryptoContext& ctx, std::string_view cms_der,
                                   std::span<KeyUnwrapper* const> keys) {
  ERR_clear_error();  // whatever an earlier caller left must not become our reason
  // OpenSSL reads BER (streamed, indefinite lengths) and writes DER, which
  // is what our reader expects.
  MAILKMS_TRY(cms, detail::parse_cms(ctx, cms_der));
  const std::string der = ossl::to_der<CMS_ContentInfo>(cms.get(), i2d_CMS_ContentInfo);
  if (der.empty()) return ossl::error(Errc::malformed_cms, "the CMS structure does not re-encode");
  MAILKMS_TRY(parts, detail::parse_enveloped(der));

  MAILKMS_TRY(algorithm, parse_algorithm(parts.content_encryption_algorithm));
  const auto cipher = detail::content_cipher(algorithm);
  if (!cipher) {
    return make_error(Errc::unsupported_algorithm,
                      std::string("content encrypted with unsupported ") + OBJ_nid2sn(algorithm.nid));
  }
  if (is_legacy(*cipher) && !ctx.legacy_ciphers()) {
    return make_error(Errc::legacy_cipher_disabled,
                      "message encrypted with " + std::string(name(*cipher)) +
                          ", a legacy cipher; enable legacy ciphers in the configuration to read it");
  }
  if (is_aead(*cipher) != parts.authenticated) {
    return make_error(Errc::malformed_cms, "cipher does not match the content type (GCM needs AuthEnvelopedData)");
  }
  GcmParameters gcm;
  if (parts.authenticated) {
    MAILKMS_TRY(parsed, parse_gcm_parameters(algorithm.parameters));
    gcm = std::move(parsed);
    if (gcm.tag_length != parts.mac.size()) return make_error(Errc::malformed_cms, "MAC length differs from ICVlen");
  }
  MAILKMS_TRY(probe, content_context(ctx, parts, *cipher, gcm));
  const auto key_length = static_cast<std::size_t>(EVP_CIPHER_CTX_get_key_length(probe.get()));
  MAILKMS_TRY(content_keys, unwrap_each(parts, keys, key_length));

  // The content opens with the first key that opens it; among several
  // distinct keys (one of them from an entry someone added), each is tried.
  std::optional<std::string> plain;
  std::size_t opened_by = 0;
  std::optional<Error> failure;
  for (std::size_t i = 0; i < keys.size() && !plain; ++i) {
    if (!content_keys[i]) continue;
    const bool tried = std::any_of(content_keys.begin(), content_keys.begin() + static_cast<std::ptrdiff_t>(i),
                                   [&](const auto& earlier) { return earlier && same_key(*earlier, *content_keys[i]); });
    if (tried) continue;
    MAILKMS_TRY(cctx, content_context(ctx, parts, *cipher, gcm));
    auto opened = decrypt_content(cctx, parts, gcm, *content_keys[i]);
    if (!opened) {
      failure = std::move(opened).error();
      continue;
    }
    plain = std::move(*opened);
    opened_by = i;
  }
  if (!plain) return *failure;
  // Only the keys whose own entries yield the key that opened it can read
  // it: an entry that merely names a certificate proves nothing.
  std::vector<std::size_t> readers;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (content_keys[i] && same_key(*content_keys[i], *content_keys[opened_by])) readers.push_back(i);
  }
  return DecryptedBytes{std::move(*plain), *cipher, parts.authenticated, keys[opened_by]->certificate(),
                        std::move(readers)};
}

Result<Decrypted> decrypt_entity(const CryptoContext& ctx, const Entity& entity, std::span<KeyUnwrapper* const> keys,
                                 const MimeLimits& limits) {
  MAILKMS_TRY(der, detail::decode_cms_body(entity));
  MAILKMS_TRY(bytes, decrypt_cms(ctx, der, keys));
  MAILKMS_TRY(content, parse_entity(bytes.content, limits));
  return Decrypted{std::move(content), bytes.cipher, bytes.authenticated, std::move(bytes.recipient),
                   std::move(bytes.readers)};
}

}  // namespace mailkms::smime
