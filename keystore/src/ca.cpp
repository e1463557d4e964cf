#include "mailkms/keystore/ca.hpp"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <charconv>
#include <memory>
#include <nlohmann/json.hpp>

#include "mailkms/smime/mime.hpp"
#include "mailkms/smime/ossl.hpp"
#include "row.hpp"
#include "x509_build.hpp"

namespace mailkms::keystore {
namespace {

namespace ossl = smime::ossl;

Error crypto(std::string_view what) { return detail::crypto_error(what); }
using detail::add_extension;
using detail::set_random_serial;
using detail::sign_with;
using detail::signing_digest;

bool valid_id(std::string_view id) {
  return !id.empty() && id.size() <= 64 &&
         std::all_of(id.begin(), id.end(), [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; });
}

std::time_t not_after_of(const smime::Certificate& c) { return c.not_after(); }

nlohmann::json to_json(const CaInfo& ca) {
  nlohmann::json chain = nlohmann::json::array();
  for (const auto& c : ca.external_chain) chain.push_back(c.pem());
  return {{"id", ca.id},
          {"role", std::string(to_string(ca.role))},
          {"parent", ca.parent},
          {"priority", ca.priority},
          {"enabled", ca.enabled},
          {"certificate", ca.certificate ? ca.certificate->pem() : std::string()},
          {"external_chain", chain}};
}

Result<CaInfo> ca_from_json(std::string_view key, std::string_view text) {
  MAILKMS_TRY(j, detail::parse_row(key, text));
  const Error bad = detail::corrupt_row(key, "lacks a field, has one of the wrong type, or holds no certificate");
  try {
    CaInfo ca;
    ca.id = j.at("id").get<std::string>();
    const std::string role = j.at("role").get<std::string>();
    ca.role = role == "root" ? CaRole::root : role == "issuing" ? CaRole::issuing : CaRole::awaiting_external;
    ca.parent = j.at("parent").get<std::string>();
    ca.priority = j.at("priority").get<int>();
    ca.enabled = j.at("enabled").get<bool>();
    if (const std::string pem = j.at("certificate").get<std::string>(); !pem.empty()) {
      auto cert = smime::Certificate::from_pem(pem);
      if (!cert) return bad;
      ca.certificate = std::move(*cert);
    }
    for (const auto& pem : j.at("external_chain")) {
      auto cert = smime::Certificate::from_pem(pem.get<std::string>());
      if (!cert) return bad;
      ca.external_chain.push_back(std::move(*cert));
    }
    return ca;
  } catch (const nlohmann::json::exception&) {
    return bad;
  }
}

nlohmann::json to_json(const CertificateRecord& r) {
  return {{"serial", r.serial},
          {"ca", r.ca_id},
          {"owner", r.owner},
          {"profile", std::string(to_string(r.profile))},
          {"certificate", r.certificate.pem()},
          {"not_after", r.certificate.not_after()},
          {"revoked_at", r.revoked_at ? nlohmann::json(*r.revoked_at) : nlohmann::json()},
          {"reason", static_cast<int>(r.reason)}};
}

Result<CertificateRecord> record_from_json(std::string_view key, std::string_view text) {
  MAILKMS_TRY(j, detail::parse_row(key, text));
  const Error bad = detail::corrupt_row(key, "lacks a field, has one of the wrong type, or holds no certificate");
  try {
    auto cert = smime::Certificate::from_pem(j.at("certificate").get<std::string>());
    if (!cert) return bad;
    CertificateRecord r{j.at("serial").get<std::string>(), j.at("ca").get<std::string>(),
                        j.at("owner").get<std::string>(),
                        j.at("profile").get<std::string>() == "signing" ? Profile::signing : Profile::encryption,
                        std::move(*cert), std::nullopt, static_cast<RevocationReason>(j.at("reason").get<int>())};
    if (!j.at("revoked_at").is_null()) r.revoked_at = j.at("revoked_at").get<std::time_t>();
    return r;
  } catch (const nlohmann::json::exception&) {
    return bad;
  }
}

std::string ca_record_key(std::string_view id) { return "ca/" + std::string(id); }
std::string ca_owner(std::string_view id) { return "ca:" + std::string(id); }

}  // namespace

std::optional<KeyType> parse_key_type(std::string_view name) {
  if (name == "rsa-2048") return KeyType::rsa2048;
  if (name == "rsa-3072") return KeyType::rsa3072;
  if (name == "rsa-4096") return KeyType::rsa4096;
  if (name == "ec-p256") return KeyType::ec_p256;
  if (name == "ec-p384") return KeyType::ec_p384;
  return std::nullopt;
}

std::string_view to_string(KeyType type) noexcept {
  switch (type) {
    case KeyType::rsa2048: return "rsa-2048";
    case KeyType::rsa3072: return "rsa-3072";
    case KeyType::rsa4096: return "rsa-4096";
    case KeyType::ec_p256: return "ec-p256";
    case KeyType::ec_p384: return "ec-p384";
  }
  return "rsa-2048";
}

std::string_view to_string(CaRole role) noexcept {
  switch (role) {
    case CaRole::root: return "root";
    case CaRole::issuing: return "issuing";
    case CaRole::awaiting_external: return "awaiting-external";
  }
  return "root";
}

std::string_view to_string(Profile profile) noexcept { return profile == Profile::signing ? "signing" : "encryption"; }

std::optional<RevocationReason> parse_revocation_reason(std::string_view name) {
  if (name == "unspecified") return RevocationReason::unspecified;
  if (name == "keyCompromise") return RevocationReason::key_compromise;
  if (name == "cACompromise") return RevocationReason::ca_compromise;
  if (name == "affiliationChanged") return RevocationReason::affiliation_changed;
  if (name == "superseded") return RevocationReason::superseded;
  if (name == "cessationOfOperation") return RevocationReason::cessation_of_operation;
  return std::nullopt;
}

Result<smime::PrivateKey> generate_key(const smime::CryptoContext& ctx, KeyType type) {
  EVP_PKEY* key = nullptr;
  switch (type) {
    case KeyType::rsa2048: key = EVP_PKEY_Q_keygen(ctx.libctx(), nullptr, "RSA", std::size_t{2048}); break;
    case KeyType::rsa3072: key = EVP_PKEY_Q_keygen(ctx.libctx(), nullptr, "RSA", std::size_t{3072}); break;
    case KeyType::rsa4096: key = EVP_PKEY_Q_keygen(ctx.libctx(), nullptr, "RSA", std::size_t{4096}); break;
    case KeyType::ec_p256: key = EVP_PKEY_Q_keygen(ctx.libctx(), nullptr, "EC", "P-256"); break;
    case KeyType::ec_p384: key = EVP_PKEY_Q_keygen(ctx.libctx(), nullptr, "EC", "P-384"); break;
  }
  if (key == nullptr) return crypto("key generation failed");
  return smime::PrivateKey::adopt(key);
}

std::string private_key_path(std::string_view owner, std::string_view key_id) {
  return "keys/" + std::string(owner) + "/" + std::string(key_id);
}

Status store_private_key(Barrier& barrier, std::string_view owner, std::string_view key_id, const smime::PrivateKey& key) {
  unsigned char* der = nullptr;
  const int n = i2d_PrivateKey(key.native(), &der);
  if (n <= 0) return crypto("cannot encode a private key");
  Status s = barrier.put(private_key_path(owner, key_id), std::string_view(reinterpret_cast<char*>(der), static_cast<std::size_t>(n)));
  OPENSSL_clear_free(der, static_cast<std::size_t>(n));
  return s;
}

Result<smime::PrivateKey> load_private_key(Barrier& barrier, const smime::CryptoContext& ctx, std::string_view owner,
                                           std::string_view key_id) {
  MAILKMS_TRY(stored, barrier.get(private_key_path(owner, key_id)));
  if (!stored) return make_error(Errc::not_found, "no key " + std::string(key_id) + " for " + std::string(owner));
  const unsigned char* p = stored->data();
  EVP_PKEY* key = d2i_AutoPrivateKey_ex(nullptr, &p, static_cast<long>(stored->size()), ctx.libctx(), nullptr);
  if (key == nullptr) return crypto("a stored private key does not decode");
  return smime::PrivateKey::adopt(key);
}

Status CertificateAuthority::save(const CaInfo& info) {
  {
    const std::lock_guard lock(chain_cache_mutex_);
    chain_cache_.clear();  // any chain may pass through this CA
  }
  return storage_.put(ca_record_key(info.id), to_json(info).dump());
}

Result<std::vector<std::string>> CertificateAuthority::chain_pem(const std::string& id) {
  {
    const std::lock_guard lock(chain_cache_mutex_);
    if (const auto it = chain_cache_.find(id); it != chain_cache_.end()) return it->second;
  }
  MAILKMS_TRY(certs, chain(id));
  std::vector<std::string> pems;
  pems.reserve(certs.size());
  for (const auto& c : certs) pems.push_back(c.pem());
  const std::lock_guard lock(chain_cache_mutex_);
  chain_cache_.emplace(id, pems);
  return pems;
}

Result<CertificateAuthority::Summary> CertificateAuthority::summary(const std::string& serial) {
  MAILKMS_TRY(stored, storage_.get("certs/" + serial));
  if (!stored) return make_error(Errc::not_found, "no certificate with serial " + serial);
  MAILKMS_TRY(j, detail::parse_row("certs/" + serial, *stored));
  Summary s{j.value("ca", ""), j.value("certificate", ""), j.value("not_after", std::time_t{0}),
            !j.value("revoked_at", nlohmann::json()).is_null()};
  if (!s.revoked) MAILKMS_CHECK(check_not_revoked(s.ca_id, serial));
  if (s.not_after == 0) {  // records from before not_after was stored
    MAILKMS_TRY(record, record_from_json("certs/" + serial, *stored));
    s.not_after = record.certificate.not_after();
  }
  return s;
}

Result<CaInfo> CertificateAuthority::get(const std::string& id) {
  MAILKMS_TRY(stored, storage_.get(ca_record_key(id)));
  if (!stored) return make_error(Errc::not_found, "no CA " + id);
  return ca_from_json(ca_record_key(id), *stored);
}

Result<std::vector<CaInfo>> CertificateAuthority::list() {
  MAILKMS_TRY(rows, storage_.scan("ca/", {}, 10'000));
  std::vector<CaInfo> out;
  for (const auto& [key, value] : rows) {
    MAILKMS_TRY(ca, ca_from_json(key, value));
    out.push_back(std::move(ca));
  }
  return out;
}

Result<smime::PrivateKey> CertificateAuthority::ca_key(const std::string& id) {
  return load_private_key(barrier_, *ctx_, ca_owner(id), "ca");
}

Result<CaInfo> CertificateAuthority::create_ca(const std::string& id, const std::optional<std::string>& parent,
                                               const std::string& name, KeyType type, int validity_days, int priority,
                                               CaRole role, const std::string& actor) {
  if (!valid_id(id)) return make_error(Errc::invalid_argument, "a CA id is 1-64 of a-z, 0-9 and -");
  if (validity_days < 1 || validity_days > 36500) return make_error(Errc::invalid_argument, "validity out of range");
  MAILKMS_TRY(existing, storage_.get(ca_record_key(id)));
  if (existing) return make_error(Errc::already_exists, "a CA " + id + " exists");
  std::optional<CaInfo> issuer;
  std::optional<smime::PrivateKey> issuer_key;
  if (parent) {
    MAILKMS_TRY(p, get(*parent));
    if (!p.certificate || p.role == CaRole::awaiting_external) {
      return make_error(Errc::invalid_argument, "CA " + *parent + " cannot sign yet");
    }
    // An issuing CA (pathlen:0) may sign only end-entity certificates: a CA
    // under it would have a chain no client validates.
    if (X509_get_pathlen(p.certificate->native()) == 0) {
      return make_error(Errc::invalid_argument, "CA " + *parent +
                                                    " is an issuing CA and cannot sign another CA: choose a root as parent");
    }
    MAILKMS_TRY(k, ca_key(*parent));
    issuer = std::move(p);
    issuer_key = std::move(k);
  }
  MAILKMS_TRY(key, generate_key(*ctx_, type));

  ossl::X509Ptr cert(X509_new_ex(ctx_->libctx(), nullptr));
  X509_set_version(cert.get(), X509_VERSION_3);
  MAILKMS_CHECK(set_random_serial(cert.get()));
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -300);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 86400L * validity_days);
  if (issuer && ASN1_TIME_compare(X509_get0_notAfter(issuer->certificate->native()), X509_get0_notAfter(cert.get())) < 0) {
    X509_set1_notAfter(cert.get(), X509_get0_notAfter(issuer->certificate->native()));  // never outlive the issuer
  }
  X509_set_pubkey(cert.get(), key.native());
  X509_NAME* subject = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(name.c_str()), -1, -1, 0);
  X509* signer_cert = issuer ? issuer->certificate->native() : cert.get();
  X509_set_issuer_name(cert.get(), X509_get_subject_name(signer_cert));
  MAILKMS_CHECK(add_extension(cert.get(), signer_cert, NID_basic_constraints,
                              role == CaRole::root ? "critical,CA:TRUE" : "critical,CA:TRUE,pathlen:0"));
  MAILKMS_CHECK(add_extension(cert.get(), signer_cert, NID_key_usage, "critical,keyCertSign,cRLSign"));
  MAILKMS_CHECK(add_extension(cert.get(), signer_cert, NID_subject_key_identifier, "hash"));
  MAILKMS_CHECK(add_extension(cert.get(), signer_cert, NID_authority_key_identifier, "keyid:always"));
  MAILKMS_CHECK(sign_with(*ctx_, cert.get(), issuer_key ? issuer_key->native() : key.native()));

  CaInfo info;
  info.id = id;
  info.role = role;
  info.parent = parent.value_or("");
  info.priority = priority;
  info.certificate = smime::Certificate::share(cert.get());
  MAILKMS_CHECK(storage_.transaction([&]() -> Status {
    MAILKMS_CHECK(store_private_key(barrier_, ca_owner(id), "ca", key));
    MAILKMS_CHECK(save(info));
    return audit_.append({actor, role == CaRole::root ? "ca-create-root" : "ca-create-issuing", id, "ok",
                          std::string(to_string(type)) + ", " + info.certificate->subject()});
  }));
  return info;
}

Result<CaInfo> CertificateAuthority::create_root(const std::string& id, const std::string& name, KeyType type,
                                                 int validity_days, const std::string& actor) {
  if (type == KeyType::rsa2048) return make_error(Errc::invalid_argument, "a root CA key is RSA-3072 or larger, or EC P-384");
  return create_ca(id, std::nullopt, name, type, validity_days, 0, CaRole::root, actor);
}

Result<CaInfo> CertificateAuthority::create_issuing(const std::string& id, const std::string& parent,
                                                    const std::string& name, KeyType type, int validity_days,
                                                    int priority, const std::string& actor) {
  return create_ca(id, parent, name, type, validity_days, priority, CaRole::issuing, actor);
}

Result<std::string> CertificateAuthority::request_external(const std::string& id, const std::string& name,
                                                           KeyType type, int priority, const std::string& actor) {
  if (!valid_id(id)) return make_error(Errc::invalid_argument, "a CA id is 1-64 of a-z, 0-9 and -");
  MAILKMS_TRY(existing, storage_.get(ca_record_key(id)));
  if (existing) return make_error(Errc::already_exists, "a CA " + id + " exists");
  MAILKMS_TRY(key, generate_key(*ctx_, type));
  ossl::X509Req req(X509_REQ_new_ex(ctx_->libctx(), nullptr));
  X509_REQ_set_version(req.get(), X509_REQ_VERSION_1);
  X509_NAME* subject = X509_REQ_get_subject_name(req.get());
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(name.c_str()), -1, -1, 0);
  X509_REQ_set_pubkey(req.get(), key.native());
  const ossl::ExtensionStack exts(sk_X509_EXTENSION_new_null());
  int added = 0;
  if (exts) {
    for (const auto& [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
                                     std::pair{NID_key_usage, "critical,keyCertSign,cRLSign"}}) {
      ossl::X509Extension ext(X509V3_EXT_conf_nid(nullptr, nullptr, nid, value));
      if (ext && sk_X509_EXTENSION_push(exts.get(), ext.get()) > 0) (void)ext.release();
    }
    if (sk_X509_EXTENSION_num(exts.get()) == 2) added = X509_REQ_add_extensions(req.get(), exts.get());
  }
  ossl::Md md(EVP_MD_fetch(ctx_->libctx(), signing_digest(key.native()), nullptr));
  if (added != 1 || !md || X509_REQ_sign(req.get(), key.native(), md.get()) <= 0) return crypto("cannot make the request");
  ossl::Bio out(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509_REQ(out.get(), req.get());
  char* data = nullptr;
  const long n = BIO_get_mem_data(out.get(), &data);
  std::string pem(data, static_cast<std::size_t>(n));

  CaInfo info;
  info.id = id;
  info.role = CaRole::awaiting_external;
  info.priority = priority;
  info.enabled = false;
  MAILKMS_CHECK(storage_.transaction([&]() -> Status {
    MAILKMS_CHECK(store_private_key(barrier_, ca_owner(id), "ca", key));
    MAILKMS_CHECK(save(info));
    return audit_.append({actor, "ca-request-external", id, "ok", std::string(to_string(type))});
  }));
  return pem;
}

Status CertificateAuthority::import_external(const std::string& id, std::string_view pem_chain, const std::string& actor) {
  MAILKMS_TRY(info, get(id));
  if (info.role != CaRole::awaiting_external) return make_error(Errc::invalid_argument, "CA " + id + " awaits no certificate");
  auto certs = smime::Certificate::all_from_pem(pem_chain);
  if (!certs) return make_error(Errc::invalid_argument, certs.error().message);
  MAILKMS_TRY(key, ca_key(id));
  const smime::Certificate& mine = certs->front();
  if (!key.matches(mine)) return make_error(Errc::invalid_argument, "the certificate is not for this CA's key");
  if (X509_check_ca(mine.native()) == 0) return make_error(Errc::invalid_argument, "the certificate is not a CA certificate");
  for (std::size_t i = 0; i + 1 < certs->size(); ++i) {
    if (X509_check_issued((*certs)[i + 1].native(), (*certs)[i].native()) != X509_V_OK) {
      return make_error(Errc::invalid_argument, "the chain is out of order or incomplete at " + (*certs)[i].subject());
    }
  }
  info.role = CaRole::issuing;
  info.enabled = true;
  info.certificate = mine;
  info.external_chain.assign(certs->begin() + 1, certs->end());
  return storage_.transaction([&]() -> Status {
    MAILKMS_CHECK(save(info));
    return audit_.append({actor, "ca-import-external", id, "ok", mine.issuer()});
  });
}

Status CertificateAuthority::set_enabled(const std::string& id, bool enabled, const std::string& actor) {
  MAILKMS_TRY(info, get(id));
  info.enabled = enabled;
  return storage_.transaction([&]() -> Status {
    MAILKMS_CHECK(save(info));
    return audit_.append({actor, enabled ? "ca-enable" : "ca-disable", id, "ok", ""});
  });
}

Result<std::vector<smime::Certificate>> CertificateAuthority::chain(const std::string& id) {
  std::vector<smime::Certificate> out;
  if (id == "imported") return out;  // users moved here from another keystore: their CA is not ours
  std::string current = id;
  for (int depth = 0; depth < 8; ++depth) {
    MAILKMS_TRY(ca, get(current));
    if (!ca.certificate) return make_error(Errc::invalid_argument, "CA " + current + " has no certificate yet");
    out.push_back(*ca.certificate);
    if (!ca.external_chain.empty()) {
      out.insert(out.end(), ca.external_chain.begin(), ca.external_chain.end());
      return out;
    }
    if (ca.parent.empty()) return out;
    current = ca.parent;
  }
  return make_error(Errc::corrupt, "the CA hierarchy is deeper than 8: a loop?");
}

Result<Issued> CertificateAuthority::issue_with(const CaInfo& ca, EVP_PKEY* public_key, const std::string& address,
                                                Profile profile, int validity_days) {
  MAILKMS_TRY(key, ca_key(ca.id));
  ossl::X509Ptr cert(X509_new_ex(ctx_->libctx(), nullptr));
  X509_set_version(cert.get(), X509_VERSION_3);
  MAILKMS_CHECK(set_random_serial(cert.get()));
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -300);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 86400L * validity_days);
  if (ASN1_TIME_compare(X509_get0_notAfter(ca.certificate->native()), X509_get0_notAfter(cert.get())) < 0) {
    X509_set1_notAfter(cert.get(), X509_get0_notAfter(ca.certificate->native()));
  }
  X509_set_pubkey(cert.get(), public_key);
  X509_NAME* subject = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(address.c_str()), -1, -1, 0);
  X509* issuer = ca.certificate->native();
  X509_set_issuer_name(cert.get(), X509_get_subject_name(issuer));
  const bool ec = EVP_PKEY_is_a(public_key, "EC");
  const char* usage = profile == Profile::signing ? "critical,digitalSignature,nonRepudiation"
                      : ec                         ? "critical,keyAgreement"
                                                   : "critical,keyEncipherment";
  MAILKMS_CHECK(add_extension(cert.get(), issuer, NID_basic_constraints, "critical,CA:FALSE"));
  MAILKMS_CHECK(add_extension(cert.get(), issuer, NID_key_usage, usage));
  MAILKMS_CHECK(add_extension(cert.get(), issuer, NID_ext_key_usage, "emailProtection"));
  MAILKMS_CHECK(add_extension(cert.get(), issuer, NID_subject_alt_name, "email:" + address));
  MAILKMS_CHECK(add_extension(cert.get(), issuer, NID_subject_key_identifier, "hash"));
  MAILKMS_CHECK(add_extension(cert.get(), issuer, NID_authority_key_identifier, "keyid:always"));
  MAILKMS_CHECK(sign_with(*ctx_, cert.get(), key.native()));
  return Issued{smime::Certificate::share(cert.get()), ca.id, {}};
}

Result<Issued> CertificateAuthority::issue(EVP_PKEY* public_key, const std::string& address, Profile profile,
                                           int validity_days, const std::string& actor) {
  if (address.empty() || address.find('@') == std::string::npos || address.find_first_of(" ,<>\"\r\n") != std::string::npos) {
    return make_error(Errc::invalid_argument, "not a mail address: " + address);
  }
  MAILKMS_TRY(cas, list());
  std::vector<CaInfo> issuing;
  for (auto& ca : cas) {
    if (ca.role == CaRole::issuing) issuing.push_back(std::move(ca));
  }
  std::sort(issuing.begin(), issuing.end(),
            [](const CaInfo& a, const CaInfo& b) { return std::tie(a.priority, a.id) < std::tie(b.priority, b.id); });
  std::vector<std::string> skipped;
  const std::time_t now = std::time(nullptr);
  for (const auto& ca : issuing) {
    if (!ca.enabled) {
      skipped.push_back(ca.id + ": disabled");
      continue;
    }
    if (!ca.certificate || not_after_of(*ca.certificate) < now + 86400) {
      skipped.push_back(ca.id + ": expired or about to");
      continue;
    }
    auto issued = issue_with(ca, public_key, address, profile, validity_days);
    if (!issued) {
      skipped.push_back(ca.id + ": " + issued.error().message);
      continue;
    }
    issued->skipped = skipped;
    const smime::Certificate& cert = issued->certificate;
    CertificateRecord record{cert.serial_hex(), ca.id, address, profile, cert, std::nullopt, RevocationReason::unspecified};
    std::string detail = std::string(to_string(profile)) + " certificate from " + ca.id;
    for (const auto& s : skipped) detail += "; skipped " + s;
    MAILKMS_CHECK(storage_.transaction([&]() -> Status {
      MAILKMS_CHECK(storage_.put("certs/" + record.serial, to_json(record).dump()));
      return audit_.append({actor, "issue", address, "ok", detail + ", serial " + record.serial});
    }));
    return std::move(*issued);
  }
  std::string why = "no issuing CA can issue";
  for (const auto& s : skipped) why += "; " + s;
  (void)audit_.append({actor, "issue", address, "failed", why});
  return make_error(Errc::invalid_argument, why);
}

Result<CertificateRecord> CertificateAuthority::certificate(const std::string& serial) {
  MAILKMS_TRY(stored, storage_.get("certs/" + serial));
  if (!stored) return make_error(Errc::not_found, "no certificate with serial " + serial);
  MAILKMS_TRY(record, record_from_json("certs/" + serial, *stored));
  if (!record.revoked_at) MAILKMS_CHECK(check_not_revoked(record.ca_id, serial));
  return record;
}

Status CertificateAuthority::check_not_revoked(const std::string& ca_id, const std::string& serial) {
  // Certificate records are authenticated but not versioned: an older copy
  // from before the revocation would pass. The revocation row is versioned.
  MAILKMS_TRY(revocation, storage_.get("revoked/" + ca_id + "/" + serial));
  if (revocation) {
    return make_error(Errc::corrupt, "integrity check failed: certs/" + serial +
                                         " says the certificate is valid, but it was revoked: an older copy was put back");
  }
  return Ok{};
}

Status CertificateAuthority::revoke(const std::string& serial, RevocationReason reason, const std::string& actor) {
  MAILKMS_TRY(record, certificate(serial));
  if (record.revoked_at) return make_error(Errc::already_exists, "certificate " + serial + " is already revoked");
  record.revoked_at = std::time(nullptr);
  record.reason = reason;
  return storage_.transaction([&]() -> Status {
    MAILKMS_CHECK(storage_.put("certs/" + serial, to_json(record).dump()));
    MAILKMS_CHECK(storage_.put("revoked/" + record.ca_id + "/" + serial,
                               std::to_string(*record.revoked_at) + ":" + std::to_string(static_cast<int>(reason))));
    MAILKMS_CHECK(storage_.remove("crl/" + record.ca_id));  // the next request makes a new one
    return audit_.append({actor, "revoke", record.owner, "ok", "serial " + serial});
  });
}

namespace {

template <class Number>
bool parse_number(std::string_view text, Number& out) {
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

// A revoked/<ca>/<serial> row, "time:reason", as a CRL entry.
Result<ossl::X509Revoked> crl_entry(const std::string& key, const std::string& value) {
  const std::string serial = key.substr(key.rfind('/') + 1);
  const auto colon = value.find(':');
  long long when = 0;
  int code = 0;
  BIGNUM* parsed = nullptr;
  if (colon == std::string::npos || !parse_number(std::string_view(value).substr(0, colon), when) ||
      !parse_number(std::string_view(value).substr(colon + 1), code) ||
      BN_hex2bn(&parsed, serial.c_str()) != static_cast<int>(serial.size())) {
    BN_free(parsed);
    return detail::corrupt_row(key, "is not a revocation (hexadecimal serial, time:reason)");
  }
  const ossl::Bignum bn(parsed);
  ossl::X509Revoked entry(X509_REVOKED_new());
  const ossl::Asn1Integer number(BN_to_ASN1_INTEGER(bn.get(), nullptr));
  const ossl::Asn1Time at(ASN1_TIME_set(nullptr, static_cast<time_t>(when)));
  if (!entry || !number || !at || X509_REVOKED_set_serialNumber(entry.get(), number.get()) != 1 ||
      X509_REVOKED_set_revocationDate(entry.get(), at.get()) != 1) {
    return crypto("cannot make a CRL entry");
  }
  if (code != 0) {
    const ossl::Asn1Enumerated reason(ASN1_ENUMERATED_new());
    if (!reason || ASN1_ENUMERATED_set(reason.get(), code) != 1 ||
        X509_REVOKED_add1_ext_i2d(entry.get(), NID_crl_reason, reason.get(), 0, 0) != 1) {
      return crypto("cannot give a CRL entry its reason");
    }
  }
  return entry;
}

// The CRL's extensions: its number (RFC 5280 §5.2.3), and which of the
// issuer's keys signed it (§5.2.1, MUST).
Status add_crl_extensions(X509_CRL* crl, X509* issuer, long number) {
  const ossl::Asn1Integer crl_number(ASN1_INTEGER_new());
  if (!crl_number || ASN1_INTEGER_set(crl_number.get(), number) != 1 ||
      X509_CRL_add1_ext_i2d(crl, NID_crl_number, crl_number.get(), 0, 0) != 1) {
    return crypto("cannot number the CRL");
  }
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, issuer, nullptr, nullptr, crl, 0);
  const ossl::X509Extension aki(X509V3_EXT_conf_nid(nullptr, &v3, NID_authority_key_identifier, "keyid:always"));
  if (!aki || X509_CRL_add_ext(crl, aki.get(), -1) != 1) return crypto("cannot add the CRL's authority key identifier");
  return Ok{};
}

}  // namespace

Result<std::optional<std::string>> CertificateAuthority::cached_crl(const std::string& id) {
  MAILKMS_TRY(cached, storage_.get("crl/" + id));
  if (!cached) return std::optional<std::string>();
  MAILKMS_TRY(j, detail::parse_row("crl/" + id, *cached));
  if (j.value("made", std::time_t{0}) + 86400 <= std::time(nullptr)) return std::optional<std::string>();
  auto decoded = smime::base64_decode(j.value("der", ""));
  if (!decoded) return detail::corrupt_row("crl/" + id, "holds no CRL");
  return std::optional<std::string>(std::move(*decoded));
}

Result<std::string> CertificateAuthority::crl(const std::string& id, int next_update_days) {
  MAILKMS_TRY(cached, cached_crl(id));
  if (cached) return std::move(*cached);
  MAILKMS_TRY(ca, get(id));
  if (!ca.certificate) return make_error(Errc::invalid_argument, "CA " + id + " has no certificate yet");
  MAILKMS_TRY(key, ca_key(id));
  MAILKMS_TRY(revoked, storage_.scan("revoked/" + id + "/", {}, 10'000'000));
  // The CRL number: one more than the last one we made.
  MAILKMS_TRY(last, storage_.get("crl-number/" + id));
  long number = 1;
  if (last && (!parse_number(*last, number) || ++number <= 1)) return detail::corrupt_row("crl-number/" + id, "is not a number");
  const ossl::X509Crl crl(X509_CRL_new_ex(ctx_->libctx(), nullptr));
  const ossl::Asn1Time now(X509_gmtime_adj(nullptr, 0));
  const ossl::Asn1Time next(X509_gmtime_adj(nullptr, 86400L * next_update_days));
  if (!crl || !now || !next || X509_CRL_set_version(crl.get(), X509_CRL_VERSION_2) != 1 ||
      X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(ca.certificate->native())) != 1 ||
      X509_CRL_set1_lastUpdate(crl.get(), now.get()) != 1 || X509_CRL_set1_nextUpdate(crl.get(), next.get()) != 1) {
    return crypto("cannot make the CRL");
  }
  for (const auto& [key_path, value] : revoked) {
    MAILKMS_TRY(entry, crl_entry(key_path, value));
    if (X509_CRL_add0_revoked(crl.get(), entry.get()) != 1) return crypto("cannot add a CRL entry");
    (void)entry.release();  // the CRL owns it now
  }
  MAILKMS_CHECK(add_crl_extensions(crl.get(), ca.certificate->native(), number));
  X509_CRL_sort(crl.get());
  const ossl::Md md(EVP_MD_fetch(ctx_->libctx(), signing_digest(key.native()), nullptr));
  if (!md || X509_CRL_sign(crl.get(), key.native(), md.get()) <= 0) return crypto("cannot sign the CRL");
  std::string out = ossl::to_der(crl.get(), i2d_X509_CRL);
  if (out.empty()) return crypto("cannot encode the CRL");
  MAILKMS_CHECK(storage_.transaction([&]() -> Status {
    MAILKMS_CHECK(storage_.put("crl-number/" + id, std::to_string(number)));
    return storage_.put("crl/" + id, nlohmann::json{{"made", std::time(nullptr)}, {"der", smime::base64_encode_mime(out)}}.dump());
  }));
  return out;
}

}  // namespace mailkms::keystore
