// What an SMTP client sends the proxy: command lines cut at CRLF, commands
// and their MAIL/RCPT parameters, and DATA read up to its end, driven the
// way a session drives them. The same bytes must read the same whether
// they arrive at once or in small pieces (where TCP cuts a stream is the
// client's choice, and a reading that depends on it is how SMTP smuggling
// starts), and what DATA yields must survive being sent on: stuffed again
// for the next hop, it reads back as itself.
#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include "fuzz_support.hpp"
#include "smtp_parser.hpp"

using namespace mailkms;
using namespace mailkms::proxy;

namespace {

// Every '\n' in `content` ends a CRLF.
bool only_crlf(std::string_view content) {
  for (std::size_t i = 0; i < content.size(); ++i) {
    if (content[i] == '\n' && (i == 0 || content[i - 1] != '\r')) return false;
  }
  return true;
}

template <class Fields, class Attributes>
void check_attributes(const Fields& fields, const Attributes& attributes, const std::string& verb) {
  for (const auto& [name, field] : attributes) {
    const auto& value = fields.*field;
    if (value && std::any_of(value->begin(), value->end(), [](char c) { return c < ' ' || c > '~'; })) {
      fuzz::violated(verb + " took a value with a control or non-ASCII byte: " + *value);
    }
  }
}

void check_command(const std::string& line) {
  if (line.size() + 2 > max_command_line || line.find('\n') != std::string::npos) {
    fuzz::violated("a command line over the limit or holding an LF: " + line);
  }
  const Command command = parse_command(line);
  if (command.verb == Verb::mail) {
    const auto mail = parse_mail_from(command.argument);
    if (mail && mail->address.find_first_of("<> \r\n") != std::string::npos) {
      fuzz::violated("MAIL FROM took an address with brackets or spaces: " + mail->address);
    }
  } else if (command.verb == Verb::rcpt) {
    const auto rcpt = parse_rcpt_to(command.argument);
    if (rcpt && (rcpt->empty() || rcpt->find_first_of("<> \r\n") != std::string::npos)) {
      fuzz::violated("RCPT TO took an empty address or one with brackets or spaces: " + *rcpt);
    }
  } else if (command.verb == Verb::xforward) {
    if (const auto forwarded = parse_xforward(command.argument)) check_attributes(*forwarded, xforward_attributes, "XFORWARD");
  } else if (command.verb == Verb::xclient) {
    if (const auto claimed = parse_xclient(command.argument)) check_attributes(*claimed, xclient_attributes, "XCLIENT");
  }
}

// A message DATA read, stuffed again as the proxy sends it on, reads back
// as itself, ending where the stuffed copy ends.
void check_resent(const std::string& content) {
  if (!only_crlf(content)) fuzz::violated("DATA yielded a bare LF");
  if (!content.empty() && !content.ends_with("\r\n")) fuzz::violated("DATA yielded a last line without CRLF");
  bool at_line_start = true;
  const std::string sent = dot_stuff(content, at_line_start) + ".\r\n";
  DataReader reader;
  std::string again;
  const auto next = reader.next(sent, again);
  if (next.kind != DataReader::Next::Kind::done || next.consumed != sent.size() || again != content) {
    fuzz::violated("a message stuffed for the next hop does not read back as itself");
  }
}

// Reads `input` in pieces of `piece` bytes (0: all at once) the way a
// session does, and returns what it read, one entry per event.
std::vector<std::string> read_session(std::string_view input, std::size_t piece) {
  std::vector<std::string> events;
  CommandLines lines;
  DataReader data;
  bool in_data = false;
  std::string buffer;
  std::string content;
  std::size_t given = 0;
  while (given < input.size()) {
    const std::size_t take = piece == 0 ? input.size() : std::min(piece, input.size() - given);
    buffer.append(input.substr(given, take));
    given += take;
    for (;;) {
      if (in_data) {
        const auto next = data.next(buffer, content);
        buffer.erase(0, next.consumed);
        if (next.kind == DataReader::Next::Kind::need_more) break;
        if (next.kind == DataReader::Next::Kind::bare_lf) {
          events.emplace_back("data: bare LF");  // the session ends here
          return events;
        }
        check_resent(content);
        events.push_back("data: " + content + (data.line_too_long() ? " (long line)" : ""));
        content.clear();
        data = DataReader();
        in_data = false;
        continue;
      }
      auto next = lines.next(buffer);
      buffer.erase(0, next.consumed);
      using Kind = CommandLines::Next::Kind;
      if (next.kind == Kind::need_more) break;
      if (next.kind == Kind::bare_lf) {
        events.emplace_back("command: bare LF");  // the session ends here
        return events;
      }
      if (next.kind == Kind::too_long) {
        events.emplace_back("command: too long");
        continue;
      }
      check_command(next.line);
      in_data = parse_command(next.line).verb == Verb::data;
      events.push_back("command: " + next.line);
    }
  }
  return events;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > std::size_t{64} * 1024) return 0;
  const std::string_view input = fuzz::as_text(data, size);
  const auto whole = read_session(input, 0);
  for (const std::size_t piece : std::array<std::size_t, 4>{1, 2, 7, 509}) {
    if (read_session(input, piece) != whole) {
      fuzz::violated("the same bytes read differently in pieces of " + std::to_string(piece));
    }
  }
  return 0;
}
