// Signature verification: the signature's mathematics (did the content
// change?), the signer's chain (do we trust who signed?), revocation, key
// usage and the From address (RFC 8550/8551). Always returns a verdict from
// a closed set with a reason a human can read; never throws, never fails
// for bad input — bad input is the verdict "malformed".
#pragma once

#include <openssl/x509.h>

#include <ctime>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mailkms/smime/algorithms.hpp"
#include "mailkms/smime/certificate.hpp"
#include "mailkms/smime/crypto_context.hpp"
#include "mailkms/smime/mime.hpp"
#include "mailkms/smime/result.hpp"
#include "mailkms/smime/spool.hpp"

namespace mailkms::smime {

enum class SignatureStatus {
  pass,             // intact, trusted, valid, From matches
  fail,             // the content or signature was altered
  untrusted,        // no chain to an anchor, or a certificate not fit to sign mail
  expired,          // a certificate in the chain is outside its validity
  revoked,          // a certificate in the chain is revoked
  signer_mismatch,  // valid, but From is none of the signer's addresses
  no_signature,     // the entity carries no signature
  malformed,        // the signature layer cannot be read
};

std::string_view to_string(SignatureStatus status) noexcept;  // "pass", "signer-mismatch" …

// The anchors inbound signatures may chain to: our roots, the system's,
// and anchors an administrator added.
class TrustStore {
 public:
  TrustStore();
  TrustStore(TrustStore&&) noexcept;
  TrustStore& operator=(TrustStore&&) noexcept;
  ~TrustStore();

  // `domains`, when given, scope the anchor: it vouches only for addresses
  // at those domains ("partner.example", or ".partner.example" for the
  // domains below it: see address_in_domain). A scope holds wherever the
  // anchor appears in a chain, even if it is also trusted without one.
  void add(const Certificate& anchor, const std::vector<std::string>& domains = {});
  // The operating system's roots (Debian: /etc/ssl/certs).
  Status add_system_roots();
  [[nodiscard]] X509_STORE* native() const noexcept { return store_; }
  // Why `address` is outside what a scoped anchor in `chain` (a verified
  // chain, leaf first) vouches for; nothing when every anchor vouches for it.
  [[nodiscard]] std::optional<std::string> out_of_scope(STACK_OF(X509) * chain, std::string_view address) const;

 private:
  X509_STORE* store_;
  std::map<std::string, std::vector<std::string>, std::less<>> scopes_;  // by the anchor's DER
};

enum class Revocation { good, revoked, unknown };

// Tells whether a certificate is revoked; CRLs and the keystore implement it.
class RevocationChecker {
 public:
  virtual ~RevocationChecker() = default;
  virtual Revocation check(const Certificate& certificate, const Certificate& issuer) = 0;
};

struct VerifyOptions {
  const TrustStore* trust = nullptr;       // required for anything but "untrusted"
  RevocationChecker* revocation = nullptr; // optional
  // The message's authors (see author_addresses); when set, every one must
  // be an address of the signer, and an empty list never matches.
  std::optional<std::vector<std::string>> from;
  // Judge validity at this time instead of now.
  std::optional<std::time_t> at;
  MimeLimits limits;
  // verify_message(Spool): a message it must read into memory (see there)
  // and that is larger than this is not read: malformed, limit_exceeded.
  std::size_t max_in_memory = std::numeric_limits<std::size_t>::max();
};

struct SignerReport {
  Certificate certificate;
  std::vector<std::string> addresses;
  std::optional<std::time_t> signing_time;
  Digest digest = Digest::sha256;
  std::optional<Capabilities> capabilities;  // what they can read, for encrypting to them later
  SignatureStatus status = SignatureStatus::untrusted;
  std::string reason;
};

struct VerifyResult {
  SignatureStatus status = SignatureStatus::malformed;
  std::string reason;
  // The signature's mathematics were checked and hold: the content is as
  // signed, whoever signed it.
  bool intact = false;
  // Signed with SHA-1 or a short key: verified, but say so.
  bool weak = false;
  std::vector<SignerReport> signers;
  std::vector<Certificate> certificates;  // every certificate the message carried
  std::optional<Entity> content;          // the signed entity, when it could be read
  std::optional<Error> error;             // what was malformed, when status is malformed
  bool opaque = false;                    // signed-data rather than multipart/signed
};

// Verifies a multipart/signed or application/pkcs7-mime signed-data entity.
VerifyResult verify_entity(const CryptoContext& ctx, const Entity& entity, const VerifyOptions& options);

// Verifies a whole message; `options.from` defaults to its authors.
VerifyResult verify_message(const CryptoContext& ctx, std::string_view message, VerifyOptions options);

// The same for a message in a Spool. A multipart/signed one is not loaded:
// its signed part streams from the spool through the digest, so memory
// stays bounded whatever its size. That part is judged by its bytes alone:
// `content` is left empty, and MIME inside it that the in-memory reader
// would call malformed does not change the verdict. Signed-data
// (application/pkcs7-mime), which OpenSSL needs whole, and a message with
// bare line feeds are read into memory. A spool that cannot be read gives
// `malformed` with an io_error in `error`: not the message's fault.
VerifyResult verify_message(const CryptoContext& ctx, const Spool& message, VerifyOptions options);

// The largest signature part read from a spooled multipart/signed: one with
// a long certificate chain is a few kilobytes.
inline constexpr std::size_t kMaxSignaturePart = 1 << 20;

}  // namespace mailkms::smime
