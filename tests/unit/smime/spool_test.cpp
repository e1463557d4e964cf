// Spools and the streaming forms: large messages go through files in
// chunks and come out byte-identical to the in-memory forms' results.
#include <catch2/catch.hpp>

#include "mailkms/smime/encrypt.hpp"
#include "mailkms/smime/open.hpp"
#include "mailkms/smime/spool.hpp"
#include "test_support.hpp"

using namespace mailkms;
using namespace mailkms::smime;
using test::must;

namespace {

std::string big_body(std::size_t size) {
  std::string body;
  for (std::size_t i = 0; body.size() < size; ++i) body += "line " + std::to_string(i) + " of a long report\n";
  return body;
}

}  // namespace

TEST_CASE("the process's spool usage follows what spools hold, in memory and in files", "[spool]") {
  const SpoolUsage start = Spool::usage();
  const auto now = [&] {
    const SpoolUsage u = Spool::usage();
    return std::pair{u.memory_bytes - start.memory_bytes, u.file_bytes - start.file_bytes};
  };
  {
    Spool spool({.memory_limit = 100});
    must(spool.append(std::string(60, 'a')));
    CHECK(now() == std::pair<std::size_t, std::size_t>{60, 0});
    must(spool.append(std::string(60, 'b')));  // past the limit: all of it to a file
    CHECK(now() == std::pair<std::size_t, std::size_t>{0, 120});
    Spool moved(std::move(spool));
    CHECK(now() == std::pair<std::size_t, std::size_t>{0, 120});
    Spool small = Spool::from("twelve bytes");
    CHECK(now() == std::pair<std::size_t, std::size_t>{12, 120});
    small = std::move(moved);  // the small one's bytes are gone, the file's are kept
    CHECK(now() == std::pair<std::size_t, std::size_t>{0, 120});
    const std::string borrowed(500, 'c');
    const Spool view = Spool::borrow(borrowed);
    CHECK(now() == std::pair<std::size_t, std::size_t>{0, 120});
    Spool taken = Spool::from("taken");
    CHECK(must(taken.take_string()) == "taken");
    CHECK(now() == std::pair<std::size_t, std::size_t>{0, 120});
  }
  CHECK(now() == std::pair<std::size_t, std::size_t>{0, 0});
}

TEST_CASE("a spool moves to a file past its memory limit and reads back exactly", "[spool]") {
  Spool spool({.memory_limit = 100});
  std::string expected;
  for (int i = 0; i < 50; ++i) {
    const std::string piece = "chunk " + std::to_string(i) + "\n";
    must(spool.append(piece));
    expected += piece;
  }
  CHECK_FALSE(spool.in_memory());
  CHECK(spool.size() == expected.size());
  CHECK(must(spool.to_string()) == expected);
  char buffer[16];
  CHECK(must(spool.read(7, buffer, sizeof buffer)) == sizeof buffer);
  CHECK(std::string(buffer, sizeof buffer) == expected.substr(7, sizeof buffer));
  std::string chunks;
  must(spool.for_each_chunk(3, 40, [&chunks](std::string_view c) -> Status {
    chunks.append(c);
    return Ok{};
  }));
  CHECK(chunks == expected.substr(3, 40));
}

TEST_CASE("a spool in a directory that cannot be written fails with io_error", "[spool]") {
  Spool spool({.memory_limit = 4, .directory = "/nonexistent/mailkms"});
  const Status s = spool.append("more than four bytes");
  REQUIRE_FALSE(s);
  CHECK(s.error().code == Errc::io_error);
}

TEST_CASE("sign and encrypt stream from file to file and open again", "[spool][sign][encrypt]") {
  const std::string message = "From: alice@example.org\nTo: bob@example.org\nSubject: report\n"
                              "Content-Type: text/plain\n\n" + big_body(3 << 20);
  Spool in({.memory_limit = 64 << 10});
  must(in.append(message));
  REQUIRE_FALSE(in.in_memory());
  Spool out({.memory_limit = 64 << 10});
  auto signer = test::signer("alice");
  const std::vector<Recipient> to{{test::cert("bob")}};
  must(sign_and_encrypt_message(*test::context(), in, out, signer, {}, to, {}));
  CHECK_FALSE(out.in_memory());

  auto key = test::unwrapper("bob");
  KeyUnwrapper* keys[] = {&key};
  VerifyOptions options;
  options.trust = &test::trust();
  const Opened opened = open_message(*test::context(), must(out.to_string()), keys, options);
  REQUIRE_FALSE(opened.error);
  REQUIRE(opened.layers.size() == 2);
  CHECK(opened.layers[1].verification->status == SignatureStatus::pass);
  CHECK(opened.content.body == to_crlf(big_body(3 << 20)));

  test::TempDir dir;
  test::write_file(dir.path("m.eml"), must(out.to_string()));
  const auto r = test::run("openssl cms -decrypt -in '" + dir.path("m.eml").string() + "' -recip " +
                           test::pki_path("bob.pem") + " -inkey " + test::pki_path("bob.key") +
                           " | openssl cms -verify -CAfile " + test::pki_path("root.pem") + " -out /dev/null");
  INFO(r.err);
  CHECK(r.exit_code == 0);
}

TEST_CASE("certificate and key loading refuse what they cannot read", "[certificate]") {
  SECTION("a bundle with a broken certificate is an error, not a shorter bundle") {
    std::string bundle = test::read_file(test::pki_path("root.pem"));
    std::string broken = test::read_file(test::pki_path("issuing.pem"));
    broken[broken.find('\n') + 10] = '*';
    const auto certs = Certificate::all_from_pem(bundle + broken);
    REQUIRE_FALSE(certs);
    CHECK(certs.error().code == Errc::invalid_certificate);
    CHECK(certs.error().message.find("certificate 2") != std::string::npos);
  }
  SECTION("an encrypted key without a passphrase fails at once instead of prompting") {
    const auto r = test::run("openssl pkey -in " + test::pki_path("alice.key") + " -aes256 -passout pass:secret");
    REQUIRE(r.exit_code == 0);
    const auto key = PrivateKey::from_pem(*test::context(), r.out);
    REQUIRE_FALSE(key);
    CHECK(key.error().code == Errc::invalid_certificate);
    CHECK(PrivateKey::from_pem(*test::context(), r.out, "secret"));
  }
  SECTION("a legacy PKCS#12 opens only in a legacy context") {
    test::TempDir dir;
    const auto r = test::run("openssl pkcs12 -export -legacy -in " + test::pki_path("alice.pem") + " -inkey " +
                             test::pki_path("alice.key") + " -passout pass:pw -out '" + dir.path("a.p12").string() + "'");
    REQUIRE(r.exit_code == 0);
    const std::string der = test::read_file(dir.path("a.p12"));
    CHECK_FALSE(read_pkcs12(*test::context(), der, "pw"));
    const auto bundle = read_pkcs12(*test::legacy_context(), der, "pw");
    REQUIRE(bundle);
    CHECK(bundle->certificate == test::cert("alice"));
  }
}

TEST_CASE("a spool that cannot be written fails encryption with io_error, never a short message", "[spool][encrypt]") {
  const std::string message = test::sample_message() + big_body(256 << 10);
  const Spool in = Spool::borrow(message);
  Spool out({.memory_limit = 1024, .directory = "/nonexistent/full-disk"});
  const std::vector<Recipient> to{{test::cert("bob")}};
  const Status s = encrypt_message(*test::context(), in, out, to, {});
  REQUIRE_FALSE(s);
  CHECK(s.error().code == Errc::io_error);
}
