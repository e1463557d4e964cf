// Reading one [section] of mailkms.conf with toml++, the same way in every
// component: a table of keys, each with its typed reader; an unknown key or
// a wrong value is refused with the file, the key, where it is, and what was
// expected. Errors are plain messages here; each component wraps them in its
// own Error type.
#pragma once

#include <algorithm>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <toml++/toml.h>

#include "mailkms/basic_result.hpp"
#include "mailkms/system_accounts.hpp"

namespace mailkms::conf {

// What went wrong, ready for the log: "FILE, line 3, column 7: …".
struct Problem {
  std::string message;
};

// "line L, column C" of a value in the file.
inline std::string where(const toml::node& node) {
  const auto& source = node.source();
  return "line " + std::to_string(source.begin.line) + ", column " + std::to_string(source.begin.column);
}

// "section.key at line L, column C: expected WHAT", for a wrong value.
inline Problem expected(std::string_view section, std::string_view key, const toml::node& node, std::string_view what) {
  return {std::string(section) + "." + std::string(key) + " at " + where(node) + ": expected " + std::string(what)};
}

// An address a setting may hold: lenient on purpose ("mailkms@localhost"
// has no dot), strict where it matters: nothing that could end a header
// line or split an argument.
inline bool plain_mail_address(std::string_view address) {
  const auto at = address.find('@');
  const bool clean = std::all_of(address.begin(), address.end(), [](unsigned char c) {
    return c > 32 && c < 127 && c != '<' && c != '>' && c != '"' && c != ',' && c != ';' && c != '\\';
  });
  return clean && at != std::string_view::npos && at != 0 && at + 1 != address.size();
}

// The whole file, or what keeps it from being TOML.
inline BasicResult<toml::table, Problem> parse_file(const std::filesystem::path& file) {
  try {
    return toml::parse_file(file.string());
  } catch (const toml::parse_error& e) {
    return Problem{file.string() + ", line " + std::to_string(e.source().begin.line) + ", column " +
                   std::to_string(e.source().begin.column) + ": " + std::string(e.description())};
  }
}

// One key of a section and its reader, which stores the value or says what
// is wrong with it (see expected()).
template <class Settings>
struct Key {
  std::string_view name;
  std::function<std::optional<Problem>(const toml::node&, Settings&)> read;
};

// The `user` and `group` keys of a daemon's section: the account it drops
// to after opening its sockets. A user also names its primary group, unless
// `group` names another, wherever the two stand in the section.
template <class Settings>
Key<Settings> user_key(std::string_view section) {
  return {"user", [section](const toml::node& n, Settings& s) -> std::optional<Problem> {
            const auto* v = n.as_string();
            const auto account = v != nullptr ? accounts::find_user(v->get()) : std::nullopt;
            if (!account) return expected(section, "user", n, "the name of an existing user");
            s.user = account->uid;
            if (!s.group) s.group = account->gid;
            return std::nullopt;
          }};
}

template <class Settings>
Key<Settings> group_key(std::string_view section) {
  return {"group", [section](const toml::node& n, Settings& s) -> std::optional<Problem> {
            const auto* v = n.as_string();
            const auto gid = v != nullptr ? accounts::find_group(v->get()) : std::nullopt;
            if (!gid) return expected(section, "group", n, "the name of an existing group");
            s.group = *gid;
            return std::nullopt;
          }};
}

// "a, b, c": the keys a section takes, for the error that names an unknown one.
template <class Settings>
std::string names_of(std::span<const Key<Settings>> keys) {
  std::string names;
  for (const auto& key : keys) {
    if (!names.empty()) names += ", ";
    names += key.name;
  }
  return names;
}

// Reads every key of [section] into `settings` (a missing section leaves
// every default). Keys named in `last` are read after the others, whatever
// their place in the file.
template <class Settings>
std::optional<Problem> read_section(const toml::table& document, std::string_view section,
                                    std::span<const Key<Settings>> keys, Settings& settings,
                                    const std::filesystem::path& file, std::span<const std::string_view> last = {}) {
  const toml::table* table = document[section].as_table();
  if (table == nullptr) return std::nullopt;
  for (const bool late : {false, true}) {
    for (const auto& [name, node] : *table) {
      if ((std::find(last.begin(), last.end(), name.str()) != last.end()) != late) continue;
      // Not `name` itself: clang 14 cannot capture a structured binding.
      const std::string_view key_name = name.str();
      const auto key = std::find_if(keys.begin(), keys.end(), [&](const Key<Settings>& k) { return k.name == key_name; });
      if (key == keys.end()) {
        return Problem{file.string() + ", " + where(node) + ": unknown key " + std::string(section) + "." +
                       std::string(name.str()) + "; expected one of " + names_of(keys)};
      }
      if (auto problem = key->read(node, settings)) return Problem{file.string() + ": " + problem->message};
    }
  }
  return std::nullopt;
}

}  // namespace mailkms::conf
