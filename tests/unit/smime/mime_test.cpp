#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "mailkms/smime/mime.hpp"

using namespace mailkms::smime;

TEST_CASE("a message splits into outer fields and the entity S/MIME protects", "[mime]") {
  const auto m = parse_message(
      "Received: from a by b;\n\tWed, 25 Nov 2026 10:00:00 +0000\n"
      "From: alice@example.org\nSubject: hi\nMIME-Version: 1.0\n"
      "Content-Type: text/plain;\n charset=utf-8\nContent-Transfer-Encoding: 7bit\n\nbody\n");
  REQUIRE(m);
  REQUIRE(m->headers.size() == 4);
  CHECK(m->headers[0].name == "Received");
  CHECK(m->headers[0].value == " from a by b;\r\n\tWed, 25 Nov 2026 10:00:00 +0000");
  CHECK(m->headers[0].unfolded() == "from a by b;\tWed, 25 Nov 2026 10:00:00 +0000");
  REQUIRE(m->entity.headers.size() == 2);
  CHECK(m->entity.headers[0].name == "Content-Type");
  CHECK(m->entity.body == "body\r\n");
  // MIME-Version stays outside and is written once.
  const std::string out = m->serialize();
  CHECK(out.find("MIME-Version: 1.0") == out.rfind("MIME-Version"));
  CHECK(out.find("Content-Type: text/plain;\r\n charset=utf-8\r\n") != std::string::npos);
}

TEST_CASE("content types are parsed with their parameters", "[mime]") {
  Entity e{{{"Content-Type", " Multipart/Signed; protocol=\"application/pkcs7-signature\";\r\n micalg=SHA-256; boundary=\"b 1\""}}, ""};
  const auto t = content_type(e);
  REQUIRE(t);
  CHECK(t->is("multipart", "signed"));
  CHECK(t->parameter("boundary") == "b 1");
  CHECK(t->parameter("micalg") == "SHA-256");
  CHECK(content_type(Entity{})->is("text", "plain"));
}

TEST_CASE("line endings become CRLF without doubling", "[mime]") {
  CHECK(to_crlf("a\nb\r\nc\rd") == "a\r\nb\r\nc\rd");  // a lone CR is no line end
  CHECK(to_crlf("a\r\n") == "a\r\n");
}

TEST_CASE("base64 round-trips and rejects garbage", "[mime]") {
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  const std::string encoded = base64_encode_mime(all);
  for (std::size_t start = 0, end; (end = encoded.find("\r\n", start)) != std::string::npos; start = end + 2) {
    CHECK(end - start <= 76);
  }
  CHECK(*base64_decode(encoded) == all);
  CHECK(*base64_decode("aGk=") == "hi");
  CHECK(*base64_decode("aGk") == "hi");  // missing padding is tolerated
  CHECK(base64_decode("aG*k").error().code == Errc::invalid_base64);
  CHECK(base64_decode("aGk=aGk=").error().code == Errc::invalid_base64);
  CHECK(base64_decode("a").error().code == Errc::invalid_base64);
}

TEST_CASE("canonicalization re-encodes 8bit and long lines and leaves 7bit alone", "[mime]") {
  SECTION("7bit entity is untouched") {
    const Entity e{{{"Content-Type", " text/plain"}}, "hello\r\n"};
    const auto c = canonicalize_for_signing(e);
    REQUIRE(c);
    CHECK(c->serialize() == e.serialize());
  }
  SECTION("8bit text becomes quoted-printable") {
    const Entity e{{{"Content-Type", " text/plain; charset=utf-8"}, {"Content-Transfer-Encoding", " 8bit"}},
                   "Gr\xc3\xbc\xc3\x9f" "e aus K\xc3\xb6ln, the figures are ready\r\n"};
    const auto c = canonicalize_for_signing(e);
    REQUIRE(c);
    const std::string out = c->serialize();
    CHECK(out.find("quoted-printable") != std::string::npos);
    CHECK(out.find("Gr=C3=BC=C3=9Fe") != std::string::npos);
    for (const char ch : out) CHECK(static_cast<unsigned char>(ch) < 0x80);
  }
  SECTION("a 1000-character line is wrapped by the encoding") {
    const Entity e{{{"Content-Type", " text/plain"}}, std::string(1000, 'x') + "\r\n"};
    const auto c = canonicalize_for_signing(e);
    REQUIRE(c);
    CHECK(c->body.find(std::string(999, 'x')) == std::string::npos);
  }
}

TEST_CASE("mailbox addresses and the authors of a message", "[mime]") {
  CHECK(mailbox_addresses("Alice Example <Alice@Example.org>") == std::vector<std::string>{"Alice@Example.org"});
  CHECK(mailbox_addresses("=?utf-8?q?J=C3=BCrgen?= <j@example.org>, b@example.org") ==
        std::vector<std::string>{"j@example.org", "b@example.org"});
  CHECK(mailbox_addresses("undisclosed-recipients:;").empty());
  CHECK(mailbox_addresses("<>").empty());

  const auto authors = [](const std::string& headers) {
    return author_addresses(*parse_message(headers + "\r\nbody\r\n"));
  };
  CHECK(authors("From: a@example.org\r\n") == std::vector<std::string>{"a@example.org"});
  CHECK(authors("To: b@example.org\r\n").empty());                             // no From
  CHECK(authors("From: <>\r\nFrom: ceo@example.org\r\n").empty());           // two From fields
  CHECK(authors("From: a@example.org, ceo@example.org\r\n").size() == 2);      // both must match
}

TEST_CASE("header text is read and written as RFC 2047 encoded-words", "[mime]") {
  // "[secure] Gehälter" as a client writes it, in base64 and in Q.
  CHECK(decode_header_text("=?UTF-8?B?W3NlY3VyZV0gR2Vow6RsdGVy?=") == "[secure] Gehälter");
  CHECK(decode_header_text("=?utf-8?q?=5Bsecure=5D_Geh=C3=A4lter?=") == "[secure] Gehälter");
  // A tag split over two adjacent encoded-words is one word to a reader.
  CHECK(decode_header_text("=?UTF-8?Q?=5Bsec?= =?UTF-8?Q?ure=5D?= plans") == "[secure] plans");
  CHECK(decode_header_text("=?ISO-8859-1?Q?Geh=E4lter?=") == "Gehälter");
  CHECK(decode_header_text("plain [secure] text") == "plain [secure] text");

  CHECK(encode_header_text("Minutes") == "Minutes");
  const std::string long_text = "Gehälter für März, " + std::string(200, 'x') + " und April";
  for (const std::string& text : std::vector<std::string>{"Gehälter für März", long_text, std::string(300, '\xc3') + "x"}) {
    const std::string encoded = encode_header_text(text);
    CHECK(std::all_of(encoded.begin(), encoded.end(), [](char ch) { return static_cast<unsigned char>(ch) < 0x80; }));
    if (text.front() != '\xc3') CHECK(decode_header_text(encoded) == text);
  }
  CHECK(decode_header_text(encode_header_text("\xc3x")) == "\xef\xbf\xbdx");  // not UTF-8: U+FFFD
}

TEST_CASE("text written back into a header never breaks its line, whatever encoded-words decoded to", "[mime]") {
  // A subject tag is removed from the decoded subject and the rest written
  // back: an encoded CR LF must not become a header field of its own.
  const std::string decoded = decode_header_text("=?utf-8?q?[secure]_hi=0D=0ABcc:_evil@example.net?=");
  CHECK(decoded == "[secure] hi\r\nBcc: evil@example.net");
  CHECK(encode_header_text(decoded) == "[secure] hi  Bcc: evil@example.net");
  CHECK(encode_header_text(std::string("a\0b\x01" "c\td", 7)) == "a b c\td");  // tab is folding white space
  const std::string accented = encode_header_text("caf\xc3\xa9\r\n\r\nbody");
  CHECK(accented.find_first_of("\r\n") == std::string::npos);
  CHECK(decode_header_text(accented) == "caf\xc3\xa9    body");
}
