// Outside correspondents' certificates, remembered from signatures the
// gateways verified, so that mail to them can later be encrypted; with
// what they said they can read. Kept behind the barrier, so storage
// cannot slip in a certificate of its own choosing for an address, and
// checked again against the current trust anchors whenever one is handed
// out. Never holds our own users' certificates: those come from our CA.
#pragma once

#include <ctime>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mailkms/keystore/audit.hpp"
#include "mailkms/keystore/barrier.hpp"
#include "mailkms/keystore/error.hpp"
#include "mailkms/keystore/storage.hpp"
#include "mailkms/smime/algorithms.hpp"
#include "mailkms/smime/certificate.hpp"
#include "mailkms/smime/crypto_context.hpp"
#include "mailkms/smime/verify.hpp"

namespace mailkms::keystore {

struct HarvestedCertificate {
  std::string address;  // lower case
  smime::Certificate certificate;
  std::vector<smime::Certificate> chain;  // intermediates, as the signature carried them
  std::optional<smime::Capabilities> capabilities;
  std::optional<std::time_t> signing_time;  // of the message it came from
  std::time_t stored_at = 0;
};

// Whether mail to `address` may be encrypted to `certificate` at `now`:
// within its validity, naming the address (subjectAltName, else the
// subject's emailAddress), and with a key usage that allows encryption
// (keyEncipherment for RSA, keyAgreement for EC). invalid_argument if not.
Status check_encryption_certificate(const smime::Certificate& certificate, std::string_view address, std::time_t now);

// Whether `certificate` chains to an anchor of `trust` at `now`, with
// `intermediates` to fill the gaps, and every scoped anchor on the way
// vouches for `address`. With `crls` (DER, as a gateway fetched them), a
// certificate that names a CRL distribution point must also be found
// unrevoked by a current CRL its issuer signed: none, an expired one or a
// forged one fails too. permission_denied if not.
Status verify_chain(const smime::CryptoContext& ctx, const smime::TrustStore& trust,
                    const smime::Certificate& certificate, std::span<const smime::Certificate> intermediates,
                    std::string_view address, std::time_t now, const std::vector<std::string>* crls = nullptr);

class HarvestedCertificates {
 public:
  HarvestedCertificates(Storage& storage, Barrier& barrier, AuditLog& audit)
      : storage_(storage), barrier_(barrier), audit_(audit) {}

  // Stores `record` in place of the one kept for its address, unless that
  // one came from a later message: a replayed old message must not roll
  // back a renewed certificate. Returns why it was not stored, or nothing.
  // The caller has checked the certificate; this is not audited (it is
  // frequent).
  Result<std::optional<std::string>> remember(const HarvestedCertificate& record);
  Result<std::optional<HarvestedCertificate>> get(std::string_view address);
  // In address order, starting after `after`.
  Result<std::vector<HarvestedCertificate>> list(std::string_view after, std::size_t limit);
  // Audited; not_found when nothing is kept for `address`.
  Status remove(std::string_view address, const std::string& actor);

 private:
  Storage& storage_;
  Barrier& barrier_;
  AuditLog& audit_;
};

}  // namespace mailkms::keystore
