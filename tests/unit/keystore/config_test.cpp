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
