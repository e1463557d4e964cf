// Certificates and private keys as value types. A Certificate is public and
// cheap to copy (it shares the underlying X509). A PrivateKey exists only in
// processes that may hold keys: the keystore, tests and mailkmsctl's local
// file commands; the gateway never constructs one.
#pragma once

#include <openssl/types.h>

#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mailkms/smime/crypto_context.hpp"
#include "mailkms/smime/result.hpp"

namespace mailkms::smime {

class Certificate {
 public:
  // Takes a new reference on `x509`.
  static Certificate share(X509* x509);
  static Result<Certificate> from_pem(std::string_view pem);
  static Result<Certificate> from_der(std::string_view der);
  // Every certificate in a PEM bundle, in order; an empty bundle is an error.
  static Result<std::vector<Certificate>> all_from_pem(std::string_view pem);

  [[nodiscard]] X509* native() const noexcept { return x509_.get(); }
  [[nodiscard]] std::string der() const;
  [[nodiscard]] std::string pem() const;
  [[nodiscard]] std::string subject() const;  // RFC 2253, "CN=alice,O=Example"
  [[nodiscard]] std::string issuer() const;
  [[nodiscard]] std::string serial_hex() const;
  [[nodiscard]] std::time_t not_before() const;
  [[nodiscard]] std::time_t not_after() const;
  // rfc822Name entries of subjectAltName, else emailAddress in the subject,
  // lower-cased (RFC 8550 §3).
  [[nodiscard]] std::vector<std::string> email_addresses() const;
  [[nodiscard]] bool has_email(std::string_view address) const;
  [[nodiscard]] bool is_rsa() const;
  [[nodiscard]] bool is_ec() const;
  // Key size in bits of the certificate's public key.
  [[nodiscard]] int key_bits() const;

  friend bool operator==(const Certificate& a, const Certificate& b);

 private:
  explicit Certificate(std::shared_ptr<X509> x509) : x509_(std::move(x509)) {}
  std::shared_ptr<X509> x509_;
};

class PrivateKey {
 public:
  static Result<PrivateKey> from_pem(const CryptoContext& ctx, std::string_view pem,
                                     std::optional<std::string_view> passphrase = std::nullopt);
  // Takes ownership of `pkey`.
  static PrivateKey adopt(EVP_PKEY* pkey);

  [[nodiscard]] EVP_PKEY* native() const noexcept { return pkey_.get(); }
  [[nodiscard]] bool matches(const Certificate& cert) const;

 private:
  explicit PrivateKey(std::shared_ptr<EVP_PKEY> pkey) : pkey_(std::move(pkey)) {}
  std::shared_ptr<EVP_PKEY> pkey_;
};

// What a PKCS#12 file holds for its owner.
struct KeyBundle {
  PrivateKey key;
  Certificate certificate;
  std::vector<Certificate> chain;
};

// The certificates alone, as a CMS SignedData with no signer and no content
// (RFC 5652 §5; the ".p7b" Windows and macOS import as a chain).
Result<std::string> certificates_only_der(const std::vector<Certificate>& certs);

Result<KeyBundle> read_pkcs12(const CryptoContext& ctx, std::string_view der, std::string_view password);

// Lower-cases an address for comparison: the domain is case-insensitive by
// RFC 5321, and every deployed mail system treats the local part so too.
std::string normalize_address(std::string_view address);
// Whether two addresses name the same mailbox: compared without regard to
// ASCII case, the local part as well as the domain (docs/ARCHITECTURE.md
// says why), as certificates, the keystore and policy all compare them.
bool same_address(std::string_view a, std::string_view b);

// Whether `domain` is a domain name as settings write one: labels of
// letters, digits and hyphens (or UTF-8) between dots, at least two, no
// dot at either end.
bool plausible_domain(std::string_view domain);
// Whether `address` is at `domain`, as name constraints write domains for
// mail (RFC 5280 §4.2.1.10): "partner.example" is that domain alone,
// ".partner.example" every domain below it. Without regard to ASCII case.
bool address_in_domain(std::string_view address, std::string_view domain);

}  // namespace mailkms::smime
