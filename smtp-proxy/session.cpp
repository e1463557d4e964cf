#include "session.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>

#include "mailkms/policy/policy.hpp"
#include "message.hpp"
#include "next_hop.hpp"
#include "smtp_parser.hpp"
#include "timed_socket.hpp"

namespace mailkms::proxy {
namespace {

// RFC 5321 4.5.3.1.8 asks for at least 100.
constexpr std::size_t max_recipients = 1000;
// A client that keeps getting commands wrong is not served for ever.
constexpr int max_errors = 20;

std::string reply_line(const gateway::Reply& reply) { return reply.code + " " + reply.enhanced + " " + reply.text + "\r\n"; }

std::string reply_lines(const HopReply& reply) {
  std::string out;
  for (const auto& line : reply.lines) out.append(line).append("\r\n");
  return out;
}

// What a command did to the session.
enum class Step { next, data, starttls, quit };

// The reply to the end of data, and what it counts as in the metrics.
struct Answer {
  std::string reply;
  gateway::Disposition disposition;
};

Answer answer(const gateway::Outcome& outcome) { return {reply_line(outcome.reply), outcome.disposition()}; }

struct OpenTransaction {
  gateway::Transaction transaction;
  bool eight_bit_mime = false;
};

std::string session_id(std::uint64_t number) {
  char id[17];
  (void)std::snprintf(id, sizeof id, "%08llX", static_cast<unsigned long long>(number));  // 16 digits at most: it fits
  return id;
}

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, ServerContext& context, std::shared_ptr<const Settings> settings, std::uint64_t number)
      : socket_(std::move(socket)), context_(context), settings_(std::move(settings)), gateway_(context.gateway()),
        number_(number), id_(session_id(number)) {}

  asio::awaitable<void> run() {
    error_code ec;
    const auto peer = socket_.socket().remote_endpoint(ec);
    client_address_ = ec ? std::string() : peer.address().to_string();
    xforward_peer_ = policy::network_of(settings().xforward_peers, client_address_).has_value();
    xclient_peer_ = policy::network_of(settings().xclient_peers, client_address_).has_value();
    spdlog::info("{}: connect from [{}]", id_, client_address_);
    out_ = "220 " + settings().hostname + " ESMTP mailkms-proxy\r\n";
    register_waker();
    co_await serve();
    {
      const std::lock_guard lock(context_.wakers_mutex);
      context_.wakers.erase(number_);
    }
    socket_.close();
    spdlog::info("{}: disconnect from [{}]", id_, client_address_);
  }

 private:
  // drain() wakes a session that waits for its client's next command; one
  // busy with a message finds context_.stopping once it has answered it.
  void register_waker() {
    const std::lock_guard lock(context_.wakers_mutex);
    context_.wakers.emplace(number_, [weak = weak_from_this(), executor = socket_.socket().get_executor()] {
      asio::post(executor, [weak] {
        if (auto self = weak.lock(); self && self->waiting_for_command_) {
          error_code ignored;
          self->socket_.socket().cancel(ignored);
        }
      });
    });
  }

  asio::awaitable<void> say_shutting_down() {
    spdlog::info("{}: shutting down; told [{}] 421", id_, client_address_);
    out_ += "421 4.3.2 " + settings().hostname + " Service shutting down; try again later\r\n";
    (void)co_await flush();
  }

  const Settings& settings() const { return *settings_; }
  // The gateway this session took at its last EHLO or MAIL: a reload never
  // changes it under a transaction.
  gateway::Gateway& gateway() { return *gateway_; }

  // The gateway's call, off the I/O threads; back on this session's strand after.
  template <class Call>
  asio::awaitable<std::invoke_result_t<Call>> blocking(Call call) {
    using Value = std::invoke_result_t<Call>;
    co_return co_await asio::co_spawn(
        context_.blocking, [call = std::move(call)]() mutable -> asio::awaitable<Value> { co_return call(); },
        asio::use_awaitable);
  }

  asio::awaitable<bool> flush() {
    if (out_.empty()) co_return true;
    const auto ec = co_await socket_.write(out_, settings().command_timeout);
    out_.clear();
    if (ec) spdlog::info("{}: write to [{}]: {}", id_, client_address_, ec.message());
    co_return !ec;
  }

  // More of what the client sends; false when it is gone or too slow.
  asio::awaitable<bool> read_more(std::chrono::seconds timeout, const char* where) {
    char chunk[16 * 1024];
    auto [ec, n] = co_await socket_.read_some(asio::buffer(chunk), timeout);
    if (!ec) {
      in_.append(chunk, n);
      co_return true;
    }
    if (ec == asio::error::operation_aborted && context_.stopping) {
      co_await say_shutting_down();
    } else if (ec == asio::error::timed_out) {
      spdlog::info("{}: timeout {} from [{}]", id_, where, client_address_);
      out_ += "421 4.4.2 " + settings().hostname + " Error: timeout exceeded\r\n";
      (void)co_await flush();
    } else {
      spdlog::info("{}: lost connection {} from [{}]", id_, where, client_address_);
    }
    co_return false;
  }

  asio::awaitable<void> serve() {
    for (;;) {
      auto next = lines_.next(in_);
      in_.erase(0, next.consumed);
      using Kind = CommandLines::Next::Kind;
      if (next.kind == Kind::need_more) {
        // Pipelined replies go out together, once every command read is answered (RFC 2920).
        if (!co_await flush()) co_return;
        // Checked with no wait between it and the read drain() can cut short.
        if (context_.stopping) {
          co_await say_shutting_down();
          co_return;
        }
        waiting_for_command_ = true;
        const bool more = co_await read_more(settings().command_timeout, message_ ? "in a transaction" : "after a command");
        waiting_for_command_ = false;
        if (!more) co_return;
        continue;
      }
      if (next.kind == Kind::bare_lf) {
        co_await refuse_bare_lf("in a command");
        co_return;
      }
      Step step = Step::next;
      if (next.kind == Kind::too_long) {
        error("500 5.5.2 Error: line too long\r\n");
      } else {
        step = co_await command(parse_command(next.line));
      }
      if (errors_ >= max_errors) {
        spdlog::info("{}: too many errors from [{}]", id_, client_address_);
        out_ += "421 4.7.0 " + settings().hostname + " Error: too many errors\r\n";
        (void)co_await flush();
        co_return;
      }
      if (step == Step::quit) {
        (void)co_await flush();
        co_return;
      }
      if (step == Step::data && (!co_await flush() || !co_await receive_data())) co_return;
      if (step == Step::starttls && (!co_await flush() || !co_await start_tls())) co_return;
    }
  }

  // RFC 3207: the client speaks TLS right after our 220. What it sent
  // behind STARTTLS in the clear is thrown away, never read as commands
  // of the protected session (CVE-2011-0411); and what the session knew
  // before, its EHLO included, is forgotten (4.2). False: no TLS, and the
  // session is over.
  asio::awaitable<bool> start_tls() {
    if (!in_.empty()) {
      spdlog::warn("{}: {} byte(s) sent behind STARTTLS by [{}], discarded", id_, in_.size(), client_address_);
      in_.clear();
    }
    lines_ = CommandLines();
    const auto ec = co_await socket_.handshake(*settings().tls, asio::ssl::stream_base::server, settings().command_timeout);
    if (ec) {
      spdlog::info("{}: TLS handshake with [{}] failed: {}", id_, client_address_, ec.message());
      co_return false;
    }
    SSL* tls = socket_.tls();
    spdlog::info("{}: TLS from [{}]: {} with {}", id_, client_address_, SSL_get_version(tls), SSL_get_cipher_name(tls));
    // RFC 3207 4.2: nothing the client said in the clear counts.
    end_transaction();
    greeted_ = false;
    helo_.clear();
    esmtp_ = false;
    claimed_ = {};
    co_return true;
  }

  // Where a line ends is ambiguous: the next hop could read a different
  // message, or a command, from the same bytes (SMTP smuggling). Nothing is
  // relayed and the session ends, as Postfix does.
  asio::awaitable<void> refuse_bare_lf(const char* where) {
    spdlog::warn("{}: bare <LF> {} from [{}]; disconnected", id_, where, client_address_);
    message_.reset();
    out_ += "521 5.5.2 " + settings().hostname + " Error: bare <LF> received\r\n";
    (void)co_await flush();
  }

  void error(const std::string& reply) {
    ++errors_;
    out_ += reply;
  }

  asio::awaitable<Step> command(const Command& command) {
    switch (command.verb) {
      case Verb::ehlo:
      case Verb::helo: greet(command); break;
      case Verb::mail: mail(command); break;
      case Verb::rcpt: co_await recipient(command); break;
      case Verb::data:
        if (!message_) {
          error("503 5.5.1 Error: need MAIL command\r\n");
        } else if (message_->transaction.recipients.empty()) {
          error("554 5.5.1 Error: no valid recipients\r\n");
        } else if (!command.argument.empty()) {
          error("501 5.5.4 Syntax: DATA\r\n");
        } else {
          out_ += "354 End data with <CR><LF>.<CR><LF>\r\n";
          co_return Step::data;
        }
        break;
      case Verb::rset:
        end_transaction();
        out_ += "250 2.0.0 Ok\r\n";
        break;
      case Verb::noop: out_ += "250 2.0.0 Ok\r\n"; break;
      case Verb::quit:
        out_ += "221 2.0.0 Bye\r\n";
        co_return Step::quit;
      case Verb::vrfy: out_ += "252 2.5.2 Cannot VRFY user; send mail and it will be delivered or bounced\r\n"; break;
      case Verb::xforward: xforward(command); break;
      case Verb::xclient: xclient(command); break;
      case Verb::starttls: co_return starttls(command);
      case Verb::help:
        out_ += std::string("214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP") +
                (offers_tls() ? " STARTTLS" : "") + "\r\n";
        break;
      case Verb::unknown: error("500 5.5.2 Error: command not recognized\r\n"); break;
    }
    co_return Step::next;
  }

  void greet(const Command& command) {
    if (command.argument.empty()) return error("501 5.5.4 Syntax: EHLO hostname\r\n");
    end_transaction();
    greeted_ = true;
    gateway_ = context_.gateway();
    helo_ = command.argument.substr(0, 255);
    esmtp_ = command.verb == Verb::ehlo;
    const auto& host = settings().hostname;
    if (command.verb == Verb::helo) {
      out_ += "250 " + host + "\r\n";
      return;
    }
    const auto size = gateway().settings().max_message_size;
    out_ += "250-" + host + "\r\n250-PIPELINING\r\n250-SIZE" + (size != 0 ? " " + std::to_string(size) : "") +
            "\r\n250-8BITMIME\r\n";
    if (xforward_peer_) out_ += "250-XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE\r\n";
    if (xclient_peer_) out_ += "250-XCLIENT NAME REVERSE_NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT\r\n";
    if (offers_tls()) out_ += "250-STARTTLS\r\n";
    out_ += "250 ENHANCEDSTATUSCODES\r\n";
  }

  // What was said for one transaction only: its envelope, and XFORWARD's client.
  void end_transaction() {
    message_.reset();
    forwarded_ = {};
  }

  bool offers_tls() { return settings().tls && socket_.tls() == nullptr; }

  Step starttls(const Command& command) {
    if (!offers_tls()) {
      error(socket_.tls() != nullptr ? "554 5.5.1 Error: TLS already active\r\n"
                                     : "502 5.5.1 Error: command not implemented\r\n");
    } else if (!command.argument.empty()) {
      error("501 5.5.4 Syntax: STARTTLS\r\n");
    } else if (message_) {
      error("503 5.5.1 Error: MAIL transaction in progress\r\n");
    } else {
      out_ += "220 2.0.0 Ready to start TLS\r\n";
      return Step::starttls;
    }
    return Step::next;
  }

  // An MTA in front of the proxy (xforward_peers) says which client it
  // served: that client's address, not the MTA's, decides direction and
  // signing, for the next transaction only. Anyone else is refused.
  void xforward(const Command& command) {
    if (!xforward_peer_) return error("550 5.7.0 Error: insufficient XFORWARD authorization\r\n");
    if (message_) return error("503 5.5.1 Error: MAIL transaction in progress\r\n");
    auto parsed = parse_xforward(command.argument);
    if (!parsed) {
      const auto& e = parsed.error();
      return error(e.code + " " + e.enhanced + " " + e.text + "\r\n");
    }
    merge(forwarded_, *parsed);
    spdlog::info("{}: XFORWARD from [{}]: client [{}], queue id {}, source {}", id_, client_address_,
                 forwarded_.addr.value_or(client_address_), forwarded_.ident.value_or("-"), forwarded_.source.value_or("-"));
    out_ += "250 2.0.0 Ok\r\n";
  }

  // A proxy in front of this one (xclient_peers) says which client it
  // serves: the session goes on as if that client had connected, with its
  // SMTP AUTH login, until the next XCLIENT; the client greets again
  // (XCLIENT_README). Anyone else is refused.
  void xclient(const Command& command) {
    if (!xclient_peer_) return error("550 5.7.0 Error: insufficient XCLIENT authorization\r\n");
    if (message_) return error("503 5.5.1 Error: MAIL transaction in progress\r\n");
    auto parsed = parse_xclient(command.argument);
    if (!parsed) {
      const auto& e = parsed.error();
      return error(e.code + " " + e.enhanced + " " + e.text + "\r\n");
    }
    merge(claimed_, *parsed);
    end_transaction();
    greeted_ = false;
    const auto& login = claimed_.login;
    spdlog::info("{}: XCLIENT from [{}]: client [{}], {}", id_, client_address_, claimed_.addr.value_or(client_address_),
                 login && !login->empty() ? "login " + *login : std::string("no login"));
    out_ += "220 " + settings().hostname + " ESMTP mailkms-proxy\r\n";
  }

  void mail(const Command& command) {
    if (!greeted_) return error("503 5.5.1 Error: send HELO/EHLO first\r\n");
    if (message_) return error("503 5.5.1 Error: nested MAIL command\r\n");
    auto parsed = parse_mail_from(command.argument);
    if (!parsed) {
      const auto& e = parsed.error();
      return error(e.code + " " + e.enhanced + " " + e.text + "\r\n");
    }
    gateway_ = context_.gateway();
    const auto limit = gateway().settings().max_message_size;
    if (limit != 0 && parsed->size && *parsed->size > limit) {
      const auto refused = gateway().answer_trouble(gateway::FrontEndTrouble::too_big,
                                                    "rejected at MAIL: SIZE=" + std::to_string(*parsed->size) +
                                                        " is over max_message_size");
      spdlog::info("{}: {}", id_, refused.log);
      out_ += reply_line(refused.reply);
      return;
    }
    message_.emplace();
    auto& transaction = message_->transaction;
    transaction.queue_id = id_ + "." + std::to_string(++transactions_);
    transaction.relays_copies = true;
    if (forwarded_.ident && !forwarded_.ident->empty()) transaction.queue_id += "/" + *forwarded_.ident;
    // An address XFORWARD could not give ([UNAVAILABLE]) is unknown: never internal.
    // SOURCE is not trusted for local submission: Postfix says LOCAL for any
    // client on the host's own addresses too (local_header_rewrite_clients).
    transaction.connection.client_address = forwarded_.addr.value_or(claimed_.addr.value_or(client_address_));
    // Only XCLIENT says a login: XFORWARD has none to say.
    transaction.connection.login = claimed_.login.value_or(std::string());
    transaction.connection.authenticated = !transaction.connection.login.empty();
    transaction.sender = std::move(parsed->address);
    message_->eight_bit_mime = parsed->eight_bit_mime;
    gateway().begin(transaction);
    out_ += "250 2.1.0 Ok\r\n";
  }

  asio::awaitable<void> recipient(const Command& command) {
    if (!message_) co_return error("503 5.5.1 Error: need MAIL command\r\n");
    auto parsed = parse_rcpt_to(command.argument);
    if (!parsed) {
      const auto& e = parsed.error();
      co_return error(e.code + " " + e.enhanced + " " + e.text + "\r\n");
    }
    auto& transaction = message_->transaction;
    if (transaction.recipients.size() >= max_recipients) {
      out_ += "452 4.5.3 Error: too many recipients\r\n";
      co_return;
    }
    gateway::RecipientVerdict verdict;
    try {
      verdict = co_await blocking([&] { return gateway().add_recipient(transaction, *parsed); });
    } catch (const std::exception& e) {
      const auto refused = gateway().answer_trouble(gateway::FrontEndTrouble::internal,
                                                    std::string("internal error in RCPT TO: ") + e.what());
      spdlog::error("{}: {}", transaction.queue_id, refused.log);
      out_ += reply_line(refused.reply);
      co_return;
    }
    if (verdict.kind == gateway::RecipientVerdict::Kind::accept) {
      out_ += "250 2.1.5 Ok\r\n";
      co_return;
    }
    spdlog::info("{}: {}", transaction.queue_id, verdict.log);
    out_ += reply_line(verdict.reply);
  }

  // DATA up to its end, then the answer; false when the session is over.
  asio::awaitable<bool> receive_data() {
    auto& transaction = message_->transaction;
    const auto& gateway_settings = gateway().settings();
    MessageIntake intake({gateway_settings.spool_memory_limit, gateway_settings.spool_directory},
                         [&](const std::vector<smime::HeaderField>& headers) {
                           return gateway().size_limit(transaction, headers);
                         });
    DataReader reader;
    std::string content;
    for (;;) {
      content.clear();
      const auto next = reader.next(in_, content);
      in_.erase(0, next.consumed);
      intake.add(content);
      if (next.kind == DataReader::Next::Kind::done) break;
      if (next.kind == DataReader::Next::Kind::bare_lf) {
        co_await refuse_bare_lf("in DATA");
        co_return false;
      }
      if (!co_await read_more(settings().data_timeout, "in DATA")) {
        spdlog::info("{}: nothing relayed", transaction.queue_id);
        co_return false;
      }
    }
    intake.finish();
    const Answer answered = co_await answer_message(intake, reader.line_too_long());
    gateway().account(transaction, answered.disposition);
    out_ += answered.reply;
    end_transaction();
    co_return true;
  }

  // The answer to the end of data: the gateway's refusal, or the next hop's
  // reply once it has taken the message.
  asio::awaitable<Answer> answer_message(const MessageIntake& intake, bool line_too_long) {
    const auto& transaction = message_->transaction;
    const auto& id = transaction.queue_id;
    using Verdict = gateway::Outcome::Verdict;
    if (line_too_long) {
      spdlog::info("{}: rejected: a line longer than {} octets", id, max_text_line);
      co_return Answer{"552 5.3.4 Error: a message line is longer than 1000 octets (RFC 5321 4.5.3.1.6)\r\n",
                       {Verdict::reject, false, gateway::Action::passed, gateway::FailureClass::malformed}};
    }
    if (intake.trouble() != MessageIntake::Trouble::none) {
      const bool too_big = intake.trouble() == MessageIntake::Trouble::too_big;
      const auto refused = gateway().answer_trouble(
          too_big ? gateway::FrontEndTrouble::too_big : gateway::FrontEndTrouble::spool,
          too_big ? "rejected: over max_message_size (" + std::to_string(gateway().settings().max_message_size) + " bytes)"
                  : "could not spool the message (disk full?), deferred");
      spdlog::info("{}: {}", id, refused.log);
      co_return answer(refused);
    }
    auto outcome = co_await blocking([&] { return gateway().finish(transaction, intake.headers(), intake.spool()); });
    if (outcome.verdict == Verdict::reject || outcome.verdict == Verdict::tempfail) {
      spdlog::info("{}: {} => {} {} {}", id, outcome.log, outcome.reply.code, outcome.reply.enhanced, outcome.reply.text);
      co_return answer(outcome);
    }
    if (outcome.verdict == Verdict::discard) {
      spdlog::info("{}: {} => discarded", id, outcome.log);
      co_return Answer{"250 2.0.0 Ok\r\n", outcome.disposition()};
    }
    if (outcome.quarantine) {  // the proxy has no hold queue to put it in
      co_return trouble(gateway::FrontEndTrouble::internal, outcome.log + " => no hold queue behind the proxy, deferred");
    }
    co_return co_await relay_outcome(intake, outcome);
  }

  // Each copy in its own transaction to the next hop: all are brought up
  // to their end of data before any is ended, so a refusal of one before
  // then delivers none. Ended in turn, one taken and a later one not would
  // have the client try them all again: some recipients may get it twice,
  // none loses it.
  asio::awaitable<Answer> relay_outcome(const MessageIntake& intake, const gateway::Outcome& outcome) {
    const auto& transaction = message_->transaction;
    const auto& gateway_settings = gateway().settings();
    const smime::SpoolOptions options{gateway_settings.spool_memory_limit, gateway_settings.spool_directory};
    auto message = outgoing_message(intake.headers(), outcome, intake.spool(), intake.body_offset(), options);
    if (!message) co_return trouble(gateway::FrontEndTrouble::spool, outcome.log + " => spooling the result failed, deferred");
    const Envelope envelope{transaction.sender, {}, message_->eight_bit_mime, transaction.recipients.size(),
                            client_for_next_hop()};
    std::vector<std::pair<Envelope, const smime::Spool*>> copies;
    copies.emplace_back(envelope, &*message);
    for (const auto& r : transaction.recipients) {
      const auto& removed = outcome.removed_recipients;
      if (std::find(removed.begin(), removed.end(), r) == removed.end()) copies.front().first.recipients.push_back(r);
    }
    if (copies.front().first.recipients.empty()) copies.clear();
    for (const auto& copy : outcome.reinjections) {
      copies.emplace_back(envelope, &copy.message);
      copies.back().first.recipients = copy.recipients;
    }
    if (copies.empty()) co_return trouble(gateway::FrontEndTrouble::internal, outcome.log + " => no recipient left, deferred");
    std::vector<PendingTransaction> pending;
    for (const auto& [to, body] : copies) {
      auto opened = co_await PendingTransaction::open(context_.hop_connections, settings_, to, *body);
      if (!opened) co_return hop_failed(outcome, opened.error());
      pending.push_back(std::move(*opened));
    }
    std::optional<HopReply> taken;
    for (std::size_t i = 0; i < pending.size(); ++i) {
      auto ended = co_await pending[i].end();
      if (!ended) co_return hop_failed(outcome, ended.error(), i);
      if (!taken) taken = std::move(*ended);
    }
    const std::string split = pending.size() > 1 ? " (and " + std::to_string(pending.size() - 1) + " more)" : "";
    spdlog::info("{}: {} => relayed: {}{}{}", transaction.queue_id, outcome.log, taken->lines.back(), split,
                 taken->tls.empty() ? std::string() : " (" + taken->tls + ")");
    co_return Answer{reply_lines(*taken), outcome.disposition()};
  }

  // Who the client was, for a next hop that takes XFORWARD: what an MTA in
  // front said of it, else what this session saw.
  Xforward client_for_next_hop() const {
    Xforward client = forwarded_;
    if (!client.name) client.name = claimed_.name.value_or(std::string());  // the proxy looks up no names
    if (!client.addr) client.addr = claimed_.addr.value_or(client_address_);
    if (!client.helo) client.helo = claimed_.helo.value_or(helo_);
    if (!client.proto) client.proto = claimed_.proto.value_or(esmtp_ ? "ESMTP" : "SMTP");
    if (!client.ident) client.ident = message_->transaction.queue_id;
    // Every attribute is said for every transaction, [UNAVAILABLE] where
    // unknown: on a kept connection nothing an earlier client's
    // transaction said may stand for this one's.
    if (!client.port) client.port = claimed_.port.value_or(std::string());
    if (!client.source) client.source = std::string();
    return client;
  }

  // A refusal of the next hop's reaches the client as it came; a next hop
  // that could not be asked is the gateway's temporary failure. `taken`:
  // copies the next hop already took, whose recipients the client's next
  // try reaches again.
  // A refusal is counted as the client sees it, rejected or deferred, and
  // as no failure of the gateway's.
  Answer hop_failed(const gateway::Outcome& outcome, const HopFailure& failure, std::size_t taken = 0) {
    const std::string again = taken > 0 ? " (" + std::to_string(taken) + " copy(ies) already taken will be sent again)" : "";
    if (failure.refused) {
      spdlog::info("{}: {} => {}: {}{}", message_->transaction.queue_id, outcome.log, failure.what, failure.refused->lines.back(),
                   again);
      gateway::Disposition refused = outcome.disposition();
      refused.verdict = failure.refused->code >= 500 ? gateway::Outcome::Verdict::reject : gateway::Outcome::Verdict::tempfail;
      return {reply_lines(*failure.refused), refused};
    }
    return trouble(gateway::FrontEndTrouble::next_hop, outcome.log + " => " + failure.what + again + ", deferred");
  }

  Answer trouble(gateway::FrontEndTrouble kind, std::string log) {
    const auto refused = gateway().answer_trouble(kind, std::move(log));
    spdlog::error("{}: {}", message_->transaction.queue_id, refused.log);
    return answer(refused);
  }

  TimedSocket socket_;
  ServerContext& context_;
  std::shared_ptr<const Settings> settings_;  // as they were when the session began
  std::shared_ptr<gateway::Gateway> gateway_;  // see gateway()
  std::uint64_t number_;
  std::string id_;
  std::string client_address_;
  std::string in_;   // read, not yet parsed
  std::string out_;  // replies not yet written
  CommandLines lines_;
  bool greeted_ = false;
  std::optional<OpenTransaction> message_;  // from MAIL to the end of data or RSET
  int errors_ = 0;
  unsigned transactions_ = 0;
  bool waiting_for_command_ = false;  // in a read that drain() may cut short
  bool xforward_peer_ = false;        // the client is one of xforward_peers
  bool xclient_peer_ = false;         // the client is one of xclient_peers
  std::string helo_;                  // what it said in EHLO or HELO
  bool esmtp_ = false;                // EHLO rather than HELO
  Xforward forwarded_;                // what it said, for the next transaction
  Xclient claimed_;                   // what XCLIENT said, for the rest of the session
};

// Over a cap, a client is told so at once and let go (RFC 5321 3.1: 421).
// (A coroutine takes what it keeps by value: a reference would dangle at
// its first co_await. cppcheck reads it as a plain function.)
// cppcheck-suppress passedByValue
asio::awaitable<void> turn_away(tcp::socket socket, std::string reply) {
  TimedSocket timed(std::move(socket));
  (void)co_await timed.write(reply, std::chrono::seconds(10));
  // cppcheck-suppress missingReturn
  timed.close();
}

// A session slot for this client address, unless it has its share
// (max_sessions_per_client); clients in [local] networks are not counted.
// Returns the key to give back, empty for one not counted; nothing when
// the client has its share.
std::optional<std::string> take_client_slot(ServerContext& context, const Settings& settings, std::string address) {
  if (address.empty()) return address;  // gone already: its session ends at once
  if (policy::internal_network_of(*context.gateway()->policy(), address)) return std::string();
  const std::lock_guard lock(context.clients_mutex);
  auto& count = context.sessions_per_client[address];
  if (count >= settings.max_sessions_per_client) return std::nullopt;
  ++count;
  return address;
}

void give_back_client_slot(ServerContext& context, const std::string& address) {
  if (address.empty()) return;
  const std::lock_guard lock(context.clients_mutex);
  const auto found = context.sessions_per_client.find(address);
  if (found != context.sessions_per_client.end() && --found->second == 0) context.sessions_per_client.erase(found);
}

}  // namespace

asio::awaitable<void> accept_sessions(tcp::acceptor& acceptor, ServerContext& context) {
  for (;;) {
    auto strand = asio::make_strand(acceptor.get_executor());
    auto [ec, socket] = co_await acceptor.async_accept(strand, asio::as_tuple(asio::use_awaitable));
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
    if (ec) {
      spdlog::warn("accept: {}", ec.message());  // out of descriptors, say: the others go on
      continue;
    }
    // Each reply leaves in one write, whole: Nagle would only hold it back
    // for the client's delayed ACK.
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    auto settings = context.settings();
    const auto& host = settings->hostname;
    if (context.sessions.fetch_add(1) >= settings->max_sessions) {
      context.sessions.fetch_sub(1);
      spdlog::warn("too many sessions ({}): a client turned away", settings->max_sessions);
      asio::co_spawn(strand, turn_away(std::move(socket), "421 4.3.2 " + host + " Error: too many sessions; try again later\r\n"),
                     asio::detached);
      continue;
    }
    error_code peer_error;
    const auto peer = socket.remote_endpoint(peer_error);
    const std::string client = peer_error ? std::string() : peer.address().to_string();
    auto slot = take_client_slot(context, *settings, client);
    if (!slot) {
      context.sessions.fetch_sub(1);
      spdlog::warn("too many sessions from [{}] ({}): turned away", client, settings->max_sessions_per_client);
      asio::co_spawn(strand, turn_away(std::move(socket), "421 4.7.0 " + host + " Error: too many connections from [" +
                                                              client + "]; try again later\r\n"),
                     asio::detached);
      continue;
    }
    auto session = std::make_shared<Session>(std::move(socket), context, std::move(settings), ++context.sessions_started);
    asio::co_spawn(strand, [session, &context, slot = std::move(*slot)]() -> asio::awaitable<void> {
      try {
        co_await session->run();
      } catch (const std::exception& e) {
        spdlog::error("session ended by an internal error: {}", e.what());
      }
      give_back_client_slot(context, slot);
      context.sessions.fetch_sub(1);
    }, asio::detached);
  }
}

asio::awaitable<unsigned> drain(ServerContext& context, std::chrono::seconds deadline) {
  context.stopping = true;
  {
    const std::lock_guard lock(context.wakers_mutex);
    for (const auto& [number, wake] : context.wakers) wake();
  }
  const auto until = std::chrono::steady_clock::now() + deadline;
  asio::steady_timer timer(co_await asio::this_coro::executor);
  while (context.sessions > 0 && std::chrono::steady_clock::now() < until) {
    timer.expires_after(std::chrono::milliseconds(20));
    co_await timer.async_wait(asio::use_awaitable);
  }
  co_return context.sessions.load();
}

}  // namespace mailkms::proxy
