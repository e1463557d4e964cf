// Users: keys, escrow, renewal, bulk add, PKCS#12 export — checked with
// real decryption and the openssl command line.
#include <catch2/catch.hpp>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "mailkms/keystore/pkcs12.hpp"
#include "mailkms/keystore/seal.hpp"
#include "mailkms/keystore/sqlite_storage.hpp"
#include "mailkms/keystore/users.hpp"
#include "mailkms/smime/encrypt.hpp"
#include "mailkms/smime/open.hpp"
#include "keystore_fixture.hpp"
#include "test_support.hpp"

using namespace mailkms;
using namespace mailkms::keystore;
using test::must;

namespace {

struct Fixture : test::KeystoreFixture {
  CertificateAuthority ca{*storage, barrier, audit, test::context()};
  Users users{*storage, barrier, audit, ca, test::context(), {KeyType::rsa2048, KeyType::ec_p256, 365}};

  Fixture() {
    must(ca.create_root("root", "Root", KeyType::ec_p384, 3650, "test"));
    must(ca.create_issuing("issuing", "root", "Issuing", KeyType::ec_p256, 1825, 1, "test"));
  }

  // A message encrypted to `address`'s current certificate.
  std::string encrypted_to(const std::string& address, const std::string& body) {
    const std::vector<smime::Recipient> to{{must(users.encryption_certificate(address))}};
    const auto m = smime::encrypt_message(*test::context(), "From: x@example.org\r\nContent-Type: text/plain\r\n\r\n" + body, to, {});
    REQUIRE(m);
    return *m;
  }
};

// Decrypts with whichever of `keys` fits; returns the body or the error.
std::string open_with(const std::vector<Pkcs12Entry>& keys, const std::string& message) {
  std::vector<smime::LocalKeyUnwrapper> unwrappers;
  unwrappers.reserve(keys.size());
  for (const auto& k : keys) unwrappers.push_back(*smime::LocalKeyUnwrapper::create(test::context(), k.certificate, k.key));
  std::vector<smime::KeyUnwrapper*> pointers;
  pointers.reserve(unwrappers.size());
  for (auto& u : unwrappers) pointers.push_back(&u);
  const auto opened = smime::open_message(*test::context(), message, pointers, {});
  return opened.error ? opened.error->describe() : opened.content.body;
}

}  // namespace

TEST_CASE("a new user gets an escrowed encryption key and a signing key", "[users]") {
  Fixture f;
  const UserRecord alice = must(f.users.add("Alice@Example.org", "test"));
  CHECK(alice.address == "alice@example.org");
  REQUIRE(alice.encryption_serials.size() == 1);
  CHECK(alice.signing_key_held);

  const auto encryption = must(f.users.encryption_certificate("alice@example.org"));
  CHECK(encryption.is_rsa());
  CHECK(encryption.has_email("alice@example.org"));
  const auto signing = must(f.users.signing_certificate("alice@example.org"));
  CHECK(signing.is_ec());
  CHECK(must(f.users.signing_key("alice@example.org")).matches(signing));

  const auto escrowed = must(f.users.escrowed_encryption_keys("alice@example.org"));
  REQUIRE(escrowed.size() == 1);
  CHECK(open_with(escrowed, f.encrypted_to("alice@example.org", "for alice\r\n")) == "for alice\r\n");

  CHECK(f.users.add("alice@example.org", "test").error().code == Errc::already_exists);
  CHECK(f.users.add("not-an-address", "test").error().code == Errc::invalid_argument);
  CHECK(f.users.get("nobody@example.org").error().code == Errc::not_found);
}

TEST_CASE("renewal keeps every old encryption key escrowed and retires the old signing certificate", "[users]") {
  Fixture f;
  const UserRecord first = must(f.users.add("bob@example.org", "test"));
  const std::string archived = f.encrypted_to("bob@example.org", "old mail\r\n");
  const UserRecord renewed = must(f.users.renew("bob@example.org", "test"));
  REQUIRE(renewed.encryption_serials.size() == 2);
  CHECK(renewed.encryption_serials.front() == first.encryption_serials.front());
  CHECK(renewed.signing_serial != first.signing_serial);
  CHECK(must(f.ca.certificate(first.signing_serial)).revoked_at.has_value());
  const std::string fresh = f.encrypted_to("bob@example.org", "new mail\r\n");

  const auto escrowed = must(f.users.escrowed_encryption_keys("bob@example.org"));
  REQUIRE(escrowed.size() == 2);
  CHECK(open_with(escrowed, archived) == "old mail\r\n");
  CHECK(open_with(escrowed, fresh) == "new mail\r\n");
}

TEST_CASE("bulk add goes on past bad addresses and counts", "[users]") {
  Fixture f;
  const std::vector<std::string> list{"a@example.org", "bad address", "b@example.org", "A@EXAMPLE.ORG", "c@example"};
  std::size_t calls = 0;
  const BulkSummary s = f.users.add_many(list, "test", [&](std::size_t done, std::size_t total) {
    ++calls;
    CHECK(done <= total);
  });
  CHECK(s.added == 2);
  CHECK(s.already_present == 1);
  REQUIRE(s.failed.size() == 2);
  CHECK(s.failed[0].first == "bad address");
  CHECK(calls == list.size());
  const auto all = must(f.users.list({}, 100));
  REQUIRE(all.size() == 2);
  CHECK(all[0].address == "a@example.org");
  CHECK(must(f.users.list("a@example.org", 100)).size() == 1);
}

TEST_CASE("a user who keeps their own signing key gets only a certificate for it", "[users]") {
  Fixture f;
  must(f.users.add("carol@example.org", "test"));
  const auto req = test::run("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout " +
                             f.dir.path("carol.key").string() + " -subj '/CN=ignored/O=Not Ours'");
  REQUIRE(req.exit_code == 0);
  const smime::Certificate cert = must(f.users.certify_signing_request("carol@example.org", req.out, "test"));
  CHECK(cert.subject() == "CN=carol@example.org");  // our profile, not the request's subject
  const auto key = smime::PrivateKey::from_pem(*test::context(), test::read_file(f.dir.path("carol.key")));
  REQUIRE(key);
  CHECK(key->matches(cert));
  CHECK(f.users.signing_key("carol@example.org").error().code == Errc::not_found);
  CHECK(f.users.certify_signing_request("carol@example.org", "garbage", "test").error().code == Errc::invalid_argument);
}

TEST_CASE("PKCS#12 exports carry every escrowed key, in the modern or the legacy profile", "[users][pkcs12]") {
  Fixture f;
  must(f.users.add("dave@example.org", "test"));
  must(f.users.renew("dave@example.org", "test"));
  const auto keys = must(f.users.escrowed_encryption_keys("dave@example.org"));
  const auto chain = must(f.ca.chain("issuing"));
  for (const auto profile : {Pkcs12Profile::modern, Pkcs12Profile::legacy}) {
    DYNAMIC_SECTION((profile == Pkcs12Profile::modern ? "modern" : "legacy")) {
      Pkcs12Options options;
      options.profile = profile;
      options.iterations = 10'000;  // the default is 600,000: slow under sanitizers
      const std::string p12 = must(make_pkcs12(*test::context(), keys, chain, "dave's password", options));
      const auto path = f.dir.path("dave.p12");
      test::write_file(path, p12);
      const auto info = test::run("openssl pkcs12 -info -noout -in " + path.string() + " -passin 'pass:dave'\"'\"'s password'" +
                                  (profile == Pkcs12Profile::legacy ? " -legacy" : ""));
      INFO(info.err);
      REQUIRE(info.exit_code == 0);
      if (profile == Pkcs12Profile::modern) {
        CHECK(info.err.find("PBES2, PBKDF2, AES-256-CBC") != std::string::npos);
        CHECK(info.err.find("MAC: sha256") != std::string::npos);
      } else {
        CHECK(info.err.find("pbeWithSHA1And3-KeyTripleDES-CBC") != std::string::npos);
        CHECK(info.err.find("MAC: sha1") != std::string::npos);
        CHECK(info.err.find("RC2") == std::string::npos);
      }
      const auto dump = test::run("openssl pkcs12 -nodes -in " + path.string() + " -passin 'pass:dave'\"'\"'s password'" +
                                  (profile == Pkcs12Profile::legacy ? " -legacy" : ""));
      REQUIRE(dump.exit_code == 0);
      std::size_t private_keys = 0;
      for (std::size_t at = 0; (at = dump.out.find("BEGIN PRIVATE KEY", at)) != std::string::npos; ++at) ++private_keys;
      CHECK(private_keys == 2);
      CHECK(test::run("openssl pkcs12 -info -noout -in " + path.string() + " -passin pass:wrong").exit_code != 0);
    }
  }
  CHECK(make_pkcs12(*test::context(), keys, chain, "short", {}).error().code == Errc::invalid_argument);
}

TEST_CASE("users whose certificates end within the renewal window are renewed", "[users]") {
  Fixture f;
  must(f.users.add("gina@example.org", "test"));
  const std::time_t now = std::time(nullptr);
  CHECK(must(f.users.renew_expiring(now + 30 * 86400L, "test")) == 0);  // a year left: nothing to do
  CHECK(must(f.users.renew_expiring(now + 400 * 86400L, "test")) == 1);  // as if a year had passed
  const UserRecord gina = must(f.users.get("gina@example.org"));
  CHECK(gina.encryption_serials.size() == 2);  // the old key stays escrowed
  must(f.users.set_enabled("gina@example.org", false, "test"));
  CHECK(must(f.users.renew_expiring(now + 400 * 86400L, "test")) == 0);  // disabled users are left alone
}

TEST_CASE("users move between keystores in a password-protected bundle", "[users][bundle]") {
  Fixture from;
  Fixture to;
  must(from.users.add("hana@example.org", "test"));
  const std::string archived = from.encrypted_to("hana@example.org", "archived mail\r\n");
  must(from.users.renew("hana@example.org", "test"));
  const std::vector<std::string> hana{"hana@example.org"};
  const ScryptParameters fast{1 << 10, 8, 1};
  const std::string bundle = must(from.users.export_bundle(hana, "the bundle's password", fast, "test"));
  CHECK(bundle.find("PRIVATE") == std::string::npos);
  CHECK(bundle.find("hana") == std::string::npos);  // even who is in it is sealed

  SECTION("a wrong password or a changed bundle imports nothing") {
    CHECK(to.users.import_bundle(bundle, "not the bundle's password", "test").error().code == Errc::wrong_secret);
    std::string changed = bundle;
    const auto at = changed.find("\"payload\":\"") + 20;
    changed[at] = changed[at] == 'A' ? 'B' : 'A';
    CHECK(to.users.import_bundle(changed, "the bundle's password", "test").error().code == Errc::wrong_secret);
    CHECK(to.users.get("hana@example.org").error().code == Errc::not_found);
  }
  SECTION("imported, old mail still opens and the keys sign") {
    const auto summary = must(to.users.import_bundle(bundle, "the bundle's password", "test"));
    CHECK(summary.imported == 1);
    const UserRecord imported = must(to.users.get("hana@example.org"));
    CHECK(imported.encryption_serials.size() == 2);
    CHECK(open_with(must(to.users.escrowed_encryption_keys("hana@example.org")), archived) == "archived mail\r\n");
    CHECK(must(to.users.signing_key("hana@example.org")).matches(must(to.users.signing_certificate("hana@example.org"))));
    CHECK(must(to.users.import_bundle(bundle, "the bundle's password", "test")).skipped == hana);
    CHECK(must(to.audit.verify()).intact);
  }
}

TEST_CASE("an import never replaces a certificate record already stored here", "[users][bundle]") {
  Fixture from;
  Fixture to;
  const UserRecord victim = must(to.users.add("ivan@example.org", "test"));
  const std::string serial = victim.encryption_serials.front();
  must(to.ca.revoke(serial, RevocationReason::key_compromise, "test"));

  // A self-made certificate for mallory that reuses ivan's serial, in a
  // bundle made the ordinary way.
  const auto made = test::run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -keyout " +
                              from.dir.path("mallory.key").string() + " -set_serial 0x" + serial +
                              " -subj /CN=mallory@example.org -addext subjectAltName=email:mallory@example.org 2>/dev/null");
  REQUIRE(made.exit_code == 0);
  const smime::Certificate forged = must(smime::Certificate::from_pem(made.out));
  REQUIRE(forged.serial_hex() == serial);
  const auto key = must(smime::PrivateKey::from_pem(*test::context(), test::read_file(from.dir.path("mallory.key"))));
  must(store_private_key(from.barrier, "mallory@example.org", "enc-" + serial, key));
  const nlohmann::json record{{"serial", serial}, {"ca", "imported"}, {"owner", "mallory@example.org"},
                              {"profile", "encryption"}, {"certificate", forged.pem()}, {"not_after", forged.not_after()},
                              {"revoked_at", nullptr}, {"reason", 0}};
  must(from.storage->put("certs/" + serial, record.dump()));
  const nlohmann::json user{{"address", "mallory@example.org"}, {"enabled", true}, {"created", 0},
                            {"encryption", {serial}}, {"signing", ""}, {"signing_key_held", false}};
  must(from.storage->put("users/mallory@example.org", user.dump()));
  const std::vector<std::string> mallory{"mallory@example.org"};
  const std::string bundle = must(from.users.export_bundle(mallory, "the bundle's password", {1 << 10, 8, 1}, "test"));

  const auto refused = to.users.import_bundle(bundle, "the bundle's password", "admin:mallory");
  REQUIRE(!refused);
  CHECK(refused.error().code == Errc::already_exists);
  CHECK(refused.error().message.find(serial) != std::string::npos);
  CHECK(refused.error().message.find("mallory@example.org") != std::string::npos);
  const CertificateRecord kept = must(to.ca.certificate(serial));
  CHECK(kept.owner == "ivan@example.org");
  CHECK(kept.revoked_at.has_value());
  CHECK(kept.certificate.has_email("ivan@example.org"));
  CHECK(to.users.get("mallory@example.org").error().code == Errc::not_found);
  CHECK(must(to.audit.verify()).intact);
}

TEST_CASE("renewal leaves a signing key the user keeps, and its certificate, alone", "[users]") {
  Fixture f;
  const UserRecord added = must(f.users.add("jane@example.org", "test"));
  const auto req = test::run("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout " +
                             f.dir.path("jane.key").string() + " -subj /CN=jane");
  REQUIRE(req.exit_code == 0);
  const smime::Certificate own = must(f.users.certify_signing_request("jane@example.org", req.out, "test"));

  const UserRecord renewed = must(f.users.renew("jane@example.org", "test"));
  CHECK(renewed.encryption_serials.size() == 2);
  CHECK_FALSE(renewed.signing_key_held);
  CHECK(renewed.signing_serial == own.serial_hex());
  CHECK_FALSE(must(f.ca.certificate(own.serial_hex())).revoked_at.has_value());
  CHECK(must(f.users.signing_certificate("jane@example.org")) == own);
  CHECK(f.users.signing_key("jane@example.org").error().code == Errc::not_found);

  // The hourly renewal does the same.
  CHECK(must(f.users.renew_expiring(std::time(nullptr) + 400 * 86400L, "test")) == 1);
  const UserRecord again = must(f.users.get("jane@example.org"));
  CHECK(again.encryption_serials.size() == 3);
  CHECK(again.encryption_serials.front() == added.encryption_serials.front());
  CHECK_FALSE(again.signing_key_held);
  CHECK(again.signing_serial == own.serial_hex());
  CHECK_FALSE(must(f.ca.certificate(own.serial_hex())).revoked_at.has_value());

  const auto records = must(f.audit.read(0, 1000));
  CHECK(std::any_of(records.begin(), records.end(), [](const AuditRecord& r) {
    return r.event.action == "user-renew" && r.event.detail.find("kept: the user holds its key") != std::string::npos;
  }));
}

TEST_CASE("a certificate request for a weak or unusual key is refused, saying why", "[users]") {
  Fixture f;
  const UserRecord kim = must(f.users.add("kim@example.org", "test"));
  const auto request = [&](const std::string& newkey) {
    const auto req = test::run("openssl req -new -newkey " + newkey + " -nodes -keyout " + f.dir.path("kim.key").string() +
                               " -subj /CN=kim 2>/dev/null");
    REQUIRE(req.exit_code == 0);
    return req.out;
  };
  const auto refused = [&](const std::string& newkey, const std::string& why) {
    INFO(newkey);
    const auto r = f.users.certify_signing_request("kim@example.org", request(newkey), "test");
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::invalid_argument);
    CHECK(r.error().message == "the request's key is refused: " + why);
  };
  refused("rsa:1024", "RSA of 1024 bits: at least 2048 are needed");
  refused("ec -pkeyopt ec_paramgen_curve:P-521", "EC on curve secp521r1: P-256 or P-384 are accepted");
  refused("ec -pkeyopt ec_paramgen_curve:secp256k1", "EC on curve secp256k1: P-256 or P-384 are accepted");
  refused("ed25519", "ED25519: RSA (2048 bits or more) or EC on P-256 or P-384 are accepted");
  const UserRecord unchanged = must(f.users.get("kim@example.org"));
  CHECK(unchanged.signing_serial == kim.signing_serial);
  CHECK(unchanged.signing_key_held);

  must(f.users.certify_signing_request("kim@example.org", request("rsa:2048"), "test"));
  must(f.users.certify_signing_request("kim@example.org", request("ec -pkeyopt ec_paramgen_curve:P-384"), "test"));
}
