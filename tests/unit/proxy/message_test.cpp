// The message between DATA and the next hop: header fields read as an MTA
// hands them to a milter, the spool the gateway reads, the size limit, and
// the gateway's Outcome applied in the milter's order.
#include <catch2/catch.hpp>

#include <string>

#include "message.hpp"

using namespace mailkms;
using namespace mailkms::proxy;
using gateway::HeaderEdit;

namespace {

std::string text_of(const smime::Spool& spool) {
  auto text = spool.to_string();
  REQUIRE(text);
  return *text;
}

MessageIntake intake_with_limit(std::size_t limit) {
  return MessageIntake({}, [limit](const std::vector<smime::HeaderField>&) { return limit; });
}

}  // namespace

TEST_CASE("The header is read field by field, folding kept, whatever the chunks") {
  const std::string sent = "Subject: a\r\n folded\r\nFrom: x@y\r\n\r\nbody\r\n.line\r\n";
  auto intake = intake_with_limit(0);
  for (const char c : sent) intake.add(std::string_view(&c, 1));
  intake.finish();
  REQUIRE(intake.trouble() == MessageIntake::Trouble::none);
  REQUIRE(intake.headers().size() == 2);
  CHECK(intake.headers()[0].name == "Subject");
  CHECK(intake.headers()[0].value == " a\r\n folded");
  CHECK(intake.headers()[1].value == " x@y");
  CHECK(text_of(intake.spool()) == sent);
  CHECK(text_of(intake.spool()).substr(intake.body_offset()) == "body\r\n.line\r\n");
}

TEST_CASE("A line that is no header field starts the body, as an MTA reads it") {
  auto intake = intake_with_limit(0);
  intake.add("From: x@y\r\nnot a field\r\nmore\r\n");
  intake.finish();
  REQUIRE(intake.headers().size() == 1);
  CHECK(text_of(intake.spool()) == "From: x@y\r\n\r\nnot a field\r\nmore\r\n");

  auto headers_only = intake_with_limit(0);
  headers_only.add("From: x@y\r\n");
  headers_only.finish();
  CHECK(text_of(headers_only.spool()) == "From: x@y\r\n\r\n");
}

TEST_CASE("Past the gateway's size limit nothing more is kept, and the message is too big") {
  auto intake = intake_with_limit(100);
  intake.add("Subject: s\r\n\r\n");
  intake.add(std::string(80, 'a') + "\r\n");
  CHECK(intake.trouble() == MessageIntake::Trouble::none);
  intake.add(std::string(80, 'b') + "\r\n");
  intake.finish();
  CHECK(intake.trouble() == MessageIntake::Trouble::too_big);
}

TEST_CASE("The Outcome's edits apply in the milter's order: changes, removals, then new fields at top and bottom") {
  auto intake = intake_with_limit(0);
  intake.add("Received: r1\r\nSubject: [secure] Figures\r\nContent-Type: text/plain\r\nReceived: r2\r\n\r\nold body\r\n");
  intake.finish();
  gateway::Outcome outcome;
  outcome.header_edits = {
      {HeaderEdit::Kind::change, "subject", "Figures", 1},
      {HeaderEdit::Kind::remove, "Received", {}, 2},
      {HeaderEdit::Kind::remove, "Content-Type", {}, 1},
      {HeaderEdit::Kind::append, "Content-Type", "application/pkcs7-mime", 0},
      {HeaderEdit::Kind::prepend, "Authentication-Results", "mx; smime=none", 0},
      {HeaderEdit::Kind::prepend, "X-Top", "1", 0},
  };
  outcome.message = smime::Spool::from("Content-Type: x\r\n\r\nnew body\r\n");
  outcome.body_offset = 19;
  auto out = outgoing_message(intake.headers(), outcome, intake.spool(), intake.body_offset(), {});
  REQUIRE(out);
  CHECK(text_of(*out) ==
        "X-Top: 1\r\nAuthentication-Results: mx; smime=none\r\nReceived: r1\r\nSubject: Figures\r\n"
        "Content-Type: application/pkcs7-mime\r\n\r\nnew body\r\n");

  gateway::Outcome unchanged;
  auto same = outgoing_message(intake.headers(), unchanged, intake.spool(), intake.body_offset(), {});
  REQUIRE(same);
  CHECK(text_of(*same) == text_of(intake.spool()));
}
