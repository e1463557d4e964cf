// Reading enrollment replies as mail clients write them: quoted, wrapped,
// HTML-only, with a request attached.
#include <catch2/catch.hpp>

#include "enrollment_reply.hpp"
#include "mailkms/smime/mime.hpp"

using mailkms::gateway::html_to_text;
using mailkms::gateway::read_enrollment_reply;

namespace {

constexpr const char* token = "MKMS-ABCDE-FGHIJ-KLMNO-PQRST-UVWXY-Z";

mailkms::gateway::EnrollmentReply read(const std::string& message) {
  auto parts = mailkms::smime::decoded_parts(message);
  REQUIRE(parts);
  return read_enrollment_reply(*parts);
}

std::string plain(const std::string& body, const std::string& extra_headers = "") {
  return "From: alice@example.org\r\nTo: mailkms-enroll@example.org\r\nSubject: Re: Your certificate\r\n" +
         extra_headers + "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body;
}

}  // namespace

TEST_CASE("a reply that quotes the enrollment message gives the token and the password written above it", "[gateway][enrollment]") {
  const auto reply = read(plain("Password: correct horse battery\r\n\r\nOn Monday, mailkms wrote:\r\n"
                                "> Your enrollment code:\r\n> " + std::string(token) + "\r\n"
                                "> Password:\r\n"));
  CHECK(reply.token == "MKMS-ABCDEFGHIJKLMNOPQRSTUVWXYZ");
  CHECK(reply.password == "correct horse battery");
  CHECK_FALSE(reply.csr_pem);
}

TEST_CASE("a token wrapped across quoted lines, or lower-cased, is still found", "[gateway][enrollment]") {
  CHECK(read(plain("Password: s3cret-enough\r\n> code: MKMS-ABCDE-FGHIJ-KLM\r\n> NO-PQRST-UVWXY-Z\r\n")).token ==
        "MKMS-ABCDEFGHIJKLMNOPQRSTUVWXYZ");
  CHECK(read(plain("mkms-abcde-fghij-klmno-pqrst-uvwxy-z\r\nPassword: s3cret-enough\r\n")).token ==
        "MKMS-ABCDEFGHIJKLMNOPQRSTUVWXYZ");
  // Quoted-printable soft line breaks are undone before the search.
  CHECK(read(plain("MKMS-ABCDE-FGHIJ-KLMNO-=\r\nPQRST-UVWXY-Z\r\n", "Content-Transfer-Encoding: quoted-printable\r\n"))
            .token == "MKMS-ABCDEFGHIJKLMNOPQRSTUVWXYZ");
}

TEST_CASE("too short a code, or letters outside base32, is no token", "[gateway][enrollment]") {
  CHECK(read(plain("MKMS-ABCDE-FGHIJ\r\nPassword: whatever123\r\n")).token.empty());
  CHECK(read(plain("MKMS-ABCDE-FGHIJ-KLMNO-PQRST-UVWX1-Z\r\n")).token.empty());  // '1' is not base32
}

TEST_CASE("the password comes from the user's own lines, never the quoted message or an empty line", "[gateway][enrollment]") {
  CHECK(read(plain("> Password: from-the-template\r\n" + std::string(token) + "\r\n")).password.empty());
  CHECK(read(plain("Password:\r\nPassword:   second try  \r\n")).password == "second try");
  CHECK(read(plain("PASSWORD : Upper Case 1\r\n")).password == "Upper Case 1");
  CHECK(read(plain("My password: is not a password line\r\n")).password.empty());
}

TEST_CASE("a lone CR ends the password line as a line feed does", "[gateway][enrollment]") {
  // Quoted-printable can carry a bare CR (=0D), which a reader sees as a
  // line break: what follows it is not part of the password.
  const auto reply = read(plain("Password: correct horse=0DFrom: someone else\r\n",
                                "Content-Transfer-Encoding: quoted-printable\r\n"));
  CHECK(reply.password == "correct horse");
}

TEST_CASE("an HTML-only reply is read as text, its blockquote as quoted", "[gateway][enrollment]") {
  const std::string html =
      "From: alice@example.org\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
      "<html><body><div>Password: p&amp;ss w&lt;rd 99</div><br>"
      "<blockquote><p>Password: from-the-template</p><p>" + std::string(token) + "</p></blockquote></body></html>\r\n";
  const auto reply = read(html);
  CHECK(reply.token == "MKMS-ABCDEFGHIJKLMNOPQRSTUVWXYZ");
  CHECK(reply.password == "p&ss w<rd 99");
  CHECK(html_to_text("a<br>b&nbsp;c") == "a\nb c");
}

TEST_CASE("text in another charset is converted before reading", "[gateway][enrollment]") {
  const std::string latin1 = "Password: Gr\xfc\xdf""e 2026\r\n" + std::string(token) + "\r\n";
  const auto reply = read("From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
                          "Content-Transfer-Encoding: 8bit\r\n\r\n" + latin1);
  CHECK(reply.password == "Gr\xc3\xbc\xc3\x9f""e 2026");
}

TEST_CASE("a PKCS#10 request attached as PEM or DER is passed on as PEM", "[gateway][enrollment]") {
  const std::string pem = "-----BEGIN CERTIFICATE REQUEST-----\nMIIBAjCBqAIBADBGMQ==\n-----END CERTIFICATE REQUEST-----";
  const std::string with_pem =
      "From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
      "--b\r\nContent-Type: text/plain\r\n\r\n" + std::string(token) + "\r\nPassword: long enough 1\r\n"
      "--b\r\nContent-Type: application/pkcs10; name=req.p10\r\n\r\n" + pem + "\r\n--b--\r\n";
  const auto from_pem = read(with_pem);
  REQUIRE(from_pem.csr_pem);
  CHECK(*from_pem.csr_pem == pem + "\n");
  CHECK(from_pem.password == "long enough 1");

  const std::string with_der =
      "From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
      "--b\r\nContent-Type: text/plain\r\n\r\n" + std::string(token) + "\r\n"
      "--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=alice.csr\r\n"
      "Content-Transfer-Encoding: base64\r\n\r\nAAECAw==\r\n--b--\r\n";
  const auto from_der = read(with_der);
  REQUIRE(from_der.csr_pem);
  CHECK(*from_der.csr_pem == "-----BEGIN CERTIFICATE REQUEST-----\nAAECAw==\n-----END CERTIFICATE REQUEST-----\n");
}
