#include "mailkms/keystore/client.hpp"
#include "mailkms/errno_text.hpp"
#include "mailkms/system_accounts.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "mailkms/keystore/protocol.hpp"

namespace mailkms::keystore {
namespace {

using Clock = std::chrono::steady_clock;

Error unavailable(const std::string& what) {
  return make_error(Errc::unavailable, "keystore unavailable: " + what);
}

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

// Both set `timed_out` when the deadline passed, as against the connection
// failing.
Status write_all(int fd, std::string_view data, Clock::time_point deadline, bool& timed_out) {
  while (!data.empty()) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, remaining_ms(deadline)) <= 0) {
      timed_out = true;
      return unavailable("timed out sending");
    }
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return unavailable(std::string("cannot send: ") + mailkms::errno_text(errno));
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return Ok{};
}

Result<std::string> read_line(int fd, Clock::time_point deadline, bool& timed_out) {
  std::string line;
  char buffer[4096];
  while (true) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, remaining_ms(deadline)) <= 0) {
      timed_out = true;
      return unavailable("timed out waiting for the answer");
    }
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n == 0) return unavailable("the daemon closed the connection");
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return unavailable(std::string("cannot read: ") + mailkms::errno_text(errno));
    }
    line.append(buffer, static_cast<std::size_t>(n));
    // Requests on one connection are sequential, so one line is one answer.
    if (const auto nl = line.find('\n'); nl != std::string::npos) {
      if (nl + 1 != line.size()) return unavailable("unexpected data after the answer");
      line.pop_back();
      return line;
    }
    if (line.size() > protocol::kMaxLine) return unavailable("answer too long");
  }
}

Result<smime::Certificate> certificate_from(const nlohmann::json& pem) {
  if (!pem.is_string()) return make_error(Errc::internal, "the keystore sent no certificate");
  auto cert = smime::Certificate::from_pem(pem.get<std::string>());
  if (!cert) return make_error(Errc::internal, "the keystore sent an unreadable certificate");
  return std::move(*cert);
}

Result<std::vector<smime::Certificate>> chain_from(const nlohmann::json& pems) {
  std::vector<smime::Certificate> out;
  if (!pems.is_array()) return out;
  for (const auto& pem : pems) {
    MAILKMS_TRY(cert, certificate_from(pem));
    out.push_back(std::move(cert));
  }
  return out;
}

// A member of an answer, or null: a malformed answer never throws.
const nlohmann::json& field(const nlohmann::json& object, const char* name) {
  static const nlohmann::json null;
  if (!object.is_object()) return null;
  const auto it = object.find(name);
  return it == object.end() ? null : *it;
}

smime::Error to_smime(const Error& e) {
  return smime::make_error(smime::Errc::key_operation_failed, "keystore: " + e.describe());
}

}  // namespace

std::optional<uid_t> resolve_user(const std::string& user) {
  if (!user.empty() && user.find_first_not_of("0123456789") == std::string::npos) {
    errno = 0;
    const unsigned long long uid = std::strtoull(user.c_str(), nullptr, 10);
    if (errno != 0 || uid >= static_cast<unsigned long long>(static_cast<uid_t>(-1))) return std::nullopt;
    return static_cast<uid_t>(uid);
  }
  const auto account = accounts::find_user(user);
  if (!account) return std::nullopt;
  return account->uid;
}

KeystoreClient::~KeystoreClient() {
  for (const int fd : idle_) ::close(fd);
}

Result<KeystoreClient::Connection> KeystoreClient::take_connection() {
  {
    const std::lock_guard lock(mutex_);
    if (!idle_.empty()) {
      const int fd = idle_.back();
      idle_.pop_back();
      return Connection{fd, true};
    }
  }
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return unavailable(mailkms::errno_text(errno));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  const std::string path = options_.socket.string();
  if (path.size() >= sizeof address.sun_path) {
    ::close(fd);
    return unavailable("socket path too long: " + path);
  }
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    const std::string why = mailkms::errno_text(errno);
    ::close(fd);
    return unavailable("cannot connect to " + path + ": " + why);
  }
  if (auto served = check_server(fd); !served) {
    ::close(fd);
    return std::move(served).error();
  }
  return Connection{fd, false};
}

Status KeystoreClient::check_server(int fd) const {
  ucred peer{};
  socklen_t length = sizeof peer;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0) {
    return unavailable(std::string("cannot tell who serves the socket: ") + mailkms::errno_text(errno));
  }
  // Root may serve it: root can read the keystore's files anyway.
  if (peer.uid == 0 || (server_uid_ && peer.uid == *server_uid_)) return Ok{};
  return unavailable(options_.socket.string() + " is served by uid " + std::to_string(peer.uid) + ", not by " +
                     options_.server_user +
                     (server_uid_ ? " (uid " + std::to_string(*server_uid_) + ")" : " (no such user)") +
                     " or root: nothing was sent to it");
}

void KeystoreClient::drop_idle() {
  const std::lock_guard lock(mutex_);
  for (const int fd : idle_) ::close(fd);
  idle_.clear();
}

void KeystoreClient::give_back(int fd) {
  const std::lock_guard lock(mutex_);
  if (idle_.size() < options_.pool_size) {
    idle_.push_back(fd);
  } else {
    ::close(fd);
  }
}

Result<nlohmann::json> KeystoreClient::call(std::string_view op, const nlohmann::json& params) {
  std::uint64_t id = 0;
  {
    const std::lock_guard lock(mutex_);
    id = next_id_++;
  }
  const std::string line =
      protocol::encode_request({id, std::string(op), params.is_null() ? nlohmann::json::object() : params});
  // A pooled connection the daemon has closed since (its idle timeout, a
  // restart) fails at once: then the others in the pool are as old, and one
  // fresh connection is tried. A call that timed out is not sent again: the
  // daemon may be doing it, and not every call may be done twice.
  for (;;) {
    const auto deadline = Clock::now() + options_.timeout;
    MAILKMS_TRY(connection, take_connection());
    const int fd = connection.fd;
    bool timed_out = false;
    auto sent = write_all(fd, line, deadline, timed_out);
    auto answer = sent ? read_line(fd, deadline, timed_out) : Result<std::string>(std::move(sent).error());
    if (!answer) {
      ::close(fd);
      if (connection.pooled && !timed_out) {
        drop_idle();
        continue;  // the next connection is a fresh one
      }
      return std::move(answer).error();
    }
    auto response = protocol::parse_response(*answer);
    if (!response || response->id != id) {
      ::close(fd);
      return make_error(Errc::internal, "the keystore answered another request");
    }
    give_back(fd);
    return std::move(response->outcome);
  }
}

namespace {

// One request's worth of addresses, its answer added to `out`.
Status lookup_batch(KeystoreClient& client, std::span<const std::string> addresses, CertificateLookup& out) {
  const std::vector<std::string> list(addresses.begin(), addresses.end());
  MAILKMS_TRY(result, client.call(protocol::op::lookup_certificates, {{"addresses", list}}));
  const auto& certificates = field(result, "certificates");
  if (certificates.is_object()) {
    for (const auto& [address, entry] : certificates.items()) {
      MAILKMS_TRY(cert, certificate_from(field(entry, "certificate")));
      MAILKMS_TRY(chain, chain_from(field(entry, "chain")));
      CertificateLookup::Found found{std::move(cert), std::move(chain), "keystore", std::nullopt};
      if (const auto& source = field(entry, "source"); source.is_string()) found.source = source.get<std::string>();
      if (const auto& caps = field(entry, "capabilities"); caps.is_object()) {
        auto parsed = protocol::capabilities_from_json(caps);
        if (parsed) found.capabilities = std::move(*parsed);
      }
      out.found.emplace_back(address, std::move(found));
    }
  }
  const auto& missing = field(result, "missing");
  if (missing.is_array()) {
    for (const auto& m : missing) {
      if (m.is_string()) out.missing.push_back(m.get<std::string>());
    }
  }
  return Ok{};
}

}  // namespace

Result<CertificateLookup> lookup_certificates(KeystoreClient& client, std::span<const std::string> addresses) {
  // However many recipients a message has, each request stays within what
  // the keystore answers: a long list is never an error that lets mail
  // out unencrypted.
  CertificateLookup out;
  for (std::size_t at = 0; at < addresses.size(); at += protocol::kMaxLookupAddresses) {
    MAILKMS_CHECK(lookup_batch(client, addresses.subspan(at, std::min(protocol::kMaxLookupAddresses, addresses.size() - at)), out));
  }
  return out;
}

Result<bool> remember_certificate(KeystoreClient& client, const std::string& address,
                                  const smime::Certificate& certificate, std::span<const smime::Certificate> chain,
                                  const std::optional<smime::Capabilities>& capabilities,
                                  std::optional<std::time_t> signing_time, std::span<const std::string> crls) {
  std::vector<std::string> pems;
  for (const auto& c : chain) pems.push_back(c.pem());
  nlohmann::json params{{"address", address}, {"certificate", certificate.pem()}, {"chain", pems}};
  if (!crls.empty()) {
    nlohmann::json encoded = nlohmann::json::array();
    for (const auto& der : crls) encoded.push_back(protocol::base64(der));
    params["crls"] = std::move(encoded);
  }
  if (capabilities) params["capabilities"] = protocol::capabilities_to_json(*capabilities);
  if (signing_time) params["signing_time"] = *signing_time;
  MAILKMS_TRY(result, client.call(protocol::op::remember_certificate, params));
  const auto& stored = field(result, "stored");
  return stored.is_boolean() && stored.get<bool>();
}

Result<bool> check_mail_mark(KeystoreClient& client, std::string_view mark, std::string_view recipient,
                             std::string_view message_id) {
  MAILKMS_TRY(result, client.call(protocol::op::check_mail_mark, {{"mark", std::string(mark)},
                                                                   {"recipient", std::string(recipient)},
                                                                   {"message_id", std::string(message_id)}}));
  const auto& ours = field(result, "ours");
  return ours.is_boolean() && ours.get<bool>();
}

Result<bool> redeem_token(KeystoreClient& client, const std::string& from, const std::string& token,
                          std::string_view password, const std::optional<std::string>& csr) {
  nlohmann::json params{{"from", from}, {"token", token}, {"password", std::string(password)}};
  if (csr) params["csr"] = *csr;
  auto result = client.call(protocol::op::redeem_token, params);
  OPENSSL_cleanse(params["password"].get_ref<std::string&>().data(), password.size());
  if (!result) return std::move(result).error();
  const auto& ok = field(*result, "ok");
  return ok.is_boolean() && ok.get<bool>();
}

Result<RemoteSigner> RemoteSigner::create(KeystoreClient& client, std::string address) {
  MAILKMS_TRY(identity, client.call(protocol::op::signing_identity, {{"address", address}}));
  MAILKMS_TRY(cert, certificate_from(field(identity, "certificate")));
  MAILKMS_TRY(chain, chain_from(field(identity, "chain")));
  const auto scheme = field(identity, "scheme") == "ecdsa" ? smime::SignatureScheme::ecdsa
                                                           : smime::SignatureScheme::rsa_pkcs1v15;
  return RemoteSigner(client, std::move(address), std::move(cert), std::move(chain), scheme);
}

smime::Result<std::string> RemoteSigner::sign(smime::Digest digest, std::string_view to_be_signed) {
  auto result = client_->call(protocol::op::sign, {{"address", address_},
                                                   {"digest", std::string(smime::name(digest))},
                                                   {"data", protocol::base64(to_be_signed)}});
  if (!result) return to_smime(result.error());
  auto signature = protocol::unbase64(field(*result, "signature"));
  if (!signature) return to_smime(signature.error());
  return std::move(*signature);
}

smime::Result<smime::SecretBytes> RemoteKeyUnwrapper::unwrap(const smime::WrappedKey& wrapped) {
  auto result = client_->call(protocol::op::unwrap, {{"address", address_},
                                                     {"serial", certificate_.serial_hex()},
                                                     {"wrapped", protocol::to_json(wrapped)}});
  if (!result) return to_smime(result.error());
  auto key = protocol::unbase64(field(*result, "key"));
  if (!key) return to_smime(key.error());
  return smime::SecretBytes(std::move(*key));
}

}  // namespace mailkms::keystore
