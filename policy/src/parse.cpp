// Reading policy.toml: every key known, every value checked, every error
// with its line and column.
#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "mailkms/errno_text.hpp"
#include "ascii.hpp"
#include "mailkms/policy/policy.hpp"
#include "names.hpp"
#include "networks.hpp"
#include "place.hpp"
#include "settings_keys.hpp"

namespace mailkms::policy {
namespace {

constexpr std::array<std::string_view, 5> kTopLevelKeys{"local", "signing", "decryption", "defaults", "rule"};
constexpr std::array<std::string_view, 2> kLocalKeys{"domains", "networks"};
constexpr std::array<std::string_view, 3> kSigningKeys{"login_map", "unauthenticated_networks", "local_submission"};
constexpr std::array<std::string_view, 2> kHeaderKeys{"name", "contains"};
constexpr std::array<std::string_view, 1> kDecryptionKeys{"at"};

std::vector<std::string_view> rule_keys() {
  std::vector<std::string_view> keys{"name", "direction", "from", "to", "subject_tag", "header"};
  for (const SettingKey& key : setting_keys()) keys.push_back(key.name);
  return keys;
}

std::vector<std::string_view> defaults_keys() {
  std::vector<std::string_view> keys;
  for (const SettingKey& key : setting_keys()) keys.push_back(key.name);
  return keys;
}

Result<const toml::table*> read_table(const Place& place, const toml::node& node, std::string_view key) {
  const auto* table = node.as_table();
  if (table == nullptr) return place.expected(node, key, "a table");
  return table;
}

// ---- [local]

Result<std::string> read_domain(const Place& place, const toml::node& node) {
  const auto* text = node.as_string();
  if (text == nullptr) return place.expected(node, "domains", "domain names such as \"example.org\"");
  const std::string& domain = text->get();
  const bool plausible = !domain.empty() && domain.front() != '.' && domain.back() != '.' &&
                         domain.find_first_of("@*<>,; \t") == std::string::npos;
  if (!plausible) {
    return place.expected(node, "domains", "a domain name such as \"example.org\", not " + in_quotes(domain));
  }
  return ascii_lower(domain);
}

Status read_local(const Place& top, const toml::node& node, Locality& locality) {
  MAILKMS_TRY(table, read_table(top, node, "local"));
  const Place place{top.source, "[local]"};
  for (const auto& [key, value] : in_file_order(*table)) {
    const auto* list = value->as_array();
    if (key->str() == "domains") {
      if (list == nullptr) return place.expected(*value, "domains", "a list of domain names such as [\"example.org\"]");
      for (const toml::node& item : *list) {
        MAILKMS_TRY(domain, read_domain(place, item));
        locality.domains.push_back(std::move(domain));
      }
    } else if (key->str() == "networks") {
      if (list == nullptr) return place.expected(*value, "networks", "a list of networks such as [\"10.0.0.0/8\"]");
      for (const toml::node& item : *list) {
        const auto* text = item.as_string();
        if (text == nullptr) return place.expected(item, "networks", "networks such as \"10.0.0.0/8\" or \"::1/128\"");
        auto network = parse_network(text->get());
        if (!network) return place.error(item.source(), "networks: " + in_quotes(text->get()) + ": " + network.error());
        locality.networks.push_back(*network);
      }
    } else {
      return place.unknown_key(*key, kLocalKeys);
    }
  }
  return Ok{};
}

// ---- [signing]

// A network from which unauthenticated clients may sign must be internal:
// mail from anywhere else is inbound and never signed.
bool inside_local_networks(const Locality& locality, const Locality::Network& network) {
  return std::any_of(locality.networks.begin(), locality.networks.end(), [&](const Locality::Network& local) {
    return local.prefix <= network.prefix && contains(local, network.address);
  });
}

Status read_unauthenticated_networks(const Place& place, const toml::node& value, const Locality& locality,
                                     Signing& signing) {
  const auto* list = value.as_array();
  if (list == nullptr) {
    return place.expected(value, "unauthenticated_networks", "a list of networks such as [\"10.1.0.0/16\"]");
  }
  for (const toml::node& item : *list) {
    const auto* text = item.as_string();
    if (text == nullptr) return place.expected(item, "unauthenticated_networks", "networks such as \"10.1.0.0/16\"");
    auto network = parse_network(text->get());
    if (!network) {
      return place.error(item.source(), "unauthenticated_networks: " + in_quotes(text->get()) + ": " + network.error());
    }
    if (!inside_local_networks(locality, *network)) {
      return place.error(item.source(), "unauthenticated_networks: " + in_quotes(text->get()) +
                                            " is not inside [local] networks: mail from it is inbound, never signed");
    }
    signing.unauthenticated_networks.push_back(*network);
  }
  return Ok{};
}

// The login map is read with the policy, so that a reload reads it again.
// A relative path is taken from the policy file's directory.
Status read_login_map(const Place& place, const toml::node& value, Signing& signing) {
  MAILKMS_TRY(name, read_string(place, value, "login_map"));
  if (name.empty()) return place.expected(value, "login_map", "the path of a login map file");
  std::filesystem::path path = name;
  if (path.is_relative()) path = place.source.parent_path() / path;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return place.error(value.source(), "login_map: cannot read " + path.string() + ": it is a directory");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return place.error(value.source(), "login_map: cannot read " + path.string() + ": " + mailkms::errno_text(errno));
  std::ostringstream text;
  text << in.rdbuf();
  MAILKMS_TRY(owners, parse_login_map(text.str(), path));
  signing.login_map = std::move(path);
  signing.owners = std::move(owners);
  return Ok{};
}

Status read_signing(const Place& top, const toml::node& node, const Locality& locality, Signing& signing) {
  MAILKMS_TRY(table, read_table(top, node, "signing"));
  const Place place{top.source, "[signing]"};
  for (const auto& [key, value] : in_file_order(*table)) {
    if (key->str() == "login_map") {
      MAILKMS_CHECK(read_login_map(place, *value, signing));
    } else if (key->str() == "unauthenticated_networks") {
      MAILKMS_CHECK(read_unauthenticated_networks(place, *value, locality, signing));
    } else if (key->str() == "local_submission") {
      MAILKMS_TRY(allowed, read_bool(place, *value, "local_submission"));
      signing.local_submission = allowed;
    } else {
      return place.unknown_key(*key, kSigningKeys);
    }
  }
  return Ok{};
}

// ---- [decryption]

Status read_decryption(const Place& top, const toml::node& node, DecryptionPlace& at) {
  MAILKMS_TRY(table, read_table(top, node, "decryption"));
  const Place place{top.source, "[decryption]"};
  for (const auto& [key, value] : in_file_order(*table)) {
    if (key->str() != "at") return place.unknown_key(*key, kDecryptionKeys);
    MAILKMS_TRY(text, read_string(place, *value, "at"));
    const auto parsed = parse_decryption_place(text);
    if (!parsed) return place.expected(*value, "at", "final-hop or anywhere, not " + in_quotes(text));
    at = *parsed;
  }
  return Ok{};
}

// ---- [defaults] and a rule's settings

Status apply_setting(const Place& place, const toml::key& key, const toml::node& value, Settings& settings,
                     std::span<const std::string_view> known) {
  const SettingKey* setting = find_setting_key(key.str());
  if (setting == nullptr) return place.unknown_key(key, known);
  return setting->apply(place, value, settings);
}

// A table that raises encrypt to "always" exempts calendar invitations only
// when it says exempt_calendar = true itself: an exemption inherited from
// elsewhere must not let a must-encrypt message out in the clear.
void no_inherited_calendar_exemption(const toml::table& table, Settings& settings) {
  if (settings.encrypt == Mode::always && table.contains("encrypt") && !table.contains("exempt_calendar")) {
    settings.exempt_calendar = false;
  }
}

Status read_defaults(const Place& top, const toml::node& node, Settings& defaults) {
  MAILKMS_TRY(table, read_table(top, node, "defaults"));
  const Place place{top.source, "[defaults]"};
  const auto known = defaults_keys();
  for (const auto& [key, value] : in_file_order(*table)) {
    MAILKMS_CHECK(apply_setting(place, *key, *value, defaults, known));
  }
  no_inherited_calendar_exemption(*table, defaults);
  return Ok{};
}

// ---- [[rule]]

constexpr std::string_view kPatternShapes = "alice@example.org, *@example.org, *@*.example.org or *";

Result<AddressPattern> read_pattern(const Place& place, const toml::node& node, std::string_view key) {
  const auto* text = node.as_string();
  if (text == nullptr) return place.expected(node, key, "an address pattern such as \"*@example.org\"");
  auto pattern = AddressPattern::parse(text->get());
  if (!pattern) {
    return place.error(node.source(), std::string(key) + ": " + in_quotes(text->get()) +
                                          " is not an address pattern; expected " + std::string(kPatternShapes));
  }
  return std::move(*pattern);
}

// One pattern or a non-empty list: an empty list would silently match anyone.
Result<std::vector<AddressPattern>> read_patterns(const Place& place, const toml::node& node, std::string_view key) {
  std::vector<AddressPattern> patterns;
  if (const auto* list = node.as_array()) {
    if (list->empty()) return place.expected(node, key, "at least one pattern (leave the key out to match anyone)");
    for (const toml::node& item : *list) {
      MAILKMS_TRY(pattern, read_pattern(place, item, key));
      patterns.push_back(std::move(pattern));
    }
    return patterns;
  }
  MAILKMS_TRY(pattern, read_pattern(place, node, key));
  patterns.push_back(std::move(pattern));
  return patterns;
}

bool is_field_name(std::string_view name) {
  const auto printable = [](char c) { return c > ' ' && c < '\x7f' && c != ':'; };
  return !name.empty() && std::all_of(name.begin(), name.end(), printable);
}

Result<HeaderCondition> read_header(const Place& place, const toml::node& node) {
  const auto* table = node.as_table();
  if (table == nullptr) {
    return place.expected(node, "header", "a table such as { name = \"X-Secure\", contains = \"yes\" }");
  }
  const Place inner{place.source, place.section + ": header"};
  HeaderCondition condition;
  bool has_name = false;
  bool has_contains = false;
  for (const auto& [key, value] : in_file_order(*table)) {
    if (key->str() == "name") {
      MAILKMS_TRY(name, read_string(inner, *value, "name"));
      if (!is_field_name(name)) return inner.expected(*value, "name", "a header field name such as \"X-Secure\"");
      condition.name = std::move(name);
      has_name = true;
    } else if (key->str() == "contains") {
      MAILKMS_TRY(contains, read_string(inner, *value, "contains"));
      condition.contains = std::move(contains);
      has_contains = true;
    } else {
      return inner.unknown_key(*key, kHeaderKeys);
    }
  }
  if (!has_name || !has_contains) {
    return place.error(node.source(), std::string("header: expected both name and contains; missing ") +
                                          (has_name ? "contains" : "name"));
  }
  return condition;
}

// The rule's name comes first: every other message about the rule uses it.
Result<std::string> read_rule_name(const Place& place, const toml::table& table, std::size_t number) {
  const toml::node* node = table.get("name");
  if (node == nullptr) return "rule " + std::to_string(number);
  MAILKMS_TRY(name, read_string(place, *node, "name"));
  if (name.empty()) return place.expected(*node, "name", "a non-empty string");
  return name;
}

Result<Rule> read_rule(const std::filesystem::path& source, const toml::node& node, std::size_t number,
                       const Settings& defaults) {
  const Place numbered{source, "rule " + std::to_string(number)};
  const auto* table = node.as_table();
  if (table == nullptr) return numbered.error(node.source(), "expected a [[rule]] table");
  Rule rule;
  MAILKMS_TRY(name, read_rule_name(numbered, *table, number));
  rule.name = std::move(name);
  rule.line = static_cast<int>(table->source().begin.line);
  rule.settings = defaults;
  const Place place{source, rule_label(rule.name)};
  static const std::vector<std::string_view> known = rule_keys();
  for (const auto& [key, value] : in_file_order(*table)) {
    const std::string_view k = key->str();
    if (k == "name") continue;
    if (k == "direction") {
      const auto* text = value->as_string();
      const auto direction = text != nullptr ? parse_direction(text->get()) : std::nullopt;
      if (!direction) return place.expected(*value, "direction", "outbound or inbound");
      rule.direction = direction;
    } else if (k == "from") {
      MAILKMS_TRY(from, read_patterns(place, *value, "from"));
      rule.from = std::move(from);
    } else if (k == "to") {
      MAILKMS_TRY(to, read_patterns(place, *value, "to"));
      rule.to = std::move(to);
    } else if (k == "subject_tag") {
      MAILKMS_TRY(tag, read_string(place, *value, "subject_tag"));
      if (tag.empty()) return place.expected(*value, "subject_tag", "a non-empty tag such as \"[secure]\"");
      rule.subject_tag = std::move(tag);
    } else if (k == "header") {
      MAILKMS_TRY(header, read_header(place, *value));
      rule.header = std::move(header);
    } else {
      MAILKMS_CHECK(apply_setting(place, *key, *value, rule.settings, known));
    }
  }
  no_inherited_calendar_exemption(*table, rule.settings);
  return rule;
}

Status read_rules(const Place& top, const toml::node& node, Policy& policy) {
  const auto* list = node.as_array();
  if (list == nullptr) {
    return top.expected(node, "rule", node.is_table() ? "[[rule]] tables, not [rule]" : "[[rule]] tables");
  }
  for (const toml::node& item : *list) {
    MAILKMS_TRY(rule, read_rule(policy.source, item, policy.rules.size() + 1, policy.defaults));
    const auto same = std::find_if(policy.rules.begin(), policy.rules.end(),
                                   [&](const Rule& r) { return r.name == rule.name; });
    if (same != policy.rules.end()) {
      const toml::node* name = item.as_table()->get("name");
      return top.error(name != nullptr ? name->source() : item.source(),
                       rule_label(rule.name) + ": the name is already used by the rule at line " +
                           std::to_string(same->line));
    }
    policy.rules.push_back(std::move(rule));
  }
  return Ok{};
}

}  // namespace

Result<std::shared_ptr<const Policy>> parse_policy(std::string_view text, const std::filesystem::path& source) {
  auto policy = std::make_shared<Policy>();
  policy->source = source;
  const Place top{policy->source, ""};
  toml::table document;
  try {
    document = toml::parse(text, std::string_view(source.string()));
  } catch (const toml::parse_error& e) {
    return top.error(e.source(), e.description());
  }
  // [defaults] before any rule, wherever it is in the file: rules start from it.
  for (const auto& [key, value] : in_file_order(document)) {
    if (std::find(kTopLevelKeys.begin(), kTopLevelKeys.end(), key->str()) == kTopLevelKeys.end()) {
      return top.unknown_key(*key, kTopLevelKeys);
    }
  }
  if (const toml::node* local = document.get("local")) MAILKMS_CHECK(read_local(top, *local, policy->locality));
  if (const toml::node* signing = document.get("signing")) {
    MAILKMS_CHECK(read_signing(top, *signing, policy->locality, policy->signing));
  }
  if (const toml::node* decryption = document.get("decryption")) {
    MAILKMS_CHECK(read_decryption(top, *decryption, policy->decryption));
  }
  if (const toml::node* defaults = document.get("defaults")) {
    MAILKMS_CHECK(read_defaults(top, *defaults, policy->defaults));
  }
  if (const toml::node* rules = document.get("rule")) MAILKMS_CHECK(read_rules(top, *rules, *policy));
  return std::shared_ptr<const Policy>(std::move(policy));
}

Result<std::shared_ptr<const Policy>> load_policy(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return Error{path.string() + ": cannot read: it is a directory"};
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error{path.string() + ": cannot read: " + mailkms::errno_text(errno)};
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return Error{path.string() + ": cannot read: " + mailkms::errno_text(errno)};
  return parse_policy(text.str(), path);
}

}  // namespace mailkms::policy
