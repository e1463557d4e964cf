// The proxy's SMTP server: accepting clients up to a cap, and one session
// per client that reads its commands (smtp_parser), asks the gateway at
// RCPT and at the end of data, and relays what the gateway made to the
// next hop (next_hop) before it answers the end of data.
#pragma once

#include <atomic>
#include <boost/asio.hpp>
#include <cstdint>

#include "mailkms/gateway/gateway.hpp"
#include "settings.hpp"

namespace mailkms::proxy {

struct ServerContext {
  const Settings& settings;
  gateway::Gateway& gateway;
  // Where the gateway's calls run: they wait for the keystore and do the
  // cryptography, which would stall every session sharing an I/O thread.
  boost::asio::thread_pool& blocking;
  std::atomic<unsigned> sessions{0};
  std::atomic<std::uint64_t> sessions_started{0};
};

// Accepts until the acceptor is closed; each session runs on its own strand.
boost::asio::awaitable<void> accept_sessions(boost::asio::ip::tcp::acceptor& acceptor, ServerContext& context);

}  // namespace mailkms::proxy
