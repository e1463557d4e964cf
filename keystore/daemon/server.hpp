// The keystore's server, on its Unix socket and (when configured) on TCP
// with TLS 1.3 and client certificates: one coroutine per connection reads
// request lines (each bounded), runs each request on the io_context's
// threads, and writes the answers back as they finish, so pipelined
// requests run concurrently and answer out of order. One pool of threads
// does both, so a request rarely changes threads on its way. The peer's
// credentials (SO_PEERCRED, or the certificate its handshake verified)
// decide what it may do; a connection silent past the idle timeout, or
// whose handshake does not finish within it, is closed.
#pragma once

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <memory>
#include <mutex>
#include <functional>
#include <optional>
#include <set>
#include <vector>

#include "mailkms/keystore/config.hpp"
#include "mailkms/metrics.hpp"
#include "mailkms/keystore/service.hpp"

namespace mailkms::keystored {

class SessionBase;
template <class Stream>
class Session;

class Server {
 public:
  Server(boost::asio::io_context& io, keystore::KeystoreService& service, const keystore::Config& config);

  // Binds the socket (replacing a stale one) with the configured mode,
  // and the TLS addresses of tls_listen.
  keystore::Status listen();
  // Stops accepting and closes every connection; requests in flight finish,
  // then io.run() returns.
  // `drained` is called once every connection has finished.
  void stop(std::function<void()> drained);
  // Requests counted by operation and result, and timed, in `registry`.
  void count_in(metrics::Registry& registry);

 private:
  template <class Stream>
  friend class Session;
  keystore::Status listen_unix();
  keystore::Status listen_tls();
  boost::asio::awaitable<void> accept_loop();
  boost::asio::awaitable<void> tls_accept_loop(boost::asio::ip::tcp::acceptor& acceptor);
  void adopt(const std::shared_ptr<SessionBase>& session);
  void forget(const std::shared_ptr<SessionBase>& session);
  void counted(const std::string& op, const std::optional<keystore::Error>& error,
               std::chrono::steady_clock::duration took);

  boost::asio::io_context& io_;
  keystore::KeystoreService& service_;
  const keystore::Config& config_;
  boost::asio::local::stream_protocol::acceptor acceptor_;
  std::optional<boost::asio::ssl::context> tls_;
  std::vector<std::unique_ptr<boost::asio::ip::tcp::acceptor>> tls_acceptors_;
  std::mutex sessions_mutex_;
  std::set<std::shared_ptr<SessionBase>> sessions_;
  std::function<void()> drained_;  // set by stop()
  metrics::Registry::Counter* requests_ = nullptr;
  metrics::Registry::Histogram* durations_ = nullptr;
};

}  // namespace mailkms::keystored
