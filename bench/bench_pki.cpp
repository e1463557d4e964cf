#include "bench_pki.hpp"

#include <openssl/x509v3.h>

#include <stdexcept>

namespace mailkms::bench {
namespace {

EVP_PKEY* make_key(bool ec) {
  EVP_PKEY* key = ec ? EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")
                     : EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(2048));
  if (key == nullptr) throw std::runtime_error("key generation failed");
  return key;
}

void add_extension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (ext == nullptr) throw std::runtime_error("bad extension");
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

X509* make_cert(EVP_PKEY* key, const std::string& cn, X509* issuer, EVP_PKEY* issuer_key, long serial, bool ca,
                bool ec) {
  X509* cert = X509_new();
  X509_set_version(cert, X509_VERSION_3);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), serial);
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), 3600L * 24 * 365);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert, issuer != nullptr ? X509_get_subject_name(issuer) : name);
  X509* signer = issuer != nullptr ? issuer : cert;
  if (ca) {
    add_extension(cert, signer, NID_basic_constraints, "critical,CA:true");
    add_extension(cert, signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_extension(cert, signer, NID_basic_constraints, "critical,CA:false");
    add_extension(cert, signer, NID_key_usage,
                  ec ? "critical,digitalSignature,nonRepudiation,keyAgreement"
                     : "critical,digitalSignature,nonRepudiation,keyEncipherment");
    add_extension(cert, signer, NID_ext_key_usage, "emailProtection");
    add_extension(cert, signer, NID_subject_alt_name, ("email:" + cn).c_str());
  }
  add_extension(cert, signer, NID_subject_key_identifier, "hash");
  if (X509_sign(cert, issuer_key != nullptr ? issuer_key : key, EVP_sha256()) == 0) {
    throw std::runtime_error("certificate signing failed");
  }
  return cert;
}

}  // namespace

BenchPki::BenchPki(bool ec, int users) {
  ca_.key = make_key(ec);
  ca_.cert = make_cert(ca_.key, "bench CA", nullptr, nullptr, 1, true, ec);
  for (int i = 0; i < users; ++i) {
    User u{make_key(ec), nullptr};
    u.cert = make_cert(u.key, "user" + std::to_string(i) + "@example.org", ca_.cert, ca_.key, 100 + i, false, ec);
    users_.push_back(u);
  }
}

BenchPki::~BenchPki() {
  for (auto& u : users_) {
    X509_free(u.cert);
    EVP_PKEY_free(u.key);
  }
  X509_free(ca_.cert);
  EVP_PKEY_free(ca_.key);
}

}  // namespace mailkms::bench
