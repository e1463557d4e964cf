// Verifying a message in a Spool: a multipart/signed one streams from the
// spool (a file, for large mail) and gives every verdict the in-memory
// verifier gives, reason for reason.
#include <catch2/catch.hpp>

#include "mailkms/smime/sign.hpp"
#include "mailkms/smime/verify.hpp"
#include "test_support.hpp"

using namespace mailkms;
using namespace mailkms::smime;
using test::must;

namespace {

constexpr std::size_t chunk = std::size_t{64} * 1024;  // what a file spool reads at a time

VerifyOptions trusting() {
  VerifyOptions options;
  options.trust = &test::trust();
  return options;
}

// The message in a spool that moved to a file after its first 4 KiB.
Spool in_file(const test::TempDir& dir, const std::string& message) {
  Spool spool({.memory_limit = 4096, .directory = dir.path("")});
  REQUIRE(spool.append(message));
  return spool;
}

std::string signed_message(const std::string& body, const SignOptions& options = {}) {
  auto signer = test::signer("alice");
  const std::string message = "From: alice@example.org\r\nTo: bob@example.org\r\nSubject: figures\r\n"
                              "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n" +
                              body;
  return must(sign_message(*test::context(), message, signer, options));
}

// Both verifiers on one message: the same verdict and reason.
VerifyResult both(const test::TempDir& dir, const std::string& message) {
  const VerifyResult in_memory = verify_message(*test::context(), std::string_view(message), trusting());
  VerifyResult spooled = verify_message(*test::context(), in_file(dir, message), trusting());
  INFO(spooled.reason);
  CHECK(spooled.status == in_memory.status);
  CHECK(spooled.reason == in_memory.reason);
  CHECK(spooled.signers.size() == in_memory.signers.size());
  return spooled;
}

std::string replaced(std::string text, const std::string& from, const std::string& to) {
  const auto at = text.find(from);
  REQUIRE(at != std::string::npos);
  return text.replace(at, from.size(), to);
}

}  // namespace

TEST_CASE("a multipart/signed message verifies from a spool, its signed part streamed", "[verify][spool]") {
  test::TempDir dir;
  const std::string m = signed_message("The figures are attached in spirit.\r\n");
  const VerifyResult v = both(dir, m);
  CHECK(v.status == SignatureStatus::pass);
  REQUIRE(v.signers.size() == 1);
  CHECK(v.signers[0].addresses == std::vector<std::string>{"alice@example.org"});
  CHECK_FALSE(v.content);  // not loaded
  CHECK_FALSE(v.opaque);

  SECTION("one altered byte in the signed part: fail") {
    CHECK(both(dir, replaced(m, "in spirit", "in spirjt")).status == SignatureStatus::fail);
  }
  SECTION("From someone else: signer-mismatch") {
    CHECK(both(dir, replaced(m, "From: alice@example.org", "From: ceo@example.org")).status ==
          SignatureStatus::signer_mismatch);
  }
}

TEST_CASE("a large signed message verifies from a file spool, delimiters on any chunk edge", "[verify][spool]") {
  test::TempDir dir;
  std::string body;
  while (body.size() < 3 * chunk) body += "A line of the quarterly report, nothing more to it than that.\r\n";
  // Where the signature's delimiter line starts, from the start of the body
  // (the spool is read in chunks from there).
  const auto signature_delimiter = [](const std::string& m) {
    const std::size_t body_start = m.find("\r\n\r\n") + 4;
    return m.find("\r\n--", body_start + 3 * chunk - 200) + 2 - body_start;
  };
  // Exactly n bytes of short lines (n >= 3).
  const auto filler = [](std::size_t n) {
    std::string out;
    while (n - out.size() > 82 + 3) out += std::string(80, 'z') + "\r\n";
    return out + std::string(n - out.size() - 2, 'z') + "\r\n";
  };
  const std::size_t base = signature_delimiter(signed_message(body));
  const std::size_t edge = (base / chunk + 1) * chunk;
  for (const long shift : {-3L, -2L, -1L, 0L, 1L, 2L, 40L}) {
    // The delimiter line starts `shift` bytes from a chunk edge.
    const std::size_t start = edge + static_cast<std::size_t>(shift);
    const std::string m = signed_message(body + filler(start - base));
    REQUIRE(signature_delimiter(m) == start);
    INFO("delimiter " << shift << " bytes from the chunk edge");
    CHECK(both(dir, m).status == SignatureStatus::pass);
    CHECK(both(dir, replaced(m, "nothing more", "nothing mere")).status == SignatureStatus::fail);
  }
}

TEST_CASE("a broken multipart/signed is malformed from a spool for the same reason", "[verify][spool]") {
  test::TempDir dir;
  const std::string m = signed_message("Short.\r\n");
  const auto content_type = m.substr(m.find("boundary=\"") + 10);
  const std::string boundary = "--" + content_type.substr(0, content_type.find('"'));
  const auto closing = m.rfind(boundary + "--");
  REQUIRE(closing != std::string::npos);
  const auto second = m.rfind(boundary, closing - 1);

  SECTION("no closing delimiter") { CHECK(both(dir, m.substr(0, closing)).status == SignatureStatus::malformed); }
  SECTION("a third part") {
    const std::string three = m.substr(0, closing) + boundary + "\r\nContent-Type: text/plain\r\n\r\nmore\r\n" + m.substr(closing);
    const VerifyResult v = both(dir, three);
    CHECK(v.status == SignatureStatus::malformed);
    CHECK(v.reason.find("more than two parts") != std::string::npos);
  }
  SECTION("no signature part") {
    CHECK(both(dir, m.substr(0, second) + m.substr(closing)).status == SignatureStatus::malformed);
  }
  SECTION("a delimiter with transport padding still counts") {
    CHECK(both(dir, m.substr(0, closing) + boundary + "--  \t\r\n").status == SignatureStatus::pass);
  }
  SECTION("however long the padding") {
    CHECK(both(dir, m.substr(0, closing) + boundary + "--" + std::string(300, ' ') + "\r\n").status ==
          SignatureStatus::pass);
    const std::string padded_second = m.substr(0, second) + boundary + std::string(1000, '\t') + "\r\n" +
                                      m.substr(m.find("\r\n", second) + 2);
    CHECK(both(dir, padded_second).status == SignatureStatus::pass);
  }
  SECTION("a longer boundary that starts like ours does not count") {
    // In the preamble, outside what was signed.
    const std::string longer = replaced(m, "signed message\r\n", "signed message\r\n" + boundary + "x\r\n");
    CHECK(both(dir, longer).status == SignatureStatus::pass);
  }
  SECTION("not S/MIME: another protocol") {
    const VerifyResult v = both(dir, replaced(m, "application/pkcs7-signature", "application/pgp-signature"));
    CHECK(v.status == SignatureStatus::no_signature);
  }
}

TEST_CASE("a signed part that is no MIME entity is malformed from a spool as in memory", "[verify][spool]") {
  // A signer may sign whatever bytes it likes (openssl cms does): the
  // signature holds, but the in-memory reader cannot read the signed part
  // as an entity. The streamed reader must not call it good.
  test::TempDir dir;
  test::write_file(dir.path("content"), "Content-Type: text/plain\r\nno colon here\r\n\r\nhello\r\n");
  const auto signed_by_openssl =
      test::run("openssl cms -sign -binary -in " + dir.path("content").string() + " -signer " +
                test::pki_path("alice.pem") + " -inkey " + test::pki_path("alice.key") + " -certfile " +
                test::pki_path("chain.pem"));
  REQUIRE(signed_by_openssl.exit_code == 0);
  const std::string m = to_crlf("From: alice@example.org\r\n" + signed_by_openssl.out);
  const VerifyResult v = both(dir, m);
  CHECK(v.status == SignatureStatus::malformed);
  CHECK(v.reason == "header line without a field name: \"no colon here\"");
}

TEST_CASE("what must be read into memory is refused over max_in_memory", "[verify][spool]") {
  test::TempDir dir;
  VerifyOptions small = trusting();
  small.max_in_memory = 1000;
  SignOptions opaque;
  opaque.opaque = true;
  const VerifyResult v = verify_message(*test::context(), in_file(dir, signed_message("Opaque.\r\n", opaque)), small);
  CHECK(v.status == SignatureStatus::malformed);
  REQUIRE(v.error);
  CHECK(v.error->code == Errc::limit_exceeded);
  // multipart/signed streams from the spool: no limit applies.
  CHECK(verify_message(*test::context(), in_file(dir, signed_message("Detached.\r\n")), small).status ==
        SignatureStatus::pass);
}

TEST_CASE("signed-data, bare line feeds and unsigned mail from a spool go the in-memory way", "[verify][spool]") {
  test::TempDir dir;
  SignOptions opaque;
  opaque.opaque = true;
  const VerifyResult v = both(dir, signed_message("Opaque.\r\n", opaque));
  CHECK(v.status == SignatureStatus::pass);
  CHECK(v.opaque);

  std::string lf;
  for (const char c : signed_message("Stored by a mailbox.\r\n")) {
    if (c != '\r') lf.push_back(c);
  }
  CHECK(both(dir, lf).status == SignatureStatus::pass);

  CHECK(both(dir, "From: a@example.org\r\nContent-Type: text/plain\r\n\r\nhello\r\n").status ==
        SignatureStatus::no_signature);
}
