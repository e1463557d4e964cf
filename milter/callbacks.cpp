#include "callbacks.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mailkms/gateway/reinjection.hpp"

namespace mailkms::milter {
namespace {

gateway::Gateway* the_gateway = nullptr;
bool over_tcp = false;

// What went wrong in a step the MTA does not wait for: it is answered at
// the next step that has a reply.
enum class Trouble { none, internal, spool, too_big };

struct MessageContext {
  gateway::Transaction transaction;
  std::vector<std::string> raw_recipients;  // as the MTA gave them, for smfi_delrcpt
  std::vector<smime::HeaderField> headers;
  std::optional<smime::Spool> spool;
  std::size_t size_limit = 0;  // known at the end of the header; 0 is none
  Trouble trouble = Trouble::none;
};

struct ConnectionContext {
  policy::Connection connection;
  // The connect step named the client Postfix's cleanup makes up for mail
  // that came without one: "localhost", 127.0.0.1 (cleanup_milter.c).
  bool stand_in_client = false;
  std::unique_ptr<MessageContext> message;
};

ConnectionContext* connection_of(SMFICTX* ctx) { return static_cast<ConnectionContext*>(smfi_getpriv(ctx)); }

std::string unbracket(const char* address) {
  std::string_view a = address != nullptr ? address : "";
  while (!a.empty() && (a.front() == ' ')) a.remove_prefix(1);
  if (a.size() >= 2 && a.front() == '<' && a.back() == '>') a = a.substr(1, a.size() - 2);
  return std::string(a);
}

std::string queue_id(SMFICTX* ctx) {
  const char* id = smfi_getsymval(ctx, const_cast<char*>("i"));
  return id != nullptr ? id : "NOQUEUE";
}

// An answer to the MTA, and what it counts as at the end of a message.
struct Answer {
  sfsistat status;
  gateway::Disposition disposition;
};

// A refusal the gateway decided, answered.
Answer refuse(SMFICTX* ctx, const gateway::Outcome& outcome) {
  smfi_setreply(ctx, const_cast<char*>(outcome.reply.code.c_str()), const_cast<char*>(outcome.reply.enhanced.c_str()),
                const_cast<char*>(outcome.reply.text.c_str()));
  return {outcome.verdict == gateway::Outcome::Verdict::reject ? SMFIS_REJECT : SMFIS_TEMPFAIL, outcome.disposition()};
}

// The gateway's answer to our own trouble, logged as an error.
Answer answer_trouble(SMFICTX* ctx, gateway::FrontEndTrouble trouble, const std::string& log) {
  const std::string id = queue_id(ctx);
  spdlog::error("{}: {}", id, log);
  return refuse(ctx, the_gateway->answer_trouble(trouble, log));
}

Answer internal_trouble(SMFICTX* ctx, const char* where, const char* what) {
  return answer_trouble(ctx, gateway::FrontEndTrouble::internal, std::string("internal error in ") + where + ": " + what);
}

sfsistat temporary_failure(SMFICTX* ctx, const char* where, const char* what) {
  return internal_trouble(ctx, where, what).status;
}

// Runs a callback body; anything thrown becomes a temporary failure.
template <class Body>
sfsistat guarded(SMFICTX* ctx, const char* where, Body body) {
  try {
    return body();
  } catch (const std::exception& e) {
    return temporary_failure(ctx, where, e.what());
  } catch (...) {
    return temporary_failure(ctx, where, "unknown exception");
  }
}

// The steps the MTA sends without waiting for an answer (SMFIP_NR_*): each
// one is a round trip saved, and nothing is decided before RCPT TO and the
// end of the message anyway. Their callbacks answer SMFIS_NOREPLY; what goes
// wrong in them is logged and kept in the message (or, before MAIL FROM, by
// the missing context) for the next step that answers.
constexpr unsigned long no_reply_steps = SMFIP_NR_CONN | SMFIP_NR_MAIL | SMFIP_NR_HDR | SMFIP_NR_EOH | SMFIP_NR_BODY;

template <class Body>
sfsistat unanswered(SMFICTX* ctx, const char* where, Body body) {
  const auto trouble = [&](const char* what) {
    spdlog::error("{}: internal error in {}: {}", queue_id(ctx), where, what);
    auto* connection = connection_of(ctx);
    if (connection != nullptr && connection->message) connection->message->trouble = Trouble::internal;
  };
  try {
    body();
  } catch (const std::exception& e) {
    trouble(e.what());
  } catch (...) {
    trouble("unknown exception");
  }
  return SMFIS_NOREPLY;
}

// libmilter hands header values with bare LF folding; the engine works in CRLF.
std::string to_crlf(std::string_view value) {
  std::string out;
  out.reserve(value.size() + 8);
  for (std::size_t i = 0; i < value.size(); ++i) {
    if (value[i] == '\n' && (i == 0 || value[i - 1] != '\r')) out += '\r';
    out += value[i];
  }
  return out;
}

// And the MTA wants LF folding back.
std::string to_lf(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (const char c : value) {
    if (c != '\r') out += c;
  }
  return out;
}

sfsistat on_connect(SMFICTX* ctx, char* hostname, _SOCK_ADDR* address) {
  return unanswered(ctx, "connect", [&] {
    auto connection = std::make_unique<ConnectionContext>();
    char text[INET6_ADDRSTRLEN] = {};
    if (address != nullptr && address->sa_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(address)->sin_addr, text, sizeof text);
    } else if (address != nullptr && address->sa_family == AF_INET6) {
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(address)->sin6_addr, text, sizeof text);
    }
    // Empty when the MTA knows no address (a PROXY "UNKNOWN", an XCLIENT
    // ADDR=[UNAVAILABLE]): an unknown client, never a local one.
    connection->connection.client_address = text;
    connection->stand_in_client = hostname != nullptr && std::string_view(hostname) == "localhost" &&
                                  connection->connection.client_address == "127.0.0.1";
    // Set in the MTA's own configuration, per service: no client can send it.
    const char* daemon = smfi_getsymval(ctx, const_cast<char*>("{daemon_name}"));
    connection->connection.final_hop = daemon != nullptr && policy::final_hop_daemon_name == daemon;
    smfi_setpriv(ctx, connection.release());
  });
}

// Postfix gives {mail_mailer} only to smtpd_milters: without it, the mail
// came without SMTP (sendmail, QMQP, postsuper -r), and Postfix cannot
// refuse one recipient of it. Sendmail always gives it.
bool recipients_refusable(SMFICTX* ctx) { return smfi_getsymval(ctx, const_cast<char*>("{mail_mailer}")) != nullptr; }

sfsistat on_envfrom(SMFICTX* ctx, char** argv) {
  return unanswered(ctx, "MAIL FROM", [&] {
    auto* connection = connection_of(ctx);
    if (connection == nullptr) return;  // RCPT TO answers for it
    connection->message.reset();
    auto message = std::make_unique<MessageContext>();
    message->transaction.connection = connection->connection;
    message->transaction.refusable_recipients = recipients_refusable(ctx);
    const char* login = smfi_getsymval(ctx, const_cast<char*>("{auth_authen}"));
    message->transaction.connection.login = login != nullptr ? login : "";
    message->transaction.connection.authenticated = !message->transaction.connection.login.empty();
    // Local submission (sendmail, pickup) is Postfix's stand-in client on
    // mail that came without SMTP; Sendmail's local mail comes over SMTP.
    message->transaction.connection.local_submission =
        connection->stand_in_client && !message->transaction.refusable_recipients;
    message->transaction.sender = unbracket(argv[0]);
    the_gateway->begin(message->transaction);
    connection->message = std::move(message);
  });
}

// An internal error at RCPT TO: this recipient is deferred where the MTA can
// refuse one recipient; elsewhere the end of the message defers it whole.
sfsistat recipient_trouble(SMFICTX* ctx, const char* what) {
  if (recipients_refusable(ctx)) return temporary_failure(ctx, "RCPT TO", what);
  spdlog::error("{}: internal error in RCPT TO: {}; deferred at the end of the message", queue_id(ctx), what);
  if (auto* connection = connection_of(ctx); connection != nullptr && connection->message) {
    connection->message->trouble = Trouble::internal;
  }
  return SMFIS_CONTINUE;
}

sfsistat on_envrcpt(SMFICTX* ctx, char** argv) {
  try {
    auto* connection = connection_of(ctx);
    if (connection == nullptr || !connection->message) return recipient_trouble(ctx, "no message context");
    auto& message = *connection->message;
    if (message.trouble == Trouble::internal) return recipient_trouble(ctx, "after an earlier error");
    const std::string recipient = unbracket(argv[0]);
    const auto verdict = the_gateway->add_recipient(message.transaction, recipient);
    using Kind = gateway::RecipientVerdict::Kind;
    if (verdict.kind == Kind::accept) {
      message.raw_recipients.push_back(argv[0]);
      return SMFIS_CONTINUE;
    }
    spdlog::info("{}: {}", queue_id(ctx), verdict.log);
    smfi_setreply(ctx, const_cast<char*>(verdict.reply.code.c_str()), const_cast<char*>(verdict.reply.enhanced.c_str()),
                  const_cast<char*>(verdict.reply.text.c_str()));
    return verdict.kind == Kind::reject ? SMFIS_REJECT : SMFIS_TEMPFAIL;
  } catch (const std::exception& e) {
    return recipient_trouble(ctx, e.what());
  } catch (...) {
    return recipient_trouble(ctx, "unknown exception");
  }
}

// The message in hand, if nothing has gone wrong with it yet.
MessageContext* healthy_message(SMFICTX* ctx) {
  auto* connection = connection_of(ctx);
  if (connection == nullptr || !connection->message) return nullptr;  // end of message answers for it
  auto* message = connection->message.get();
  return message->trouble == Trouble::none ? message : nullptr;
}

sfsistat on_header(SMFICTX* ctx, char* name, char* value) {
  return unanswered(ctx, "header", [&] {
    if (auto* message = healthy_message(ctx)) message->headers.push_back({name, to_crlf(value)});
  });
}

sfsistat on_eoh(SMFICTX* ctx) {
  return unanswered(ctx, "end of header", [&] {
    auto* message = healthy_message(ctx);
    if (message == nullptr) return;
    const auto& settings = the_gateway->settings();
    message->spool.emplace(smime::SpoolOptions{settings.spool_memory_limit, settings.spool_directory});
    message->size_limit = the_gateway->size_limit(message->transaction, message->headers);
    std::string section;
    for (const auto& f : message->headers) section.append(f.name).append(":").append(f.value).append("\r\n");
    section.append("\r\n");
    if (!message->spool->append(section)) message->trouble = Trouble::spool;
  });
}

sfsistat on_body(SMFICTX* ctx, unsigned char* chunk, size_t size) {
  return unanswered(ctx, "body", [&] {
    auto* message = healthy_message(ctx);
    if (message == nullptr || !message->spool) return;
    const auto limit = message->size_limit;
    if (limit != 0 && message->spool->size() + size > limit) {
      message->trouble = Trouble::too_big;  // nothing more is kept; end of message refuses it
      message->spool.reset();
      return;
    }
    if (!message->spool->append(std::string_view(reinterpret_cast<const char*>(chunk), size))) {
      message->trouble = Trouble::spool;
    }
  });
}

bool apply_edits(SMFICTX* ctx, const std::vector<gateway::HeaderEdit>& edits) {
  // Changes first: they renumber nothing, and name fields by their original
  // index. Then removals, highest index first, so none renumbers another.
  for (const auto& e : edits) {
    if (e.kind != gateway::HeaderEdit::Kind::change) continue;
    const std::string value = " " + to_lf(e.value);  // SMFIP_HDR_LEADSPC
    if (smfi_chgheader(ctx, const_cast<char*>(e.name.c_str()), e.index, const_cast<char*>(value.c_str())) != MI_SUCCESS) {
      return false;
    }
  }
  std::vector<gateway::HeaderEdit> removals;
  for (const auto& e : edits) {
    if (e.kind == gateway::HeaderEdit::Kind::remove) removals.push_back(e);
  }
  std::stable_sort(removals.begin(), removals.end(), [](const auto& a, const auto& b) { return a.index > b.index; });
  for (const auto& e : removals) {
    if (smfi_chgheader(ctx, const_cast<char*>(e.name.c_str()), e.index, nullptr) != MI_SUCCESS) return false;
  }
  for (const auto& e : edits) {
    // SMFIP_HDR_LEADSPC was negotiated: the value carries its own leading space.
    const std::string value = " " + to_lf(e.value);
    if (e.kind == gateway::HeaderEdit::Kind::append &&
        smfi_addheader(ctx, const_cast<char*>(e.name.c_str()), const_cast<char*>(value.c_str())) != MI_SUCCESS) {
      return false;
    }
    if (e.kind == gateway::HeaderEdit::Kind::prepend &&
        smfi_insheader(ctx, 0, const_cast<char*>(e.name.c_str()), const_cast<char*>(value.c_str())) != MI_SUCCESS) {
      return false;
    }
  }
  return true;
}

bool replace_body(SMFICTX* ctx, const smime::Spool& spool, std::size_t offset) {
  // Large chunks: each is one round trip to the MTA.
  constexpr std::size_t chunk = 65535;
  std::string buffer(chunk, '\0');
  if (offset >= spool.size()) {  // an empty body still replaces the old one
    return smfi_replacebody(ctx, reinterpret_cast<unsigned char*>(buffer.data()), 0) == MI_SUCCESS;
  }
  for (std::size_t at = offset; at < spool.size();) {
    auto got = spool.read(at, buffer.data(), std::min(chunk, spool.size() - at));
    if (!got || *got == 0) return false;
    if (smfi_replacebody(ctx, reinterpret_cast<unsigned char*>(buffer.data()), static_cast<int>(*got)) != MI_SUCCESS) {
      return false;
    }
    at += *got;
  }
  return true;
}

// The end of the message, answered: the gateway's outcome applied, or
// the trouble that kept it from being applied.
Answer end_of_message(SMFICTX* ctx, MessageContext& message) {
  constexpr const char* where = "end of message";
  const std::string& id = message.transaction.queue_id;
  switch (message.trouble) {
    case Trouble::none: break;
    case Trouble::internal: return internal_trouble(ctx, where, "after an earlier error");
    case Trouble::spool:
      return answer_trouble(ctx, gateway::FrontEndTrouble::spool, "could not spool the message (disk full?), deferred");
    case Trouble::too_big: {
      const auto refused = the_gateway->answer_trouble(
          gateway::FrontEndTrouble::too_big,
          "rejected: over max_message_size (" + std::to_string(the_gateway->settings().max_message_size) + " bytes)");
      spdlog::info("{}: {}", id, refused.log);
      return refuse(ctx, refused);
    }
  }
  if (!message.spool) {  // no header at all: an empty message
    message.spool.emplace();
    (void)message.spool->append("\r\n");
  }
  auto outcome = the_gateway->finish(message.transaction, message.headers, *message.spool);
  using Verdict = gateway::Outcome::Verdict;
  if (outcome.verdict == Verdict::reject || outcome.verdict == Verdict::tempfail) {
    spdlog::info("{}: {} => {} {} {}", id, outcome.log, outcome.reply.code, outcome.reply.enhanced, outcome.reply.text);
    return refuse(ctx, outcome);
  }
  if (outcome.verdict == Verdict::discard) {
    spdlog::info("{}: {} => discarded", id, outcome.log);
    return {SMFIS_DISCARD, outcome.disposition()};
  }
  // This transaction's edits first: the MTA holds them until our answer and
  // drops them on a temporary failure. The copies for other recipients go
  // last, so that no failure after them makes the client retry and the
  // copies go out twice; if the MTA does not take one, this transaction
  // fails as a whole and nothing is lost.
  for (const auto& removed : outcome.removed_recipients) {
    const auto raw = std::find_if(message.raw_recipients.begin(), message.raw_recipients.end(),
                                  [&](const std::string& r) { return unbracket(r.c_str()) == removed; });
    const std::string address = raw != message.raw_recipients.end() ? *raw : "<" + removed + ">";
    if (smfi_delrcpt(ctx, const_cast<char*>(address.c_str())) != MI_SUCCESS) {
      return internal_trouble(ctx, where, "smfi_delrcpt failed");
    }
  }
  if (!apply_edits(ctx, outcome.header_edits)) return internal_trouble(ctx, where, "a header edit failed");
  if (outcome.message && !replace_body(ctx, *outcome.message, outcome.body_offset)) {
    return internal_trouble(ctx, where, "replacing the body failed");
  }
  // Held for an administrator, or not let out at all.
  if (outcome.quarantine && smfi_quarantine(ctx, const_cast<char*>(outcome.quarantine_reason.c_str())) != MI_SUCCESS) {
    return internal_trouble(ctx, where, "the MTA did not quarantine the message");
  }
  for (const auto& copy : outcome.reinjections) {
    auto sent = gateway::reinject(the_gateway->settings().reinject_command, message.transaction.sender, copy.recipients,
                                  copy.message);
    if (!sent) {
      return answer_trouble(ctx, gateway::FrontEndTrouble::reinjection,
                            outcome.log + " => re-injection failed, deferred: " + sent.error().message);
    }
  }
  spdlog::info("{}: {}{}", id, outcome.log, outcome.quarantine ? " => quarantined" : "");
  return {SMFIS_CONTINUE, outcome.disposition()};
}

// Every message that reaches its end is counted once, as it was answered.
sfsistat on_eom(SMFICTX* ctx) {
  auto* connection = connection_of(ctx);
  if (connection == nullptr || !connection->message) return temporary_failure(ctx, "end of message", "no message context");
  auto& message = *connection->message;
  const Answer answer = [&] {
    try {
      message.transaction.queue_id = queue_id(ctx);
      return end_of_message(ctx, message);
    } catch (const std::exception& e) {
      return internal_trouble(ctx, "end of message", e.what());
    } catch (...) {
      return internal_trouble(ctx, "end of message", "unknown exception");
    }
  }();
  the_gateway->account(message.transaction, answer.disposition);
  return answer.status;
}

sfsistat on_abort(SMFICTX* ctx) {
  if (auto* connection = connection_of(ctx)) connection->message.reset();
  return SMFIS_CONTINUE;
}

sfsistat on_close(SMFICTX* ctx) {
  std::unique_ptr<ConnectionContext> owned(connection_of(ctx));
  smfi_setpriv(ctx, nullptr);
  return SMFIS_CONTINUE;
}

sfsistat on_negotiate(SMFICTX* ctx, unsigned long f0, unsigned long f1, unsigned long /*f2*/, unsigned long /*f3*/,
                      unsigned long* pf0, unsigned long* pf1, unsigned long* pf2, unsigned long* pf3) {
  const unsigned long wanted = SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_CHGBODY | SMFIF_DELRCPT | SMFIF_QUARANTINE;
  if ((f0 & wanted) != wanted) return SMFIS_REJECT;  // the MTA cannot do what we may need
  *pf0 = wanted;
  // Header values exactly as written (leading space kept); skip what we do
  // not use, and answer only RCPT TO and the end of the message. Over TCP,
  // DATA is answered too: Postfix's smtpd sends the DATA macros just before
  // it hands the connection to cleanup, whose first header would otherwise
  // wait (Nagle) for our delayed ACK of them, about 40 ms per message.
  unsigned long steps = SMFIP_HDR_LEADSPC | SMFIP_NOHELO | SMFIP_NOUNKNOWN | no_reply_steps;
  if (!over_tcp) steps |= SMFIP_NODATA;
  *pf1 = f1 & steps;
  // The MAIL FROM macros we read, whatever the MTA's own list says.
  if ((f0 & SMFIF_SETSYMLIST) != 0 &&
      smfi_setsymlist(ctx, SMFIM_ENVFROM, const_cast<char*>("i {auth_type} {auth_authen} {mail_mailer}")) == MI_SUCCESS) {
    *pf0 |= SMFIF_SETSYMLIST;
  }
  *pf2 = 0;
  *pf3 = 0;
  return SMFIS_CONTINUE;
}

}  // namespace

void install(gateway::Gateway& gateway, Transport transport) {
  the_gateway = &gateway;
  over_tcp = transport == Transport::tcp;
}

smfiDesc description() {
  smfiDesc d{};
  d.xxfi_name = const_cast<char*>("mailkms-milter");
  d.xxfi_version = SMFI_VERSION;
  d.xxfi_flags = SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_CHGBODY | SMFIF_DELRCPT | SMFIF_QUARANTINE;
  d.xxfi_connect = on_connect;
  d.xxfi_envfrom = on_envfrom;
  d.xxfi_envrcpt = on_envrcpt;
  d.xxfi_header = on_header;
  d.xxfi_eoh = on_eoh;
  d.xxfi_body = on_body;
  d.xxfi_eom = on_eom;
  d.xxfi_abort = on_abort;
  d.xxfi_close = on_close;
  d.xxfi_negotiate = on_negotiate;
  return d;
}

}  // namespace mailkms::milter
