// Where in policy.toml a value was read, for error messages of the form
// "policy.toml:12:3: rule \"partners\": encrypt: expected never, …".
// Also the readers of plain TOML values that every section shares.
#pragma once

#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <toml++/toml.h>

#include "mailkms/policy/policy.hpp"

namespace mailkms::policy {

using Status = Result<Ok>;

struct Place {
  const std::filesystem::path& source;
  std::string section;  // "[defaults]", "rule \"partners\"", empty at top level

  // "FILE:LINE:COL: SECTION: TEXT".
  [[nodiscard]] Error error(const toml::source_region& where, std::string_view text) const;
  // "…: KEY: expected WHAT" at `node`.
  [[nodiscard]] Error expected(const toml::node& node, std::string_view key, std::string_view what) const;
  // "…: unknown key "KEY"; expected one of A, B, …" at the key.
  [[nodiscard]] Error unknown_key(const toml::key& key, std::span<const std::string_view> known) const;
};

// A table's entries in file order (toml::table keeps them sorted by key),
// so the first error reported is the first one in the file.
std::vector<std::pair<const toml::key*, const toml::node*>> in_file_order(const toml::table& table);

Result<std::string> read_string(const Place& place, const toml::node& node, std::string_view key);
Result<bool> read_bool(const Place& place, const toml::node& node, std::string_view key);
// The text of a string as it appears in a message: quoted.
std::string in_quotes(std::string_view text);

}  // namespace mailkms::policy
