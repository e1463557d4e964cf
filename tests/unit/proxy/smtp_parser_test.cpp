// The proxy's SMTP parser over bytes: command lines and their limit, the
// commands' parameters, and DATA cut at any byte, dot-unstuffed, refusing
// bare LF (the end of data would be ambiguous: SMTP smuggling).
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "smtp_parser.hpp"

using namespace mailkms::proxy;
using Kind = CommandLines::Next::Kind;
using DataKind = DataReader::Next::Kind;

namespace {

// Every complete line of `input`, as the session reads them.
std::vector<CommandLines::Next> lines_of(std::string_view input) {
  CommandLines lines;
  std::vector<CommandLines::Next> found;
  for (;;) {
    auto next = lines.next(input);
    input.remove_prefix(next.consumed);
    if (next.kind == Kind::need_more && next.consumed == 0) break;
    if (next.kind != Kind::need_more) found.push_back(std::move(next));
  }
  return found;
}

// DATA fed in chunks of `step` bytes: the content and what ended it.
struct DataRead {
  std::string content;
  DataKind kind = DataKind::need_more;
  std::string after;  // what the client sent after the end of data
  bool too_long = false;
};

DataRead read_data(std::string_view input, std::size_t step) {
  DataReader reader;
  DataRead read;
  while (!input.empty()) {
    const auto chunk = input.substr(0, step);
    const auto next = reader.next(chunk, read.content);
    input.remove_prefix(next.consumed);
    if (next.kind != DataKind::need_more) {
      read.kind = next.kind;
      read.after = std::string(input);
      break;
    }
  }
  read.too_long = reader.line_too_long();
  return read;
}

}  // namespace

TEST_CASE("Pipelined command lines come out one by one, without their CRLF") {
  const auto found = lines_of("EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nNOOP");
  REQUIRE(found.size() == 4);
  CHECK(found[0].line == "EHLO a");
  CHECK(found[3].line == "DATA");
}

TEST_CASE("A command line over 512 octets is refused up to its CRLF, and the next line is read") {
  const std::string long_line(1 << 20, 'x');
  CommandLines lines;
  std::string_view input = long_line;
  // Fed in pieces, as a socket gives it: nothing of it is kept.
  while (!input.empty()) {
    const auto piece = input.substr(0, 4096);
    const auto next = lines.next(piece);
    CHECK(next.kind == Kind::need_more);
    CHECK(next.consumed == piece.size());
    input.remove_prefix(next.consumed);
  }
  auto end = lines.next("xx\r\nNOOP\r\n");
  CHECK(end.kind == Kind::too_long);
  CHECK(end.consumed == 4);
  auto noop = lines.next("NOOP\r\n");
  CHECK(noop.kind == Kind::line);
  CHECK(noop.line == "NOOP");

  const std::string exactly_512 = std::string(510, 'a') + "\r\n";
  CHECK(lines_of(exactly_512).at(0).kind == Kind::line);
  const std::string just_over = std::string(511, 'a') + "\r\n";
  CHECK(lines_of(just_over).at(0).kind == Kind::too_long);
}

TEST_CASE("A bare LF ends no command line: it is named as such") {
  CHECK(lines_of("NOOP\n").at(0).kind == Kind::bare_lf);
  CHECK(lines_of("\n").at(0).kind == Kind::bare_lf);
}

TEST_CASE("A line too long that ends in a bare LF reads the same whether it came at once or in pieces") {
  // Where TCP cuts the stream is the client's choice; found by fuzz_smtp_session.
  for (const std::string end : {"\n", "\r\n"}) {
    const std::string line = std::string(600, 'a') + end;
    const Kind expected = end == "\n" ? Kind::bare_lf : Kind::too_long;
    CHECK(lines_of(line).at(0).kind == expected);
    for (const std::size_t cut : {std::size_t{512}, std::size_t{599}, line.size() - 1}) {
      CommandLines lines;
      const auto first = lines.next(std::string_view(line).substr(0, cut));
      CHECK(first.kind == Kind::need_more);
      CHECK(first.consumed == cut);
      CHECK(lines.next(std::string_view(line).substr(cut)).kind == expected);
    }
  }
}

TEST_CASE("Verbs are read without regard to case, unknown ones are unknown") {
  CHECK(parse_command("ehlo client.example").verb == Verb::ehlo);
  CHECK(parse_command("ehlo client.example").argument == "client.example");
  CHECK(parse_command("MaIl FROM:<a@b>").verb == Verb::mail);
  CHECK(parse_command("QUIT").verb == Verb::quit);
  CHECK(parse_command("StartTLS").verb == Verb::starttls);
  CHECK(parse_command("AUTH PLAIN AGFsaWNlAHNlY3JldA==").verb == Verb::unknown);
  CHECK(parse_command("").verb == Verb::unknown);
  CHECK(parse_command("DATAX").verb == Verb::unknown);
}

TEST_CASE("MAIL FROM takes the address, SIZE and BODY") {
  auto mail = parse_mail_from("FROM:<alice@example.org> SIZE=12345 BODY=8BITMIME");
  REQUIRE(mail);
  CHECK(mail->address == "alice@example.org");
  CHECK(mail->size == 12345u);
  CHECK(mail->eight_bit_mime);

  auto null_sender = parse_mail_from("from:<>");
  REQUIRE(null_sender);
  CHECK(null_sender->address.empty());
  CHECK(!null_sender->size);

  auto routed = parse_mail_from("FROM:<@relay.example:bob@example.org>");
  REQUIRE(routed);
  CHECK(routed->address == "bob@example.org");

  auto spaced = parse_mail_from("FROM: <bob@example.org>");
  REQUIRE(spaced);
  CHECK(spaced->address == "bob@example.org");
}

TEST_CASE("MAIL FROM refuses what it does not understand, with the reply for it") {
  CHECK(parse_mail_from("FROM:alice@example.org").error().code == "501");
  CHECK(parse_mail_from("TO:<a@b>").error().code == "501");
  CHECK(parse_mail_from("FROM:<a@b").error().code == "501");
  CHECK(parse_mail_from("FROM:<a@b>SIZE=1").error().code == "501");
  CHECK(parse_mail_from("FROM:<a@b> SIZE=").error().code == "501");
  CHECK(parse_mail_from("FROM:<a@b> SIZE=99999999999999999999").error().code == "501");
  CHECK(parse_mail_from("FROM:<a@b> SIZE=1 SIZE=2").error().code == "501");
  CHECK(parse_mail_from("FROM:<a@b> BODY=BINARYMIME").error().code == "501");
  const auto unknown = parse_mail_from("FROM:<a@b> SMTPUTF8");
  CHECK(unknown.error().code == "555");
  CHECK(unknown.error().enhanced == "5.5.4");
  CHECK(parse_mail_from("FROM:<a b@c>").error().code == "553");
  CHECK(parse_mail_from("FROM:<\xc3\xa9@c>").error().code == "553");
}

TEST_CASE("RCPT TO takes one address, no parameters") {
  auto rcpt = parse_rcpt_to("TO:<bob@example.org>");
  REQUIRE(rcpt);
  CHECK(*rcpt == "bob@example.org");
  CHECK(*parse_rcpt_to("to:<postmaster>") == "postmaster");
  CHECK(parse_rcpt_to("TO:<>").error().enhanced == "5.1.3");
  CHECK(parse_rcpt_to("TO:<a@b> NOTIFY=NEVER").error().code == "555");
  CHECK(parse_rcpt_to("FROM:<a@b>").error().code == "501");
}

TEST_CASE("DATA is dot-unstuffed and ends at a line holding only a dot, cut at any byte") {
  const std::string sent = "Subject: x\r\n\r\n..leading dot\r\n.\r\n...\r\nlast\r\n.\r\nQUIT\r\n";
  for (const std::size_t step : {std::size_t{1}, std::size_t{2}, std::size_t{3}, std::size_t{7}, std::size_t{4096}}) {
    INFO("chunks of " << step);
    const auto read = read_data(sent, step);
    CHECK(read.kind == DataKind::done);
    CHECK(read.content == "Subject: x\r\n\r\n.leading dot\r\n");
    CHECK(read.after == "...\r\nlast\r\n.\r\nQUIT\r\n");
  }
  const auto stuffed = read_data("..\r\n...\r\n.x\r\n.\r\n", 1);
  CHECK(stuffed.content == ".\r\n..\r\nx\r\n");
  CHECK(read_data(".\r\n", 1).content.empty());
}

TEST_CASE("A CR not before an LF is text, an LF not after a CR gives the session up") {
  const auto cr = read_data("a\rb\r\n.\rc\r\n.\r\n", 1);
  CHECK(cr.kind == DataKind::done);
  CHECK(cr.content == "a\rb\r\n\rc\r\n");
  // The smuggling forms: "\n.\r\n", "\r\n.\n", "\n.\n".
  for (const std::string smuggled : {"a\n.\r\nMAIL FROM:<x@y>\r\n", "a\r\n.\nMAIL", "a\n.\nMAIL", "a\r\n\n"}) {
    INFO(smuggled);
    CHECK(read_data(smuggled, 1).kind == DataKind::bare_lf);
    CHECK(read_data(smuggled, 4096).kind == DataKind::bare_lf);
  }
}

TEST_CASE("A text line over 1000 octets is noticed, and the end of data still found") {
  const std::string line_1000 = std::string(998, 'a') + "\r\n";
  CHECK(!read_data(line_1000 + ".\r\n", 100).too_long);
  const std::string line_1001 = std::string(999, 'a') + "\r\n";
  const auto read = read_data(line_1001 + ".\r\nQUIT\r\n", 100);
  CHECK(read.too_long);
  CHECK(read.kind == DataKind::done);
  CHECK(read.after == "QUIT\r\n");
}

TEST_CASE("A message is dot-stuffed for the next hop across chunk boundaries") {
  bool at_line_start = true;
  std::string out = dot_stuff(".a\r\n", at_line_start);
  out += dot_stuff("b\r", at_line_start);
  out += dot_stuff("\n", at_line_start);
  out += dot_stuff(".", at_line_start);
  out += dot_stuff(".\r\n", at_line_start);
  CHECK(out == "..a\r\nb\r\n...\r\n");
  // Read back, it is what was stuffed.
  CHECK(read_data(out + ".\r\n", 3).content == ".a\r\nb\r\n..\r\n");
}

TEST_CASE("XFORWARD attributes are read xtext-decoded, [UNAVAILABLE] as unknown, each once") {
  CHECK(parse_command("xforward ADDR=192.0.2.7").verb == Verb::xforward);
  auto read = parse_xforward("NAME=mail.example.net ADDR=192.0.2.7 PORT=4711 PROTO=ESMTP HELO=[UNAVAILABLE] "
                             "IDENT=4XyZ12 SOURCE=REMOTE");
  REQUIRE(read);
  CHECK(read->name == "mail.example.net");
  CHECK(read->addr == "192.0.2.7");
  CHECK(read->port == "4711");
  CHECK(read->proto == "ESMTP");
  CHECK(read->helo == "");  // sent, and unknown
  CHECK(read->ident == "4XyZ12");
  CHECK(read->source == "REMOTE");

  read = parse_xforward("addr=IPv6:2001:db8::7 helo=a+2Bb+3Dc");
  REQUIRE(read);
  CHECK(read->addr == "IPv6:2001:db8::7");
  CHECK(read->helo == "a+b=c");
  CHECK(!read->name);  // not sent: stays as it was

  // Later attributes replace earlier ones; unsent ones stay.
  Xforward forwarded = *parse_xforward("ADDR=192.0.2.7 IDENT=A1");
  merge(forwarded, *parse_xforward("ADDR=[TEMPUNAVAIL]"));
  CHECK(forwarded.addr == "");
  CHECK(forwarded.ident == "A1");
}

TEST_CASE("A bad XFORWARD is refused with 501 and the attribute named") {
  const auto refused = [](std::string_view argument) {
    const auto read = parse_xforward(argument);
    REQUIRE(!read);
    CHECK(read.error().code == "501");
    return read.error().text;
  };
  CHECK(refused("") == "Syntax: XFORWARD attribute=value...");
  CHECK(refused("LOGIN=alice") == "Bad XFORWARD attribute name: LOGIN");
  CHECK(refused("ADDR") == "Bad XFORWARD attribute name: ADDR");
  CHECK(refused("ADDR=") == "Bad XFORWARD attribute value for ADDR");
  CHECK(refused("ADDR=1.2.3.4 ADDR=5.6.7.8") == "Duplicate XFORWARD attribute ADDR");
  CHECK(refused("NAME=a+0Db") == "Bad XFORWARD attribute value for NAME");   // a CR, decoded
  CHECK(refused("NAME=a+0") == "Bad XFORWARD attribute value for NAME");    // cut short
  CHECK(refused("NAME=a+zz") == "Bad XFORWARD attribute value for NAME");   // not hex
  CHECK(refused("NAME=a=b") == "Bad XFORWARD attribute value for NAME");    // "=" is not xtext
}

TEST_CASE("XCLIENT: its attributes, LOGIN among them, read as XFORWARD's are") {
  CHECK(parse_command("xclient LOGIN=alice").verb == Verb::xclient);
  auto read = parse_xclient("NAME=mail.example.net ADDR=IPv6:2001:db8::7 LOGIN=alice+40corp.example HELO=[UNAVAILABLE] "
                            "REVERSE_NAME=[TEMPUNAVAIL] DESTPORT=587");
  REQUIRE(read);
  CHECK(read->name == "mail.example.net");
  CHECK(read->addr == "IPv6:2001:db8::7");
  CHECK(read->login == "alice@corp.example");
  CHECK(read->helo == "");          // sent, and unknown
  CHECK(read->reverse_name == "");  // sent, and unknown
  CHECK(read->destport == "587");
  CHECK(!read->proto);  // not sent
  Xclient claimed = *read;
  merge(claimed, *parse_xclient("LOGIN=[UNAVAILABLE]"));  // no login any more
  CHECK(claimed.login == "");
  CHECK(claimed.addr == "IPv6:2001:db8::7");
  const auto refused = parse_xclient("IDENT=A1");  // XFORWARD's, not XCLIENT's
  REQUIRE(!refused);
  CHECK(refused.error().text == "Bad XCLIENT attribute name: IDENT");
  CHECK(parse_xclient("LOGIN=a LOGIN=b").error().text == "Duplicate XCLIENT attribute LOGIN");
  CHECK(parse_xclient("LOGIN=a+0Db").error().text == "Bad XCLIENT attribute value for LOGIN");  // a CR, decoded
  CHECK(parse_xclient(" ").error().text == "Syntax: XCLIENT attribute=value...");
}

TEST_CASE("XFORWARD to the next hop says only what it offers, xtext-encoded, in lines within the limit") {
  Xforward client;
  client.name = "";  // unknown
  client.addr = "192.0.2.7";
  client.helo = "a b+c=d";
  client.ident = "0000002A.1";
  client.source = "REMOTE";
  CHECK(xforward_commands(client, "NAME ADDR HELO IDENT") ==
        std::vector<std::string>{"XFORWARD NAME=[UNAVAILABLE] ADDR=192.0.2.7 HELO=a+20b+2Bc+3Dd IDENT=0000002A.1"});
  CHECK(xforward_commands(client, "addr").size() == 1);
  CHECK(xforward_commands(client, "").empty());
  // What the proxy sends reads back as what it meant.
  const auto sent = xforward_commands(client, "NAME ADDR HELO IDENT SOURCE");
  REQUIRE(sent.size() == 1);
  const auto read = parse_xforward(parse_command(sent[0]).argument);
  REQUIRE(read);
  CHECK(read->helo == "a b+c=d");
  CHECK(read->name == "");
  CHECK(read->source == "REMOTE");
  // Long values go in several commands, each a command line Postfix takes.
  client.name = std::string(250, 'n');
  client.helo = std::string(250, '+');
  const auto long_ones = xforward_commands(client, "NAME ADDR HELO IDENT SOURCE");
  CHECK(long_ones.size() >= 2);
  for (const auto& command : long_ones) CHECK(command.size() + 2 <= max_command_line);
}
