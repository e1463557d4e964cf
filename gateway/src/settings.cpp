#include "mailkms/gateway/settings.hpp"

#include <unistd.h>

#include <algorithm>
#include <functional>
#include <toml++/toml.h>

#include "mailkms/smime/certificate.hpp"

namespace mailkms::gateway {
namespace {

std::string where(const toml::node& node) {
  const auto& source = node.source();
  return "line " + std::to_string(source.begin.line) + ", column " + std::to_string(source.begin.column);
}

Error wrong(const toml::node& node, std::string_view key, std::string_view expected) {
  return Error{"gateway." + std::string(key) + " at " + where(node) + ": expected " + std::string(expected)};
}

using Apply = std::function<Result<Ok>(const toml::node&, Settings&)>;

Apply path(std::filesystem::path Settings::*field, std::string_view key) {
  return [=](const toml::node& n, Settings& s) -> Result<Ok> {
    const auto* v = n.as_string();
    if (v == nullptr || v->get().empty()) return wrong(n, key, "a path");
    s.*field = v->get();
    return Ok{};
  };
}

Apply text(std::string Settings::*field, std::string_view key) {
  return [=](const toml::node& n, Settings& s) -> Result<Ok> {
    const auto* v = n.as_string();
    if (v == nullptr) return wrong(n, key, "a string");
    s.*field = v->get();
    return Ok{};
  };
}

template <class Duration>
Apply duration(Duration Settings::*field, std::string_view key, long long low, long long high, long long scale) {
  return [=](const toml::node& n, Settings& s) -> Result<Ok> {
    const auto* v = n.as_integer();
    if (v == nullptr || v->get() < low || v->get() > high) {
      return wrong(n, key, "a number from " + std::to_string(low) + " to " + std::to_string(high));
    }
    s.*field = Duration(v->get() * scale);
    return Ok{};
  };
}

Apply bytes(std::size_t Settings::*field, std::string_view key, long long low, long long high) {
  return [=](const toml::node& n, Settings& s) -> Result<Ok> {
    const auto* v = n.as_integer();
    if (v == nullptr || v->get() < low || v->get() > high) {
      return wrong(n, key, "a size in bytes from " + std::to_string(low) + " to " + std::to_string(high));
    }
    s.*field = static_cast<std::size_t>(v->get());
    return Ok{};
  };
}

Apply action(FailureAction Settings::*field, std::string_view key) {
  return [=](const toml::node& n, Settings& s) -> Result<Ok> {
    const auto* v = n.as_string();
    static constexpr FailureAction all[] = {FailureAction::accept, FailureAction::reject, FailureAction::tempfail,
                                            FailureAction::quarantine};
    if (v != nullptr) {
      for (const auto a : all) {
        if (v->get() == to_string(a)) {
          s.*field = a;
          return Ok{};
        }
      }
    }
    return wrong(n, key, "accept, reject, tempfail or quarantine");
  };
}

struct Key {
  std::string_view name;
  Apply apply;
};

const std::vector<Key>& keys() {
  static const std::vector<Key> table{
      {"policy", path(&Settings::policy, "policy")},
      {"authserv_id", text(&Settings::authserv_id, "authserv_id")},
      {"certificate_ttl_seconds",
       duration(&Settings::certificate_ttl, "certificate_ttl_seconds", 0, 86400, 1)},
      {"missing_certificate_ttl_seconds",
       duration(&Settings::missing_certificate_ttl, "missing_certificate_ttl_seconds", 0, 86400, 1)},
      {"keystore_timeout_ms", duration(&Settings::keystore_timeout, "keystore_timeout_ms", 100, 600000, 1)},
      {"mixed_recipients",
       [](const toml::node& n, Settings& s) -> Result<Ok> {
         const auto* v = n.as_string();
         if (v != nullptr && v->get() == "defer") {
           s.mixed_recipients = MixedRecipients::defer;
         } else if (v != nullptr && v->get() == "reinject") {
           s.mixed_recipients = MixedRecipients::reinject;
         } else {
           return wrong(n, "mixed_recipients", "defer or reinject");
         }
         return Ok{};
       }},
      {"reinject_command",
       [](const toml::node& n, Settings& s) -> Result<Ok> {
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
         return Ok{};
       }},
      {"reinject_key_file", path(&Settings::reinject_key_file, "reinject_key_file")},
      {"enrollment_address", text(&Settings::enrollment_address, "enrollment_address")},
      {"on_keystore_unavailable", action(&Settings::on_keystore_unavailable, "on_keystore_unavailable")},
      {"on_internal_error", action(&Settings::on_internal_error, "on_internal_error")},
      {"on_bad_signature", action(&Settings::on_bad_signature, "on_bad_signature")},
      {"on_malformed", action(&Settings::on_malformed, "on_malformed")},
      {"spool_memory_limit", bytes(&Settings::spool_memory_limit, "spool_memory_limit", 4096, 1LL << 30)},
      {"spool_directory", path(&Settings::spool_directory, "spool_directory")},
      {"max_message_size", bytes(&Settings::max_message_size, "max_message_size", 1024, 1LL << 34)},
  };
  return table;
}

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
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
  toml::table document;
  try {
    document = toml::parse_file(file.string());
  } catch (const toml::parse_error& e) {
    return Error{file.string() + ", line " + std::to_string(e.source().begin.line) + ", column " +
                 std::to_string(e.source().begin.column) + ": " + std::string(e.description())};
  }
  Settings settings;
  if (const auto* socket = document["keystore"]["socket"].as_string(); socket != nullptr) {
    settings.keystore_socket = socket->get();
  }
  if (const toml::table* section = document["gateway"].as_table(); section != nullptr) {
    for (const auto& [name, node] : *section) {
      const auto& table = keys();
      const auto key = std::find_if(table.begin(), table.end(), [&](const Key& k) { return k.name == name.str(); });
      if (key == table.end()) {
        return Error{file.string() + ", " + where(node) + ": unknown key gateway." + std::string(name.str())};
      }
      if (auto applied = key->apply(node, settings); !applied) {
        return Error{file.string() + ": " + std::move(applied).error().message};
      }
    }
  }
  // One enrollment address for the site, set in either section: mail the
  // gateway hands over must be mail the keystore expects.
  if (const auto* keystore_address = document["keystore"]["enrollment_address"].as_string()) {
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
