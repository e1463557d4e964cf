#include "mailkms/metrics_server.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <charconv>
#include <chrono>

namespace mailkms::metrics {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

asio::awaitable<void> answer(asio::ip::tcp::socket socket, const Registry& registry) {
  beast::tcp_stream stream(std::move(socket));
  stream.expires_after(std::chrono::seconds(5));
  beast::flat_buffer buffer(8192);
  http::request_parser<http::empty_body> parser;
  parser.header_limit(8192);
  beast::error_code ec;
  co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return;
  const auto& request = parser.get();
  http::response<http::string_body> response;
  response.version(request.version());
  response.keep_alive(false);
  if (request.target() != "/metrics") {
    response.result(http::status::not_found);
    response.body() = "Not found: the metrics are at /metrics\n";
  } else if (request.method() != http::verb::get && request.method() != http::verb::head) {
    response.result(http::status::method_not_allowed);
    response.set(http::field::allow, "GET, HEAD");
  } else {
    response.result(http::status::ok);
    response.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
    response.body() = registry.exposition();
  }
  response.prepare_payload();
  if (request.method() == http::verb::head) response.body().clear();
  co_await http::async_write(stream, response, asio::redirect_error(asio::use_awaitable, ec));
  stream.socket().shutdown(asio::ip::tcp::socket::shutdown_send, ec);
}

asio::awaitable<void> accept(asio::ip::tcp::acceptor& acceptor, const Registry& registry) {
  for (;;) {
    beast::error_code ec;
    auto socket = co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
    if (ec) continue;
    asio::co_spawn(acceptor.get_executor(), answer(std::move(socket), registry), asio::detached);
  }
}

}  // namespace

std::optional<asio::ip::tcp::endpoint> parse_endpoint(std::string_view address) {
  const auto colon = address.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  std::string_view host = address.substr(0, colon);
  const std::string_view port_text = address.substr(colon + 1);
  if (host.size() > 1 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string_view::npos) {
    return std::nullopt;  // an IPv6 address goes in brackets
  }
  beast::error_code ec;
  const auto ip = asio::ip::make_address(host, ec);
  unsigned port = 0;
  const auto [end, error] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec || error != std::errc() || end != port_text.data() + port_text.size() || port < 1 || port > 65535) {
    return std::nullopt;
  }
  return asio::ip::tcp::endpoint(ip, static_cast<unsigned short>(port));
}

std::optional<std::string> Server::listen(const std::string& address) {
  const auto parsed = parse_endpoint(address);
  if (!parsed) return "metrics address " + address + ": expected IP:PORT or [IPv6]:PORT";
  const asio::ip::tcp::endpoint endpoint = *parsed;
  beast::error_code ec;
  acceptor_ = std::make_unique<asio::ip::tcp::acceptor>(io_);
  if (acceptor_->open(endpoint.protocol(), ec) || acceptor_->set_option(asio::socket_base::reuse_address(true), ec) ||
      acceptor_->bind(endpoint, ec) || acceptor_->listen(asio::socket_base::max_listen_connections, ec)) {
    return "metrics on " + address + ": " + ec.message();
  }
  asio::co_spawn(io_, accept(*acceptor_, registry_), asio::detached);
  return std::nullopt;
}

void Server::stop() {
  if (!acceptor_) return;
  beast::error_code ignored;
  acceptor_->close(ignored);
}

}  // namespace mailkms::metrics
