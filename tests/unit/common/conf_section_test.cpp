// conf_section.hpp, which every section of mailkms.conf is read with: keys
// in file order (some held for last), unknown keys and wrong values named
// with file, line and column, and the plain mail addresses settings take.
#include <catch2/catch.hpp>

#include "mailkms/conf_section.hpp"
#include "test_support.hpp"

using namespace mailkms;

namespace {

struct Example {
  std::vector<std::string> order;  // keys in the order they were read
  long long size = 0;
};

const std::vector<conf::Key<Example>>& keys() {
  static const std::vector<conf::Key<Example>> table{
      {"size",
       [](const toml::node& n, Example& e) -> std::optional<conf::Problem> {
         const auto* v = n.as_integer();
         if (v == nullptr || v->get() < 1) return conf::expected("example", "size", n, "a number from 1");
         e.size = v->get();
         e.order.push_back("size");
         return std::nullopt;
       }},
      {"first", [](const toml::node&, Example& e) -> std::optional<conf::Problem> { e.order.push_back("first"); return std::nullopt; }},
      {"second", [](const toml::node&, Example& e) -> std::optional<conf::Problem> { e.order.push_back("second"); return std::nullopt; }},
  };
  return table;
}

// Reads `text` as mailkms.conf: the example, or the problem's message.
std::variant<Example, std::string> read(const test::TempDir& dir, const std::string& text,
                                        std::span<const std::string_view> last = {}) {
  const auto file = dir.path("mailkms.conf");
  test::write_file(file, text);
  auto document = conf::parse_file(file);
  if (!document) return document.error().message;
  Example example;
  if (auto problem = conf::read_section<Example>(*document, "example", keys(), example, file, last)) return problem->message;
  return example;
}

}  // namespace

TEST_CASE("every key of a section is read once, those named last after the others", "[conf]") {
  test::TempDir dir;
  const std::string text = "[example]\nsecond = 1\nsize = 5\nfirst = 1\n";
  auto plain = std::get<Example>(read(dir, text));
  CHECK(plain.size == 5);
  std::sort(plain.order.begin(), plain.order.end());
  CHECK(plain.order == std::vector<std::string>{"first", "second", "size"});
  // Whatever their place in the file (toml++ keeps keys sorted, not in file order).
  for (const std::string_view late : {"first", "second", "size"}) {
    const std::string_view last[] = {late};
    const auto order = std::get<Example>(read(dir, text, last)).order;
    REQUIRE(order.size() == 3);
    CHECK(order.back() == late);
  }
  CHECK(std::get<Example>(read(dir, "[other]\nsize = 0\n")).order.empty());  // no section: every default
}

TEST_CASE("unknown keys, wrong values and broken TOML are named with file, line and column", "[conf]") {
  test::TempDir dir;
  const std::string file = dir.path("mailkms.conf").string();
  CHECK(std::get<std::string>(read(dir, "[example]\nfirst = 1\ncolour = \"red\"\n")) ==
        file + ", line 3, column 10: unknown key example.colour; expected one of size, first, second");
  CHECK(std::get<std::string>(read(dir, "[example]\n\nsize = 0\n")) ==
        file + ": example.size at line 3, column 8: expected a number from 1");
  const std::string broken = std::get<std::string>(read(dir, "[example]\nsize = \n"));
  CHECK(broken.starts_with(file + ", line 2, column "));
}

TEST_CASE("plain mail addresses: lenient where it does not matter, strict where it does", "[conf]") {
  for (const char* good : {"mailkms@localhost", "mailkms-enroll@example.org", "a.b+c@sub.example.org"}) {
    INFO(good);
    CHECK(conf::plain_mail_address(good));
  }
  for (const char* bad : {"", "mailkms", "@example.org", "mailkms@", "<a@example.org>", "a b@example.org",
                          "a@example.org,b@example.org", "a@example.org;", "\"a\"@example.org", "a@example.org\r\nBcc: x",
                          "a\\b@example.org"}) {
    INFO(bad);
    CHECK_FALSE(conf::plain_mail_address(bad));
  }
}
