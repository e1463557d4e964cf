// The CA: hierarchies, profiles checked by the openssl command line,
// issuance falling over to the next CA, external signing, revocation.
#include <catch2/catch.hpp>

#include "mailkms/keystore/ca.hpp"
#include "mailkms/keystore/seal.hpp"
#include "mailkms/keystore/sqlite_storage.hpp"
#include "keystore_fixture.hpp"
#include "test_support.hpp"

using namespace mailkms;
using namespace mailkms::keystore;
using test::must;

namespace {

struct Fixture : test::KeystoreFixture {
  CertificateAuthority ca{*storage, barrier, audit, test::context()};

  std::string file(const std::string& name, const std::string& contents) {
    test::write_file(dir.path(name), contents);
    return dir.path(name).string();
  }
  // openssl verify with `root` trusted and the rest of `chain` untrusted.
  test::CommandResult verify(const smime::Certificate& cert, const std::vector<smime::Certificate>& chain,
                             const std::string& purpose, const std::string& extra = "") {
    std::string untrusted;
    for (std::size_t i = 0; i + 1 < chain.size(); ++i) untrusted += chain[i].pem();
    std::string command = "openssl verify -purpose " + purpose + " -CAfile " + file("root.pem", chain.back().pem());
    if (!untrusted.empty()) command += " -untrusted " + file("untrusted.pem", untrusted);
    return test::run(command + " " + extra + " " + file("leaf.pem", cert.pem()));
  }
};

smime::PrivateKey user_key(KeyType type) { return must(generate_key(*test::context(), type)); }

}  // namespace

TEST_CASE("a root, an issuing CA, and user certificates that openssl accepts for their purpose", "[ca]") {
  Fixture f;
  const CaInfo root = must(f.ca.create_root("root", "Example Root CA", KeyType::ec_p384, 3650, "test"));
  CHECK(root.role == CaRole::root);
  must(f.ca.create_issuing("issuing-1", "root", "Example Issuing CA 1", KeyType::rsa2048, 1825, 10, "test"));
  const auto chain = must(f.ca.chain("issuing-1"));
  REQUIRE(chain.size() == 2);

  const auto enc_key = user_key(KeyType::rsa2048);
  const Issued enc = must(f.ca.issue(enc_key.native(), "alice@example.org", Profile::encryption, 365, "test"));
  CHECK(enc.ca_id == "issuing-1");
  const auto sign_key = user_key(KeyType::ec_p256);
  const Issued sig = must(f.ca.issue(sign_key.native(), "alice@example.org", Profile::signing, 365, "test"));

  SECTION("each passes openssl verify for its own purpose only") {
    const auto enc_ok = f.verify(enc.certificate, chain, "smimeencrypt");
    INFO(enc_ok.out << enc_ok.err);
    CHECK(enc_ok.exit_code == 0);
    const auto sig_ok = f.verify(sig.certificate, chain, "smimesign");
    INFO(sig_ok.out << sig_ok.err);
    CHECK(sig_ok.exit_code == 0);
    CHECK(f.verify(enc.certificate, chain, "smimesign").exit_code != 0);
  }
  SECTION("the extensions read back as the profiles say") {
    const auto text = test::run("openssl x509 -noout -text -in " + f.file("enc.pem", enc.certificate.pem()));
    CHECK(text.out.find("Key Encipherment") != std::string::npos);
    CHECK(text.out.find("Digital Signature") == std::string::npos);
    CHECK(text.out.find("E-mail Protection") != std::string::npos);
    CHECK(text.out.find("email:alice@example.org") != std::string::npos);
    CHECK(text.out.find("CA:FALSE") != std::string::npos);
    const auto signing = test::run("openssl x509 -noout -text -in " + f.file("sig.pem", sig.certificate.pem()));
    CHECK(signing.out.find("Digital Signature, Non Repudiation") != std::string::npos);
    CHECK(sig.certificate.is_ec());
    CHECK(enc.certificate.has_email("alice@example.org"));
  }
  SECTION("every issuance is in the audit log") {
    const auto records = must(f.audit.read(0, 100));
    CHECK(std::count_if(records.begin(), records.end(), [](const AuditRecord& r) { return r.event.action == "issue"; }) == 2);
    CHECK(must(f.audit.verify()).intact);
  }
  SECTION("the certificate record knows its owner and CA") {
    const CertificateRecord r = must(f.ca.certificate(enc.certificate.serial_hex()));
    CHECK(r.owner == "alice@example.org");
    CHECK(r.ca_id == "issuing-1");
    CHECK(r.profile == Profile::encryption);
    CHECK_FALSE(r.revoked_at);
  }
}

TEST_CASE("root keys are strong, bad ids and addresses are refused", "[ca]") {
  Fixture f;
  CHECK(f.ca.create_root("root", "Weak", KeyType::rsa2048, 3650, "test").error().code == Errc::invalid_argument);
  must(f.ca.create_root("root", "Example Root", KeyType::rsa3072, 3650, "test"));
  CHECK(f.ca.create_root("root", "Again", KeyType::ec_p384, 3650, "test").error().code == Errc::already_exists);
  CHECK(f.ca.create_root("Root CA!", "Bad id", KeyType::ec_p384, 3650, "test").error().code == Errc::invalid_argument);
  must(f.ca.create_issuing("issuing", "root", "Issuing", KeyType::ec_p256, 365, 1, "test"));
  const auto key = user_key(KeyType::ec_p256);
  CHECK(f.ca.issue(key.native(), "not an address", Profile::signing, 30, "test").error().code == Errc::invalid_argument);
  CHECK(f.ca.issue(key.native(), "a@b.example>\r\nX: y", Profile::signing, 30, "test").error().code ==
        Errc::invalid_argument);
}

TEST_CASE("an issuing CA cannot be the parent of another CA", "[ca]") {
  Fixture f;
  must(f.ca.create_root("root", "Example Root", KeyType::ec_p384, 3650, "test"));
  must(f.ca.create_issuing("issuing", "root", "Issuing", KeyType::ec_p256, 365, 1, "test"));
  const auto refused = f.ca.create_issuing("under-issuing", "issuing", "Under Issuing", KeyType::ec_p256, 365, 2, "test");
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == Errc::invalid_argument);
  CHECK(refused.error().message.find("CA issuing is an issuing CA and cannot sign another CA") != std::string::npos);
  CHECK(f.ca.get("under-issuing").error().code == Errc::not_found);
  // A second issuing CA under the root is fine.
  must(f.ca.create_issuing("issuing-2", "root", "Issuing 2", KeyType::ec_p256, 365, 2, "test"));
}

TEST_CASE("when one issuing CA cannot issue, the next one does, and says why", "[ca]") {
  Fixture f;
  must(f.ca.create_root("root", "Root", KeyType::ec_p384, 3650, "test"));
  must(f.ca.create_issuing("first", "root", "First", KeyType::ec_p256, 365, 1, "test"));
  must(f.ca.create_issuing("second", "root", "Second", KeyType::ec_p256, 365, 2, "test"));
  must(f.ca.create_issuing("third", "root", "Third", KeyType::ec_p256, 365, 3, "test"));
  const auto key = user_key(KeyType::ec_p256);

  must(f.ca.set_enabled("first", false, "test"));
  // The second CA's key record is damaged: its key is unavailable.
  const std::string path = private_key_path("ca:second", "ca");
  std::string raw = *must(f.storage->get(path));
  raw[20] = static_cast<char>(raw[20] ^ 1);
  must(f.storage->put(path, raw));

  const Issued issued = must(f.ca.issue(key.native(), "bob@example.org", Profile::signing, 30, "test"));
  CHECK(issued.ca_id == "third");
  REQUIRE(issued.skipped.size() == 2);
  CHECK(issued.skipped[0] == "first: disabled");
  CHECK(issued.skipped[1].rfind("second: ", 0) == 0);
  const auto records = must(f.audit.read(0, 100));
  CHECK(records.back().event.detail.find("skipped second") != std::string::npos);

  must(f.ca.set_enabled("third", false, "test"));
  const auto none = f.ca.issue(key.native(), "bob@example.org", Profile::signing, 30, "test");
  REQUIRE_FALSE(none);
  CHECK(none.error().message.find("no issuing CA can issue") != std::string::npos);
}

TEST_CASE("an issuing CA signed by an external CA issues certificates that chain to it", "[ca]") {
  Fixture f;
  const std::string csr = must(f.ca.request_external("external-1", "Example Issuing under Outside Root", KeyType::ec_p256, 5, "test"));
  CHECK(csr.find("BEGIN CERTIFICATE REQUEST") != std::string::npos);
  CHECK(must(f.ca.get("external-1")).role == CaRole::awaiting_external);

  // The outside CA, played by the openssl command line.
  const auto d = [&](const std::string& n) { return f.dir.path(n).string(); };
  REQUIRE(test::run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -keyout " + d("outside.key") +
                    " -out " + d("outside.pem") + " -subj '/CN=Outside Root' -days 3650"
                    " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign")
              .exit_code == 0);
  test::write_file(f.dir.path("ca.csr"), csr);
  const auto signed_ca = test::run("openssl x509 -req -in " + d("ca.csr") + " -CA " + d("outside.pem") + " -CAkey " +
                                   d("outside.key") + " -CAcreateserial -days 1000 -copy_extensions copyall");
  REQUIRE(signed_ca.exit_code == 0);
  const std::string outside = test::read_file(f.dir.path("outside.pem"));

  SECTION("a certificate for another key is refused") {
    const auto wrong = test::run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout " +
                                 d("other.key") + " -subj '/CN=Other' -days 30");
    CHECK(f.ca.import_external("external-1", wrong.out, "test").error().code == Errc::invalid_argument);
  }
  SECTION("imported, it issues, and the chain reaches the outside root") {
    must(f.ca.import_external("external-1", signed_ca.out + outside, "test"));
    const auto key = user_key(KeyType::rsa2048);
    const Issued issued = must(f.ca.issue(key.native(), "carol@example.org", Profile::encryption, 365, "test"));
    CHECK(issued.ca_id == "external-1");
    const auto chain = must(f.ca.chain("external-1"));
    REQUIRE(chain.size() == 2);
    CHECK(chain.back().subject() == "CN=Outside Root");
    const auto r = f.verify(issued.certificate, chain, "smimeencrypt");
    INFO(r.out << r.err);
    CHECK(r.exit_code == 0);
  }
}

TEST_CASE("a revoked certificate is on its CA's CRL and fails openssl's CRL check", "[ca]") {
  Fixture f;
  must(f.ca.create_root("root", "Root", KeyType::ec_p384, 3650, "test"));
  must(f.ca.create_issuing("issuing", "root", "Issuing", KeyType::ec_p256, 365, 1, "test"));
  const auto key = user_key(KeyType::ec_p256);
  const Issued kept = must(f.ca.issue(key.native(), "dave@example.org", Profile::signing, 30, "test"));
  const Issued lost = must(f.ca.issue(key.native(), "erin@example.org", Profile::signing, 30, "test"));
  must(f.ca.revoke(lost.certificate.serial_hex(), RevocationReason::key_compromise, "test"));
  CHECK(f.ca.revoke(lost.certificate.serial_hex(), RevocationReason::key_compromise, "test").error().code ==
        Errc::already_exists);
  CHECK(must(f.ca.certificate(lost.certificate.serial_hex())).revoked_at.has_value());

  const std::string crl = must(f.ca.crl("issuing"));
  test::write_file(f.dir.path("crl.der"), crl);
  const auto text = test::run("openssl crl -inform DER -noout -text -in " + f.dir.path("crl.der").string());
  REQUIRE(text.exit_code == 0);
  CHECK(text.out.find(lost.certificate.serial_hex()) != std::string::npos);
  CHECK(text.out.find(kept.certificate.serial_hex()) == std::string::npos);
  CHECK(text.out.find("Key Compromise") != std::string::npos);
  CHECK(text.out.find("X509v3 CRL Number: \n                1") != std::string::npos);
  // RFC 5280 §5.2.1: the issuing CA's key identifier, as in its certificates.
  const auto issuer = must(f.ca.get("issuing"));
  test::write_file(f.dir.path("issuing.pem"), issuer.certificate->pem());
  const auto ski = test::run("openssl x509 -noout -ext subjectKeyIdentifier -in " + f.dir.path("issuing.pem").string());
  REQUIRE(ski.exit_code == 0);
  const std::string key_id = ski.out.substr(ski.out.rfind('\n', ski.out.size() - 2) + 1);
  CHECK(text.out.find("X509v3 Authority Key Identifier") != std::string::npos);
  CHECK(text.out.find(key_id.substr(key_id.find_first_not_of(' '), 59)) != std::string::npos);

  REQUIRE(test::run("openssl crl -inform DER -in " + f.dir.path("crl.der").string() + " -out " +
                    f.dir.path("crl.pem").string()).exit_code == 0);
  const auto chain = must(f.ca.chain("issuing"));
  const std::string crl_option = "-crl_check -CRLfile " + f.dir.path("crl.pem").string();
  CHECK(f.verify(kept.certificate, chain, "smimesign", crl_option).exit_code == 0);
  const auto revoked = f.verify(lost.certificate, chain, "smimesign", crl_option);
  CHECK(revoked.exit_code != 0);
  CHECK((revoked.out + revoked.err).find("revoked") != std::string::npos);

  // Asked again with nothing new, the same CRL; after a revocation, the
  // next one, numbered 2.
  CHECK(must(f.ca.crl("issuing")) == crl);
  const Issued third = must(f.ca.issue(key.native(), "frank@example.org", Profile::signing, 30, "test"));
  must(f.ca.revoke(third.certificate.serial_hex(), RevocationReason::superseded, "test"));
  test::write_file(f.dir.path("crl2.der"), must(f.ca.crl("issuing")));
  CHECK(test::run("openssl crl -inform DER -noout -text -in " + f.dir.path("crl2.der").string()).out.find(
            "X509v3 CRL Number: \n                2") != std::string::npos);
}
