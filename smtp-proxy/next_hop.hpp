// The proxy's SMTP client: one transaction to the next hop, the message
// streamed from its spool. It says what the next hop answered, or that it
// could not be asked; it never decides what the proxy's own client hears.
#pragma once

#include <boost/asio.hpp>
#include <optional>
#include <string>
#include <vector>

#include "mailkms/basic_result.hpp"
#include "mailkms/smime/spool.hpp"
#include "settings.hpp"
#include "smtp_parser.hpp"

namespace mailkms::proxy {

// A reply of the next hop, each line as it came (sanitized), code first.
struct HopReply {
  int code = 0;
  std::vector<std::string> lines;  // "250 2.0.0 Ok: queued as X", without CRLF
  // How the conversation it ended was protected, for the log: empty in the
  // clear, else "TLSv1.3 with CIPHER, verified NAME" (or "unverified").
  std::string tls;
};

// Why the transaction did not happen: the next hop down, slow, reset or
// talking nonsense (`refused` empty), or it refused a step (`refused`).
struct HopFailure {
  explicit HopFailure(std::string why, std::optional<HopReply> refusal = std::nullopt)
      : what(std::move(why)), refused(std::move(refusal)) {}
  std::string what;  // for the log
  std::optional<HopReply> refused;
};

struct Envelope {
  std::string sender;
  std::vector<std::string> recipients;
  bool eight_bit_mime = false;
  // Who the client was, passed on with XFORWARD to a next hop that offers
  // it, so that it logs (and judges) the real client, not the proxy.
  Xforward client;
};

// The whole transaction: the next hop's final reply when it took the message.
boost::asio::awaitable<BasicResult<HopReply, HopFailure>> relay(const Settings& settings, const Envelope& envelope,
                                                                const smime::Spool& message);

}  // namespace mailkms::proxy
