#include "server.hpp"
#include "mailkms/errno_text.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <iostream>
#include <nlohmann/json.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "mailkms/keystore/protocol.hpp"
#include "mailkms/smime/certificate.hpp"

namespace mailkms::keystored {

namespace asio = boost::asio;
using local = asio::local::stream_protocol;
using tcp = asio::ip::tcp;
using TlsStream = asio::ssl::stream<tcp::socket>;

// A peer that pipelines without reading its answers is not read further
// while this many of its requests run, or this many answers wait for it:
// the kernel's socket buffers then hold it back. Its memory here stays
// bounded (one line buffer, these answers), whatever it sends.
constexpr int kMaxInFlight = 32;
constexpr std::size_t kMaxQueuedAnswers = 64;

class SessionBase {
 public:
  virtual ~SessionBase() = default;
  virtual void start() = 0;
  virtual void close() = 0;
};

// What the handshake verified, as the service will judge it: the
// certificate's name, role, serial and fingerprint, and where it came from.
std::optional<keystore::TlsPeer> tls_peer(TlsStream& stream) {
  X509* certificate = SSL_get0_peer_certificate(stream.native_handle());
  if (certificate == nullptr || SSL_get_verify_result(stream.native_handle()) != X509_V_OK) return std::nullopt;
  const auto cert = smime::Certificate::share(certificate);
  const auto entry = [&](int nid) {
    char text[256] = {};
    const int n = X509_NAME_get_text_by_NID(X509_get_subject_name(certificate), nid, text, sizeof text);
    return n > 0 ? std::string(text, static_cast<std::size_t>(n)) : std::string();
  };
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (X509_digest(certificate, EVP_sha256(), digest, &length) != 1) return std::nullopt;
  std::string fingerprint;
  for (unsigned int i = 0; i < length; ++i) {
    constexpr char kHex[] = "0123456789abcdef";
    fingerprint += kHex[digest[i] >> 4];
    fingerprint += kHex[digest[i] & 15];
  }
  keystore::TlsPeer peer{entry(NID_commonName), entry(NID_organizationalUnitName), cert.serial_hex(),
                         std::move(fingerprint), ""};
  boost::system::error_code ec;
  const auto remote = stream.lowest_layer().remote_endpoint(ec);
  if (!ec) peer.address = remote.address().to_string() + " port " + std::to_string(remote.port());
  return peer;
}

template <class Stream>
class Session : public SessionBase, public std::enable_shared_from_this<Session<Stream>> {
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;

 public:
  Session(Server& server, Stream socket, keystore::Caller caller)
      : server_(server),
        socket_(std::move(socket)),
        strand_(asio::make_strand(server.io_)),
        idle_timer_(strand_),
        drained_(strand_),
        caller_(std::move(caller)) {}

  void start() override {
    asio::co_spawn(strand_, [self = this->shared_from_this()] { return self->read_loop(); }, asio::detached);
  }

  void close() override {
    asio::post(strand_, [self = this->shared_from_this()] {
      boost::system::error_code ignored;
      self->socket_.lowest_layer().shutdown(tcp::socket::shutdown_receive, ignored);
      self->idle_timer_.cancel();
      self->stopping_ = true;
      self->drained_.cancel();
    });
  }

 private:
  // Over TLS: the handshake, within the idle timeout, and who it says the
  // peer is. false: the connection ends here.
  asio::awaitable<bool> handshake() {
    if constexpr (kTls) {
      auto [ec] = co_await socket_.async_handshake(asio::ssl::stream_base::server, asio::as_tuple(asio::use_awaitable));
      std::optional<keystore::TlsPeer> peer;
      if (!ec) peer = tls_peer(socket_);
      if (!peer) co_return false;
      caller_ = keystore::Caller::remote(std::move(*peer));
    }
    co_return true;
  }

  asio::awaitable<void> read_loop() {
    std::string buffer;
    arm_idle_timer();
    if (!co_await handshake()) {
      reading_done_ = true;
      finish_if_done();
      co_return;
    }
    while (true) {
      while (backlogged() && !stopping_) {
        drained_.expires_at(asio::steady_timer::time_point::max());
        co_await drained_.async_wait(asio::as_tuple(asio::use_awaitable));
      }
      auto [ec, n] = co_await asio::async_read_until(socket_, asio::dynamic_buffer(buffer, keystore::protocol::kMaxLine),
                                                     '\n', asio::as_tuple(asio::use_awaitable));
      if (ec == asio::error::not_found) {  // a line longer than the limit
        send(keystore::protocol::encode_error(
            0, keystore::make_error(keystore::Errc::invalid_argument, "request line longer than 1 MiB")));
        reading_done_ = true;
        break;
      }
      if (ec) break;
      arm_idle_timer();
      const std::string line = buffer.substr(0, n - 1);
      buffer.erase(0, n);
      dispatch(line, buffer.find('\n') != std::string::npos);
    }
    reading_done_ = true;
    idle_timer_.cancel();
    finish_if_done();
  }

  [[nodiscard]] bool backlogged() const {
    return in_flight_ >= kMaxInFlight || outbox_.size() >= kMaxQueuedAnswers;
  }
  // The reader, if it waits for the backlog to drain, may go on.
  void wake_reader() {
    if (!backlogged()) drained_.cancel();
  }

  // `more` says another request is already waiting behind this one.
  void dispatch(const std::string& line, bool more) {
    auto parsed = keystore::protocol::parse_request(line);
    if (!parsed.request) {
      send(keystore::protocol::encode_error(parsed.id, *parsed.error));
      return;
    }
    // A lone request runs right here, on this connection's strand: no
    // thread hand-offs on the common request-answer path. Requests that
    // arrive while another is running (pipelining) run concurrently on the
    // pool and answer when done.
    if (in_flight_ == 0 && !more) {
      send(answer(*parsed.request));
      return;
    }
    ++in_flight_;
    asio::post(server_.io_, [self = this->shared_from_this(), request = std::move(*parsed.request)] {
      std::string reply = self->answer(request);
      asio::post(self->strand_, [self, reply = std::move(reply)] {
        --self->in_flight_;
        self->send(reply);
        self->wake_reader();
      });
    });
  }

  std::string answer(const keystore::protocol::Request& request) {
    try {
      const auto started = std::chrono::steady_clock::now();
      auto result = server_.service_.handle(caller_, request);
      server_.counted(request.op, result ? std::nullopt : std::optional(result.error()),
                      std::chrono::steady_clock::now() - started);
      return result ? keystore::protocol::encode_result(request.id, *result)
                    : keystore::protocol::encode_error(request.id, result.error());
    } catch (const std::exception& e) {
      // A stored row of the wrong shape is an error value already (the
      // service's): this is a bug, and the next request is served.
      std::cerr << "mailkms-keystored: internal error in " << request.op << ": " << e.what() << "\n";
      return keystore::protocol::encode_error(request.id, keystore::make_error(keystore::Errc::internal, "internal error"));
    }
  }

  void send(std::string line) {
    outbox_.push_back(std::move(line));
    if (!writing_) write_next();
  }

  void write_next() {
    if (outbox_.empty()) {
      writing_ = false;
      finish_if_done();
      return;
    }
    writing_ = true;
    asio::async_write(socket_, asio::buffer(outbox_.front()),
                      asio::bind_executor(strand_, [self = this->shared_from_this()](boost::system::error_code ec, std::size_t) {
                        self->outbox_.pop_front();
                        self->wake_reader();
                        if (ec) {
                          self->outbox_.clear();
                          self->writing_ = false;
                          self->wake_reader();
                          self->finish_if_done();
                          return;
                        }
                        self->write_next();
                      }));
  }

  // A connection ends when its reader has stopped and every answer is out.
  void finish_if_done() {
    if (!reading_done_ || in_flight_ > 0 || writing_ || finished_) return;
    finished_ = true;
    idle_timer_.cancel();
    boost::system::error_code ignored;
    socket_.lowest_layer().close(ignored);
    server_.forget(this->shared_from_this());
  }

  void arm_idle_timer() {
    idle_timer_.expires_after(server_.config_.idle_timeout);
    idle_timer_.async_wait([self = this->shared_from_this()](boost::system::error_code ec) {
      if (ec || self->in_flight_ > 0) return;  // re-armed, cancelled, or busy for the client
      boost::system::error_code ignored;
      self->socket_.lowest_layer().shutdown(tcp::socket::shutdown_both, ignored);
    });
  }

  Server& server_;
  Stream socket_;
  asio::strand<asio::io_context::executor_type> strand_;
  asio::steady_timer idle_timer_;
  asio::steady_timer drained_;  // cancelled when a backlogged reader may go on
  keystore::Caller caller_;
  std::deque<std::string> outbox_;
  bool writing_ = false;
  bool reading_done_ = false;
  bool finished_ = false;
  bool stopping_ = false;
  int in_flight_ = 0;
};

Server::Server(asio::io_context& io, keystore::KeystoreService& service, const keystore::Config& config)
    : io_(io), service_(service), config_(config), acceptor_(io) {}

keystore::Status Server::listen() {
  MAILKMS_CHECK(listen_unix());
  if (auto tls = listen_tls(); !tls) {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    return tls;
  }
  return keystore::Ok{};
}

keystore::Status Server::listen_unix() {
  // Bound in a directory of its own that only we can enter, born with its
  // mode (the umask, not a chmod by path that a symbolic link could
  // redirect), listening, then renamed over any stale socket from an
  // earlier run: a client never finds one that refuses it, and no one can
  // swap it on the way. Runs before the worker threads start: the umask is
  // the process's.
  const std::string path = config_.socket.string();
  const auto directory = config_.socket.has_parent_path() ? config_.socket.parent_path() : std::filesystem::path(".");
  std::string staging_dir = (directory / ".keystored-XXXXXX").string();
  if (::mkdtemp(staging_dir.data()) == nullptr) {
    return keystore::make_error(keystore::Errc::storage_failed,
                                "cannot listen on " + path + ": cannot make a directory beside it: " + mailkms::errno_text(errno));
  }
  const std::string staging = staging_dir + "/s";
  boost::system::error_code ec;
  if (staging.size() >= sizeof(sockaddr_un::sun_path)) ec = asio::error::name_too_long;
  if (!ec) acceptor_.open(local(), ec);
  if (!ec) {
    const mode_t before = ::umask(0777 & ~config_.socket_mode);
    acceptor_.bind(local::endpoint(staging), ec);
    ::umask(before);
  }
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (!ec && ::rename(staging.c_str(), path.c_str()) != 0) ec = boost::system::error_code(errno, boost::system::system_category());
  ::unlink(staging.c_str());
  ::rmdir(staging_dir.c_str());
  if (ec) {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    return keystore::make_error(keystore::Errc::storage_failed, "cannot listen on " + path + ": " + ec.message());
  }
  asio::co_spawn(io_, accept_loop(), asio::detached);
  return keystore::Ok{};
}

namespace {

// TLS 1.3 only, a client certificate required and verified against the
// service CA (and only it), no session tickets: every connection is a
// full handshake whose certificate the service judges afresh.
keystore::Result<asio::ssl::context> tls_context(const keystore::Config& config) {
  asio::ssl::context context(asio::ssl::context::tls_server);
  SSL_CTX* native = context.native_handle();
  const auto fail = [](const std::string& what) {
    std::string why = what;
    if (const unsigned long code = ERR_get_error(); code != 0) {
      char text[256];
      ERR_error_string_n(code, text, sizeof text);
      why += ": " + std::string(text);
    }
    ERR_clear_error();
    return keystore::make_error(keystore::Errc::invalid_argument, why);
  };
  if (SSL_CTX_set_min_proto_version(native, TLS1_3_VERSION) != 1) return fail("cannot require TLS 1.3");
  SSL_CTX_set_num_tickets(native, 0);
  if (SSL_CTX_use_certificate_chain_file(native, config.tls_certificate.c_str()) != 1) {
    return fail("cannot load tls_certificate " + config.tls_certificate.string());
  }
  if (SSL_CTX_use_PrivateKey_file(native, config.tls_key.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(native) != 1) {
    return fail("cannot load tls_key " + config.tls_key.string() + " (or it is not tls_certificate's key)");
  }
  if (SSL_CTX_load_verify_file(native, config.service_ca.c_str()) != 1) {
    return fail("cannot load service_ca " + config.service_ca.string());
  }
  SSL_CTX_set_verify(native, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  return context;
}

}  // namespace

keystore::Status Server::listen_tls() {
  if (config_.tls_listen.empty()) return keystore::Ok{};
  MAILKMS_TRY(context, tls_context(config_));
  tls_.emplace(std::move(context));
  for (const auto& address : config_.tls_listen) {
    boost::system::error_code ec;
    const auto where = asio::ip::make_address(address.first, ec);
    if (ec) {
      return keystore::make_error(keystore::Errc::invalid_argument,
                                  "tls_listen " + address.first + ": not an IP address: " + ec.message());
    }
    unsigned long port = 0;
    try {
      port = std::stoul(address.second);
    } catch (const std::exception&) {
      port = 0;
    }
    auto acceptor = std::make_unique<tcp::acceptor>(io_);
    const tcp::endpoint endpoint(where, static_cast<unsigned short>(port));
    acceptor->open(endpoint.protocol(), ec);
    if (!ec) acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor->bind(endpoint, ec);
    if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return keystore::make_error(keystore::Errc::storage_failed,
                                  "cannot listen on " + address.first + " port " + address.second + ": " + ec.message());
    }
    tls_acceptors_.push_back(std::move(acceptor));
  }
  for (auto& acceptor : tls_acceptors_) asio::co_spawn(io_, tls_accept_loop(*acceptor), asio::detached);
  return keystore::Ok{};
}

asio::awaitable<void> Server::tls_accept_loop(tcp::acceptor& acceptor) {
  while (acceptor.is_open()) {
    auto [ec, socket] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
    if (ec) {
      if (ec == asio::error::operation_aborted) break;
      continue;
    }
    boost::system::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    // Who it is is known after the handshake, which the session does.
    adopt(std::make_shared<Session<TlsStream>>(*this, TlsStream(std::move(socket), *tls_), keystore::Caller::remote({})));
  }
}

void Server::adopt(const std::shared_ptr<SessionBase>& session) {
  {
    const std::lock_guard lock(sessions_mutex_);
    sessions_.insert(session);
  }
  session->start();
}

asio::awaitable<void> Server::accept_loop() {
  while (acceptor_.is_open()) {
    auto [ec, socket] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
    if (ec) {
      if (ec == asio::error::operation_aborted) break;
      continue;  // a client that went away while queued
    }
    ucred credentials{};
    socklen_t length = sizeof credentials;
    if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) continue;
    adopt(std::make_shared<Session<local::socket>>(*this, std::move(socket),
                                                   keystore::Caller{credentials.uid, credentials.gid, credentials.pid}));
  }
}

void Server::forget(const std::shared_ptr<SessionBase>& session) {
  std::function<void()> drained;
  {
    const std::lock_guard lock(sessions_mutex_);
    sessions_.erase(session);
    if (sessions_.empty()) std::swap(drained, drained_);
  }
  if (drained) drained();
}

void Server::stop(std::function<void()> drained) {
  asio::post(io_, [this, drained = std::move(drained)]() mutable {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    for (auto& acceptor : tls_acceptors_) acceptor->close(ignored);
    std::error_code not_there;
    std::filesystem::remove(config_.socket, not_there);
    std::unique_lock lock(sessions_mutex_);
    if (sessions_.empty()) {
      lock.unlock();
      drained();
      return;
    }
    drained_ = std::move(drained);
    for (const auto& s : sessions_) s->close();
  });
}

}  // namespace mailkms::keystored

namespace mailkms::keystored {

void Server::count_in(metrics::Registry& registry) {
  requests_ = &registry.counter("mailkms_keystore_requests_total",
                                "Requests answered, by operation and result (ok, or the error's code).",
                                {"operation", "result"});
  durations_ = &registry.histogram("mailkms_keystore_request_duration_seconds",
                                   "Time to answer a request, by operation.", {"operation"},
                                   metrics::latency_buckets());
}

void Server::counted(const std::string& op, const std::optional<keystore::Error>& error,
                     std::chrono::steady_clock::duration took) {
  if (requests_ == nullptr) return;
  // An operation no one serves is "unknown": clients choose what they send.
  const bool unknown = error && error->code == keystore::Errc::invalid_argument &&
                       error->message.starts_with("unknown operation");
  const std::string operation = unknown ? "unknown" : op;
  requests_->add({operation, error ? std::string(keystore::to_string(error->code)) : "ok"});
  durations_->observe({operation}, std::chrono::duration<double>(took).count());
}

}  // namespace mailkms::keystored
