// A TCP socket whose every read, write, connect and TLS handshake has a
// deadline: a peer that stalls costs a session its timeout, never a thread
// or forever. After handshake() everything it reads and writes is TLS.
#pragma once

#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ssl.hpp>
#include <chrono>
#include <functional>
#include <optional>
#include <string_view>
#include <utility>

namespace mailkms::proxy {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

class TimedSocket {
 public:
  explicit TimedSocket(tcp::socket socket) : socket_(std::move(socket)), timer_(socket_.get_executor()) {}
  template <class Executor>
  explicit TimedSocket(const Executor& executor) : socket_(executor), timer_(executor) {}

  tcp::socket& socket() noexcept { return tls_ ? tls_->next_layer() : socket_; }
  // The TLS session once handshake() has begun; null before.
  [[nodiscard]] SSL* tls() noexcept { return tls_ ? tls_->native_handle() : nullptr; }

  // Up to buffer.size() bytes; timed_out when none came in time.
  asio::awaitable<std::pair<error_code, std::size_t>> read_some(asio::mutable_buffer buffer,
                                                                std::chrono::seconds timeout) {
    if (tls_) co_return co_await timed(tls_->async_read_some(buffer, asio::as_tuple(asio::use_awaitable)), timeout);
    co_return co_await timed(socket_.async_read_some(buffer, asio::as_tuple(asio::use_awaitable)), timeout);
  }

  asio::awaitable<error_code> write(std::string_view bytes, std::chrono::seconds timeout) {
    const auto buffer = asio::buffer(bytes.data(), bytes.size());
    if (tls_) co_return (co_await timed(asio::async_write(*tls_, buffer, asio::as_tuple(asio::use_awaitable)), timeout)).first;
    co_return (co_await timed(asio::async_write(socket_, buffer, asio::as_tuple(asio::use_awaitable)), timeout)).first;
  }

  // Starts TLS on the connection, as its server or its client; once only.
  // Whatever was read before it is the caller's to discard. `prepare` sets
  // what one connection needs before the handshake (the name a client
  // expects, SNI).
  asio::awaitable<error_code> handshake(asio::ssl::context& context, asio::ssl::stream_base::handshake_type side,
                                        std::chrono::seconds timeout,
                                        const std::function<error_code(SSL*)>& prepare = {}) {
    using namespace asio::experimental::awaitable_operators;
    if (tls_) co_return asio::error::already_connected;
    tls_.emplace(std::move(socket_), context);
    if (prepare) {
      if (auto ec = prepare(tls_->native_handle())) co_return ec;
    }
    timer_.expires_after(timeout);
    auto result = co_await (tls_->async_handshake(side, asio::as_tuple(asio::use_awaitable)) ||
                            timer_.async_wait(asio::as_tuple(asio::use_awaitable)));
    if (result.index() == 1) co_return asio::error::timed_out;
    co_return std::get<0>(std::get<0>(result));
  }

  asio::awaitable<error_code> connect(const tcp::endpoint& endpoint, std::chrono::seconds timeout) {
    using namespace asio::experimental::awaitable_operators;
    timer_.expires_after(timeout);
    auto result = co_await (socket_.async_connect(endpoint, asio::as_tuple(asio::use_awaitable)) ||
                            timer_.async_wait(asio::as_tuple(asio::use_awaitable)));
    if (result.index() == 1) co_return asio::error::timed_out;
    co_return std::get<0>(std::get<0>(result));
  }

  void close() {
    error_code ignored;
    socket().shutdown(tcp::socket::shutdown_both, ignored);
    socket().close(ignored);
  }

 private:
  // The operation, or timed_out when the timer fires first (the operation is then cancelled).
  asio::awaitable<std::pair<error_code, std::size_t>> timed(asio::awaitable<std::tuple<error_code, std::size_t>> op,
                                                            std::chrono::seconds timeout) {
    using namespace asio::experimental::awaitable_operators;
    timer_.expires_after(timeout);
    auto result = co_await (std::move(op) || timer_.async_wait(asio::as_tuple(asio::use_awaitable)));
    if (result.index() == 1) co_return std::pair{error_code(asio::error::timed_out), std::size_t{0}};
    auto [ec, n] = std::get<0>(result);
    co_return std::pair{ec, n};
  }

  tcp::socket socket_;  // moved into tls_ by handshake()
  std::optional<asio::ssl::stream<tcp::socket>> tls_;
  asio::steady_timer timer_;
};

}  // namespace mailkms::proxy
