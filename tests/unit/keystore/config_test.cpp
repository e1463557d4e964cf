// Reading [keystore] of mailkms.conf: who counts as a gateway.
#include <catch2/catch.hpp>

#include "mailkms/keystore/config.hpp"
#include "test_support.hpp"

using namespace mailkms;
using namespace mailkms::keystore;
using test::must;

TEST_CASE("a gateway uid or gid too large for the system is refused, never wrapped round to root", "[config]") {
  test::TempDir dir;
  const auto path = dir.path("mailkms.conf");
  test::write_file(path, "[keystore]\ngateway_users = [110, 4294967295]\ngateway_groups = [120]\n");
  const Config config = must(load_config(path));
  CHECK(config.gateway_uids == std::vector<uid_t>{110, 4294967295U});
  CHECK(config.gateway_gids == std::vector<gid_t>{120});

  // 2^32 would be uid 0 once cut to 32 bits.
  for (const std::string key : {"gateway_users", "gateway_groups"}) {
    INFO(key);
    test::write_file(path, "[keystore]\n" + key + " = [4294967296]\n");
    const auto refused = load_config(path);
    REQUIRE_FALSE(refused);
    CHECK(refused.error().message.find(key + " at line 2, column") != std::string::npos);
    CHECK(refused.error().message.find("a number from 0 to 4294967295") != std::string::npos);
  }
}

TEST_CASE("database names an SQLite file or a PostgreSQL database", "[config]") {
  test::TempDir dir;
  const auto path = dir.path("mailkms.conf");
  test::write_file(path, "[keystore]\ndatabase = \"/srv/ks/keystore.db\"\n");
  const Config file = must(load_config(path));
  CHECK(file.database == DatabaseLocation::sqlite("/srv/ks/keystore.db"));
  CHECK(file.audit_checkpoint_file == "/srv/ks/audit-checkpoints");

  test::write_file(path, "[keystore]\ndatabase = \"host=db1,db2 dbname=mailkms target_session_attrs=read-write\"\n");
  const Config server = must(load_config(path));
  CHECK(server.database.kind == DatabaseLocation::Kind::postgresql);
  CHECK(server.database.conninfo == "host=db1,db2 dbname=mailkms target_session_attrs=read-write");
  CHECK(server.audit_checkpoint_file == "/var/lib/mailkms/audit-checkpoints");

  test::write_file(path, "[keystore]\ndatabase = \"postgresql://db1/mailkms?nosuchoption=1\"\n");
  const auto refused = load_config(path);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().message.find("database at line 2") != std::string::npos);
  CHECK(refused.error().message.find("not a valid PostgreSQL connection string") != std::string::npos);
}
