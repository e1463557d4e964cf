// The proxy's SMTP client: one transaction to the next hop, the message
// streamed from its spool. It says what the next hop answered, or that it
// could not be asked; it never decides what the proxy's own client hears.
#pragma once

#include <boost/asio.hpp>
#include <memory>
#include <mutex>
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
  // How many recipients the client's transaction had, every copy's
  // together: one of several refused with 5xx is not passed on, since the
  // client's one reply at the end of data would bounce the others too.
  std::size_t client_recipients = 0;
  // Who the client was, passed on with XFORWARD to a next hop that offers
  // it, so that it logs (and judges) the real client, not the proxy.
  Xforward client;
};

// One open connection to the next hop, greeted (and under TLS, where the
// settings ask for it).
struct HopConnection;

// Connections to the next hop whose last transaction it took, kept for the
// next message, as Postfix's smtp keeps its own: a message then costs no
// connect, greeting, EHLO or TLS handshake. Shared by every session; each
// connection serves one at a time, and only sessions with the [proxy]
// settings it was made with.
class HopConnections {
 public:
  HopConnections();
  HopConnections(const HopConnections&) = delete;
  HopConnections& operator=(const HopConnections&) = delete;
  ~HopConnections();

  // The most recent connection made with `settings` and idle for less than
  // its next_hop_idle; none if there is no such connection.
  std::unique_ptr<HopConnection> take(const std::shared_ptr<const Settings>& settings);
  void give_back(std::unique_ptr<HopConnection> connection);

 private:
  struct Idle;
  std::mutex mutex_;
  std::vector<Idle> idle_;
};

// One transaction to the next hop, brought up to its end of data and left
// there. The copies of one message for differently treated recipients are
// each brought this far before any is ended, so that a next hop refusing
// MAIL, RCPT or DATA for one copy, or going away, delivers none of them:
// a transaction dropped before its end of data is no message (RFC 5321
// 4.1.1.4).
class PendingTransaction {
 public:
  // On a connection from `pool`, or a new one (connected, greeted, under
  // STARTTLS as the settings ask): XFORWARD as the next hop offers, MAIL,
  // every RCPT and DATA, and `message`. A kept connection that turns out
  // closed is replaced by a new one: nothing was promised on it yet.
  static boost::asio::awaitable<BasicResult<PendingTransaction, HopFailure>> open(
      HopConnections& pool, std::shared_ptr<const Settings> settings, const Envelope& envelope,
      const smime::Spool& message);
  // The end of data: the next hop's final reply when it took the message;
  // the connection then goes back to the pool.
  boost::asio::awaitable<BasicResult<HopReply, HopFailure>> end();

  PendingTransaction(PendingTransaction&&) noexcept;
  PendingTransaction& operator=(PendingTransaction&&) noexcept;
  ~PendingTransaction();

 private:
  PendingTransaction(HopConnections& pool, std::unique_ptr<HopConnection> connection);
  HopConnections* pool_;
  std::unique_ptr<HopConnection> connection_;
};

}  // namespace mailkms::proxy
