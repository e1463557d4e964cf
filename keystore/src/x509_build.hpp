// What the keystore's two certificate authorities (the users' CAs and the
// service CA) share when they build a certificate.
#pragma once

#include <openssl/x509.h>

#include <string>
#include <string_view>

#include "mailkms/keystore/error.hpp"
#include "mailkms/smime/crypto_context.hpp"

namespace mailkms::keystore::detail {

// A crypto_failed error naming `what` and OpenSSL's reason; clears its queue.
Error crypto_error(std::string_view what);
Status add_extension(X509* cert, X509* issuer, int nid, const std::string& value);
// 127 random bits: positive, never zero, unguessable (CA/B BR §7.1).
Status set_random_serial(X509* cert);
// The digest a key signs certificates and CRLs with: SHA-384 for P-384,
// SHA-256 otherwise.
const char* signing_digest(const EVP_PKEY* key);
// Signs with SHA-384 for a P-384 key, SHA-256 otherwise.
Status sign_with(const smime::CryptoContext& ctx, X509* cert, EVP_PKEY* key);

}  // namespace mailkms::keystore::detail
