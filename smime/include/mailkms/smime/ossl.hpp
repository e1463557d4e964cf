// RAII owners for OpenSSL handles, and turning OpenSSL's error queue into an
// Error: one set for the engine, the keystore and the gateway, so that no
// one writes a deleter of their own or frees by hand on each path. The
// engine's other public headers never expose these.
#pragma once

#include <openssl/bio.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "mailkms/smime/result.hpp"

namespace mailkms::smime::ossl {

template <class T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const noexcept { Free(p); }
};

inline void free_x509_stack(STACK_OF(X509) * s) { sk_X509_pop_free(s, X509_free); }
inline void free_borrowed_x509_stack(STACK_OF(X509) * s) { sk_X509_free(s); }
inline void free_crl_stack(STACK_OF(X509_CRL) * s) { sk_X509_CRL_pop_free(s, X509_CRL_free); }
inline void free_extension_stack(STACK_OF(X509_EXTENSION) * s) { sk_X509_EXTENSION_pop_free(s, X509_EXTENSION_free); }
inline void free_algor_stack(STACK_OF(X509_ALGOR) * s) { sk_X509_ALGOR_pop_free(s, X509_ALGOR_free); }
inline void free_bio(BIO* b) { BIO_free_all(b); }
inline void free_openssl(unsigned char* p) { OPENSSL_free(p); }

using Bio = std::unique_ptr<BIO, Deleter<BIO, free_bio>>;
using Cms = std::unique_ptr<CMS_ContentInfo, Deleter<CMS_ContentInfo, CMS_ContentInfo_free>>;
using X509Stack = std::unique_ptr<STACK_OF(X509), Deleter<STACK_OF(X509), free_x509_stack>>;
// A stack of certificates it does not own: freeing it leaves them be.
using BorrowedX509Stack = std::unique_ptr<STACK_OF(X509), Deleter<STACK_OF(X509), free_borrowed_x509_stack>>;
using X509StoreCtx = std::unique_ptr<X509_STORE_CTX, Deleter<X509_STORE_CTX, X509_STORE_CTX_free>>;
using AlgorStack = std::unique_ptr<STACK_OF(X509_ALGOR), Deleter<STACK_OF(X509_ALGOR), free_algor_stack>>;
using Pkey = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using PkeyCtx = std::unique_ptr<EVP_PKEY_CTX, Deleter<EVP_PKEY_CTX, EVP_PKEY_CTX_free>>;
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, Deleter<EVP_CIPHER_CTX, EVP_CIPHER_CTX_free>>;
using Cipher = std::unique_ptr<EVP_CIPHER, Deleter<EVP_CIPHER, EVP_CIPHER_free>>;
using Md = std::unique_ptr<EVP_MD, Deleter<EVP_MD, EVP_MD_free>>;
using MdCtx = std::unique_ptr<EVP_MD_CTX, Deleter<EVP_MD_CTX, EVP_MD_CTX_free>>;
using Kdf = std::unique_ptr<EVP_KDF, Deleter<EVP_KDF, EVP_KDF_free>>;
using KdfCtx = std::unique_ptr<EVP_KDF_CTX, Deleter<EVP_KDF_CTX, EVP_KDF_CTX_free>>;
using Bytes = std::unique_ptr<unsigned char, Deleter<unsigned char, free_openssl>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using X509Req = std::unique_ptr<X509_REQ, Deleter<X509_REQ, X509_REQ_free>>;
using X509Crl = std::unique_ptr<X509_CRL, Deleter<X509_CRL, X509_CRL_free>>;
using X509Revoked = std::unique_ptr<X509_REVOKED, Deleter<X509_REVOKED, X509_REVOKED_free>>;
using CrlStack = std::unique_ptr<STACK_OF(X509_CRL), Deleter<STACK_OF(X509_CRL), free_crl_stack>>;
using X509Extension = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION, X509_EXTENSION_free>>;
using ExtensionStack = std::unique_ptr<STACK_OF(X509_EXTENSION), Deleter<STACK_OF(X509_EXTENSION), free_extension_stack>>;
using CrlDistPoints = std::unique_ptr<CRL_DIST_POINTS, Deleter<CRL_DIST_POINTS, CRL_DIST_POINTS_free>>;
using Bignum = std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>>;
using Asn1Time = std::unique_ptr<ASN1_TIME, Deleter<ASN1_TIME, ASN1_TIME_free>>;
using Asn1Integer = std::unique_ptr<ASN1_INTEGER, Deleter<ASN1_INTEGER, ASN1_INTEGER_free>>;
using Asn1Enumerated = std::unique_ptr<ASN1_ENUMERATED, Deleter<ASN1_ENUMERATED, ASN1_ENUMERATED_free>>;
using Pkcs12 = std::unique_ptr<PKCS12, Deleter<PKCS12, PKCS12_free>>;

// The oldest error on OpenSSL's queue as text, and clears the queue.
std::string drain_errors();

// An Error whose message is `what` followed by OpenSSL's reason, if any.
Error error(Errc code, std::string_view what);

// A read-only memory BIO over `data`; the data must outlive the BIO.
Bio memory_bio(std::span<const unsigned char> data);
Bio memory_bio(std::string_view data);

// The contents of a memory BIO.
std::string bio_contents(BIO* bio);

inline std::span<const unsigned char> as_bytes(std::string_view s) {
  return {reinterpret_cast<const unsigned char*>(s.data()), s.size()};
}

// DER of an ASN.1 object through an i2d function.
template <class T>
std::string to_der(const T* object, int (*i2d)(const T*, unsigned char**)) {
  unsigned char* out = nullptr;
  const int len = i2d(object, &out);
  if (len <= 0) return {};
  Bytes owner(out);
  return std::string(reinterpret_cast<const char*>(out), static_cast<std::size_t>(len));
}

}  // namespace mailkms::smime::ossl
