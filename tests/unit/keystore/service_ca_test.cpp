// The service CA: certificates for the keystore's TLS peers, each with its
// role in it and a row that admits it; openssl agrees on their purposes.
#include <catch2/catch.hpp>

#include "mailkms/keystore/client.hpp"
#include "mailkms/keystore/service_ca.hpp"
#include "keystore_fixture.hpp"
#include "test_support.hpp"

using namespace mailkms;
using namespace mailkms::keystore;
using test::must;

namespace {

struct Fixture : test::KeystoreFixture {
  ServiceCa ca{*storage, barrier, audit, test::context()};

  // A P-256 key and its request, as `mailkmsctl gateway add --csr` takes one.
  std::string request(const std::string& name) {
    const auto req = test::run("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout " +
                               dir.path(name + ".key").string() + " -subj '/CN=" + name + "'");
    REQUIRE(req.exit_code == 0);
    return req.out;
  }
  test::CommandResult verify(const smime::Certificate& cert, const std::string& purpose) {
    test::write_file(dir.path("ca.pem"), must(ca.certificate("test")).pem());
    test::write_file(dir.path("leaf.pem"), cert.pem());
    return test::run("openssl verify -purpose " + purpose + " -CAfile " + dir.path("ca.pem").string() + " " +
                     dir.path("leaf.pem").string());
  }
};

}  // namespace

TEST_CASE("service certificates carry their role and pass openssl for their TLS side only", "[service-ca]") {
  Fixture f;
  const ServicePeer gateway = must(f.ca.issue("mx1.example.org", PeerRole::gateway, f.request("mx1"), 30, "test"));
  const ServicePeer server = must(f.ca.issue("127.0.0.1", PeerRole::keystore, f.request("ks"), 30, "test"));
  CHECK(gateway.certificate.subject().find("OU=gateway") != std::string::npos);
  CHECK(gateway.certificate.subject().find("CN=mx1.example.org") != std::string::npos);
  CHECK(server.certificate.subject().find("OU=keystore") != std::string::npos);
  CHECK(f.verify(gateway.certificate, "sslclient").exit_code == 0);
  CHECK(f.verify(gateway.certificate, "sslserver").exit_code != 0);
  CHECK(f.verify(server.certificate, "sslserver").exit_code == 0);
  CHECK(f.verify(server.certificate, "sslclient").exit_code != 0);
  const auto names = test::run("openssl x509 -noout -ext subjectAltName -in " + f.dir.path("leaf.pem").string());
  CHECK(names.out.find("IP Address:127.0.0.1") != std::string::npos);
  // The CA is made once: the second call returns the same certificate.
  CHECK(must(f.ca.certificate("test")) == must(f.ca.certificate("test")));
}

TEST_CASE("a peer is admitted by its row: the very certificate, not revoked", "[service-ca]") {
  Fixture f;
  const ServicePeer mx = must(f.ca.issue("mx1.example.org", PeerRole::gateway, f.request("mx1"), 30, "test"));
  CHECK(must(f.ca.admit(mx.serial, mx.fingerprint)).role == PeerRole::gateway);

  SECTION("another certificate with the same serial is not it") {
    const auto other = f.ca.admit(mx.serial, std::string(64, 'a'));
    REQUIRE_FALSE(other);
    CHECK(other.error().code == Errc::permission_denied);
  }
  SECTION("a serial this keystore never issued") {
    const auto unknown = f.ca.admit("4ABC", mx.fingerprint);
    REQUIRE_FALSE(unknown);
    CHECK(unknown.error().message.find("not issued by this keystore") != std::string::npos);
  }
  SECTION("revoked, it is refused; a name holds one certificate in force at a time") {
    const auto twice = f.ca.issue("mx1.example.org", PeerRole::gateway, f.request("mx1b"), 30, "test");
    REQUIRE_FALSE(twice);
    CHECK(twice.error().code == Errc::already_exists);
    CHECK(must(f.ca.revoke("mx1.example.org", "test")) == 1);
    const auto refused = f.ca.admit(mx.serial, mx.fingerprint);
    REQUIRE_FALSE(refused);
    CHECK(refused.error().message.find("revoked") != std::string::npos);
    const ServicePeer again = must(f.ca.issue("mx1.example.org", PeerRole::gateway, f.request("mx1c"), 30, "test"));
    CHECK(must(f.ca.admit(again.serial, again.fingerprint)).name == "mx1.example.org");
    const auto all = must(f.ca.list());
    REQUIRE(all.size() == 2);
    CHECK(all[0].revoked_at.has_value() != all[1].revoked_at.has_value());
    CHECK_FALSE(f.ca.revoke("nobody.example.org", "test"));
  }
}

TEST_CASE("service certificates name hosts, and a request must be signed by its key", "[service-ca]") {
  Fixture f;
  for (const char* bad : {"", "MX1.example.org", "-mx", "mx..example.org", "mx1.example.org.", "a b", "x/y"}) {
    INFO(bad);
    CHECK_FALSE(valid_peer_name(bad));
  }
  for (const char* good : {"mx1.example.org", "localhost", "127.0.0.1", "::1", "2001:db8::7"}) {
    INFO(good);
    CHECK(valid_peer_name(good));
  }
  std::string tampered = f.request("mx1");
  tampered[tampered.size() / 2] = tampered[tampered.size() / 2] == 'A' ? 'B' : 'A';
  CHECK_FALSE(f.ca.issue("mx1.example.org", PeerRole::gateway, tampered, 30, "test"));
  CHECK_FALSE(f.ca.issue("mx1.example.org", PeerRole::gateway, "not a request", 30, "test"));
}

TEST_CASE("endpoints: unix paths and tls://host:port, IPv6 in brackets", "[service-ca]") {
  const Endpoint unix_socket = must(Endpoint::parse("unix:/run/mailkms-keystore/keystore.sock"));
  CHECK(unix_socket.kind == Endpoint::Kind::unix_socket);
  CHECK(must(Endpoint::parse("/run/k.sock")).socket == "/run/k.sock");
  const Endpoint v4 = must(Endpoint::parse("tls://ks1.example.org:7443"));
  CHECK((v4.kind == Endpoint::Kind::tls && v4.host == "ks1.example.org" && v4.port == "7443"));
  const Endpoint v6 = must(Endpoint::parse("tls://[::1]:7443"));
  CHECK(v6.host == "::1");
  CHECK(v6.text() == "tls://[::1]:7443");
  for (const char* bad : {"tls://::1:7443", "tls://host", "tls://host:0", "tls://host:65536", "tls://:7443",
                          "http://host:80", "relative.sock", "tls://host:12x"}) {
    INFO(bad);
    CHECK_FALSE(Endpoint::parse(bad));
  }
}
