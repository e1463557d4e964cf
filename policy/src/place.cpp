#include "place.hpp"

#include <algorithm>

namespace mailkms::policy {

Error Place::error(const toml::source_region& where, std::string_view text) const {
  std::string message = source.string() + ":" + std::to_string(where.begin.line) + ":" +
                        std::to_string(where.begin.column) + ": ";
  if (!section.empty()) message += section + ": ";
  message += text;
  return Error{std::move(message)};
}

Error Place::expected(const toml::node& node, std::string_view key, std::string_view what) const {
  std::string text(key);
  text += ": expected ";
  text += what;
  return error(node.source(), text);
}

Error Place::unknown_key(const toml::key& key, std::span<const std::string_view> known) const {
  std::string text = "unknown key " + in_quotes(key.str()) + "; expected ";
  if (known.size() > 1) text += "one of ";
  for (std::size_t i = 0; i < known.size(); ++i) {
    if (i > 0) text += ", ";
    text += known[i];
  }
  return error(key.source(), text);
}

std::vector<std::pair<const toml::key*, const toml::node*>> in_file_order(const toml::table& table) {
  std::vector<std::pair<const toml::key*, const toml::node*>> entries;
  for (const auto& [key, node] : table) entries.emplace_back(&key, &node);
  std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    const auto& x = a.first->source().begin;
    const auto& y = b.first->source().begin;
    return x.line != y.line ? x.line < y.line : x.column < y.column;
  });
  return entries;
}

Result<std::string> read_string(const Place& place, const toml::node& node, std::string_view key) {
  const auto* text = node.as_string();
  if (text == nullptr) return place.expected(node, key, "a string");
  return text->get();
}

Result<bool> read_bool(const Place& place, const toml::node& node, std::string_view key) {
  const auto* value = node.as_boolean();
  if (value == nullptr) return place.expected(node, key, "true or false");
  return value->get();
}

std::string in_quotes(std::string_view text) {
  std::string out = "\"";
  out += text;
  out += '"';
  return out;
}

}  // namespace mailkms::policy
