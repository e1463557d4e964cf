// The service CA: who may talk to the keystore over TLS. A CA of its own,
// apart from the users' CAs (a user's certificate must never open the
// keystore, nor a gateway's sign mail), whose key stays behind the barrier.
// It certifies three kinds of peer, the role named in the certificate's
// organizational unit and its extended key usage:
//   gateway   a milter's or proxy's host (clientAuth): the gateway operations
//   admin     an administrator's host (clientAuth): login and administration
//   keystore  a keystored instance (serverAuth): what clients pin
// Every certificate issued is a row; a TLS peer is admitted only while its
// row says it is not revoked and names the very certificate it presented,
// so a certificate from another CA with the same serial gets nowhere.
#pragma once

#include <ctime>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mailkms/keystore/audit.hpp"
#include "mailkms/keystore/barrier.hpp"
#include "mailkms/keystore/error.hpp"
#include "mailkms/keystore/storage.hpp"
#include "mailkms/smime/certificate.hpp"
#include "mailkms/smime/crypto_context.hpp"

namespace mailkms::keystore {

enum class PeerRole { gateway, admin, keystore };
std::string_view to_string(PeerRole role) noexcept;
std::optional<PeerRole> parse_peer_role(std::string_view name);

// A host name ("mx1.example.org") or an IP address literal: what a service
// certificate names, in its common name and subjectAltName.
bool valid_peer_name(std::string_view name);

struct ServicePeer {
  std::string name;
  PeerRole role = PeerRole::gateway;
  std::string serial;       // hex, upper case
  std::string fingerprint;  // SHA-256 of the certificate's DER, hex
  smime::Certificate certificate;
  std::time_t issued = 0;
  std::optional<std::time_t> revoked_at;
  std::string issued_by;
};

class ServiceCa {
 public:
  ServiceCa(Storage& storage, Barrier& barrier, AuditLog& audit, smime::CryptoContextPtr ctx)
      : storage_(storage), barrier_(barrier), audit_(audit), ctx_(std::move(ctx)) {}

  // The service CA's certificate; made (EC P-384, ten years) the first
  // time it is asked for.
  Result<smime::Certificate> certificate(const std::string& actor);

  // A certificate for `name` in `role`, for the key of `csr_pem` (a PKCS#10
  // request, which must be signed by that key; only its key is taken).
  // Refused while `name` holds a certificate not revoked.
  Result<ServicePeer> issue(const std::string& name, PeerRole role, std::string_view csr_pem, int validity_days,
                            const std::string& actor);
  Result<std::vector<ServicePeer>> list();
  // Revokes every certificate `name` holds; how many it held.
  Result<std::size_t> revoke(const std::string& name, const std::string& actor);

  // The peer behind a TLS certificate the handshake verified: its row,
  // when that row names this very certificate and is not revoked.
  Result<ServicePeer> admit(const std::string& serial, const std::string& fingerprint);

 private:
  Result<std::optional<smime::Certificate>> stored_certificate();

  Storage& storage_;
  Barrier& barrier_;
  AuditLog& audit_;
  smime::CryptoContextPtr ctx_;
};

// A new EC P-256 key for a service peer and a PKCS#10 request for it that
// names `name`, both PEM: what `mailkmsctl gateway add` makes on the host
// that keeps the key. `key_pem` is a secret.
struct ServiceKeyRequest {
  std::string key_pem;
  std::string request_pem;
};
Result<ServiceKeyRequest> new_service_key_request(const std::string& name);

}  // namespace mailkms::keystore
