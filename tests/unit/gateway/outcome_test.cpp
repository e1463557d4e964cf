// diff_headers: the edits a front end applies to turn the header it received
// into the one the pipeline made. Wrong indexes remove the wrong field.
#include <catch2/catch.hpp>

#include "mailkms/gateway/outcome.hpp"

using namespace mailkms::gateway;
using mailkms::smime::HeaderField;

namespace {

using Kind = HeaderEdit::Kind;

void check_edit(const HeaderEdit& edit, Kind kind, const std::string& name, const std::string& value, int index) {
  CHECK(edit.kind == kind);
  CHECK(edit.name == name);
  CHECK(edit.value == value);
  CHECK(edit.index == index);
}

}  // namespace

TEST_CASE("an unchanged header needs no edits", "[outcome]") {
  const std::vector<HeaderField> header{{"From", " alice@example.org"},
                                        {"Subject", " report"},
                                        {"Content-Type", " text/plain"}};
  CHECK(diff_headers(header, header).empty());
  CHECK(diff_headers({}, {}).empty());
}

TEST_CASE("a changed Content-Type is changed in place", "[outcome]") {
  const std::vector<HeaderField> before{{"From", " alice@example.org"},
                                        {"Content-Type", " text/plain"},
                                        {"Subject", " report"}};
  const std::vector<HeaderField> after{{"From", " alice@example.org"},
                                       {"Subject", " report"},
                                       {"Content-Type", " application/pkcs7-mime; smime-type=enveloped-data"}};
  const auto edits = diff_headers(before, after);
  REQUIRE(edits.size() == 1);
  check_edit(edits[0], Kind::change, "Content-Type", "application/pkcs7-mime; smime-type=enveloped-data", 1);
}

TEST_CASE("the index counts only fields of the same name, case-insensitively", "[outcome]") {
  const std::vector<HeaderField> before{{"Received", " from a"},
                                        {"X-Tag", " one"},
                                        {"received", " from b"},
                                        {"X-Tag", " two"},
                                        {"RECEIVED", " from c"}};
  const std::vector<HeaderField> after{{"Received", " from a"},
                                       {"X-Tag", " one"},
                                       {"RECEIVED", " from c"},
                                       {"X-Tag", " two"}};
  const auto edits = diff_headers(before, after);
  REQUIRE(edits.size() == 1);
  check_edit(edits[0], Kind::remove, "received", "", 2);
}

TEST_CASE("removals come highest index first", "[outcome]") {
  const std::vector<HeaderField> before{{"X-Spam", " 1"},
                                        {"Subject", " s"},
                                        {"X-Spam", " 2"},
                                        {"X-Other", " o"},
                                        {"X-Spam", " 3"},
                                        {"X-Spam", " 4"}};
  const std::vector<HeaderField> after{{"Subject", " s"}, {"X-Spam", " 2"}};
  const auto edits = diff_headers(before, after);
  REQUIRE(edits.size() == 4);
  check_edit(edits[0], Kind::remove, "X-Spam", "", 4);
  check_edit(edits[1], Kind::remove, "X-Spam", "", 3);
  check_edit(edits[2], Kind::remove, "X-Spam", "", 1);
  check_edit(edits[3], Kind::remove, "X-Other", "", 1);
}

TEST_CASE("values are compared unfolded, so refolding is no change", "[outcome]") {
  const std::vector<HeaderField> before{{"Subject", " a long\r\n subject"}, {"To", "\tbob@example.org "}};
  const std::vector<HeaderField> after{{"subject", " a long subject"}, {"To", " bob@example.org"}};
  CHECK(diff_headers(before, after).empty());
}

TEST_CASE("a value that differs only inside is a change", "[outcome]") {
  const std::vector<HeaderField> before{{"Subject", " report"}};
  const std::vector<HeaderField> after{{"Subject", " Report"}};
  const auto edits = diff_headers(before, after);
  REQUIRE(edits.size() == 1);
  check_edit(edits[0], Kind::change, "Subject", "Report", 1);
}

TEST_CASE("appended values lose one leading space and keep their folding", "[outcome]") {
  const std::vector<HeaderField> after{{"X-A", " spaced"},
                                       {"X-B", "\ttabbed"},
                                       {"X-C", "bare"},
                                       {"X-D", " first\r\n second"},
                                       {"X-E", "  two spaces"}};
  const auto edits = diff_headers({}, after);
  REQUIRE(edits.size() == 5);
  check_edit(edits[0], Kind::append, "X-A", "spaced", 0);
  check_edit(edits[1], Kind::append, "X-B", "tabbed", 0);
  check_edit(edits[2], Kind::append, "X-C", "bare", 0);
  check_edit(edits[3], Kind::append, "X-D", "first\r\n second", 0);
  check_edit(edits[4], Kind::append, "X-E", " two spaces", 0);
}

TEST_CASE("a field added twice is appended twice, in order", "[outcome]") {
  const std::vector<HeaderField> before{{"X-Note", " a"}};
  const std::vector<HeaderField> after{{"X-Note", " a"}, {"X-Note", " b"}, {"X-Note", " a"}};
  const auto edits = diff_headers(before, after);
  REQUIRE(edits.size() == 2);
  check_edit(edits[0], Kind::append, "X-Note", "b", 0);
  check_edit(edits[1], Kind::append, "X-Note", "a", 0);
}

TEST_CASE("changes come before removals, removals before appends", "[outcome]") {
  const std::vector<HeaderField> before{{"Content-Type", " text/plain"}, {"Content-Transfer-Encoding", " 8bit"}};
  const std::vector<HeaderField> after{{"Content-Type", " multipart/signed; protocol=\"application/pkcs7-signature\""},
                                       {"Content-Disposition", " inline"}};
  const auto edits = diff_headers(before, after);
  REQUIRE(edits.size() == 3);
  check_edit(edits[0], Kind::change, "Content-Type", "multipart/signed; protocol=\"application/pkcs7-signature\"", 1);
  check_edit(edits[1], Kind::remove, "Content-Transfer-Encoding", "", 1);
  check_edit(edits[2], Kind::append, "Content-Disposition", "inline", 0);
}

TEST_CASE("a change takes the lowest removed field of its name, the others are removed", "[outcome]") {
  const std::vector<HeaderField> before{{"X-Tag", " one"}, {"X-Keep", " k"}, {"X-Tag", " two"}, {"X-Tag", " three"}};
  const std::vector<HeaderField> after{{"X-Tag", " new"}, {"X-Keep", " k"}};
  const auto edits = diff_headers(before, after);
  REQUIRE(edits.size() == 3);
  check_edit(edits[0], Kind::change, "X-Tag", "new", 1);
  check_edit(edits[1], Kind::remove, "X-Tag", "", 3);
  check_edit(edits[2], Kind::remove, "X-Tag", "", 2);
}
