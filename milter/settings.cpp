#include "settings.hpp"


#include <algorithm>
#include <functional>
#include <toml++/toml.h>
#include <vector>

#include "mailkms/conf_section.hpp"
#include "mailkms/metrics_conf.hpp"

namespace mailkms::milter {
namespace {

using conf::Problem;

Problem wrong(const toml::node& node, std::string_view key, std::string_view expected) {
  return conf::expected("milter", key, node, expected);
}

bool valid_socket(std::string_view s) {
  const auto colon = s.find(':');
  if (colon == std::string_view::npos) return s.starts_with('/');
  const auto kind = s.substr(0, colon);
  const auto rest = s.substr(colon + 1);
  if (kind == "unix" || kind == "local") return rest.starts_with('/');
  if (kind == "inet" || kind == "inet6") {
    const auto at = rest.find('@');
    const auto port = rest.substr(0, at);
    return !port.empty() && std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
  }
  return false;
}

const std::vector<conf::Key<Settings>>& keys() {
  static const std::vector<conf::Key<Settings>> table{
      {"socket",
       [](const toml::node& n, Settings& s) -> std::optional<Problem> {
         const auto* v = n.as_string();
         if (v == nullptr || !valid_socket(v->get())) {
           return wrong(n, "socket", "unix:/path, inet:PORT@HOST or inet6:PORT@HOST");
         }
         s.socket = v->get();
         return std::nullopt;
       }},
      {"socket_mode",
       [](const toml::node& n, Settings& s) -> std::optional<Problem> {
         const auto* v = n.as_string();
         if (v == nullptr || v->get().empty() || v->get().size() > 4 ||
             v->get().find_first_not_of("01234567") != std::string::npos) {
           return wrong(n, "socket_mode", "an octal mode in quotes, like \"0660\"");
         }
         s.socket_mode = static_cast<mode_t>(std::stoul(v->get(), nullptr, 8));
         return std::nullopt;
       }},
      conf::user_key<Settings>("milter"),
      conf::group_key<Settings>("milter"),
      {"pid_file",
       [](const toml::node& n, Settings& s) -> std::optional<Problem> {
         const auto* v = n.as_string();
         if (v == nullptr || !v->get().starts_with('/')) return wrong(n, "pid_file", "an absolute path");
         s.pid_file = v->get();
         return std::nullopt;
       }},
      {"log_file",
       [](const toml::node& n, Settings& s) -> std::optional<Problem> {
         const auto* v = n.as_string();
         if (v == nullptr || !v->get().starts_with('/')) return wrong(n, "log_file", "an absolute path");
         s.log_file = v->get();
         return std::nullopt;
       }},
      {"timeout_seconds",
       [](const toml::node& n, Settings& s) -> std::optional<Problem> {
         const auto* v = n.as_integer();
         if (v == nullptr || v->get() < 1 || v->get() > 3600) return wrong(n, "timeout_seconds", "1 to 3600");
         s.timeout_seconds = static_cast<int>(v->get());
         return std::nullopt;
       }},
      {"backlog",
       [](const toml::node& n, Settings& s) -> std::optional<Problem> {
         const auto* v = n.as_integer();
         if (v == nullptr || v->get() < 1 || v->get() > 4096) return wrong(n, "backlog", "1 to 4096");
         s.backlog = static_cast<int>(v->get());
         return std::nullopt;
       }},
      metrics::listen_key<Settings>("milter"),
  };
  return table;
}

}  // namespace

gateway::Result<Settings> load_settings(const std::filesystem::path& path) {
  auto document = conf::parse_file(path);
  if (!document) return gateway::Error{document.error().message};
  Settings settings;
  // user before group, so an explicit group wins over the user's own.
  static constexpr std::string_view group_last[] = {"group"};
  if (auto problem = conf::read_section<Settings>(*document, "milter", keys(), settings, path, group_last)) {
    return gateway::Error{std::move(problem->message)};
  }
  return settings;
}

}  // namespace mailkms::milter
