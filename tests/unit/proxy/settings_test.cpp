// [proxy] in mailkms.conf: every key lands in its field, a mistake is an
// error that names the key and where it is, and nothing unknown is ignored.
#include <catch2/catch.hpp>

#include "settings.hpp"
#include "test_support.hpp"

using namespace mailkms;
using namespace mailkms::proxy;
using namespace std::chrono_literals;

namespace {

gateway::Result<Settings> load(const test::TempDir& dir, const std::string& conf) {
  const auto path = dir.path("mailkms.conf");
  test::write_file(path, conf);
  return load_settings(path);
}

}  // namespace

TEST_CASE("Every [proxy] key is read") {
  test::TempDir dir;
  auto settings = load(dir, R"([proxy]
listen = "[::1]:2525"
next_hop = "192.0.2.7:10026"
hostname = "mx.example.org"
threads = 4
max_sessions = 7
max_sessions_per_client = 5
command_timeout_seconds = 60
data_timeout_seconds = 30
next_hop_timeout_seconds = 20
next_hop_idle_seconds = 0
shutdown_timeout_seconds = 15
xforward_peers = ["127.0.0.1", "2001:db8::/32"]
xclient_peers = ["127.0.0.3"]
pid_file = "/run/p.pid"
log_file = "/var/log/p.log"
metrics_listen = "[::1]:9471"
user = "nobody"
group = "nogroup"
)");
  REQUIRE(settings);
  CHECK(settings->listen.host == "::1");
  CHECK(settings->listen.port == 2525);
  CHECK(settings->next_hop.host == "192.0.2.7");
  CHECK(settings->next_hop.port == 10026);
  CHECK(settings->hostname == "mx.example.org");
  CHECK(settings->threads == 4);
  CHECK(settings->max_sessions == 7);
  CHECK(settings->max_sessions_per_client == 5);
  CHECK(settings->command_timeout == 60s);
  CHECK(settings->data_timeout == 30s);
  CHECK(settings->next_hop_timeout == 20s);
  CHECK(settings->next_hop_idle == 0s);  // a connection per message
  CHECK(settings->shutdown_timeout == 15s);
  REQUIRE(settings->xforward_peers.size() == 2);
  CHECK(mailkms::policy::network_of(settings->xforward_peers, "127.0.0.1") == "127.0.0.1/32");
  CHECK(mailkms::policy::network_of(settings->xforward_peers, "2001:db8::25") == "2001:db8::/32");
  CHECK(!mailkms::policy::network_of(settings->xforward_peers, "127.0.0.2"));
  REQUIRE(settings->xclient_peers.size() == 1);
  CHECK(mailkms::policy::network_of(settings->xclient_peers, "127.0.0.3") == "127.0.0.3/32");
  CHECK(settings->pid_file == "/run/p.pid");
  CHECK(settings->log_file == "/var/log/p.log");
  CHECK(settings->metrics_listen == "[::1]:9471");
  CHECK(settings->user == 65534u);   // Debian's nobody
  CHECK(settings->group == 65534u);  // and nogroup
}

TEST_CASE("Without [proxy], the defaults, and this host's name") {
  test::TempDir dir;
  auto settings = load(dir, "[gateway]\n");
  REQUIRE(settings);
  CHECK(settings->listen.port == 10025);
  CHECK(settings->next_hop.port == 10026);
  CHECK(!settings->hostname.empty());
  CHECK(settings->shutdown_timeout == 60s);
  CHECK(settings->next_hop_idle == 5s);
  CHECK(settings->max_sessions_per_client == 50);
  CHECK(settings->xforward_peers.empty());  // nobody's XFORWARD is believed
  CHECK(settings->xclient_peers.empty());   // nor XCLIENT
  CHECK(settings->next_hop_tls == HopTls::may);
  CHECK(settings->next_hop_tls_context);
  CHECK(settings->next_hop_tls_name == "127.0.0.1");  // the next hop's address, when verify is chosen
  CHECK_FALSE(settings->user);
  CHECK(settings->metrics_listen.empty());  // no metrics served
}

TEST_CASE("A wrong [proxy] value or an unknown key is refused, naming it") {
  test::TempDir dir;
  CHECK_THAT(load(dir, "[proxy]\nnext_hop = \"mx.example.org:25\"\n").error().message,
             Catch::Contains("proxy.next_hop at line 2, column 12: expected"));
  CHECK_THAT(load(dir, "[proxy]\nlisten = \"127.0.0.1:0\"\n").error().message, Catch::Contains("proxy.listen"));
  CHECK_THAT(load(dir, "[proxy]\nlisten = \"::1:25\"\n").error().message, Catch::Contains("proxy.listen"));
  CHECK_THAT(load(dir, "[proxy]\nhostname = \"mx example\"\n").error().message, Catch::Contains("proxy.hostname"));
  CHECK_THAT(load(dir, "[proxy]\nmax_sessions = 0\n").error().message, Catch::Contains("proxy.max_sessions"));
  CHECK_THAT(load(dir, "[proxy]\nmax_sessions_per_client = 0\n").error().message,
             Catch::Contains("proxy.max_sessions_per_client"));
  CHECK_THAT(load(dir, "[proxy]\nnext_hop_timeout_seconds = 0\n").error().message,
             Catch::Contains("proxy.next_hop_timeout_seconds"));
  CHECK_THAT(load(dir, "[proxy]\nnext_hop_idle_seconds = 301\n").error().message,
             Catch::Contains("proxy.next_hop_idle_seconds"));
  CHECK_THAT(load(dir, "[proxy]\nxforward_peers = [\"127.0.0.0/33\"]\n").error().message,
             Catch::Contains("proxy.xforward_peers"));
  CHECK_THAT(load(dir, "[proxy]\nxforward_peers = \"127.0.0.1\"\n").error().message,
             Catch::Contains("proxy.xforward_peers"));
  CHECK_THAT(load(dir, "[proxy]\nxclient_peers = [\"localhost\"]\n").error().message,
             Catch::Contains("proxy.xclient_peers"));
  CHECK_THAT(load(dir, "[proxy]\nshutdown_timeout_seconds = 3601\n").error().message,
             Catch::Contains("proxy.shutdown_timeout_seconds"));
  CHECK_THAT(load(dir, "[proxy]\nuser = \"no-such-user-here\"\n").error().message,
             Catch::Contains("proxy.user at line 2, column 8: expected the name of an existing user"));
  CHECK_THAT(load(dir, "[proxy]\ngroup = \"no-such-group-here\"\n").error().message,
             Catch::Contains("proxy.group at line 2, column 9: expected the name of an existing group"));
  for (const char* address : {"localhost:9471", "127.0.0.1", "::1:9471", "127.0.0.1:0", "[::1]:65536"}) {
    INFO(address);
    CHECK_THAT(load(dir, std::string("[proxy]\nmetrics_listen = \"") + address + "\"\n").error().message,
               Catch::Contains("proxy.metrics_listen at line 2, column 18: expected an IP address with a port"));
  }
  CHECK_THAT(load(dir, "[proxy]\nlisten_on = \"127.0.0.1:25\"\n").error().message,
             Catch::Contains("unknown key proxy.listen_on"));
}

TEST_CASE("tls_certificate and tls_key make the STARTTLS context, or an error naming the file") {
  test::TempDir dir;
  const auto both = [&](const std::string& certificate, const std::string& key) {
    return load(dir, "[proxy]\ntls_certificate = \"" + certificate + "\"\ntls_key = \"" + key + "\"\n");
  };
  auto none = load(dir, "[proxy]\n");
  REQUIRE(none);
  CHECK_FALSE(none->tls);  // STARTTLS is not offered

  auto made = both(test::pki_path("alice.pem"), test::pki_path("alice.key"));
  REQUIRE(made);
  CHECK(made->tls);
  CHECK(made->tls_certificate == test::pki_path("alice.pem"));

  auto alone = load(dir, "[proxy]\ntls_certificate = \"" + test::pki_path("alice.pem") + "\"\n");
  REQUIRE_FALSE(alone);
  CHECK(alone.error().message == "[proxy] tls_certificate and tls_key go together: set both, or neither");

  auto mismatched = both(test::pki_path("alice.pem"), test::pki_path("bob.key"));
  REQUIRE_FALSE(mismatched);
  CHECK(mismatched.error().message.starts_with("[proxy] tls_key " + test::pki_path("bob.key") + ": "));
  CHECK(mismatched.error().message.find("mismatch") != std::string::npos);

  auto missing = both(dir.path("none.pem").string(), test::pki_path("alice.key"));
  REQUIRE_FALSE(missing);
  CHECK(missing.error().message.starts_with("[proxy] tls_certificate " + dir.path("none.pem").string() + ": "));

  auto not_a_key = both(test::pki_path("alice.pem"), test::pki_path("alice.pem"));
  REQUIRE_FALSE(not_a_key);
  CHECK(not_a_key.error().message.starts_with("[proxy] tls_key " + test::pki_path("alice.pem") + ": "));
}

TEST_CASE("next_hop_tls picks how the proxy talks TLS to the next hop, with a CA and a name for verify") {
  test::TempDir dir;
  auto none = load(dir, "[proxy]\nnext_hop_tls = \"none\"\n");
  REQUIRE(none);
  CHECK(none->next_hop_tls == HopTls::none);
  CHECK_FALSE(none->next_hop_tls_context);  // STARTTLS is never asked for

  auto encrypt = load(dir, "[proxy]\nnext_hop_tls = \"encrypt\"\n");
  REQUIRE(encrypt);
  CHECK(encrypt->next_hop_tls == HopTls::encrypt);
  CHECK(encrypt->next_hop_tls_context);

  auto verify = load(dir, "[proxy]\nnext_hop = \"192.0.2.7:25\"\nnext_hop_tls = \"verify\"\nnext_hop_tls_ca = \"" +
                              test::pki_path("root.pem") + "\"\nnext_hop_tls_name = \"relay.example.org\"\n");
  if (!verify) FAIL(verify.error().message);
  CHECK(verify->next_hop_tls == HopTls::verify);
  CHECK(verify->next_hop_tls_name == "relay.example.org");
  CHECK(verify->next_hop_tls_ca == test::pki_path("root.pem"));

  auto system_anchors = load(dir, "[proxy]\nnext_hop_tls = \"verify\"\n");
  REQUIRE(system_anchors);  // the system's CAs, and the next hop's address as the name
  CHECK(system_anchors->next_hop_tls_name == "127.0.0.1");

  CHECK_THAT(load(dir, "[proxy]\nnext_hop_tls = \"yes\"\n").error().message,
             Catch::Contains("proxy.next_hop_tls at line 2, column 16: expected \"none\", \"may\", \"encrypt\" or \"verify\""));
  CHECK_THAT(load(dir, "[proxy]\nnext_hop_tls_name = \"relay example\"\n").error().message,
             Catch::Contains("proxy.next_hop_tls_name"));
  CHECK(load(dir, "[proxy]\nnext_hop_tls_ca = \"" + test::pki_path("root.pem") + "\"\n").error().message ==
        "[proxy] next_hop_tls_ca is for next_hop_tls = \"verify\"");
  auto missing = load(dir, "[proxy]\nnext_hop_tls = \"verify\"\nnext_hop_tls_ca = \"" + dir.path("none.pem").string() + "\"\n");
  REQUIRE_FALSE(missing);
  CHECK(missing.error().message.starts_with("[proxy] next_hop_tls_ca " + dir.path("none.pem").string() + ": "));
}
