// The keystore's Unix-socket server: one coroutine per connection reads
// request lines (each bounded), runs each request on the io_context's
// threads, and writes the answers back as they finish, so pipelined
// requests run concurrently and answer out of order. One pool of threads
// does both, so a request rarely changes threads on its way. The peer's credentials decide
// what it may do; a connection silent past the idle timeout is closed.
#pragma once

#include <boost/asio.hpp>
#include <memory>
#include <mutex>
#include <functional>
#include <set>

#include "mailkms/keystore/config.hpp"
#include "mailkms/keystore/service.hpp"

namespace mailkms::keystored {

class Session;

class Server {
 public:
  Server(boost::asio::io_context& io, keystore::KeystoreService& service, const keystore::Config& config);

  // Binds the socket (replacing a stale one) with the configured mode.
  keystore::Status listen();
  // Stops accepting and closes every connection; requests in flight finish,
  // then io.run() returns.
  // `drained` is called once every connection has finished.
  void stop(std::function<void()> drained);

 private:
  friend class Session;
  boost::asio::awaitable<void> accept_loop();
  void forget(const std::shared_ptr<Session>& session);

  boost::asio::io_context& io_;
  keystore::KeystoreService& service_;
  const keystore::Config& config_;
  boost::asio::local::stream_protocol::acceptor acceptor_;
  std::mutex sessions_mutex_;
  std::set<std::shared_ptr<Session>> sessions_;
  std::function<void()> drained_;  // set by stop()
};

}  // namespace mailkms::keystored
