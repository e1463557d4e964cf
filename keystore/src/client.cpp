#include "mailkms/keystore/client.hpp"
#include "mailkms/errno_text.hpp"
#include "mailkms/system_accounts.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
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

// An endpoint that failed is passed over this long while others are up.
constexpr std::chrono::seconds kDownFor{10};
// A host that does not answer a connection: another is tried after this.
constexpr std::chrono::seconds kConnectTimeout{2};

// OpenSSL writes to the socket with write(): a peer gone away raises
// SIGPIPE, which a client such as mailkmsctl does not ignore. Blocked on
// this thread while TLS writes, and one raised meanwhile discarded.
class SigpipeBlocked {
 public:
  SigpipeBlocked() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~SigpipeBlocked() {
    sigset_t pending;
    sigpending(&pending);
    if (sigismember(&pending, SIGPIPE) == 1 && sigismember(&old_, SIGPIPE) == 0) {
      const timespec now{};
      (void)sigtimedwait(&pipe_, nullptr, &now);
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeBlocked(const SigpipeBlocked&) = delete;
  SigpipeBlocked& operator=(const SigpipeBlocked&) = delete;

 private:
  sigset_t pipe_{};
  sigset_t old_{};
};

std::string tls_error_text() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "connection lost";
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

// TLS 1.3, this host's certificate, and only the service CA to verify the
// keystore's against: not the system's roots, not the users' CAs.
Result<std::shared_ptr<SSL_CTX>> tls_client_context(const ClientTls& files) {
  const auto fail = [](const std::string& what) { return unavailable(what + ": " + tls_error_text()); };
  if (files.certificate.empty() || files.key.empty() || files.service_ca.empty()) {
    return make_error(Errc::invalid_argument, "a tls:// endpoint needs this host's certificate and key, and the service CA");
  }
  std::shared_ptr<SSL_CTX> context(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
  if (!context) return fail("cannot make a TLS context");
  SSL_CTX* native = context.get();
  if (SSL_CTX_set_min_proto_version(native, TLS1_3_VERSION) != 1) return fail("cannot require TLS 1.3");
  if (SSL_CTX_use_certificate_chain_file(native, files.certificate.c_str()) != 1) {
    return fail("cannot load the client certificate " + files.certificate.string());
  }
  if (SSL_CTX_use_PrivateKey_file(native, files.key.c_str(), SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(native) != 1) {
    return fail("cannot load the client key " + files.key.string() + " (or it is not the certificate's)");
  }
  if (SSL_CTX_load_verify_file(native, files.service_ca.c_str()) != 1) {
    return fail("cannot load the service CA " + files.service_ca.string());
  }
  SSL_CTX_set_verify(native, SSL_VERIFY_PEER, nullptr);
  return context;
}

// Waits until `fd` is ready for `events`; false when the deadline passed.
bool wait_for(int fd, short events, Clock::time_point deadline) {
  pollfd p{fd, events, 0};
  int ready = 0;
  do {
    ready = ::poll(&p, 1, remaining_ms(deadline));
  } while (ready < 0 && errno == EINTR);
  return ready > 0;
}

// A non-blocking TCP connection to the first of the endpoint's addresses
// that takes one before the deadline.
Result<int> tcp_connect(const Endpoint& where, Clock::time_point deadline) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int rc = ::getaddrinfo(where.host.c_str(), where.port.c_str(), &hints, &found); rc != 0) {
    return unavailable("cannot resolve " + where.host + ": " + ::gai_strerror(rc));
  }
  const std::unique_ptr<addrinfo, void (*)(addrinfo*)> addresses(found, ::freeaddrinfo);
  std::string why = "no address";
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    int error = ::connect(fd, a->ai_addr, a->ai_addrlen) == 0 ? 0 : errno;
    if (error == EINPROGRESS) {
      socklen_t length = sizeof error;
      error = wait_for(fd, POLLOUT, deadline) ? (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length), error) : ETIMEDOUT;
    }
    if (error == 0) {
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      return fd;
    }
    why = mailkms::errno_text(error);
    ::close(fd);
  }
  return unavailable("cannot connect to " + where.text() + ": " + why);
}

// Runs one TLS call that may want the socket readable or writable first.
template <class Op>
Status tls_io(SSL* ssl, int fd, Clock::time_point deadline, bool& timed_out, const std::string& what, Op op) {
  for (;;) {
    const int rc = op();
    if (rc == 1) return Ok{};
    const int error = SSL_get_error(ssl, rc);
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
      if (!wait_for(fd, error == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline)) {
        timed_out = true;
        return unavailable("timed out " + what);
      }
      continue;
    }
    if (error == SSL_ERROR_ZERO_RETURN) return unavailable("the daemon closed the connection");
    return unavailable("TLS: " + what + ": " + tls_error_text());
  }
}

// The handshake, and the keystore's certificate checked: it chains to the
// service CA, names the host dialled, and is a keystore's (not a gateway's
// that the same CA issued). Nothing is sent before this passes.
Result<std::shared_ptr<SSL>> tls_handshake(SSL_CTX* context, int fd, const Endpoint& where, Clock::time_point deadline) {
  std::shared_ptr<SSL> ssl(SSL_new(context), SSL_free);
  const auto fail = [&](const std::string& why) {
    ::close(fd);
    return unavailable(where.text() + ": " + why);
  };
  if (!ssl || SSL_set_fd(ssl.get(), fd) != 1 || SSL_set1_host(ssl.get(), where.host.c_str()) != 1) {
    return fail("cannot set up TLS: " + tls_error_text());
  }
  in6_addr ignored{};
  if (::inet_pton(AF_INET, where.host.c_str(), &ignored) != 1 && ::inet_pton(AF_INET6, where.host.c_str(), &ignored) != 1) {
    // SSL_set_tlsext_host_name, without the macro's C cast.
    SSL_ctrl(ssl.get(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name, const_cast<char*>(where.host.c_str()));
  }
  bool timed_out = false;
  Status shaken = Ok{};
  {
    const SigpipeBlocked quiet;
    shaken = tls_io(ssl.get(), fd, deadline, timed_out, "in the TLS handshake", [&] { return SSL_connect(ssl.get()); });
  }
  if (!shaken) {
    const long verified = SSL_get_verify_result(ssl.get());
    if (verified != X509_V_OK) {
      return fail("its certificate is refused (" + std::string(X509_verify_cert_error_string(verified)) +
                  "): it does not chain to the service CA or does not name " + where.host + "; nothing was sent to it");
    }
    return fail(shaken.error().message);
  }
  X509* certificate = SSL_get0_peer_certificate(ssl.get());
  char unit[64] = {};
  if (certificate == nullptr ||
      X509_NAME_get_text_by_NID(X509_get_subject_name(certificate), NID_organizationalUnitName, unit, sizeof unit) <= 0 ||
      std::string_view(unit) != "keystore") {
    return fail("its certificate is not a keystore's (role \"" + std::string(unit) + "\"); nothing was sent to it");
  }
  return ssl;
}

// Whether an idle connection is still as it was: nothing to read, no
// hang-up. A daemon that closed it (idle timeout, restart) makes it readable.
bool still_open(int fd) {
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  return ::poll(&p, 1, 0) == 0;
}

Status send_all(int fd, SSL* tls, std::string_view data, Clock::time_point deadline, bool& timed_out) {
  if (tls == nullptr) return write_all(fd, data, deadline, timed_out);
  const SigpipeBlocked quiet;
  while (!data.empty()) {
    std::size_t written = 0;
    MAILKMS_CHECK(tls_io(tls, fd, deadline, timed_out, "sending",
                         [&] { return SSL_write_ex(tls, data.data(), data.size(), &written); }));
    data.remove_prefix(written);
  }
  return Ok{};
}

Result<std::string> receive_line(int fd, SSL* tls, Clock::time_point deadline, bool& timed_out) {
  if (tls == nullptr) return read_line(fd, deadline, timed_out);
  std::string line;
  char buffer[4096];
  for (;;) {
    std::size_t n = 0;
    MAILKMS_CHECK(tls_io(tls, fd, deadline, timed_out, "waiting for the answer",
                         [&] { return SSL_read_ex(tls, buffer, sizeof buffer, &n); }));
    line.append(buffer, n);
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

Result<std::pair<std::string, std::string>> parse_host_port(std::string_view text) {
  const Error bad = make_error(Errc::invalid_argument, "\"" + std::string(text) + "\" is not host:port or [v6]:port");
  std::string_view host;
  std::string_view port;
  if (text.starts_with('[')) {
    const auto close = text.find("]:");
    if (close == std::string_view::npos) return bad;
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return bad;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return bad;  // an IPv6 address goes in brackets
  }
  unsigned number = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), number);
  if (host.empty() || ec != std::errc() || end != port.data() + port.size() || number == 0 || number > 65535) return bad;
  return std::pair<std::string, std::string>(std::string(host), std::string(port));
}

Result<Endpoint> Endpoint::parse(std::string_view text) {
  Endpoint e;
  if (text.starts_with("unix:")) text.remove_prefix(5);
  if (text.starts_with('/')) {
    e.socket = std::string(text);
    return e;
  }
  if (text.starts_with("tls://")) {
    MAILKMS_TRY(address, parse_host_port(text.substr(6)));
    e.kind = Kind::tls;
    e.host = std::move(address.first);
    e.port = std::move(address.second);
    return e;
  }
  return make_error(Errc::invalid_argument, "\"" + std::string(text) +
                                                "\" is neither unix:/absolute/path nor tls://host:port");
}

std::string Endpoint::text() const {
  if (kind == Kind::unix_socket) return "unix:" + socket.string();
  return "tls://" + (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + port;
}

KeystoreClient::KeystoreClient(ClientOptions options)
    : options_(std::move(options)), server_uid_(resolve_user(options_.server_user)) {
  if (options_.endpoints.empty()) options_.endpoints.push_back(Endpoint{Endpoint::Kind::unix_socket, options_.socket, "", ""});
  down_until_.assign(options_.endpoints.size(), {});
  const bool tls = std::any_of(options_.endpoints.begin(), options_.endpoints.end(),
                               [](const Endpoint& e) { return e.kind == Endpoint::Kind::tls; });
  if (tls) {
    auto context = tls_client_context(options_.tls);
    if (context) {
      tls_context_ = std::move(*context);
    } else {
      tls_problem_ = std::move(context).error();
    }
  }
}

KeystoreClient::~KeystoreClient() {
  for (auto& c : idle_) ::close(c.fd);
}

bool KeystoreClient::retry_safe(std::string_view op) {
  namespace op_name = protocol::op;
  return op == op_name::status || op == op_name::lookup_certificates || op == op_name::signing_identity ||
         op == op_name::sign || op == op_name::unwrap || op == "trust-anchors" || op == "crls";
}

std::optional<std::size_t> KeystoreClient::next_endpoint(const std::vector<bool>& tried) {
  const std::lock_guard lock(mutex_);
  const auto now = Clock::now();
  const std::size_t n = options_.endpoints.size();
  std::optional<std::size_t> chosen;
  // The next one in turn that is up; when none is, the one down longest.
  for (std::size_t k = 0; k < n; ++k) {
    const std::size_t i = (next_endpoint_ + k) % n;
    if (tried[i]) continue;
    if (down_until_[i] <= now) {
      chosen = i;
      break;
    }
    if (!chosen || down_until_[i] < down_until_[*chosen]) chosen = i;
  }
  if (chosen) next_endpoint_ = (*chosen + 1) % n;
  return chosen;
}

void KeystoreClient::mark_down(std::size_t endpoint) {
  const std::lock_guard lock(mutex_);
  down_until_[endpoint] = Clock::now() + kDownFor;
  // Its pooled connections go too: they would fail the same way.
  std::erase_if(idle_, [&](const Connection& c) {
    if (c.endpoint != endpoint) return false;
    ::close(c.fd);
    return true;
  });
}

Result<KeystoreClient::Connection> KeystoreClient::connect_to(std::size_t endpoint) {
  return options_.endpoints[endpoint].kind == Endpoint::Kind::tls ? connect_tls(endpoint) : connect_unix(endpoint);
}

Result<KeystoreClient::Connection> KeystoreClient::connect_unix(std::size_t endpoint) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return unavailable(mailkms::errno_text(errno));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  const std::string path = options_.endpoints[endpoint].socket.string();
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
  return Connection{fd, nullptr, endpoint, false};
}

Result<KeystoreClient::Connection> KeystoreClient::connect_tls(std::size_t endpoint) {
  if (!tls_context_) return *tls_problem_;
  const Endpoint& where = options_.endpoints[endpoint];
  const auto deadline = Clock::now() + std::min<Clock::duration>(options_.timeout, kConnectTimeout);
  MAILKMS_TRY(fd, tcp_connect(where, deadline));
  MAILKMS_TRY(tls, tls_handshake(tls_context_.get(), fd, where, deadline));
  return Connection{fd, std::move(tls), endpoint, false};
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

Result<KeystoreClient::Connection> KeystoreClient::open_connection(std::vector<bool>& tried) {
  // A pooled connection the daemon closed since (its idle timeout, a
  // restart) shows as readable: it is dropped before anything is sent.
  for (;;) {
    std::optional<Connection> pooled;
    {
      const std::lock_guard lock(mutex_);
      const auto it = std::find_if(idle_.rbegin(), idle_.rend(), [&](const Connection& c) { return !tried[c.endpoint]; });
      if (it != idle_.rend()) {
        pooled = std::move(*it);
        idle_.erase(std::next(it).base());
      }
    }
    if (!pooled) break;
    if (still_open(pooled->fd)) return std::move(*pooled);
    ::close(pooled->fd);
  }
  std::string failures;
  while (const auto index = next_endpoint(tried)) {
    auto connection = connect_to(*index);
    if (connection) return connection;
    tried[*index] = true;
    mark_down(*index);
    failures += (failures.empty() ? "" : "; ") + connection.error().message;
  }
  return make_error(Errc::unavailable, failures.empty() ? "keystore unavailable: no endpoint left to try" : failures);
}

void KeystoreClient::give_back(Connection connection) {
  connection.pooled = true;
  const std::lock_guard lock(mutex_);
  if (idle_.size() < options_.pool_size) {
    idle_.push_back(std::move(connection));
  } else {
    ::close(connection.fd);
  }
}

Result<nlohmann::json> KeystoreClient::call(std::string_view op, const nlohmann::json& params) {
  if (!options_.observer) return exchange(op, params);
  const auto started = Clock::now();
  auto result = exchange(op, params);
  options_.observer(op, result ? nullptr : &result.error(), Clock::now() - started);
  return result;
}

Result<nlohmann::json> KeystoreClient::exchange(std::string_view op, const nlohmann::json& params) {
  std::uint64_t id = 0;
  {
    const std::lock_guard lock(mutex_);
    id = next_id_++;
  }
  const std::string line =
      protocol::encode_request({id, std::string(op), params.is_null() ? nlohmann::json::object() : params});
  // A request that fails after it was sent may have been done: it goes to
  // another endpoint only when doing it twice is harmless.
  std::vector<bool> tried(options_.endpoints.size(), false);
  bool fresh_retry = false;
  for (;;) {
    MAILKMS_TRY(connection, open_connection(tried));
    tried[connection.endpoint] = true;
    const auto deadline = Clock::now() + options_.timeout;
    bool timed_out = false;
    auto sent = send_all(connection.fd, connection.tls.get(), line, deadline, timed_out);
    auto answer = sent ? receive_line(connection.fd, connection.tls.get(), deadline, timed_out)
                       : Result<std::string>(std::move(sent).error());
    if (!answer) {
      ::close(connection.fd);
      if (connection.pooled && !timed_out && retry_safe(op) && !fresh_retry) {
        // Closed under us as we sent: once more on a new connection.
        fresh_retry = true;
        tried[connection.endpoint] = false;
        continue;
      }
      mark_down(connection.endpoint);
      const bool another = std::find(tried.begin(), tried.end(), false) != tried.end();
      if (retry_safe(op) && another) continue;
      return make_error(Errc::unavailable, options_.endpoints[connection.endpoint].text() + ": " + answer.error().message);
    }
    auto response = protocol::parse_response(*answer);
    if (!response || response->id != id) {
      ::close(connection.fd);
      return make_error(Errc::internal, "the keystore answered another request");
    }
    give_back(std::move(connection));
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
