#include "smtp_parser.hpp"

#include <algorithm>
#include <array>
#include <utility>

namespace mailkms::proxy {
namespace {

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return lower(x) == lower(y); });
}

bool istarts_with(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() && iequals(text.substr(0, prefix.size()), prefix);
}

std::string_view trim_spaces(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

SyntaxError syntax(std::string text) { return {"501", "5.5.4", std::move(text)}; }

// "<address>" at the start of `text` after `keyword` ("FROM:"); the rest
// (parameters) is returned in `rest`. The address is what the next hop and
// the policy see: printable ASCII only (no SMTPUTF8), no brackets inside.
BasicResult<std::string, SyntaxError> bracketed_path(std::string_view text, std::string_view keyword,
                                                     std::string_view& rest) {
  if (!istarts_with(text, keyword)) return syntax("Syntax: expected " + std::string(keyword) + "<address>");
  text = trim_spaces(text.substr(keyword.size()));
  if (text.empty() || text.front() != '<') return syntax("Syntax: the address must be in <>");
  const auto close = text.find('>');
  if (close == std::string_view::npos) return syntax("Syntax: no closing > after the address");
  std::string_view address = text.substr(1, close - 1);
  // A source route (RFC 5321 4.1.2, "@a,@b:user@c") is ignored, as RFC 5321 C allows.
  if (address.starts_with('@')) {
    const auto colon = address.find(':');
    if (colon == std::string_view::npos) return syntax("Syntax: a source route without its mailbox");
    address = address.substr(colon + 1);
  }
  const bool printable = std::all_of(address.begin(), address.end(), [](unsigned char c) {
    return c > 32 && c < 127 && c != '<' && c != '>';
  });
  if (!printable) return SyntaxError{"553", "5.1.7", "The address must be printable ASCII without spaces"};
  rest = text.substr(close + 1);
  if (!rest.empty() && rest.front() != ' ') return syntax("Syntax: a space must separate the address from its parameters");
  return std::string(address);
}

}  // namespace

CommandLines::Next CommandLines::next(std::string_view input) {
  const auto lf = input.find('\n');
  if (discarding_) {
    if (lf == std::string_view::npos) {
      if (!input.empty()) discarded_cr_ = input.back() == '\r';
      return {Next::Kind::need_more, {}, input.size()};
    }
    discarding_ = false;
    // A bare LF is named as such even after a line too long, wherever the
    // stream was cut: the CR may have come in an earlier piece.
    const bool crlf = lf == 0 ? discarded_cr_ : input[lf - 1] == '\r';
    return {crlf ? Next::Kind::too_long : Next::Kind::bare_lf, {}, lf + 1};
  }
  if (lf == std::string_view::npos) {
    // Nothing of a line already too long is kept: its end is looked for in what comes next.
    if (input.size() >= max_command_line) {
      discarding_ = true;
      discarded_cr_ = input.back() == '\r';
      return {Next::Kind::need_more, {}, input.size()};
    }
    return {};
  }
  if (lf == 0 || input[lf - 1] != '\r') return {Next::Kind::bare_lf, {}, lf + 1};
  if (lf + 1 > max_command_line) return {Next::Kind::too_long, {}, lf + 1};
  return {Next::Kind::line, std::string(input.substr(0, lf - 1)), lf + 1};
}

Command parse_command(std::string_view line) {
  static constexpr std::array<std::pair<std::string_view, Verb>, 13> verbs{{
      {"HELO", Verb::helo}, {"EHLO", Verb::ehlo}, {"MAIL", Verb::mail}, {"RCPT", Verb::rcpt}, {"DATA", Verb::data},
      {"RSET", Verb::rset}, {"NOOP", Verb::noop}, {"QUIT", Verb::quit}, {"VRFY", Verb::vrfy}, {"HELP", Verb::help},
      {"XFORWARD", Verb::xforward}, {"XCLIENT", Verb::xclient}, {"STARTTLS", Verb::starttls},
  }};
  const auto space = line.find(' ');
  const std::string_view word = line.substr(0, space);
  Command command;
  if (space != std::string_view::npos) command.argument = std::string(line.substr(space + 1));
  for (const auto& [name, verb] : verbs) {
    if (iequals(word, name)) command.verb = verb;
  }
  return command;
}

BasicResult<MailFrom, SyntaxError> parse_mail_from(std::string_view argument) {
  std::string_view rest;
  auto address = bracketed_path(argument, "FROM:", rest);
  if (!address) return std::move(address).error();
  MailFrom mail;
  mail.address = std::move(*address);
  bool body_seen = false;
  while (!(rest = trim_spaces(rest)).empty()) {
    const auto space = rest.find(' ');
    const std::string_view parameter = rest.substr(0, space);
    rest = space == std::string_view::npos ? std::string_view() : rest.substr(space);
    const auto equals = parameter.find('=');
    const std::string_view key = parameter.substr(0, equals);
    const std::string_view value = equals == std::string_view::npos ? std::string_view() : parameter.substr(equals + 1);
    if (iequals(key, "SIZE")) {
      // At most 19 digits: no value overflows, and none that large is a real message.
      if (mail.size || value.empty() || value.size() > 19 ||
          !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        return syntax("Syntax: SIZE=<digits>, once");
      }
      mail.size = std::stoull(std::string(value));
    } else if (iequals(key, "BODY")) {
      if (body_seen || !(iequals(value, "7BIT") || iequals(value, "8BITMIME"))) {
        return syntax("Syntax: BODY=7BIT or BODY=8BITMIME, once");
      }
      body_seen = true;
      mail.eight_bit_mime = iequals(value, "8BITMIME");
    } else {
      return SyntaxError{"555", "5.5.4", "Unsupported MAIL parameter " + std::string(key.substr(0, 32))};
    }
  }
  return mail;
}

BasicResult<std::string, SyntaxError> parse_rcpt_to(std::string_view argument) {
  std::string_view rest;
  auto address = bracketed_path(argument, "TO:", rest);
  if (!address) return std::move(address).error();
  if (!trim_spaces(rest).empty()) return SyntaxError{"555", "5.5.4", "RCPT parameters are not supported"};
  if (address->empty()) return SyntaxError{"501", "5.1.3", "A recipient address is required"};
  return address;
}

namespace {

// RFC 3461 4: "+" and two upper-case hex digits stand for a byte; every
// other byte is itself, from "!" to "~" but "+" and "=".
std::optional<std::string> xtext_decode(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c < '!' || c > '~' || c == '=') return std::nullopt;
    if (c != '+') {
      out += c;
      continue;
    }
    const auto hex = [](char h) { return (h >= '0' && h <= '9') ? h - '0' : (h >= 'A' && h <= 'F') ? h - 'A' + 10 : -1; };
    if (i + 2 >= text.size()) return std::nullopt;
    const int high = hex(text[i + 1]);
    const int low = hex(text[i + 2]);
    if (high < 0 || low < 0) return std::nullopt;
    out += static_cast<char>(high * 16 + low);
    i += 2;
  }
  return out;
}

// The NAME=value pairs of XFORWARD or XCLIENT (`verb`), each kept where
// the table `attributes` says.
template <class Attributes, class Fields>
BasicResult<Fields, SyntaxError> parse_attributes(std::string_view argument, const Attributes& attributes,
                                                  std::string_view verb) {
  Fields fields;
  const std::string said(verb);
  std::string_view rest = trim_spaces(argument);
  if (rest.empty()) return SyntaxError{"501", "5.5.4", "Syntax: " + said + " attribute=value..."};
  while (!(rest = trim_spaces(rest)).empty()) {
    const auto space = rest.find(' ');
    const std::string_view pair = rest.substr(0, space);
    rest = space == std::string_view::npos ? std::string_view() : rest.substr(space);
    const auto equals = pair.find('=');
    const std::string_view key = pair.substr(0, equals);
    const auto found = std::find_if(attributes.begin(), attributes.end(), [&](const auto& a) { return iequals(key, a.first); });
    if (equals == std::string_view::npos || found == attributes.end()) {
      return SyntaxError{"501", "5.5.4", "Bad " + said + " attribute name: " + std::string(key.substr(0, 32))};
    }
    auto value = xtext_decode(pair.substr(equals + 1));
    if (!value || value->empty() ||
        !std::all_of(value->begin(), value->end(), [](char c) { return c >= ' ' && c <= '~'; })) {
      return SyntaxError{"501", "5.5.4", "Bad " + said + " attribute value for " + std::string(found->first)};
    }
    auto& field = fields.*(found->second);
    if (field) return SyntaxError{"501", "5.5.4", "Duplicate " + said + " attribute " + std::string(found->first)};
    field = (*value == "[UNAVAILABLE]" || *value == "[TEMPUNAVAIL]") ? std::string() : std::move(*value);
  }
  return fields;
}

}  // namespace

BasicResult<Xforward, SyntaxError> parse_xforward(std::string_view argument) {
  return parse_attributes<decltype(xforward_attributes), Xforward>(argument, xforward_attributes, "XFORWARD");
}

BasicResult<Xclient, SyntaxError> parse_xclient(std::string_view argument) {
  return parse_attributes<decltype(xclient_attributes), Xclient>(argument, xclient_attributes, "XCLIENT");
}

void merge(Xforward& earlier, const Xforward& later) {
  for (const auto& [name, field] : xforward_attributes) {
    if (later.*field) earlier.*field = later.*field;
  }
}

void merge(Xclient& earlier, const Xclient& later) {
  for (const auto& [name, field] : xclient_attributes) {
    if (later.*field) earlier.*field = later.*field;
  }
}

std::vector<std::string> xforward_commands(const Xforward& client, std::string_view offered) {
  std::vector<std::string> commands;
  std::string command;
  for (const auto& [name, field] : xforward_attributes) {
    const auto& value = client.*field;
    if (!value) continue;
    bool named = false;
    for (std::string_view rest = offered; !rest.empty() && !named;) {
      const auto space = rest.find(' ');
      named = iequals(rest.substr(0, space), name);
      rest = space == std::string_view::npos ? std::string_view() : rest.substr(space + 1);
    }
    if (!named) continue;
    std::string pair = std::string(name) + "=";
    if (value->empty()) {
      pair += "[UNAVAILABLE]";
    } else {
      // RFC 3461 xtext, cut to 255 octets encoded: any one attribute fits a command line.
      const std::size_t limit = pair.size() + 255;
      for (const char c : *value) {
        std::string encoded(1, c);
        if (c < '!' || c > '~' || c == '+' || c == '=') {
          static constexpr char hex[] = "0123456789ABCDEF";
          const auto byte = static_cast<unsigned char>(c);
          encoded = {'+', hex[byte >> 4], hex[byte & 15]};
        }
        if (pair.size() + encoded.size() > limit) break;
        pair += encoded;
      }
    }
    if (!command.empty() && command.size() + 1 + pair.size() + 2 > max_command_line) {
      commands.push_back(std::move(command));
      command.clear();
    }
    command += (command.empty() ? "XFORWARD " : " ") + pair;
  }
  if (!command.empty()) commands.push_back(std::move(command));
  return commands;
}

DataReader::Next DataReader::next(std::string_view input, std::string& content) {
  // Each state's byte is examined once; states survive between calls, so a
  // chunk may end anywhere (in a CRLF, after a leading dot).
  for (std::size_t i = 0; i < input.size(); ++i) {
    const char c = input[i];
    if (++line_length_ > max_text_line) line_too_long_ = true;
    if (dot_cr_pending_) {
      dot_cr_pending_ = false;
      if (c == '\n') return {Next::Kind::done, i + 1};
      content += '\r';  // ".\r" and more: a bare CR in the line, its dot unstuffed
    } else if (dot_pending_) {
      dot_pending_ = false;
      if (c == '\r') {
        dot_cr_pending_ = true;
        continue;
      }
      if (c == '\n') return {Next::Kind::bare_lf, i + 1};
      // Any other byte: the leading dot was stuffing (RFC 5321 4.5.2), dropped.
    } else if (at_line_start_ && c == '.') {
      dot_pending_ = true;
      at_line_start_ = false;
      continue;
    }
    at_line_start_ = false;
    if (c == '\n') {
      if (!pending_cr_) return {Next::Kind::bare_lf, i + 1};
      pending_cr_ = false;
      content += "\r\n";
      at_line_start_ = true;
      line_length_ = 0;
      continue;
    }
    if (pending_cr_) content += '\r';  // a CR not before LF is text
    pending_cr_ = c == '\r';
    if (!pending_cr_) content += c;
  }
  return {Next::Kind::need_more, input.size()};
}

std::string dot_stuff(std::string_view chunk, bool& at_line_start) {
  std::string out;
  out.reserve(chunk.size() + chunk.size() / 64 + 2);
  for (const char c : chunk) {
    if (at_line_start && c == '.') out += '.';
    out += c;
    at_line_start = c == '\n';
  }
  return out;
}

}  // namespace mailkms::proxy
