// [gateway] in mailkms.conf: every key lands in its field, a mistake is an
// error that names the key and where it is, and nothing unknown is ignored.
#include <catch2/catch.hpp>

#include <unistd.h>

#include "mailkms/gateway/settings.hpp"
#include "test_support.hpp"

using namespace mailkms;
using namespace mailkms::gateway;
using namespace std::chrono_literals;
using test::TempDir;

namespace {

Settings load(const TempDir& dir, const std::string& conf) {
  const auto path = dir.path("mailkms.conf");
  test::write_file(path, conf);
  auto settings = load_settings(path);
  if (!settings) FAIL(settings.error().message);
  return std::move(settings).value();
}

// The error for `conf`, which must be refused.
std::string refusal(const TempDir& dir, const std::string& conf) {
  const auto path = dir.path("mailkms.conf");
  test::write_file(path, conf);
  auto settings = load_settings(path);
  if (settings) FAIL("accepted:\n" << conf);
  return settings.error().message;
}

std::string host_name() {
  char name[256] = {};
  REQUIRE(::gethostname(name, sizeof name - 1) == 0);
  return name;
}

}  // namespace

TEST_CASE("without [gateway] every setting has its default", "[settings]") {
  TempDir dir;
  const Settings s = load(dir, "[keystore]\ndatabase = \"/var/lib/mailkms/keystore.db\"\n");
  const Settings defaults;
  CHECK(s.policy == "/etc/mailkms/policy.toml");
  CHECK(s.keystore_socket == "/run/mailkms-keystore/keystore.sock");
  CHECK(s.certificate_ttl == 300s);
  CHECK(s.missing_certificate_ttl == 60s);
  CHECK(s.keystore_timeout == 5000ms);
  CHECK(s.mixed_recipients == MixedRecipients::defer);
  CHECK(s.reinject_command == std::vector<std::string>{"/usr/sbin/sendmail", "-G", "-i"});
  CHECK(s.reinject_key_file.empty());
  CHECK(s.enrollment_address.empty());
  CHECK(s.on_keystore_unavailable == FailureAction::tempfail);
  CHECK(s.on_internal_error == FailureAction::tempfail);
  CHECK(s.on_bad_signature == FailureAction::accept);
  CHECK(s.on_malformed == FailureAction::accept);
  CHECK(s.spool_memory_limit == 1u << 20);
  CHECK(s.spool_directory == defaults.spool_directory);
  CHECK(s.max_message_size == 100u << 20);
  CHECK(s.inbound_memory_limit == 32u << 20);
}

TEST_CASE("authserv_id defaults to the host name", "[settings]") {
  TempDir dir;
  const Settings s = load(dir, "");
  CHECK_FALSE(s.authserv_id.empty());
  CHECK(s.authserv_id == host_name());
  CHECK(load(dir, "[gateway]\n").authserv_id == host_name());
  CHECK(load(dir, "[gateway]\nauthserv_id = \"\"\n").authserv_id == host_name());
}

TEST_CASE("every key of [gateway] is read", "[settings]") {
  TempDir dir;
  const Settings s = load(dir, R"(
[keystore]
socket = "/run/test/keystore.sock"

[gateway]
policy = "/etc/test/policy.toml"
authserv_id = "mx.example.org"
certificate_ttl_seconds = 600
missing_certificate_ttl_seconds = 0
keystore_timeout_ms = 250
mixed_recipients = "reinject"
reinject_command = ["/usr/local/sbin/sendmail", "-i", "-oQ"]
reinject_key_file = "/etc/test/reinject.key"
enrollment_address = "enroll@example.org"
on_keystore_unavailable = "reject"
on_internal_error = "quarantine"
on_bad_signature = "tempfail"
on_malformed = "reject"
spool_memory_limit = 65536
spool_directory = "/var/spool/test"
max_message_size = 2048
inbound_memory_limit = 4096
)");
  CHECK(s.keystore_socket == "/run/test/keystore.sock");
  CHECK(s.policy == "/etc/test/policy.toml");
  CHECK(s.authserv_id == "mx.example.org");
  CHECK(s.certificate_ttl == 600s);
  CHECK(s.missing_certificate_ttl == 0s);
  CHECK(s.keystore_timeout == 250ms);
  CHECK(s.mixed_recipients == MixedRecipients::reinject);
  CHECK(s.reinject_command == std::vector<std::string>{"/usr/local/sbin/sendmail", "-i", "-oQ"});
  CHECK(s.reinject_key_file == "/etc/test/reinject.key");
  CHECK(s.enrollment_address == "enroll@example.org");
  CHECK(s.on_keystore_unavailable == FailureAction::reject);
  CHECK(s.on_internal_error == FailureAction::quarantine);
  CHECK(s.on_bad_signature == FailureAction::tempfail);
  CHECK(s.on_malformed == FailureAction::reject);
  CHECK(s.spool_memory_limit == 65536u);
  CHECK(s.spool_directory == "/var/spool/test");
  CHECK(s.max_message_size == 2048u);
  CHECK(s.inbound_memory_limit == 4096u);
}

TEST_CASE("[keystore] socket is read without [gateway]", "[settings]") {
  TempDir dir;
  CHECK(load(dir, "[keystore]\nsocket = \"/tmp/ks.sock\"\n").keystore_socket == "/tmp/ks.sock");
}

TEST_CASE("the enrollment address is one for the site, set in either section", "[settings]") {
  TempDir dir;
  CHECK(load(dir, "[keystore]\nenrollment_address = \"enroll@example.org\"\n").enrollment_address == "enroll@example.org");
  CHECK(load(dir, "[gateway]\nenrollment_address = \"enroll@example.org\"\n").enrollment_address == "enroll@example.org");
  CHECK(load(dir, "[keystore]\nenrollment_address = \"Enroll@Example.org\"\n"
                  "[gateway]\nenrollment_address = \"enroll@example.org\"\n")
            .enrollment_address == "enroll@example.org");
  CHECK(refusal(dir, "[gateway]\nenrollment_address = \"<enroll@example.org>\"\n") ==
        dir.path("mailkms.conf").string() +
            ": gateway.enrollment_address at line 2, column 22: expected a mail address like \"mailkms-enroll@example.org\"");
  const std::string error = refusal(dir, "[keystore]\nenrollment_address = \"keys@example.org\"\n"
                                         "[gateway]\nenrollment_address = \"enroll@example.org\"\n");
  CHECK(error == dir.path("mailkms.conf").string() +
                     ": gateway.enrollment_address \"enroll@example.org\" differs from keystore.enrollment_address "
                     "\"keys@example.org\"; set it once, in either section");
}

TEST_CASE("FailureAction names read back", "[settings]") {
  CHECK(to_string(FailureAction::accept) == "accept");
  CHECK(to_string(FailureAction::reject) == "reject");
  CHECK(to_string(FailureAction::tempfail) == "tempfail");
  CHECK(to_string(FailureAction::quarantine) == "quarantine");
}

TEST_CASE("an unknown key is an error naming it and where it is", "[settings]") {
  TempDir dir;
  const std::string error = refusal(dir, "[gateway]\npolicy = \"/etc/p.toml\"\ncolour = \"red\"\n");
  CHECK_THAT(error, Catch::StartsWith(dir.path("mailkms.conf").string() +
                                      ", line 3, column 10: unknown key gateway.colour; expected one of "));
  CHECK_THAT(error, Catch::Contains(" policy, ") && Catch::Contains(" max_message_size, "));
}

TEST_CASE("a wrong value is an error naming the key and where it is", "[settings]") {
  TempDir dir;
  const std::string file = dir.path("mailkms.conf").string();
  CHECK(refusal(dir, "[gateway]\nmixed_recipients = \"sometimes\"\n") ==
        file + ": gateway.mixed_recipients at line 2, column 20: expected defer or reinject");
  CHECK(refusal(dir, "[gateway]\non_internal_error = \"maybe\"\n") ==
        file + ": gateway.on_internal_error at line 2, column 21: expected accept, reject, tempfail or quarantine");
  CHECK(refusal(dir, "[gateway]\nkeystore_timeout_ms = 5\n") ==
        file + ": gateway.keystore_timeout_ms at line 2, column 23: expected a number from 100 to 600000");
  CHECK(refusal(dir, "[gateway]\nreinject_command = [\"sendmail\", \"-i\"]\n") ==
        file + ": gateway.reinject_command at line 2, column 20: expected an absolute path as the first element");
}

TEST_CASE("every key checks its value", "[settings]") {
  TempDir dir;
  const std::string file = dir.path("mailkms.conf").string();
  struct Case {
    std::string line;
    std::string key;
  };
  const auto c = GENERATE(values<Case>({
      {"policy = 5", "gateway.policy"},
      {"policy = \"\"", "gateway.policy"},
      {"authserv_id = 1", "gateway.authserv_id"},
      {"certificate_ttl_seconds = \"300\"", "gateway.certificate_ttl_seconds"},
      {"certificate_ttl_seconds = -1", "gateway.certificate_ttl_seconds"},
      {"missing_certificate_ttl_seconds = 86401", "gateway.missing_certificate_ttl_seconds"},
      {"keystore_timeout_ms = 600001", "gateway.keystore_timeout_ms"},
      {"keystore_timeout_ms = 1.5", "gateway.keystore_timeout_ms"},
      {"mixed_recipients = true", "gateway.mixed_recipients"},
      {"mixed_recipients = \"Defer\"", "gateway.mixed_recipients"},
      {"reinject_command = \"/usr/sbin/sendmail -i\"", "gateway.reinject_command"},
      {"reinject_command = []", "gateway.reinject_command"},
      {"reinject_command = [\"/usr/sbin/sendmail\", \"\"]", "gateway.reinject_command"},
      {"reinject_command = [\"/usr/sbin/sendmail\", 1]", "gateway.reinject_command"},
      {"reinject_key_file = []", "gateway.reinject_key_file"},
      {"enrollment_address = false", "gateway.enrollment_address"},
      {"on_keystore_unavailable = \"drop\"", "gateway.on_keystore_unavailable"},
      {"on_bad_signature = \"Accept\"", "gateway.on_bad_signature"},
      {"on_malformed = 1", "gateway.on_malformed"},
      {"spool_memory_limit = 4095", "gateway.spool_memory_limit"},
      {"spool_memory_limit = 1073741825", "gateway.spool_memory_limit"},
      {"spool_directory = \"\"", "gateway.spool_directory"},
      {"max_message_size = 1023", "gateway.max_message_size"},
      {"inbound_memory_limit = 1023", "gateway.inbound_memory_limit"},
      {"max_message_size = \"1M\"", "gateway.max_message_size"},
  }));
  const std::string error = refusal(dir, "[gateway]\n" + c.line + "\n");
  CHECK(error.starts_with(file + ": " + c.key + " at line 2, column "));
  CHECK(error.find(": expected ") != std::string::npos);
}

TEST_CASE("the boundaries of the ranges are accepted", "[settings]") {
  TempDir dir;
  CHECK(load(dir, "[gateway]\nkeystore_timeout_ms = 100\n").keystore_timeout == 100ms);
  CHECK(load(dir, "[gateway]\nkeystore_timeout_ms = 600000\n").keystore_timeout == 600000ms);
  CHECK(load(dir, "[gateway]\ncertificate_ttl_seconds = 86400\n").certificate_ttl == 86400s);
  CHECK(load(dir, "[gateway]\nspool_memory_limit = 4096\n").spool_memory_limit == 4096u);
  CHECK(load(dir, "[gateway]\nmax_message_size = 17179869184\n").max_message_size == 17179869184u);
}

TEST_CASE("a file that is not TOML, or missing, is an error naming it", "[settings]") {
  TempDir dir;
  const std::string file = dir.path("mailkms.conf").string();
  const std::string error = refusal(dir, "[gateway]\npolicy = \n");
  CHECK(error.starts_with(file + ", line 2, column "));
  const auto missing = load_settings(dir.path("absent.conf"));
  REQUIRE_FALSE(missing);
  CHECK(missing.error().message.find(dir.path("absent.conf").string()) != std::string::npos);
}
