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

#include "mailkms/keystore/protocol.hpp"

namespace mailkms::keystored {

namespace asio = boost::asio;
using local = asio::local::stream_protocol;

// A peer that pipelines without reading its answers is not read further
// while this many of its requests run, or this many answers wait for it:
// the kernel's socket buffers then hold it back. Its memory here stays
// bounded (one line buffer, these answers), whatever it sends.
constexpr int kMaxInFlight = 32;
constexpr std::size_t kMaxQueuedAnswers = 64;

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Server& server, local::socket socket, keystore::Caller caller)
      : server_(server),
        socket_(std::move(socket)),
        strand_(asio::make_strand(server.io_)),
        idle_timer_(strand_),
        drained_(strand_),
        caller_(caller) {}

  void start() {
    asio::co_spawn(strand_, [self = shared_from_this()] { return self->read_loop(); }, asio::detached);
  }

  void close() {
    asio::post(strand_, [self = shared_from_this()] {
      boost::system::error_code ignored;
      self->socket_.shutdown(local::socket::shutdown_receive, ignored);
      self->idle_timer_.cancel();
      self->stopping_ = true;
      self->drained_.cancel();
    });
  }

 private:
  asio::awaitable<void> read_loop() {
    std::string buffer;
    arm_idle_timer();
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
    asio::post(server_.io_, [self = shared_from_this(), request = std::move(*parsed.request)] {
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
      auto result = server_.service_.handle(caller_, request);
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
                      asio::bind_executor(strand_, [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
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
    socket_.close(ignored);
    server_.forget(shared_from_this());
  }

  void arm_idle_timer() {
    idle_timer_.expires_after(server_.config_.idle_timeout);
    idle_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (ec || self->in_flight_ > 0) return;  // re-armed, cancelled, or busy for the client
      boost::system::error_code ignored;
      self->socket_.shutdown(local::socket::shutdown_both, ignored);
    });
  }

  Server& server_;
  local::socket socket_;
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
    auto session = std::make_shared<Session>(*this, std::move(socket),
                                             keystore::Caller{credentials.uid, credentials.gid, credentials.pid});
    {
      const std::lock_guard lock(sessions_mutex_);
      sessions_.insert(session);
    }
    session->start();
  }
}

void Server::forget(const std::shared_ptr<Session>& session) {
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
