#include "mailkms/gateway/settings.hpp"

#include <unistd.h>

#include <algorithm>
#include <functional>
#include <optional>
#include <toml++/toml.h>

#include "mailkms/conf_section.hpp"
#include "mailkms/smime/certificate.hpp"

namespace mailkms::gateway {
namespace {

using conf::Problem;
using Read = std::function<std::optional<Problem>(const toml::node&, Settings&)>;

Problem wrong(const toml::node& node, std::string_view key, std::string_view expected) {
  return conf::expected("gateway", key, node, expected);
}

Read path(std::filesystem::path Settings::*field, std::string_view key) {
  return [=](const toml::node& n, Settings& s) -> std::optional<Problem> {
    const auto* v = n.as_string();
    if (v == nullptr || v->get().empty()) return wrong(n, key, "a path");
    s.*field = v->get();
    return std::nullopt;
  };
}

Read text(std::string Settings::*field, std::string_view key) {
  return [=](const toml::node& n, Settings& s) -> std::optional<Problem> {
    const auto* v = n.as_string();
    if (v == nullptr) return wrong(n, key, "a string");
    s.*field = v->get();
    return std::nullopt;
  };
}

template <class Duration>
Read duration(Duration Settings::*field, std::string_view key, long long low, long long high, long long scale) {
  return [=](const toml::node& n, Settings& s) -> std::optional<Problem> {
    const auto* v = n.as_integer();
    if (v == nullptr || v->get() < low || v->get() > high) {
      return wrong(n, key, "a number from " + std::to_string(low) + " to " + std::to_string(high));
    }
    s.*field = Duration(v->get() * scale);
    return std::nullopt;
  };
}

Read bytes(std::size_t Settings::*field, std::string_view key, long long low, long long high) {
  return [=](const toml::node& n, Settings& s) -> std::optional<Problem> {
    const auto* v = n.as_integer();
    if (v == nullptr || v->get() < low || v->get() > high) {
      return wrong(n, key, "a size in bytes from " + std::to_string(low) + " to " + std::to_string(high));
    }
    s.*field = static_cast<std::size_t>(v->get());
    return std::nullopt;
  };
}

Read action(FailureAction Settings::*field, std::string_view key) {
  return [=](const toml::node& n, Settings& s) -> std::optional<Problem> {
    const auto* v = n.as_string();
    static constexpr FailureAction all[] = {FailureAction::accept, FailureAction::reject, FailureAction::tempfail,
                                            FailureAction::quarantine};
    if (v != nullptr) {
      for (const auto a : all) {
        if (v->get() == to_string(a)) {
          s.*field = a;
          return std::nullopt;
        }
      }
    }
    return wrong(n, key, "accept, reject, tempfail or quarantine");
  };
}

const std::vector<conf::Key<Settings>>& keys() {
  static const std::vector<conf::Key<Settings>> table{
      {"policy", path(&Settings::policy, "policy")},
      {"authserv_id", text(&Settings::authserv_id, "authserv_id")},
      {"certificate_ttl_seconds",
       duration(&Settings::certificate_ttl, "certificate_ttl_seconds", 0, 86400, 1)},
      {"missing_certificate_ttl_seconds",
       duration(&Settings::missing_certificate_ttl, "missing_certificate_ttl_seconds", 0, 86400, 1)},
      {"keystore_timeout_ms", duration(&Settings::keystore_timeout, "keystore_timeout_ms", 100, 600000, 1)},
      {"mixed_recipients",
       [](const toml::node& n, Settings& s) -> std::optional<Problem> {
         const auto* v = n.as_string();
         if (v != nullptr && v->get() == "defer") {
           s.mixed_recipients = MixedRecipients::defer;
         } else if (v != nullptr && v->get() == "reinject") {
           s.mixed_recipients = MixedRecipients::reinject;
         } else {
           return wrong(n, "mixed_recipients", "defer or reinject");
         }
         return std::nullopt;
       }},
      {"reinject_command",
       [](const toml::node& n, Settings& s) -> std::optional<Problem> {
         const auto* list = n.as_array();
         if (list == nullptr || list->empty()) return wrong(n, "reinject_command", "a command as a list of strings");
         s.reinject_command.clear();
         for (const auto& item : *list) {
           const auto* v = item.as_string();
           if (v == nullptr || v->get().empty()) return wrong(item, "reinject_command", "a non-empty string");
           s.reinject_command.push_back(v->get());
         }
         if (!s.reinject_command.front().starts_with('/')) {
           return wrong(n, "reinject_command", "an absolute path as the first element");
         }
         return std::nullopt;
       }},
      {"reinject_key_file", path(&Settings::reinject_key_file, "reinject_key_file")},
      {"enrollment_address",
       [](const toml::node& n, Settings& s) -> std::optional<Problem> {
         const auto* v = n.as_string();
         if (v == nullptr || (!v->get().empty() && !conf::plain_mail_address(v->get()))) {
           return wrong(n, "enrollment_address", "a mail address like \"mailkms-enroll@example.org\"");
         }
         s.enrollment_address = v->get();
         return std::nullopt;
       }},
      {"on_keystore_unavailable", action(&Settings::on_keystore_unavailable, "on_keystore_unavailable")},
      {"on_internal_error", action(&Settings::on_internal_error, "on_internal_error")},
      {"on_bad_signature", action(&Settings::on_bad_signature, "on_bad_signature")},
      {"on_malformed", action(&Settings::on_malformed, "on_malformed")},
      {"spool_memory_limit", bytes(&Settings::spool_memory_limit, "spool_memory_limit", 4096, 1LL << 30)},
      {"spool_directory", path(&Settings::spool_directory, "spool_directory")},
      {"max_message_size", bytes(&Settings::max_message_size, "max_message_size", 1024, 1LL << 34)},
      {"inbound_memory_limit", bytes(&Settings::inbound_memory_limit, "inbound_memory_limit", 1024, 1LL << 34)},
  };
  return table;
}

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

// [keystore]'s keys for reaching it from another host, as keystored's
// own configuration reads them (keystore::load_config), which the
// gateway does not link: the endpoints and the TLS files.
std::optional<std::string> read_keystore_tls(toml::node_view<toml::node> keystore, Settings& settings,
                                             const std::filesystem::path& file) {
  const auto where = [&](const char* key) { return file.string() + ": keystore." + key + " "; };
  if (const auto* list = keystore["endpoints"].as_array()) {
    for (const auto& item : *list) {
      const auto* text = item.as_string();
      auto endpoint = text != nullptr ? keystore::Endpoint::parse(text->get())
                                      : keystore::Result<keystore::Endpoint>(keystore::make_error(
                                            keystore::Errc::invalid_argument, "expected strings"));
      if (!endpoint) return where("endpoints") + "at " + conf::where(item) + ": " + endpoint.error().message;
      settings.keystore_endpoints.push_back(std::move(*endpoint));
    }
  }
  const std::pair<const char*, std::filesystem::path*> files[] = {{"client_certificate", &settings.keystore_tls.certificate},
                                                                  {"client_key", &settings.keystore_tls.key},
                                                                  {"service_ca", &settings.keystore_tls.service_ca}};
  for (const auto& [key, path] : files) {
    if (const auto* text = keystore[key].as_string()) *path = text->get();
  }
  const bool tls = std::any_of(settings.keystore_endpoints.begin(), settings.keystore_endpoints.end(),
                               [](const keystore::Endpoint& e) { return e.kind == keystore::Endpoint::Kind::tls; });
  const auto& t = settings.keystore_tls;
  if (tls && (t.certificate.empty() || t.key.empty() || t.service_ca.empty())) {
    return file.string() + ": a tls:// keystore endpoint needs keystore.client_certificate, client_key and service_ca";
  }
  return std::nullopt;
}

}  // namespace

std::string_view to_string(FailureAction action) noexcept {
  switch (action) {
    case FailureAction::accept: return "accept";
    case FailureAction::reject: return "reject";
    case FailureAction::tempfail: return "tempfail";
    case FailureAction::quarantine: return "quarantine";
  }
  return "tempfail";
}

Result<Settings> load_settings(const std::filesystem::path& file) {
  auto document = conf::parse_file(file);
  if (!document) return Error{document.error().message};
  Settings settings;
  if (const auto* socket = (*document)["keystore"]["socket"].as_string(); socket != nullptr) {
    settings.keystore_socket = socket->get();
  }
  if (const auto* user = (*document)["keystore"]["user"].as_string(); user != nullptr) {
    settings.keystore_user = user->get();
  } else if (const auto* uid = (*document)["keystore"]["user"].as_integer(); uid != nullptr) {
    settings.keystore_user = std::to_string(uid->get());
  }
  if (auto problem = read_keystore_tls((*document)["keystore"], settings, file)) return Error{std::move(*problem)};
  if (auto problem = conf::read_section<Settings>(*document, "gateway", keys(), settings, file)) {
    return Error{std::move(problem->message)};
  }
  // One enrollment address for the site, set in either section: mail the
  // gateway hands over must be mail the keystore expects.
  if (const auto* keystore_address = (*document)["keystore"]["enrollment_address"].as_string()) {
    if (!keystore_address->get().empty() && !conf::plain_mail_address(keystore_address->get())) {
      return Error{file.string() + ": " +
                   conf::expected("keystore", "enrollment_address", *keystore_address, "a mail address like \"mailkms-enroll@example.org\"")
                       .message};
    }
    if (settings.enrollment_address.empty()) {
      settings.enrollment_address = keystore_address->get();
    } else if (!keystore_address->get().empty() &&
               smime::normalize_address(settings.enrollment_address) != smime::normalize_address(keystore_address->get())) {
      return Error{file.string() + ": gateway.enrollment_address \"" + settings.enrollment_address +
                   "\" differs from keystore.enrollment_address \"" + keystore_address->get() +
                   "\"; set it once, in either section"};
    }
  }
  if (settings.authserv_id.empty()) settings.authserv_id = host_name();
  return settings;
}

}  // namespace mailkms::gateway
