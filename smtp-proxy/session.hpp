// The proxy's SMTP server: accepting clients up to a cap, and one session
// per client that reads its commands (smtp_parser), asks the gateway at
// RCPT and at the end of data, and relays what the gateway made to the
// next hop (next_hop) before it answers the end of data.
#pragma once

#include <atomic>
#include <boost/asio.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "mailkms/gateway/gateway.hpp"
#include "next_hop.hpp"
#include "settings.hpp"

namespace mailkms::proxy {

struct ServerContext {
  ServerContext(std::shared_ptr<const Settings> settings, std::shared_ptr<gateway::Gateway> gateway,
                boost::asio::thread_pool& blocking_)
      : blocking(blocking_), settings_(std::move(settings)), gateway_(std::move(gateway)) {}

  // The [proxy] settings as they are now; a session keeps those it started
  // with. SIGHUP replaces them.
  [[nodiscard]] std::shared_ptr<const Settings> settings() const { return std::atomic_load(&settings_); }
  void replace_settings(std::shared_ptr<const Settings> fresh) { std::atomic_store(&settings_, std::move(fresh)); }
  // The gateway as it is now, with the [gateway] settings and the policy;
  // a transaction keeps the one it began with. SIGHUP replaces it.
  [[nodiscard]] std::shared_ptr<gateway::Gateway> gateway() const { return std::atomic_load(&gateway_); }
  void replace_gateway(std::shared_ptr<gateway::Gateway> fresh) { std::atomic_store(&gateway_, std::move(fresh)); }

  // Where the gateway's calls run: they wait for the keystore and do the
  // cryptography, which would stall every session sharing an I/O thread.
  boost::asio::thread_pool& blocking;
  HopConnections hop_connections;  // kept for the next message
  std::atomic<unsigned> sessions{0};
  std::atomic<std::uint64_t> sessions_started{0};
  // Sessions per client address, for max_sessions_per_client.
  std::mutex clients_mutex;
  std::unordered_map<std::string, unsigned> sessions_per_client;
  // Set once, by drain(): sessions finish the message in flight, then go.
  std::atomic<bool> stopping{false};
  // Each live session's wake-up, posted to its strand by drain().
  std::mutex wakers_mutex;
  std::map<std::uint64_t, std::function<void()>> wakers;

 private:
  std::shared_ptr<const Settings> settings_;
  std::shared_ptr<gateway::Gateway> gateway_;
};

// Accepts until the acceptor is closed; each session runs on its own strand.
boost::asio::awaitable<void> accept_sessions(boost::asio::ip::tcp::acceptor& acceptor, ServerContext& context);

// The graceful stop, once the acceptor is closed: a client waiting for a
// command is told 421 4.3.2 at once; a message in DATA, or with the gateway
// or the next hop, is finished and answered, then its client told 421.
// Returns when no session is left, or at the deadline with the number of
// sessions still open, which the caller cuts by stopping the I/O: their
// clients were never told 250, so they keep their messages.
boost::asio::awaitable<unsigned> drain(ServerContext& context, std::chrono::seconds deadline);

}  // namespace mailkms::proxy
