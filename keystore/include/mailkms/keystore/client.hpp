// The client side of the keystore protocol, for the gateway and
// mailkmsctl: connections to mailkms-keystored's Unix socket or, from
// other hosts, over TLS with this host's certificate, reused from a small
// pool and re-established after a failure, spread over the endpoints that
// are up, each request bounded by a timeout. RemoteSigner and RemoteKeyUnwrapper implement the S/MIME
// engine's interfaces over it, so private keys stay in the daemon.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <openssl/types.h>

#include "mailkms/keystore/error.hpp"
#include "mailkms/smime/algorithms.hpp"
#include "mailkms/smime/decrypt.hpp"
#include "mailkms/smime/sign.hpp"

namespace mailkms::keystore {

// Where a keystored instance answers: "unix:/run/…/keystore.sock" (or a
// bare absolute path), or "tls://host:port" ("tls://[::1]:7443").
struct Endpoint {
  enum class Kind { unix_socket, tls };
  Kind kind = Kind::unix_socket;
  std::filesystem::path socket;  // unix
  std::string host;              // tls: a name or an IP literal (no brackets)
  std::string port;              // tls

  static Result<Endpoint> parse(std::string_view text);
  [[nodiscard]] std::string text() const;
};

// A "host:port" or "[v6]:port" pair; the host without brackets.
Result<std::pair<std::string, std::string>> parse_host_port(std::string_view text);

// What a client presents and pins over TLS: its own certificate and key
// (a gateway's or an administrator's host, from `mailkmsctl gateway add`)
// and the service CA the keystore's certificate must chain to. Nothing
// else is trusted: not the system's roots, not the users' CAs.
struct ClientTls {
  std::filesystem::path certificate;
  std::filesystem::path key;
  std::filesystem::path service_ca;
};

struct ClientOptions {
  std::filesystem::path socket;
  std::chrono::milliseconds timeout{5000};  // per request, connect included
  std::size_t pool_size = 8;                // idle connections kept
  // Who must serve the socket ([keystore] user): anyone who could put a
  // socket at its path would otherwise collect what clients send.
  std::string server_user = "mailkms-keystore";
  // Where the keystore answers, in order of preference; empty: `socket`.
  // Requests go to the first that is up; one that fails to connect or
  // times out is passed over for a while (see KeystoreClient::call).
  std::vector<Endpoint> endpoints{};
  ClientTls tls{};  // for tls:// endpoints
  // Told of each call once it is over: its operation, its error (nullptr
  // when the keystore answered it), and how long it took. For metrics;
  // called on the caller's thread, so it must be quick and thread-safe.
  std::function<void(std::string_view op, const Error* error, std::chrono::steady_clock::duration took)> observer{};
};

// The uid of `user` (a name or a number), or nullopt if there is no such user.
std::optional<uid_t> resolve_user(const std::string& user);

class KeystoreClient {
 public:
  explicit KeystoreClient(ClientOptions options);
  KeystoreClient(const KeystoreClient&) = delete;
  KeystoreClient& operator=(const KeystoreClient&) = delete;
  ~KeystoreClient();

  // One request and its response. Safe from many threads at once. When the
  // daemon cannot be reached, or does not answer in time: Errc::unavailable.
  // A request that failed after it was sent is sent to another endpoint
  // only when doing it twice is harmless (see retry_safe).
  Result<nlohmann::json> call(std::string_view op, const nlohmann::json& params);

  // Operations a keystore may be asked twice (reads, signatures, unwraps):
  // never one that changes what the keystore holds.
  static bool retry_safe(std::string_view op);

 private:
  Result<nlohmann::json> exchange(std::string_view op, const nlohmann::json& params);
  struct Connection {
    int fd = -1;
    std::shared_ptr<SSL> tls;  // over TLS
    std::size_t endpoint = 0;
    bool pooled = false;  // opened for an earlier call
  };
  // A pooled connection still open to an endpoint not in `tried`, else a
  // new one to the next such endpoint that is up.
  Result<Connection> open_connection(std::vector<bool>& tried);
  std::optional<std::size_t> next_endpoint(const std::vector<bool>& tried);
  Result<Connection> connect_to(std::size_t endpoint);
  Result<Connection> connect_unix(std::size_t endpoint);
  Result<Connection> connect_tls(std::size_t endpoint);
  // Nothing is sent on a connection before this says who serves it is the
  // keystore's user or root.
  Status check_server(int fd) const;
  void give_back(Connection connection);
  void mark_down(std::size_t endpoint);

  ClientOptions options_;
  std::optional<uid_t> server_uid_;  // server_user's, when it exists
  std::shared_ptr<SSL_CTX> tls_context_;  // when an endpoint is tls://
  std::optional<Error> tls_problem_;      // why there is none
  std::mutex mutex_;
  std::vector<Connection> idle_;
  std::vector<std::chrono::steady_clock::time_point> down_until_;  // per endpoint
  std::size_t next_endpoint_ = 0;
  std::uint64_t next_id_ = 1;
};

// The encryption certificates the keystore has for some addresses: our
// users' from our CA, and outside senders' it remembered from their mail.
struct CertificateLookup {
  struct Found {
    smime::Certificate certificate;
    std::vector<smime::Certificate> chain;
    std::string source;  // "keystore" or "harvested"
    std::optional<smime::Capabilities> capabilities;  // what a harvested sender said they can read
  };
  std::vector<std::pair<std::string, Found>> found;
  std::vector<std::string> missing;
};
Result<CertificateLookup> lookup_certificates(KeystoreClient& client, std::span<const std::string> addresses);

// Offers the keystore an outside sender's certificate from a signature
// that verified, with the intermediates it carried. The keystore checks it
// again itself. Returns whether it was stored: not for a local user's
// address, nor when a certificate from a later message is kept already.
// `crls`: the DER of the CRLs its distribution points gave, which the
// keystore needs to keep a certificate that names any.
Result<bool> remember_certificate(KeystoreClient& client, const std::string& address,
                                  const smime::Certificate& certificate, std::span<const smime::Certificate> chain,
                                  const std::optional<smime::Capabilities>& capabilities,
                                  std::optional<std::time_t> signing_time, std::span<const std::string> crls = {});

// Passes on a user's reply to the enrollment address: `from` (the
// message's sender), the token and the password they wrote, and the
// PKCS#10 request (PEM) they attached, if any. true when the keystore
// mailed them their keys; false when it refused (it tells the sender, not
// us, and never why); an error when it could not finish (tempfail: the
// token still works, so the sender's MTA may retry).
Result<bool> redeem_token(KeystoreClient& client, const std::string& from, const std::string& token,
                          std::string_view password, const std::optional<std::string>& csr = std::nullopt);

// Whether `mark` (the X-Mailkms-Keystore-Mark of a mail from the
// enrollment address) is the keystore's own, for this recipient and
// Message-ID: only then may the gateway pass that mail as it is.
Result<bool> check_mail_mark(KeystoreClient& client, std::string_view mark, std::string_view recipient,
                             std::string_view message_id);

// Signs with `address`'s signing key in the daemon.
class RemoteSigner final : public smime::Signer {
 public:
  static Result<RemoteSigner> create(KeystoreClient& client, std::string address);
  [[nodiscard]] const smime::Certificate& certificate() const override { return certificate_; }
  [[nodiscard]] const std::vector<smime::Certificate>& chain() const override { return chain_; }
  [[nodiscard]] smime::SignatureScheme scheme() const override { return scheme_; }
  smime::Result<std::string> sign(smime::Digest digest, std::string_view to_be_signed) override;

 private:
  RemoteSigner(KeystoreClient& client, std::string address, smime::Certificate certificate,
               std::vector<smime::Certificate> chain, smime::SignatureScheme scheme)
      : client_(&client), address_(std::move(address)), certificate_(std::move(certificate)), chain_(std::move(chain)),
        scheme_(scheme) {}
  KeystoreClient* client_;
  std::string address_;
  smime::Certificate certificate_;
  std::vector<smime::Certificate> chain_;
  smime::SignatureScheme scheme_;
};

// Unwraps content-encryption keys with one of `address`'s escrowed keys:
// the one whose certificate is `certificate`.
class RemoteKeyUnwrapper final : public smime::KeyUnwrapper {
 public:
  RemoteKeyUnwrapper(KeystoreClient& client, std::string address, smime::Certificate certificate)
      : client_(&client), address_(std::move(address)), certificate_(std::move(certificate)) {}
  [[nodiscard]] const smime::Certificate& certificate() const override { return certificate_; }
  smime::Result<smime::SecretBytes> unwrap(const smime::WrappedKey& wrapped) override;

 private:
  KeystoreClient* client_;
  std::string address_;
  smime::Certificate certificate_;
};

}  // namespace mailkms::keystore
