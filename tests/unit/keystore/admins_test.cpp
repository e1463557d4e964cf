// Administrators: hashed passwords, expiring sessions, the last one kept.
#include <catch2/catch.hpp>

#include "mailkms/keystore/admins.hpp"
#include "mailkms/keystore/seal.hpp"
#include "mailkms/keystore/sqlite_storage.hpp"
#include "keystore_fixture.hpp"
#include "test_support.hpp"

using namespace mailkms;
using namespace mailkms::keystore;
using test::must;

namespace {

using namespace std::chrono_literals;

struct Fixture : test::KeystoreFixture {
  test::ManualClock time;
  Admins admins{*storage, audit, {{1 << 10, 8, 1}, 60s}, time.clock()};
};

}  // namespace

TEST_CASE("passwords are kept only as hashes, and sessions expire", "[admins]") {
  Fixture f;
  must(f.admins.add("carol", "carol's long password", "test"));
  const std::string raw = *must(f.storage->get("admins/carol"));
  CHECK(raw.find("carol's long password") == std::string::npos);
  CHECK(f.admins.add("carol", "another long password", "test").error().code == Errc::already_exists);
  CHECK(f.admins.add("Carol!", "another long password", "test").error().code == Errc::invalid_argument);
  CHECK(f.admins.add("dave", "short", "test").error().code == Errc::invalid_argument);

  const Session session = must(f.admins.login("carol", "carol's long password", "test"));
  CHECK(must(f.admins.authenticate(session.token)) == "carol");
  CHECK_FALSE(must(f.storage->scan("sessions/", {}, 10)).front().first.find(session.token) != std::string::npos);
  f.time.advance(59s);
  CHECK(must(f.admins.authenticate(session.token)) == "carol");
  f.time.advance(1s);
  const auto expired = f.admins.authenticate(session.token);
  REQUIRE_FALSE(expired);
  CHECK(expired.error().message.find("expired") != std::string::npos);
}

TEST_CASE("the last administrator stays, a removed one's sessions end", "[admins]") {
  Fixture f;
  must(f.admins.add("carol", "carol's long password", "test"));
  CHECK(f.admins.remove("carol", "test").error().code == Errc::invalid_argument);
  must(f.admins.add("erin", "erin's long password", "test"));
  const Session erin = must(f.admins.login("erin", "erin's long password", "test"));
  must(f.admins.remove("erin", "test"));
  CHECK(f.admins.authenticate(erin.token).error().code == Errc::permission_denied);
  must(f.admins.set_password("carol", "carol's new long password", "test"));
  CHECK(f.admins.login("carol", "carol's long password", "test").error().code == Errc::permission_denied);
}

TEST_CASE("a login under a name no administrator can have costs nothing and leaves no record", "[admins]") {
  Fixture f;
  must(f.admins.add("carol", "carol's long password", "test"));
  const auto before = must(f.audit.read(0, 1000)).size();
  for (const std::string& name : {std::string(1 << 20, 'x'), std::string("Carol"), std::string("carol\nforged"), std::string()}) {
    const auto refused = f.admins.login(name, "whatever it is", "test");
    REQUIRE_FALSE(refused);
    CHECK(refused.error().code == Errc::permission_denied);
    CHECK(refused.error().message == "wrong name or password");
  }
  CHECK(must(f.audit.read(0, 1000)).size() == before);
  // A real name's failures are still recorded, and carol still gets in.
  CHECK_FALSE(f.admins.login("carol", "not her password", "test"));
  CHECK(must(f.audit.read(0, 1000)).size() == before + 1);
}

TEST_CASE("each failed login doubles the wait before that name's next try, up to a minute", "[admins]") {
  Fixture f;
  must(f.admins.add("carol", "carol's long password", "test"));
  must(f.admins.add("erin", "erin's long password", "test"));
  const auto carol_logs_in = [&] { return f.admins.login("carol", "carol's long password", "test"); };
  const auto too_soon = [&] {
    const auto refused = carol_logs_in();
    return !refused && refused.error().message.starts_with("too many failed logins for carol");
  };

  CHECK_FALSE(f.admins.login("carol", "not her password", "test"));
  CHECK(too_soon());  // even with the right password
  CHECK(f.admins.login("erin", "erin's long password", "test"));  // another name is not slowed
  f.time.advance(1s);
  CHECK(too_soon());
  f.time.advance(1s);
  CHECK(carol_logs_in());  // and a success forgets the failures

  for (int failures = 1; failures <= 8; ++failures) {
    CHECK_FALSE(f.admins.login("carol", "not her password", "test"));
    const auto wait = std::chrono::seconds(std::min(60, 1 << std::min(failures, 6)));
    f.time.advance(wait - 1s);
    CHECK(too_soon());
    f.time.advance(1s);
  }
  CHECK(carol_logs_in());
}
