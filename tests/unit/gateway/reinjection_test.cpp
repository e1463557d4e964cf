// The re-injection mark must be honoured only for the exact envelope and
// body it was made for, by this site, for two days; and reinject() must
// hand the MTA the message and envelope it was given.
#include <catch2/catch.hpp>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <ctime>
#include <filesystem>

#include "mailkms/gateway/reinjection.hpp"
#include "test_support.hpp"

using namespace mailkms;
using namespace mailkms::gateway;
using smime::Spool;
using test::TempDir;

namespace fs = std::filesystem;

namespace {

template <class T>
T ok(Result<T> result) {
  if (!result) FAIL(result.error().message);
  return std::move(result).value();
}

const std::string message = "From: alice@example.org\r\nTo: bob@example.org\r\nSubject: s\r\n\r\nthe body\r\n";
const std::size_t body_offset = message.find("the body");
const std::vector<std::string> recipients{"bob@example.org", "carol@example.net"};

std::string make_mark(const ReinjectionMark& mark, const std::string& sender = "alice@example.org",
                      const std::vector<std::string>& to = recipients) {
  return mark.make(sender, to, Spool::borrow(message), body_offset);
}

bool check_mark(const ReinjectionMark& mark, const std::string& value, const std::string& sender = "alice@example.org",
                const std::vector<std::string>& to = recipients, const std::string& text = message) {
  return mark.check(value, sender, to, Spool::borrow(text), text.find("\r\n\r\n") + 4);
}

fs::path key_file(const TempDir& dir, const std::string& name, const std::string& bytes, fs::perms mode) {
  auto path = dir.path(name);
  test::write_file(path, bytes);
  fs::permissions(path, mode);
  return path;
}

constexpr auto owner_only = fs::perms::owner_read | fs::perms::owner_write;
const std::string key_bytes = "0123456789abcdef0123456789abcdef-site";

std::string hex(const unsigned char* data, std::size_t size) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < size; ++i) {
    out += digits[data[i] >> 4];
    out += digits[data[i] & 15];
  }
  return out;
}

// A mark written from the format, not by make(), so its time can be any:
// the key is SHA-256 of the key file; the MAC covers version, time,
// sender, sorted recipients and the body's SHA-256.
std::string mark_at(std::time_t made, const std::string& sender, std::vector<std::string> to) {
  unsigned char key[32];
  unsigned int key_length = 0;
  REQUIRE(EVP_Digest(key_bytes.data(), key_bytes.size(), key, &key_length, EVP_sha256(), nullptr) == 1);
  const std::string body = message.substr(body_offset);
  unsigned char body_hash[32];
  unsigned int body_length = 0;
  REQUIRE(EVP_Digest(body.data(), body.size(), body_hash, &body_length, EVP_sha256(), nullptr) == 1);
  std::sort(to.begin(), to.end());
  std::string input = "mailkms-reinjected-v1\n" + std::to_string(made) + "\n" + sender + "\n";
  for (const auto& r : to) input += r + ",";
  input += "\n" + hex(body_hash, body_length);
  unsigned char mac[32];
  unsigned int mac_length = 0;
  REQUIRE(HMAC(EVP_sha256(), key, static_cast<int>(key_length), reinterpret_cast<const unsigned char*>(input.data()),
               input.size(), mac, &mac_length) != nullptr);
  return "v=1; t=" + std::to_string(made) + "; m=" + hex(mac, mac_length);
}

// The value of `name` in "v=1; t=…; m=…".
std::string part(const std::string& value, const std::string& name) {
  const auto at = value.find(name + "=");
  REQUIRE(at != std::string::npos);
  const auto end = value.find(';', at);
  return value.substr(at + name.size() + 1, end == std::string::npos ? std::string::npos : end - at - name.size() - 1);
}

std::string replace_part(const std::string& value, const std::string& name, const std::string& replacement) {
  const std::string old = part(value, name);
  std::string out = value;
  out.replace(out.find(name + "=" + old), name.size() + 1 + old.size(), name + "=" + replacement);
  return out;
}

}  // namespace

// ---- the mark

TEST_CASE("a mark has the documented form", "[reinjection]") {
  const auto mark = ok(ReinjectionMark::create(""));
  const std::string value = make_mark(mark);
  CHECK(value.starts_with("v=1; t="));
  const std::string t = part(value, "t");
  const long long made = std::stoll(t);
  CHECK(std::abs(made - static_cast<long long>(std::time(nullptr))) < 60);
  const std::string m = part(value, "m");
  CHECK(m.size() == 64);
  CHECK(m.find_first_not_of("0123456789abcdef") == std::string::npos);
}

TEST_CASE("a mark checks for the same sender, recipients and body", "[reinjection]") {
  const auto mark = ok(ReinjectionMark::create(""));
  const std::string value = make_mark(mark);
  CHECK(check_mark(mark, value));
  SECTION("recipient order and case do not matter, nor the sender's case") {
    CHECK(check_mark(mark, value, "Alice@Example.ORG", {"CAROL@example.net", "bob@EXAMPLE.org"}));
  }
  SECTION("the header is not covered: the mark itself is added to it") {
    const std::string other_header = "X-Mailkms-Reinjected: " + value + "\r\nSubject: other\r\n\r\nthe body\r\n";
    CHECK(check_mark(mark, value, "alice@example.org", recipients, other_header));
  }
  SECTION("the body may be read from a file spool") {
    Spool spool({.memory_limit = 8});
    test::must(spool.append(message));
    REQUIRE_FALSE(spool.in_memory());
    CHECK(mark.check(value, "alice@example.org", recipients, spool, body_offset));
  }
  SECTION("the null sender") {
    const std::string bounce = make_mark(mark, "", recipients);
    CHECK(check_mark(mark, bounce, "", recipients));
    CHECK_FALSE(check_mark(mark, bounce, "alice@example.org", recipients));
  }
}

TEST_CASE("a mark fails for anything else", "[reinjection]") {
  const auto mark = ok(ReinjectionMark::create(""));
  const std::string value = make_mark(mark);
  REQUIRE(check_mark(mark, value));

  CHECK_FALSE(check_mark(mark, value, "alice@example.org", recipients,
                         "From: alice@example.org\r\n\r\nthe body.\r\n"));
  CHECK_FALSE(check_mark(mark, value, "alice@example.org", recipients,
                         "From: alice@example.org\r\n\r\nthe body\r\n\r\n"));
  CHECK_FALSE(check_mark(mark, value, "alice@example.org", {"bob@example.org"}));
  CHECK_FALSE(check_mark(mark, value, "alice@example.org", {"bob@example.org", "carol@example.net", "dave@example.com"}));
  CHECK_FALSE(check_mark(mark, value, "alice@example.org", {"bob@example.org", "dave@example.net"}));
  CHECK_FALSE(check_mark(mark, value, "alice@example.org", {}));
  CHECK_FALSE(check_mark(mark, value, "mallory@example.org"));
  CHECK_FALSE(check_mark(mark, value, ""));

  SECTION("another key") {
    const auto other = ok(ReinjectionMark::create(""));
    CHECK_FALSE(check_mark(other, value));
    CHECK(make_mark(other) != value);
  }
  SECTION("a tampered MAC") {
    std::string m = part(value, "m");
    m.back() = m.back() == '0' ? '1' : '0';
    CHECK_FALSE(check_mark(mark, replace_part(value, "m", m)));
    CHECK_FALSE(check_mark(mark, replace_part(value, "m", part(value, "m").substr(0, 63))));
    CHECK_FALSE(check_mark(mark, replace_part(value, "m", part(value, "m") + "0")));
    CHECK_FALSE(check_mark(mark, replace_part(value, "m", "")));
  }
  SECTION("an edited time: the MAC covers it") {
    const long long t = std::stoll(part(value, "t"));
    CHECK_FALSE(check_mark(mark, replace_part(value, "t", std::to_string(t - 1))));
    CHECK_FALSE(check_mark(mark, replace_part(value, "t", std::to_string(t + 1))));
  }
  SECTION("garbage") {
    const std::string garbage = GENERATE(as<std::string>{}, "", "garbage", "v=1", "v=1; t=; m=",
                                         "v=1; t=abc; m=00", "v=1; t=-5; m=00", "t=1; m=00; v=2",
                                         "v=1; t=99999999999999999999; m=00");
    CHECK_FALSE(check_mark(mark, garbage));
    CHECK_FALSE(check_mark(mark, replace_part(value, "v", "2")));
  }
}

TEST_CASE("a mark older than two days, or from the future, fails", "[reinjection]") {
  TempDir dir;
  const auto mark = ok(ReinjectionMark::create(key_file(dir, "key", key_bytes, owner_only)));
  const std::time_t now = std::time(nullptr);
  const std::string sender = "alice@example.org";
  const std::vector<std::string> sorted{"bob@example.org", "carol@example.net"};
  // Written by hand, a fresh mark must pass, or the cases below prove nothing.
  REQUIRE(check_mark(mark, mark_at(now, sender, sorted)));
  const std::string made = make_mark(mark);
  REQUIRE(mark_at(std::stoll(part(made, "t")), sender, sorted) == made);

  constexpr std::time_t day = std::time_t{24} * 3600;
  CHECK(check_mark(mark, mark_at(now - 2 * day + 60, sender, sorted)));
  CHECK_FALSE(check_mark(mark, mark_at(now - 2 * day - 60, sender, sorted)));
  CHECK_FALSE(check_mark(mark, mark_at(now - 30 * day, sender, sorted)));
  CHECK(check_mark(mark, mark_at(now + 60, sender, sorted)));
  CHECK_FALSE(check_mark(mark, mark_at(now + 3600, sender, sorted)));
}

// ---- the key file

TEST_CASE("a key file must be private and long enough", "[reinjection]") {
  TempDir dir;
  SECTION("readable by others") {
    const auto result = ReinjectionMark::create(
        key_file(dir, "key", key_bytes, owner_only | fs::perms::group_read | fs::perms::others_read));
    REQUIRE_FALSE(result);
    CHECK(result.error().message.find("chmod 600") != std::string::npos);
  }
  SECTION("readable by the group") {
    CHECK_FALSE(ReinjectionMark::create(key_file(dir, "key", key_bytes, owner_only | fs::perms::group_read)));
  }
  SECTION("31 bytes") {
    const auto result = ReinjectionMark::create(key_file(dir, "key", std::string(31, 'k'), owner_only));
    REQUIRE_FALSE(result);
    CHECK(result.error().message.find("at least 32") != std::string::npos);
  }
  SECTION("32 bytes") {
    CHECK(ReinjectionMark::create(key_file(dir, "key", std::string(32, 'k'), owner_only)));
  }
  SECTION("missing") {
    const auto result = ReinjectionMark::create(dir.path("absent"));
    REQUIRE_FALSE(result);
    CHECK(result.error().message.find(dir.path("absent").string()) != std::string::npos);
  }
}

TEST_CASE("gateways sharing a key file check each other's marks", "[reinjection]") {
  TempDir dir;
  const auto path = key_file(dir, "key", key_bytes, owner_only);
  const auto first = ok(ReinjectionMark::create(path));
  const auto second = ok(ReinjectionMark::create(path));
  CHECK(check_mark(second, make_mark(first)));
  CHECK(check_mark(first, make_mark(second)));

  const auto other_site = ok(ReinjectionMark::create(key_file(dir, "other", key_bytes + "!", owner_only)));
  CHECK_FALSE(check_mark(other_site, make_mark(first)));
  CHECK_FALSE(check_mark(first, make_mark(other_site)));
  const auto random = ok(ReinjectionMark::create(""));
  CHECK_FALSE(check_mark(random, make_mark(first)));
}

// ---- reinject()

TEST_CASE("reinject writes the message with LF line ends and appends the envelope", "[reinjection]") {
  TempDir dir;
  const auto out = dir.path("out");
  const auto args = dir.path("args");
  // Each argument on its own line, so their boundaries show.
  const std::vector<std::string> command{
      "/bin/sh", "-c", "cat > '" + out.string() + "'; printf '%s\\n' \"$@\" > '" + args.string() + "'", "sh"};

  SECTION("a small message") {
    const std::string text = "From: alice@example.org\r\nSubject: s\r\n\r\nline one\r\nline two\r\n";
    ok(reinject(command, "alice@example.org", recipients, Spool::borrow(text)));
    CHECK(test::read_file(out) == "From: alice@example.org\nSubject: s\n\nline one\nline two\n");
    CHECK(test::read_file(args) == "-f\nalice@example.org\n--\nbob@example.org\ncarol@example.net\n");
  }
  SECTION("the null sender and a recipient that looks like an option") {
    ok(reinject(command, "", std::vector<std::string>{"-oQ/tmp"}, Spool::borrow(message)));
    CHECK(test::read_file(args) == "-f\n<>\n--\n-oQ/tmp\n");
  }
  SECTION("a large message from a file spool") {
    std::string text = "Subject: big\r\n\r\n";
    while (text.size() < 300000) text += "a line of the body, ended by CRLF\r\n";
    Spool spool({.memory_limit = 4096});
    test::must(spool.append(text));
    REQUIRE_FALSE(spool.in_memory());
    ok(reinject(command, "alice@example.org", recipients, spool));
    std::string lf = text;
    lf.erase(std::remove(lf.begin(), lf.end(), '\r'), lf.end());
    CHECK(test::read_file(out) == lf);
  }
  SECTION("a CR that ends no line is content, even across a chunk boundary") {
    // Signed text may hold a lone CR; dropping it breaks the signature.
    std::string text = "Subject: cr\r\n\r\na\rb\r\n";
    while (text.size() < std::size_t{64} * 1024 - 1) text += 'x';
    text += "\r";  // the last byte of the first 64 KiB chunk
    text += "y\r\n";
    Spool spool({.memory_limit = 4096});
    test::must(spool.append(text));
    REQUIRE_FALSE(spool.in_memory());
    ok(reinject(command, "alice@example.org", recipients, spool));
    const std::string got = test::read_file(out);
    CHECK(got.substr(0, 17) == "Subject: cr\n\na\rb\n");
    CHECK(got.substr(got.size() - 4) == "x\ry\n");
  }
  SECTION("a CR as the very last byte is kept") {
    ok(reinject(command, "alice@example.org", recipients, Spool::from("Subject: s\r\n\r\nend\r\r")));
    CHECK(test::read_file(out) == "Subject: s\n\nend\r\r");
  }
}

TEST_CASE("reinject fails when the command fails", "[reinjection]") {
  const Spool spool = Spool::borrow(message);
  SECTION("exit status 1") {
    const auto result = reinject({"/bin/sh", "-c", "cat > /dev/null; exit 1", "sh"}, "alice@example.org", recipients, spool);
    REQUIRE_FALSE(result);
    CHECK(result.error().message == "/bin/sh failed (exit status 1)");
  }
  SECTION("killed by a signal") {
    const auto result = reinject({"/bin/sh", "-c", "cat > /dev/null; kill -9 $$", "sh"}, "a@example.org", recipients, spool);
    REQUIRE_FALSE(result);
    CHECK(result.error().message.find("/bin/sh failed") == 0);
  }
  SECTION("a program that does not exist") {
    const auto result = reinject({"/nonexistent/sendmail", "-i"}, "alice@example.org", recipients, spool);
    REQUIRE_FALSE(result);
    CHECK(result.error().message.find("/nonexistent/sendmail") == 0);
  }
  SECTION("no command") {
    CHECK_FALSE(reinject({}, "alice@example.org", recipients, spool));
  }
  SECTION("a command that stops reading") {
    // The daemons ignore SIGPIPE, so a write to a closed pipe is an error.
    const auto previous = std::signal(SIGPIPE, SIG_IGN);
    std::string big = "Subject: big\r\n\r\n" + std::string(1 << 20, 'x');
    const auto result = reinject({"/bin/sh", "-c", "exit 0", "sh"}, "alice@example.org", recipients, Spool::borrow(big));
    (void)std::signal(SIGPIPE, previous);
    REQUIRE_FALSE(result);
    CHECK(result.error().message.find("writing the message") != std::string::npos);
  }
}
