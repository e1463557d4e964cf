// The pipeline's readers and rewriters over spooled messages: exact field
// values and offsets, exact bytes out, and the same answers when the spool
// has moved to a file and is read in chunks.
#include <catch2/catch.hpp>

#include <string>

#include "message_text.hpp"
#include "test_support.hpp"

using namespace mailkms;
using namespace mailkms::gateway;
using smime::HeaderField;
using smime::Spool;
using test::must;

namespace {

// A spool that has moved to a file, read back in 64 KiB chunks.
Spool file_spool(const std::string& bytes) {
  Spool spool({.memory_limit = 4096});
  must(spool.append(bytes));
  REQUIRE_FALSE(spool.in_memory());
  return spool;
}

void check_field(const HeaderField& field, const std::string& name, const std::string& value) {
  CHECK(field.name == name);
  CHECK(field.value == value);
}

SmimeKind kind_of(const std::string& content_type) { return smime_kind({{"Content-Type", " " + content_type}}); }

constexpr std::size_t spool_chunk = std::size_t{64} * 1024;  // Spool's read size for files
constexpr std::size_t header_step = std::size_t{16} * 1024;  // read_header_section's read size

}  // namespace

// ---- read_header_section

TEST_CASE("header fields are read with their folding, the body starts after the empty line", "[message_text]") {
  const std::string message =
      "From: alice@example.org\r\n"
      "Subject: hello\r\n world\r\n\tagain\r\n"
      "Subject : spaced\r\n"
      "To:bob@example.org\r\n"
      "\r\n"
      "body line\r\n";
  const auto header = must(read_header_section(Spool::borrow(message)));
  REQUIRE(header.fields.size() == 4);
  check_field(header.fields[0], "From", " alice@example.org");
  check_field(header.fields[1], "Subject", " hello\r\n world\r\n\tagain");
  check_field(header.fields[2], "Subject", " spaced");
  check_field(header.fields[3], "To", "bob@example.org");
  CHECK(header.body_offset == message.find("body line"));
}

TEST_CASE("a message without a body has its body offset at its end", "[message_text]") {
  SECTION("no empty line") {
    const std::string message = "From: alice@example.org\r\nTo: bob@example.org\r\n";
    const auto header = must(read_header_section(Spool::borrow(message)));
    REQUIRE(header.fields.size() == 2);
    check_field(header.fields[1], "To", " bob@example.org");
    CHECK(header.body_offset == message.size());
  }
  SECTION("no line end after the last field") {
    const std::string message = "From: alice@example.org\r\nTo: bob@example.org";
    const auto header = must(read_header_section(Spool::borrow(message)));
    REQUIRE(header.fields.size() == 2);
    check_field(header.fields[1], "To", " bob@example.org");
    CHECK(header.body_offset == message.size());
  }
  SECTION("an empty line and nothing after it") {
    const std::string message = "From: alice@example.org\r\n\r\n";
    const auto header = must(read_header_section(Spool::borrow(message)));
    REQUIRE(header.fields.size() == 1);
    CHECK(header.body_offset == message.size());
  }
}

TEST_CASE("a message that starts with the empty line has no fields", "[message_text]") {
  const std::string message = "\r\nSubject: not a header\r\n";
  const auto header = must(read_header_section(Spool::borrow(message)));
  CHECK(header.fields.empty());
  CHECK(header.body_offset == 2);
}

TEST_CASE("the empty line is found across every read boundary", "[message_text]") {
  // Put the CRLF CRLF on each side of a header read boundary.
  const std::size_t at = GENERATE(header_step - 4, header_step - 3, header_step - 2, header_step - 1, header_step,
                                  header_step + 1);
  const std::string message = "X-Padding: " + std::string(at - 23, 'p') + "\r\nSubject: s\r\n\r\nbody\r\n";
  REQUIRE(message.find("\r\n\r\n") == at);
  const std::size_t body = message.find("body");
  for (const bool in_file : {false, true}) {
    const Spool spool = in_file ? file_spool(message) : Spool::from(message);
    const auto header = must(read_header_section(spool));
    REQUIRE(header.fields.size() == 2);
    check_field(header.fields[1], "Subject", " s");
    CHECK(header.body_offset == body);
  }
}

TEST_CASE("a header section bigger than the limit is refused", "[message_text]") {
  std::string header;
  for (int i = 0; header.size() < 300; ++i) header += "X-Field-" + std::to_string(i) + ": some value\r\n";
  SECTION("with a body") {
    const std::string message = header + "\r\nbody\r\n";
    const auto result = read_header_section(Spool::borrow(message), 100);
    REQUIRE_FALSE(result);
    CHECK(result.error().code == smime::Errc::limit_exceeded);
    CHECK(read_header_section(Spool::borrow(message), 1000));
  }
  SECTION("without a body") {
    const auto result = read_header_section(Spool::borrow(header), 100);
    REQUIRE_FALSE(result);
    CHECK(result.error().code == smime::Errc::limit_exceeded);
  }
  SECTION("at the default limit, from a file") {
    std::string big;
    while (big.size() < (2u << 20)) big += header;
    const auto result = read_header_section(file_spool(big + "\r\nbody\r\n"));
    REQUIRE_FALSE(result);
    CHECK(result.error().code == smime::Errc::limit_exceeded);
  }
}

TEST_CASE("a header line without a field name is malformed", "[message_text]") {
  const std::string message = GENERATE(as<std::string>{},  //
                                       "From: alice@example.org\r\nno colon here\r\n\r\nbody\r\n",
                                       "From: alice@example.org\r\n: no name\r\n\r\nbody\r\n",
                                       "no colon at all");
  const auto result = read_header_section(Spool::borrow(message));
  REQUIRE_FALSE(result);
  CHECK(result.error().code == smime::Errc::malformed_mime);
}

// ---- smime_kind

TEST_CASE("smime_kind reads the top-level Content-Type", "[message_text]") {
  CHECK(kind_of("multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"b\"") ==
        SmimeKind::signed_multipart);
  CHECK(kind_of("application/pkcs7-mime; smime-type=signed-data; name=smime.p7m") == SmimeKind::signed_opaque);
  CHECK(kind_of("application/pkcs7-mime; smime-type=\"signed-data\"") == SmimeKind::signed_opaque);
  CHECK(kind_of("application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m") == SmimeKind::encrypted);
  CHECK(kind_of("application/pkcs7-mime; smime-type=authEnveloped-data; name=smime.p7m") == SmimeKind::encrypted);
  CHECK(kind_of("application/pkcs7-mime; name=smime.p7m") == SmimeKind::encrypted);
  CHECK(kind_of("application/x-pkcs7-mime; smime-type=enveloped-data") == SmimeKind::encrypted);
  CHECK(kind_of("application/x-pkcs7-mime; smime-type=signed-data") == SmimeKind::signed_opaque);
  CHECK(kind_of("application/pkcs7-mime; smime-type=certs-only") == SmimeKind::none);
  CHECK(kind_of("Application/PKCS7-MIME; SMIME-Type=Enveloped-Data") == SmimeKind::encrypted);
  CHECK(kind_of("application/pkcs7-signature") == SmimeKind::none);
  CHECK(kind_of("text/plain; charset=utf-8") == SmimeKind::none);
  CHECK(kind_of("multipart/mixed; boundary=\"b\"") == SmimeKind::none);
}

TEST_CASE("smime_kind with the body: the CMS content type decides, not the label", "[message_text]") {
  // The first bytes of real ContentInfo structures, base64 as mail carries them.
  const auto kind = [](const std::string& type, const std::string& body, const std::string& encoding = "base64") {
    const std::string message = "Subject: x\r\nContent-Type: " + type + "\r\nContent-Transfer-Encoding: " + encoding +
                                "\r\n\r\n" + body;
    std::vector<HeaderField> headers{{"Subject", " x"}, {"Content-Type", " " + type}, {"Content-Transfer-Encoding", " " + encoding}};
    return smime_kind(headers, Spool::from(message));
  };
  const std::string p7m = "application/pkcs7-mime; name=smime.p7m";
  CHECK(kind(p7m + "; smime-type=enveloped-data", "MIAGCSqGSIb3DQEHA6CAMIA=\r\n") == SmimeKind::encrypted);
  CHECK(kind(p7m, "MIIBIwYJ\r\nKoZIhvcNAQcDoII=\r\n") == SmimeKind::encrypted);  // definite length, folded
  CHECK(kind(p7m + "; smime-type=authEnveloped-data", "MIAGCyqGSIb3DQEJEAEXoIA=") == SmimeKind::encrypted);
  CHECK(kind(p7m, "MIAGCSqGSIb3DQEHAqCAMIA=") == SmimeKind::signed_opaque);  // RFC 2311 style: no smime-type
  // Labelled as encrypted, but not: compressed data, or no CMS at all.
  CHECK(kind(p7m + "; smime-type=compressed-data", "MIAGCyqGSIb3DQEJEAEJoIA=") == SmimeKind::none);
  CHECK(kind(p7m, "MIAGCyqGSIb3DQEJEAEJoIA=") == SmimeKind::none);
  CHECK(kind(p7m + "; smime-type=enveloped-data", "VGhlIHBsYWluIHRydXRoLg==") == SmimeKind::none);
  CHECK(kind(p7m + "; smime-type=enveloped-data", "") == SmimeKind::none);
  CHECK(kind(p7m + "; smime-type=enveloped-data", "The plain truth.", "7bit") == SmimeKind::none);
  CHECK(kind(p7m + "; smime-type=enveloped-data", std::string("\x30\x80\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x03\xa0", 14),
             "binary") == SmimeKind::encrypted);
  // Other types are what their label says; the body is not read.
  CHECK(kind("multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=b", "") == SmimeKind::signed_multipart);
  CHECK(kind("text/plain", "MIAGCSqGSIb3DQEHA6CAMIA=") == SmimeKind::none);
}

TEST_CASE("smime_kind without a Content-Type is none, and other fields do not count", "[message_text]") {
  CHECK(smime_kind({}) == SmimeKind::none);
  CHECK(smime_kind({{"Subject", " application/pkcs7-mime"}, {"X-Content-Type", " multipart/signed"}}) ==
        SmimeKind::none);
  CHECK(smime_kind({{"From", " a@example.org"}, {"content-type", " application/pkcs7-mime;\r\n smime-type=signed-data"}}) ==
        SmimeKind::signed_opaque);
}

// ---- has_calendar

TEST_CASE("has_calendar finds an invitation at the top or in the MIME structure", "[message_text]") {
  SECTION("top level") {
    CHECK(has_calendar(Spool::from("Subject: meeting\r\nContent-Type: text/calendar; method=REQUEST\r\n\r\nBEGIN:VCALENDAR\r\n")));
  }
  SECTION("in a nested part, as Gmail sends it") {
    CHECK(has_calendar(Spool::from("Subject: meeting\r\n"
                                   "Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n"
                                   "--outer\r\nContent-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n"
                                   "--inner\r\nContent-Type: text/plain\r\n\r\nsee you\r\n"
                                   "--inner\r\nContent-Type: text/calendar; charset=utf-8; method=REQUEST\r\n\r\n"
                                   "BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n--inner--\r\n"
                                   "--outer\r\nContent-Type: application/ics; name=invite.ics\r\n\r\nQkVHSU4=\r\n"
                                   "--outer--\r\n")));
  }
  SECTION("odd spacing and case") {
    CHECK(has_calendar(Spool::from("Subject: x\r\ncontent-type:TEXT/Calendar;METHOD=cancel\r\n\r\nbody\r\n")));
    CHECK(has_calendar(Spool::from("Subject: x\r\nCONTENT-TYPE :\t text/calendar ;method=REPLY\r\n\r\nbody\r\n")));
    CHECK(has_calendar(Spool::from("Subject: x\nContent-Type: text/calendar; method=REQUEST\n\nbody\n")));
  }
  SECTION("a header section alone, without a line end") {
    CHECK(has_calendar(Spool::from("Subject: x\r\nContent-Type: text/calendar; method=PUBLISH")));
  }
  SECTION("folded") {
    CHECK(has_calendar(Spool::from("Subject: x\r\nContent-Type:\r\n text/calendar;\r\n\tmethod=REQUEST\r\n\r\nbody\r\n")));
    CHECK(has_calendar(Spool::from("Subject: x\nContent-Type:\n text/calendar; method=REQUEST")));
  }
}

TEST_CASE("has_calendar does not take a folded line for a value of another field", "[message_text]") {
  // A continuation line belongs to the field above it only.
  CHECK_FALSE(has_calendar(Spool::from("Subject: x\r\nContent-Type: text/plain\r\n text/calendar; method=REQUEST\r\n\r\n")));
  CHECK_FALSE(has_calendar(Spool::from("X-Note:\r\n text/calendar; method=REQUEST\r\nContent-Type: text/plain\r\n\r\n")));
  CHECK_FALSE(has_calendar(Spool::from("Content-Type:\r\n\r\n text/calendar; method=REQUEST\r\n")));
}

TEST_CASE("has_calendar ignores what only looks like an invitation", "[message_text]") {
  SECTION("lines that mention text/calendar") {
    CHECK_FALSE(has_calendar(Spool::from("Subject: text/calendar\r\nContent-Type: text/plain\r\n\r\n"
                                         "Open the text/calendar attachment.\r\n"
                                         "X-Content-Type: text/calendar; method=REQUEST\r\n"
                                         "Type: text/calendar\r\n")));
    CHECK_FALSE(has_calendar(Spool::from("")));
  }
  SECTION("a body quoting a part's header") {
    CHECK_FALSE(has_calendar(Spool::from("Subject: contract\r\nContent-Type: text/plain\r\n\r\n"
                                         "--b\r\nContent-Type: text/calendar; method=REQUEST\r\n\r\n")));
  }
  SECTION("an attached .ics file, which names no method") {
    CHECK_FALSE(has_calendar(Spool::from("Subject: dates\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
                                         "--b\r\nContent-Type: text/plain\r\n\r\nthe confidential dates\r\n"
                                         "--b\r\nContent-Type: text/calendar; name=dates.ics\r\n"
                                         "Content-Disposition: attachment\r\n\r\nBEGIN:VCALENDAR\r\n--b--\r\n")));
  }
  SECTION("an invitation inside an attached message") {
    CHECK_FALSE(has_calendar(Spool::from("Subject: Fwd: meeting\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
                                         "--b\r\nContent-Type: message/rfc822\r\n\r\n"
                                         "Subject: meeting\r\nContent-Type: text/calendar; method=REQUEST\r\n\r\n"
                                         "BEGIN:VCALENDAR\r\n--b--\r\n")));
  }
  SECTION("a part of a multipart already closed, or of a longer boundary") {
    CHECK_FALSE(has_calendar(Spool::from("Content-Type: multipart/mixed; boundary=b\r\n\r\n"
                                         "--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n"
                                         "--b\r\nContent-Type: text/calendar; method=REQUEST\r\n\r\n")));
    CHECK_FALSE(has_calendar(Spool::from("Content-Type: multipart/mixed; boundary=b\r\n\r\n"
                                         "--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
                                         "--bb\r\nContent-Type: text/calendar; method=REQUEST\r\n\r\n--b--\r\n")));
  }
}

TEST_CASE("has_calendar finds the line across a chunk boundary of a file spool", "[message_text]") {
  const std::string line = "Content-Type: text/calendar; method=REQUEST\r\n";
  // How much of the line the first chunk holds: none, some, all but its LF, all.
  const std::size_t split = GENERATE(as<std::size_t>{}, 0, 1, 13, 14, 20, 26, 43, 44, 45);
  REQUIRE(line.size() == 45);
  const std::size_t target = spool_chunk - split;
  std::string before = "Subject: invite\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n";
  while (before.size() + 100 < target) before += "filler line\r\n";
  before += std::string(target - before.size() - 2, 'f') + "\r\n";
  REQUIRE(before.size() == target);
  const std::string tail = "\r\nBEGIN:VCALENDAR\r\n" + std::string(10000, 'x') + "\r\n--b--\r\n";

  CHECK(has_calendar(file_spool(before + line + tail)));
  // Folded there: the value's line starts in the first chunk or the next.
  CHECK(has_calendar(file_spool(before + "Content-Type:\r\n text/calendar; method=REQUEST\r\n" + tail)));
  const std::string shorter = before.substr(0, before.size() - 17) + "\r\n";  // "Content-Type:\r\n" ends where `before` did
  CHECK(has_calendar(file_spool(shorter + "Content-Type:\r\n text/calendar; method=REQUEST\r\n" + tail)));
  // The same place, but the line only talks about calendars.
  CHECK_FALSE(has_calendar(file_spool(before + "See the text/calendar part; Content-Type: text/calendar\r\n" + tail)));
}

// ---- with_subject, with_field_on_top

TEST_CASE("with_subject replaces the first Subject and keeps everything else", "[message_text]") {
  const std::string message =
      "From: alice@example.org\r\n"
      "Subject: [secure] quarterly\r\n report\r\n"
      "To: bob@example.org\r\n"
      "Subject: second\r\n"
      "\r\n"
      "body\r\n\r\nmore\r\n";
  const std::string expected =
      "From: alice@example.org\r\n"
      "Subject: quarterly report\r\n"
      "To: bob@example.org\r\n"
      "Subject: second\r\n"
      "\r\n"
      "body\r\n\r\nmore\r\n";
  for (const bool in_file : {false, true}) {
    const Spool spool = in_file ? file_spool(message + std::string(8000, 'z')) : Spool::from(message);
    const auto header = must(read_header_section(spool));
    auto out = must(with_subject(spool, header, "quarterly report", {.memory_limit = in_file ? 16u : 1u << 20}));
    CHECK(out.in_memory() != in_file);
    CHECK(must(out.to_string()) == expected + (in_file ? std::string(8000, 'z') : ""));
  }
}

TEST_CASE("with_subject on a message without Subject changes nothing", "[message_text]") {
  const std::string message = "From: alice@example.org\r\nTo: bob@example.org\r\n\r\nbody\r\n";
  const Spool spool = Spool::borrow(message);
  const auto header = must(read_header_section(spool));
  CHECK(must(must(with_subject(spool, header, "new", {})).to_string()) == message);
}

TEST_CASE("with_field_on_top puts the field first, byte for byte", "[message_text]") {
  const std::string message = "From: alice@example.org\r\nSubject: s\r\n\r\nbody\r\n";
  const auto out = must(with_field_on_top(Spool::borrow(message), {"X-Mailkms-Reinjected", " v=1; t=5; m=ab"}, {}));
  CHECK(must(out.to_string()) == "X-Mailkms-Reinjected: v=1; t=5; m=ab\r\n" + message);

  const std::string big = message + std::string(100000, 'b');
  const auto in_file = must(with_field_on_top(file_spool(big), {"X-Top", "\tfolded\r\n value"}, {.memory_limit = 100}));
  CHECK_FALSE(in_file.in_memory());
  CHECK(must(in_file.to_string()) == "X-Top:\tfolded\r\n value\r\n" + big);
}

// ---- is_content_field

TEST_CASE("is_content_field: Content-* and MIME-Version only", "[message_text]") {
  CHECK(is_content_field("Content-Type"));
  CHECK(is_content_field("content-transfer-encoding"));
  CHECK(is_content_field("CONTENT-DISPOSITION"));
  CHECK(is_content_field("Content-X"));
  CHECK(is_content_field("MIME-Version"));
  CHECK(is_content_field("mime-version"));
  CHECK_FALSE(is_content_field("Content-"));
  CHECK_FALSE(is_content_field("Content"));
  CHECK_FALSE(is_content_field("X-Content-Type"));
  CHECK_FALSE(is_content_field("MIME-Versions"));
  CHECK_FALSE(is_content_field("Subject"));
  CHECK_FALSE(is_content_field(""));
}
