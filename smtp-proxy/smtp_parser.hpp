// The SMTP server's reading of its client (RFC 5321), as pure functions
// over bytes: command lines cut at CRLF with their length limit, commands
// and their MAIL/RCPT parameters, and the DATA stream dot-unstuffed up to
// its end. No I/O and no policy here, so that every byte a client can send
// is exercised by unit tests and a fuzzer, apart from sockets.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mailkms/basic_result.hpp"

namespace mailkms::proxy {

// RFC 5321 4.5.3.1.4 and 4.5.3.1.6, both counting the CRLF.
constexpr std::size_t max_command_line = 512;
constexpr std::size_t max_text_line = 1000;

// Where the next command line ends in what the client sent so far.
class CommandLines {
 public:
  struct Next {
    enum class Kind {
      need_more,  // no complete line yet; `consumed` bytes may be dropped
      line,       // `line`, without its CRLF
      too_long,   // a line over the limit, dropped up to its CRLF
      bare_lf,    // an LF without CR before it: where the line ends is ambiguous
    };
    Kind kind = Kind::need_more;
    std::string line;
    std::size_t consumed = 0;
  };
  Next next(std::string_view input);

 private:
  bool discarding_ = false;     // inside a line already over the limit
  bool discarded_cr_ = false;   // the last byte discarded of it was a CR
};

enum class Verb { helo, ehlo, mail, rcpt, data, rset, noop, quit, vrfy, help, xforward, xclient, starttls, unknown };

struct Command {
  Verb verb = Verb::unknown;
  std::string argument;  // after the verb and one space, as sent
};
Command parse_command(std::string_view line);

// A parameter or address the client got wrong: the reply it gets.
struct SyntaxError {
  std::string code;      // "501", "555"
  std::string enhanced;  // "5.5.4", "5.1.3"
  std::string text;
};

struct MailFrom {
  std::string address;  // without <>; empty for the null sender
  std::optional<std::uint64_t> size;
  bool eight_bit_mime = false;
};
// The argument of MAIL: "FROM:<address>" and SIZE=, BODY=7BIT|8BITMIME.
BasicResult<MailFrom, SyntaxError> parse_mail_from(std::string_view argument);
// The argument of RCPT: "TO:<address>", no parameters; never empty.
BasicResult<std::string, SyntaxError> parse_rcpt_to(std::string_view argument);

// What an MTA in front of the proxy says of the client it served, in
// Postfix's XFORWARD command (XFORWARD_README): NAME, ADDR, PORT, PROTO,
// HELO, IDENT (its queue id) and SOURCE (LOCAL or REMOTE), each xtext
// (RFC 3461) decoded. An attribute not sent stays unset; one sent as
// [UNAVAILABLE] or [TEMPUNAVAIL] is set and empty: unknown.
struct Xforward {
  std::optional<std::string> name, addr, port, proto, helo, ident, source;
};
// Each attribute's name, and where it is kept.
inline constexpr std::array<std::pair<std::string_view, std::optional<std::string> Xforward::*>, 7> xforward_attributes{{
    {"NAME", &Xforward::name}, {"ADDR", &Xforward::addr}, {"PORT", &Xforward::port}, {"PROTO", &Xforward::proto},
    {"HELO", &Xforward::helo}, {"IDENT", &Xforward::ident}, {"SOURCE", &Xforward::source},
}};
// The argument of XFORWARD: one or more NAME=value, each attribute at most
// once, values of printable ASCII once decoded.
BasicResult<Xforward, SyntaxError> parse_xforward(std::string_view argument);
// What a proxy in front of this one says of the client it serves, in
// Postfix's XCLIENT command (XCLIENT_README): the session goes on as if
// that client had connected. NAME, REVERSE_NAME, ADDR, PORT, PROTO, HELO,
// LOGIN (its SMTP AUTH login), DESTADDR and DESTPORT, read as XFORWARD's
// attributes are.
struct Xclient {
  std::optional<std::string> name, reverse_name, addr, port, proto, helo, login, destaddr, destport;
};
inline constexpr std::array<std::pair<std::string_view, std::optional<std::string> Xclient::*>, 9> xclient_attributes{{
    {"NAME", &Xclient::name}, {"REVERSE_NAME", &Xclient::reverse_name}, {"ADDR", &Xclient::addr},
    {"PORT", &Xclient::port}, {"PROTO", &Xclient::proto}, {"HELO", &Xclient::helo}, {"LOGIN", &Xclient::login},
    {"DESTADDR", &Xclient::destaddr}, {"DESTPORT", &Xclient::destport},
}};
BasicResult<Xclient, SyntaxError> parse_xclient(std::string_view argument);
// What `later` says, over what `earlier` said.
void merge(Xforward& earlier, const Xforward& later);
void merge(Xclient& earlier, const Xclient& later);
// XFORWARD commands (without CRLF, each within max_command_line) that say
// the attributes of `client` the next hop named in its EHLO `offered`
// ("NAME ADDR PROTO HELO"); an empty one as [UNAVAILABLE].
std::vector<std::string> xforward_commands(const Xforward& client, std::string_view offered);

// The message of one DATA command, dot-unstuffed, in CRLF form, up to the
// line that holds only a dot.
class DataReader {
 public:
  struct Next {
    enum class Kind {
      need_more,  // everything given was read; `content` has what it held
      done,       // the end of data was read; what follows it is the client's next command
      bare_lf,    // an LF without CR: the end of data is ambiguous (SMTP smuggling); give up the session
    };
    Kind kind = Kind::need_more;
    std::size_t consumed = 0;
  };
  // Reads `input`, appending the message's bytes to `content`.
  Next next(std::string_view input, std::string& content);
  // Whether a line over max_text_line was seen (its bytes are kept).
  [[nodiscard]] bool line_too_long() const noexcept { return line_too_long_; }

 private:
  std::size_t line_length_ = 0;  // of the line being read, so far, with its CRLF
  bool at_line_start_ = true;
  bool dot_pending_ = false;     // a dot began the line: stuffing, or the end
  bool dot_cr_pending_ = false;  // the line so far is ".\r"
  bool pending_cr_ = false;      // the last byte read was a CR, not yet written
  bool line_too_long_ = false;
};

// `message` (CRLF lines) as DATA sends it: dot-stuffed, ending in CRLF,
// without the final ".". `at_line_start`: the last chunk ended a line.
std::string dot_stuff(std::string_view chunk, bool& at_line_start);

}  // namespace mailkms::proxy
