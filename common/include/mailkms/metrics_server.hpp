// The metrics over HTTP for a Prometheus scrape: GET /metrics answers the
// registry's exposition; anything else is 404 (405 for another method).
// One request a connection, a header of 8 KiB at most, no body, five
// seconds to send it. Off unless a daemon's configuration names an address
// to listen on; meant for loopback or a monitoring network, since it
// answers anyone who reaches it (nothing in it is secret).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "mailkms/metrics.hpp"

namespace mailkms::metrics {

// "127.0.0.1:9470" or "[::1]:9470" as an endpoint; nothing for anything
// else (a host name, a missing or out-of-range port).
std::optional<boost::asio::ip::tcp::endpoint> parse_endpoint(std::string_view address);

class Server {
 public:
  Server(boost::asio::io_context& io, const Registry& registry) : io_(io), registry_(registry) {}

  // Listens on `address` ("127.0.0.1:9470", "[::1]:9470") and serves on
  // io's threads. An error that says what failed, or nothing.
  std::optional<std::string> listen(const std::string& address);
  // Stops accepting; requests in flight finish.
  void stop();

 private:
  boost::asio::io_context& io_;
  const Registry& registry_;
  std::unique_ptr<boost::asio::ip::tcp::acceptor> acceptor_;
};

}  // namespace mailkms::metrics
