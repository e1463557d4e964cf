// Reads the parts of an (Auth)EnvelopedData that OpenSSL 3.0 has no getters
// for, from its DER: recipients with their wrapped keys, the content
// algorithm, the encrypted content, authAttrs and the MAC. Shared by
// decryption and inspection.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "mailkms/smime/algorithms.hpp"
#include "mailkms/smime/certificate.hpp"
#include "mailkms/smime/result.hpp"

namespace mailkms::smime::detail {

struct RecipientId {
  std::string issuer;  // DER Name, with serial; or
  std::string serial;  // DER INTEGER
  std::string subject_key_id;  // raw octets

  [[nodiscard]] bool matches(const Certificate& cert) const;
  [[nodiscard]] std::string describe() const;  // "issuer CN=…, serial 1A2B" or "key id 0a1b…"
};

struct RecipientEntry {
  enum class Kind { key_transport, key_agreement, unsupported } kind = Kind::unsupported;
  RecipientId id;
  std::string key_encryption_algorithm;  // DER AlgorithmIdentifier
  std::string encrypted_key;
  std::string originator_point;          // key agreement only
  std::string ukm;                       // key agreement only
  std::string kind_name;                 // for unsupported ones: "kekri", "pwri", "ori"
};

struct EnvelopedParts {
  bool authenticated = false;
  std::vector<RecipientEntry> recipients;
  std::string content_encryption_algorithm;  // DER AlgorithmIdentifier
  std::string encrypted_content;
  std::string auth_attributes;  // DER SET OF, as the AAD (RFC 5083 §2.2); empty if none
  std::string mac;
};

// `der` is a whole ContentInfo in DER (never BER: re-encode first).
Result<EnvelopedParts> parse_enveloped(std::string_view der);

// OID DER → NID; NID_undef if unknown.
int nid_of_oid(std::string_view oid_der);
// AlgorithmIdentifier DER → its OID's NID and raw parameters DER.
struct Algorithm {
  int nid = 0;
  std::string parameters;
};
Result<Algorithm> parse_algorithm(std::string_view algorithm_der);

// The content-encryption cipher an AlgorithmIdentifier names. RC2 has one
// OID for every key size; its parameters say which (RFC 8018 §B.2.3).
std::optional<Cipher> content_cipher(const Algorithm& algorithm);

}  // namespace mailkms::smime::detail
