#include "next_hop.hpp"

#include <arpa/inet.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <chrono>

#include "smtp_parser.hpp"
#include "timed_socket.hpp"

namespace mailkms::proxy {
namespace {

// A next hop that talks on without end is not followed: replies are short.
constexpr std::size_t max_reply_lines = 100;
constexpr std::size_t max_reply_line = 1000;

struct ReadError {
  std::string what;
};

// One conversation with the next hop; each step either moves on or says why not.
class HopSession {
 public:
  HopSession(TimedSocket& socket, const Settings& settings) : socket_(socket), settings_(settings) {}

  // The next hop's reply, or why there was none.
  asio::awaitable<BasicResult<HopReply, HopFailure>> read_reply(std::string_view step) {
    HopReply reply;
    for (;;) {
      auto line = co_await read_line();
      if (!line) co_return HopFailure{"next hop " + std::string(step) + ": " + line.error().what};
      const std::string& text = *line;
      const bool well_formed = text.size() >= 3 && std::all_of(text.begin(), text.begin() + 3, [](char c) {
        return c >= '0' && c <= '9';
      }) && (text.size() == 3 || text[3] == ' ' || text[3] == '-');
      const int code = well_formed ? std::stoi(text.substr(0, 3)) : 0;
      if (!well_formed || code < 200 || code > 599 || (reply.code != 0 && code != reply.code)) {
        co_return HopFailure{"next hop " + std::string(step) + ": not an SMTP reply"};
      }
      reply.code = code;
      reply.lines.push_back(sanitized(text));
      if (text.size() == 3 || text[3] == ' ') co_return reply;
      if (reply.lines.size() >= max_reply_lines) co_return HopFailure{"next hop " + std::string(step) + ": reply too long"};
    }
  }

  asio::awaitable<BasicResult<HopReply, HopFailure>> command(const std::string& line, std::string_view step) {
    if (auto ec = co_await socket_.write(line + "\r\n", settings_.next_hop_timeout)) {
      co_return HopFailure{"next hop " + std::string(step) + ": " + ec.message()};
    }
    co_return co_await read_reply(step);
  }

  asio::awaitable<error_code> write(std::string_view bytes) { co_return co_await socket_.write(bytes, settings_.next_hop_timeout); }

  // TLS after the next hop's 220 to STARTTLS, or why not. Anything it sent
  // behind that 220 came in the clear and is dropped unread (RFC 3207 4.2):
  // it must not pass for a reply under TLS.
  asio::awaitable<std::optional<std::string>> start_tls() {
    const std::size_t injected = buffer_.size();
    buffer_.clear();
    const bool verify = settings_.next_hop_tls == HopTls::verify;
    const auto& name = settings_.next_hop_tls_name;
    auto ec = co_await socket_.handshake(*settings_.next_hop_tls_context, asio::ssl::stream_base::client,
                                         settings_.next_hop_timeout, [&](SSL* ssl) { return expect_name(ssl, name, verify); });
    SSL* ssl = socket_.tls();
    if (ec) {
      const long result = ssl != nullptr ? SSL_get_verify_result(ssl) : X509_V_OK;
      if (verify && result != X509_V_OK) co_return ec.message() + ": " + X509_verify_cert_error_string(result);
      co_return ec.message();
    }
    tls_ = std::string(SSL_get_version(ssl)) + " with " + SSL_get_cipher_name(ssl) +
           (verify ? ", verified " + name : ", unverified");
    if (injected > 0) tls_ += ", " + std::to_string(injected) + " byte(s) sent behind its 220 discarded";
    co_return std::nullopt;
  }

  [[nodiscard]] const std::string& tls() const noexcept { return tls_; }

 private:
  asio::awaitable<BasicResult<std::string, ReadError>> read_line() {
    for (;;) {
      const auto lf = buffer_.find('\n');
      if (lf != std::string::npos) {
        std::string line = buffer_.substr(0, lf);
        buffer_.erase(0, lf + 1);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        co_return line;
      }
      if (buffer_.size() > max_reply_line) co_return ReadError{"reply line too long"};
      char chunk[4096];
      auto [ec, n] = co_await socket_.read_some(asio::buffer(chunk), settings_.next_hop_timeout);
      if (ec) co_return ReadError{ec == asio::error::eof ? std::string("connection closed") : ec.message()};
      buffer_.append(chunk, n);
    }
  }

  // What the next hop says reaches our client: no control characters, no
  // line longer than a reply may be.
  static std::string sanitized(const std::string& line) {
    std::string out;
    for (const char c : line.substr(0, 510)) out += (static_cast<unsigned char>(c) < 32 || c == 127) ? ' ' : c;
    return out;
  }

  // SNI for a next hop named by a host name; for verify, the name (or
  // address) its certificate must carry.
  static error_code expect_name(SSL* ssl, const std::string& name, bool verify) {
    unsigned char address[16];
    const bool is_address = ::inet_pton(AF_INET, name.c_str(), address) == 1 || ::inet_pton(AF_INET6, name.c_str(), address) == 1;
    // SSL_set_tlsext_host_name, spelled out: the macro casts C-style. OpenSSL copies the name.
    if (!is_address && SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                                const_cast<char*>(name.c_str())) != 1) {
      return asio::error::invalid_argument;
    }
    if (!verify) return {};
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    const int set = is_address ? X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str()) : SSL_set1_host(ssl, name.c_str());
    return set == 1 ? error_code{} : asio::error::invalid_argument;
  }

  TimedSocket& socket_;
  const Settings& settings_;
  std::string buffer_;
  std::string tls_;
};

// The parameters after an EHLO keyword the next hop offers ("NAME ADDR"
// after XFORWARD), or nothing when it does not offer it.
std::optional<std::string> offered_with(const HopReply& ehlo, std::string_view keyword) {
  for (auto line = ehlo.lines.begin() + 1; line != ehlo.lines.end(); ++line) {
    const auto space = line->find(' ', 4);
    std::string word = line->substr(4, space - 4);
    std::transform(word.begin(), word.end(), word.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    if (word == keyword) return space == std::string::npos ? std::string() : line->substr(space + 1);
  }
  return std::nullopt;
}

bool offers(const HopReply& ehlo, std::string_view keyword) { return offered_with(ehlo, keyword).has_value(); }

std::string_view level_name(HopTls level) {
  switch (level) {
    case HopTls::none: return "none";
    case HopTls::may: return "may";
    case HopTls::encrypt: return "encrypt";
    case HopTls::verify: return "verify";
  }
  return "?";
}

// STARTTLS as next_hop_tls asks, and EHLO again under TLS; what the next
// hop offered before is forgotten with it. "may" goes on in the clear when
// TLS is not offered or refused; "encrypt" and "verify" relay nothing then.
asio::awaitable<BasicResult<HopReply, HopFailure>> secure(HopSession& hop, const Settings& settings, HopReply ehlo) {
  if (settings.next_hop_tls == HopTls::none) co_return ehlo;
  const bool required = settings.next_hop_tls != HopTls::may;
  const std::string requires_it = ", which next_hop_tls \"" + std::string(level_name(settings.next_hop_tls)) + "\" requires";
  if (!offers(ehlo, "STARTTLS")) {
    if (!required) co_return ehlo;
    co_return HopFailure{"next hop does not offer STARTTLS" + requires_it};
  }
  auto said = co_await hop.command("STARTTLS", "STARTTLS");
  if (!said) co_return said;
  if (said->code != 220) {
    if (!required) co_return ehlo;
    co_return HopFailure{"next hop refused STARTTLS (" + said->lines.back() + ")" + requires_it};
  }
  if (auto failed = co_await hop.start_tls()) co_return HopFailure{"next hop TLS handshake: " + *failed};
  auto again = co_await hop.command("EHLO " + settings.hostname, "EHLO");
  if (!again) co_return again;
  if (again->code != 250) co_return HopFailure{"next hop refused EHLO under TLS (" + again->lines.back() + ")"};
  co_return again;
}

// Greeting and EHLO (HELO for an old next hop), then STARTTLS as the
// settings ask: what the next hop offers.
asio::awaitable<BasicResult<HopReply, HopFailure>> greet(HopSession& hop, const Settings& settings) {
  auto greeting = co_await hop.read_reply("greeting");
  if (!greeting) co_return greeting;
  if (greeting->code != 220) co_return HopFailure{"next hop greeting refused", *greeting};
  auto ehlo = co_await hop.command("EHLO " + settings.hostname, "EHLO");
  if (!ehlo) co_return ehlo;
  if (ehlo->code != 250) {
    ehlo = co_await hop.command("HELO " + settings.hostname, "HELO");
    if (!ehlo) co_return ehlo;
    if (ehlo->code != 250) co_return HopFailure{"next hop refused HELO", *ehlo};
  }
  co_return co_await secure(hop, settings, std::move(*ehlo));
}

// XFORWARD as offered, MAIL and every RCPT: every recipient must be taken,
// since one reply at the end of data cannot say that some were not.
asio::awaitable<BasicResult<HopReply, HopFailure>> begin_transaction(HopSession& hop, const HopReply& ehlo,
                                                                     const Envelope& envelope, std::size_t size) {
  if (const auto offered = offered_with(ehlo, "XFORWARD")) {
    for (const auto& command : xforward_commands(envelope.client, *offered)) {
      auto said = co_await hop.command(command, "XFORWARD");
      if (!said) co_return said;
      if (said->code != 250) co_return HopFailure{"next hop refused XFORWARD", *said};
    }
  }
  std::string mail = "MAIL FROM:<" + envelope.sender + ">";
  if (offers(ehlo, "SIZE")) mail += " SIZE=" + std::to_string(size);
  if (envelope.eight_bit_mime && offers(ehlo, "8BITMIME")) mail += " BODY=8BITMIME";
  auto from = co_await hop.command(mail, "MAIL");
  if (!from) co_return from;
  if (from->code != 250) co_return HopFailure{"next hop refused MAIL", *from};
  const std::size_t all = std::max(envelope.recipients.size(), envelope.client_recipients);
  for (const auto& recipient : envelope.recipients) {
    auto rcpt = co_await hop.command("RCPT TO:<" + recipient + ">", "RCPT");
    if (!rcpt) co_return rcpt;
    if (rcpt->code == 250 || rcpt->code == 251) continue;
    // A 5xx for one of several would bounce the others too: the client
    // tries them all again later instead (a 4xx), and none is lost.
    if (rcpt->code >= 500 && all > 1) {
      co_return HopFailure{"next hop refused RCPT TO:<" + recipient + "> of " + std::to_string(all) +
                           " recipients: " + rcpt->lines.back()};
    }
    co_return HopFailure{"next hop refused RCPT TO:<" + recipient + ">", *rcpt};
  }
  co_return *from;
}

// The message dot-stuffed, up to (not with) the end of data; whether it
// ended its last line.
asio::awaitable<BasicResult<bool, error_code>> send_message(HopSession& hop, const smime::Spool& message) {
  constexpr std::size_t chunk = std::size_t{64} * 1024;
  std::string buffer(chunk, '\0');
  bool at_line_start = true;
  for (std::size_t at = 0; at < message.size();) {
    auto got = message.read(at, buffer.data(), std::min(chunk, message.size() - at));
    if (!got || *got == 0) co_return asio::error::make_error_code(asio::error::fault);
    if (auto ec = co_await hop.write(dot_stuff(std::string_view(buffer.data(), *got), at_line_start))) co_return ec;
    at += *got;
  }
  co_return at_line_start;
}

}  // namespace

struct HopConnection {
  HopConnection(const asio::any_io_executor& executor, std::shared_ptr<const Settings> made_with)
      : settings(std::move(made_with)), socket(executor), hop(socket, *settings) {}
  std::shared_ptr<const Settings> settings;  // what it was made with, kept alive for `hop`
  TimedSocket socket;
  HopSession hop;
  HopReply ehlo;           // what the next hop offers on it
  bool ended_line = true;  // the message being sent had its last CRLF
};

struct HopConnections::Idle {
  std::chrono::steady_clock::time_point since;
  std::unique_ptr<HopConnection> connection;
};

HopConnections::HopConnections() = default;
HopConnections::~HopConnections() = default;

std::unique_ptr<HopConnection> HopConnections::take(const std::shared_ptr<const Settings>& settings) {
  const auto now = std::chrono::steady_clock::now();
  std::vector<Idle> stale;  // closed outside the lock
  const std::lock_guard lock(mutex_);
  std::unique_ptr<HopConnection> found;
  for (auto it = idle_.rbegin(); it != idle_.rend(); ++it) {
    const bool fresh = it->connection->settings == settings && now - it->since < settings->next_hop_idle;
    if (fresh && !found) {
      found = std::move(it->connection);
    } else if (!fresh) {
      stale.push_back(std::move(*it));
    }
  }
  std::erase_if(idle_, [](const Idle& i) { return !i.connection; });
  return found;
}

void HopConnections::give_back(std::unique_ptr<HopConnection> connection) {
  constexpr std::size_t most = 64;  // a next hop serves a limited number of clients at once
  const std::lock_guard lock(mutex_);
  if (idle_.size() >= most) idle_.erase(idle_.begin());  // the oldest goes
  idle_.push_back({std::chrono::steady_clock::now(), std::move(connection)});
}

namespace {

// A new connection to the next hop, greeted.
asio::awaitable<BasicResult<std::unique_ptr<HopConnection>, HopFailure>> connect(std::shared_ptr<const Settings> settings) {
  auto connection = std::make_unique<HopConnection>(co_await asio::this_coro::executor, std::move(settings));
  const Settings& s = *connection->settings;
  error_code ec;
  const auto address = asio::ip::make_address(s.next_hop.host, ec);
  if (ec) co_return HopFailure{"next hop address: " + ec.message()};
  if (auto failed = co_await connection->socket.connect(tcp::endpoint(address, s.next_hop.port), s.next_hop_timeout)) {
    co_return HopFailure{"next hop " + s.next_hop.host + ":" + std::to_string(s.next_hop.port) + ": connect: " +
                         failed.message()};
  }
  // Each command leaves in one write, whole. Without this, the end of data
  // (".", written apart from the message before it) waits for the next
  // hop's delayed ACK: 40 ms a message on a kept connection.
  connection->socket.socket().set_option(tcp::no_delay(true), ec);
  auto ehlo = co_await greet(connection->hop, s);
  if (!ehlo) {
    if (ehlo.error().refused) (void)co_await connection->hop.write("QUIT\r\n");  // polite, and not waited for
    co_return ehlo.error();
  }
  connection->ehlo = std::move(*ehlo);
  co_return connection;
}

// The transaction up to its end of data on `connection`.
asio::awaitable<BasicResult<Ok, HopFailure>> send_transaction(HopConnection& connection, const Envelope& envelope,
                                                              const smime::Spool& message) {
  auto& hop = connection.hop;
  auto begun = co_await begin_transaction(hop, connection.ehlo, envelope, message.size());
  if (!begun) co_return begun.error();
  auto data = co_await hop.command("DATA", "DATA");
  if (!data) co_return data.error();
  if (data->code != 354) co_return HopFailure{"next hop refused DATA", *data};
  auto sent = co_await send_message(hop, message);
  if (!sent) co_return HopFailure{"next hop message: " + sent.error().message()};
  connection.ended_line = *sent;
  co_return Ok{};
}

}  // namespace

PendingTransaction::PendingTransaction(HopConnections& pool, std::unique_ptr<HopConnection> connection)
    : pool_(&pool), connection_(std::move(connection)) {}
PendingTransaction::PendingTransaction(PendingTransaction&&) noexcept = default;
PendingTransaction& PendingTransaction::operator=(PendingTransaction&&) noexcept = default;
PendingTransaction::~PendingTransaction() = default;

asio::awaitable<BasicResult<PendingTransaction, HopFailure>> PendingTransaction::open(
    HopConnections& pool, std::shared_ptr<const Settings> settings, const Envelope& envelope,
    const smime::Spool& message) {
  // A kept connection the next hop has closed in the meantime fails before
  // any reply, or with its 421 for an idle client; one that answers
  // otherwise, even with a refusal, is believed.
  if (auto kept = pool.take(settings)) {
    auto sent = co_await send_transaction(*kept, envelope, message);
    if (sent) co_return PendingTransaction(pool, std::move(kept));
    if (sent.error().refused && sent.error().refused->code != 421) {
      (void)co_await kept->hop.write("QUIT\r\n");
      co_return sent.error();
    }
  }
  auto connected = co_await connect(std::move(settings));
  if (!connected) co_return connected.error();
  auto sent = co_await send_transaction(**connected, envelope, message);
  if (!sent) {
    if (sent.error().refused) (void)co_await (*connected)->hop.write("QUIT\r\n");  // polite, and not waited for
    co_return sent.error();
  }
  co_return PendingTransaction(pool, std::move(*connected));
}

asio::awaitable<BasicResult<HopReply, HopFailure>> PendingTransaction::end() {
  auto& hop = connection_->hop;
  if (auto failed = co_await hop.write(connection_->ended_line ? ".\r\n" : "\r\n.\r\n")) {
    co_return HopFailure{"next hop end of data: " + failed.message()};
  }
  auto accepted = co_await hop.read_reply("end of data");
  if (!accepted) co_return accepted;
  if (accepted->code != 250) co_return HopFailure{"next hop refused the message", *accepted};
  accepted->tls = hop.tls();
  // The message is taken: the connection serves the next one, or says QUIT
  // (what QUIT gets changes nothing).
  if (connection_->settings->next_hop_idle.count() > 0) {
    pool_->give_back(std::move(connection_));
  } else {
    (void)co_await hop.write("QUIT\r\n");
  }
  co_return accepted;
}

}  // namespace mailkms::proxy
