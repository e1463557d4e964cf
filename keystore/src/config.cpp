#include "mailkms/keystore/config.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <string>
#include <toml++/toml.h>

#include "mailkms/conf_section.hpp"
#include "mailkms/smime/certificate.hpp"

namespace mailkms::keystore {
namespace {

// "key at line L, column C: expected …"; the section's name goes before it.
Error wrong(const toml::node& node, const std::string& key, const std::string& expected) {
  return make_error(Errc::invalid_argument, key + " at " + conf::where(node) + ": expected " + expected);
}

Status as_path(const toml::node& node, const std::string& key, std::filesystem::path& out) {
  const auto* s = node.as_string();
  if (s == nullptr || s->get().empty()) return wrong(node, key, "a path");
  out = s->get();
  return mailkms::Ok{};
}

Status as_database(const toml::node& node, DatabaseLocation& out) {
  const auto* s = node.as_string();
  if (s == nullptr) return wrong(node, "database", "a file's path or a PostgreSQL connection string");
  auto location = DatabaseLocation::parse(s->get());
  if (!location) return make_error(Errc::invalid_argument, "database at " + conf::where(node) + ": " + location.error().message);
  out = std::move(location).value();
  return mailkms::Ok{};
}

template <class Int>
Status as_integer(const toml::node& node, const std::string& key, long long low, long long high, Int& out) {
  const auto* v = node.as_integer();
  if (v == nullptr || v->get() < low || v->get() > high) {
    return wrong(node, key, std::to_string(low) + " to " + std::to_string(high));
  }
  out = static_cast<Int>(v->get());
  return mailkms::Ok{};
}

Status as_key_type(const toml::node& node, const std::string& key, KeyType& out) {
  const auto* s = node.as_string();
  const auto type = s != nullptr ? parse_key_type(s->get()) : std::nullopt;
  if (!type) return wrong(node, key, "rsa-2048, rsa-3072, rsa-4096, ec-p256 or ec-p384");
  out = *type;
  return mailkms::Ok{};
}

Status as_text(const toml::node& node, const std::string& key, std::string& out) {
  const auto* s = node.as_string();
  if (s == nullptr) return wrong(node, key, "a string");
  out = s->get();
  return mailkms::Ok{};
}

Status as_mail_address(const toml::node& node, const std::string& key, bool may_be_empty, std::string& out) {
  std::string value;
  MAILKMS_CHECK(as_text(node, key, value));
  if (!(value.empty() && may_be_empty) && !conf::plain_mail_address(value)) {
    return wrong(node, key, "a mail address like \"mailkms@example.org\"");
  }
  out = std::move(value);
  return mailkms::Ok{};
}

Status as_command(const toml::node& node, const std::string& key, std::vector<std::string>& out) {
  const auto* list = node.as_array();
  std::vector<std::string> command;
  if (list != nullptr) {
    for (const auto& item : *list) {
      const auto* s = item.as_string();
      if (s == nullptr) return wrong(item, key, "strings");
      command.push_back(s->get());
    }
  }
  if (command.empty() || !command.front().starts_with('/')) {
    return wrong(node, key, "a list of strings, an absolute path first, like [\"/usr/sbin/sendmail\", \"-i\"]");
  }
  out = std::move(command);
  return mailkms::Ok{};
}

Status as_domains(const toml::node& node, const std::string& key, std::vector<std::string>& out) {
  const auto* list = node.as_array();
  if (list == nullptr) return wrong(node, key, "a list of domains like [\"example.org\"]");
  std::vector<std::string> domains;
  for (const auto& item : *list) {
    const auto* s = item.as_string();
    if (s == nullptr || !smime::plausible_domain(s->get())) return wrong(item, key, "domains like \"example.org\"");
    domains.push_back(smime::normalize_address(s->get()));
  }
  out = std::move(domains);
  return mailkms::Ok{};
}

template <class Id>
Status as_ids(const toml::node& node, const std::string& key, std::vector<Id>& out, bool users) {
  const auto* list = node.as_array();
  if (list == nullptr) return wrong(node, key, users ? "a list of user names or uids" : "a list of group names or gids");
  for (const auto& item : *list) {
    if (const auto* number = item.as_integer(); number != nullptr) {
      // Cut to the width of a uid, 2^32 would be 0: root.
      constexpr auto most = std::numeric_limits<Id>::max();
      if (number->get() < 0 || static_cast<unsigned long long>(number->get()) > most) {
        return wrong(item, key, "a number from 0 to " + std::to_string(most));
      }
      out.push_back(static_cast<Id>(number->get()));
    } else if (const auto* name = item.as_string(); name != nullptr) {
      if (users) {
        const auto account = accounts::find_user(name->get());
        if (!account) return wrong(item, key, "a known user, not " + name->get());
        out.push_back(static_cast<Id>(account->uid));
      } else {
        const auto gid = accounts::find_group(name->get());
        if (!gid) return wrong(item, key, "a known group, not " + name->get());
        out.push_back(static_cast<Id>(*gid));
      }
    } else {
      return wrong(item, key, "names or numbers");
    }
  }
  return mailkms::Ok{};
}

struct Setting {
  const char* name;
  std::function<Status(const toml::node&, Config&)> apply;
};

const std::vector<Setting>& settings() {
  static const std::vector<Setting> table{
      {"database", [](const toml::node& n, Config& c) { return as_database(n, c.database); }},
      {"socket", [](const toml::node& n, Config& c) { return as_path(n, "socket", c.socket); }},
      {"socket_mode",
       [](const toml::node& n, Config& c) -> Status {
         const auto* s = n.as_string();
         if (s == nullptr) return wrong(n, "socket_mode", "an octal mode in quotes, like \"0660\"");
         try {
           std::size_t used = 0;
           const unsigned long mode = std::stoul(s->get(), &used, 8);
           if (used != s->get().size() || mode > 0777) return wrong(n, "socket_mode", "an octal mode like \"0660\"");
           // Peer credentials decide what a connection may do, but a socket
           // anyone can reach lets anyone race administrators' unseals and
           // fill the daemon's queues.
           if ((mode & S_IRWXO) != 0) {
             return wrong(n, "socket_mode", "a mode that gives others nothing, like \"0660\", not \"" + s->get() + "\"");
           }
           c.socket_mode = static_cast<mode_t>(mode);
         } catch (const std::exception&) {
           return wrong(n, "socket_mode", "an octal mode like \"0660\"");
         }
         return mailkms::Ok{};
       }},
      {"user",
       [](const toml::node& n, Config& c) -> Status {
         if (const auto* number = n.as_integer(); number != nullptr && number->get() >= 0) {
           c.user = std::to_string(number->get());
           return mailkms::Ok{};
         }
         const auto* s = n.as_string();
         if (s == nullptr || s->get().empty()) return wrong(n, "user", "a user name or uid");
         c.user = s->get();
         return mailkms::Ok{};
       }},
      {"gateway_users", [](const toml::node& n, Config& c) { return as_ids(n, "gateway_users", c.gateway_uids, true); }},
      {"gateway_groups", [](const toml::node& n, Config& c) { return as_ids(n, "gateway_groups", c.gateway_gids, false); }},
      {"gateway_rate_limit",
       [](const toml::node& n, Config& c) { return as_integer(n, "gateway_rate_limit", 0, 1'000'000, c.gateway_rate_limit); }},
      {"unseal_key_file", [](const toml::node& n, Config& c) { return as_path(n, "unseal_key_file", c.unseal_key_file); }},
      {"audit_checkpoint_file",
       [](const toml::node& n, Config& c) { return as_path(n, "audit_checkpoint_file", c.audit_checkpoint_file); }},
      {"audit_checkpoint_interval_seconds",
       [](const toml::node& n, Config& c) -> Status {
         long long seconds = 0;
         MAILKMS_CHECK(as_integer(n, "audit_checkpoint_interval_seconds", 1, 86400, seconds));
         c.audit_checkpoint_interval = std::chrono::seconds(seconds);
         return mailkms::Ok{};
       }},
      {"idle_timeout_seconds",
       [](const toml::node& n, Config& c) -> Status {
         long long seconds = 0;
         MAILKMS_CHECK(as_integer(n, "idle_timeout_seconds", 1, 86400, seconds));
         c.idle_timeout = std::chrono::seconds(seconds);
         return mailkms::Ok{};
       }},
      {"workers", [](const toml::node& n, Config& c) { return as_integer(n, "workers", 1, 256, c.workers); }},
      {"encryption_key_type",
       [](const toml::node& n, Config& c) { return as_key_type(n, "encryption_key_type", c.encryption_key_type); }},
      {"signing_key_type",
       [](const toml::node& n, Config& c) { return as_key_type(n, "signing_key_type", c.signing_key_type); }},
      {"certificate_days",
       [](const toml::node& n, Config& c) { return as_integer(n, "certificate_days", 1, 3650, c.certificate_days); }},
      {"renewal_window_days",
       [](const toml::node& n, Config& c) { return as_integer(n, "renewal_window_days", 1, 365, c.renewal_window_days); }},
      {"local_domains", [](const toml::node& n, Config& c) { return as_domains(n, "local_domains", c.local_domains); }},
      {"mail_command", [](const toml::node& n, Config& c) { return as_command(n, "mail_command", c.enrollment.mail_command); }},
      {"mail_from",
       [](const toml::node& n, Config& c) { return as_mail_address(n, "mail_from", false, c.enrollment.mail_from); }},
      {"enrollment_address",
       [](const toml::node& n, Config& c) {
         return as_mail_address(n, "enrollment_address", true, c.enrollment.enrollment_address);
       }},
      {"templates", [](const toml::node& n, Config& c) { return as_path(n, "templates", c.enrollment.templates); }},
      {"token_lifetime_hours",
       [](const toml::node& n, Config& c) -> Status {
         long long hours = 0;
         MAILKMS_CHECK(as_integer(n, "token_lifetime_hours", 1, 8760, hours));
         c.enrollment.token_lifetime = std::chrono::hours(hours);
         return mailkms::Ok{};
       }},
      {"pkcs12_profile",
       [](const toml::node& n, Config& c) -> Status {
         const auto* s = n.as_string();
         const auto profile = s != nullptr ? parse_pkcs12_profile(s->get()) : std::nullopt;
         if (!profile) return wrong(n, "pkcs12_profile", "modern or legacy");
         c.enrollment.pkcs12_profile = *profile;
         return mailkms::Ok{};
       }},
      {"tls_listen",
       [](const toml::node& n, Config& c) -> Status {
         const auto* list = n.as_array();
         if (list == nullptr) return wrong(n, "tls_listen", "a list of addresses like [\"127.0.0.1:7443\"]");
         for (const auto& item : *list) {
           const auto* s = item.as_string();
           auto parsed = s != nullptr ? parse_host_port(s->get()) : Result<std::pair<std::string, std::string>>(
                                                                        make_error(Errc::invalid_argument, ""));
           if (!parsed) return wrong(item, "tls_listen", "IP addresses with ports like \"127.0.0.1:7443\" or \"[::1]:7443\"");
           c.tls_listen.push_back(std::move(*parsed));
         }
         return mailkms::Ok{};
       }},
      {"metrics_listen",
       [](const toml::node& n, Config& c) -> Status {
         const auto* s = n.as_string();
         if (s == nullptr || !parse_host_port(s->get())) {
           return wrong(n, "metrics_listen", "an IP address with a port like \"127.0.0.1:9470\" or \"[::1]:9470\"");
         }
         c.metrics_listen = s->get();
         return mailkms::Ok{};
       }},
      {"tls_certificate", [](const toml::node& n, Config& c) { return as_path(n, "tls_certificate", c.tls_certificate); }},
      {"tls_key", [](const toml::node& n, Config& c) { return as_path(n, "tls_key", c.tls_key); }},
      {"service_ca", [](const toml::node& n, Config& c) { return as_path(n, "service_ca", c.service_ca); }},
      {"endpoints",
       [](const toml::node& n, Config& c) -> Status {
         const auto* list = n.as_array();
         if (list == nullptr || list->empty()) {
           return wrong(n, "endpoints", "a list like [\"tls://ks1.example.org:7443\", \"unix:/run/mailkms-keystore/keystore.sock\"]");
         }
         for (const auto& item : *list) {
           const auto* s = item.as_string();
           if (s == nullptr) return wrong(item, "endpoints", "strings");
           auto endpoint = Endpoint::parse(s->get());
           if (!endpoint) return wrong(item, "endpoints", endpoint.error().message);
           c.endpoints.push_back(std::move(*endpoint));
         }
         return mailkms::Ok{};
       }},
      {"client_certificate",
       [](const toml::node& n, Config& c) { return as_path(n, "client_certificate", c.client_certificate); }},
      {"client_key", [](const toml::node& n, Config& c) { return as_path(n, "client_key", c.client_key); }},
      {"lock_memory",
       [](const toml::node& n, Config& c) -> Status {
         const auto* v = n.as_boolean();
         if (v == nullptr) return wrong(n, "lock_memory", "true or false");
         c.lock_memory = v->get();
         return mailkms::Ok{};
       }},
  };
  return table;
}

// The settings above as keys of [keystore] for conf::read_section.
const std::vector<conf::Key<Config>>& keys() {
  static const std::vector<conf::Key<Config>> table = [] {
    std::vector<conf::Key<Config>> out;
    for (const auto& setting : settings()) {
      out.push_back({setting.name, [apply = setting.apply](const toml::node& n, Config& c) -> std::optional<conf::Problem> {
                       if (auto applied = apply(n, c); !applied) return conf::Problem{"keystore." + applied.error().message};
                       return std::nullopt;
                     }});
    }
    return out;
  }();
  return table;
}

// The TLS settings come in sets: a listener needs its certificate, key
// and the service CA; a tls:// endpoint needs this host's certificate,
// key and the service CA to pin.
Status check_tls(const Config& config, const std::filesystem::path& path) {
  if (!config.tls_listen.empty() &&
      (config.tls_certificate.empty() || config.tls_key.empty() || config.service_ca.empty())) {
    return make_error(Errc::invalid_argument,
                      path.string() + ": keystore.tls_listen needs tls_certificate, tls_key and service_ca");
  }
  const bool tls_endpoint = std::any_of(config.endpoints.begin(), config.endpoints.end(),
                                        [](const Endpoint& e) { return e.kind == Endpoint::Kind::tls; });
  if (tls_endpoint && (config.client_certificate.empty() || config.client_key.empty() || config.service_ca.empty())) {
    return make_error(Errc::invalid_argument, path.string() +
                                                  ": a tls:// endpoint needs keystore.client_certificate, client_key "
                                                  "and service_ca (from mailkmsctl gateway add)");
  }
  return mailkms::Ok{};
}

}  // namespace

ClientOptions Config::client_options(std::chrono::milliseconds timeout, std::size_t pool) const {
  ClientOptions options{socket, timeout, pool, user};
  options.endpoints = endpoints;
  options.tls = {client_certificate, client_key, service_ca};
  return options;
}

Result<Config> load_config(const std::filesystem::path& path) {
  auto document = conf::parse_file(path);
  if (!document) return make_error(Errc::invalid_argument, document.error().message);
  Config config;
  if (auto problem = conf::read_section<Config>(*document, "keystore", keys(), config, path)) {
    return make_error(Errc::invalid_argument, std::move(problem->message));
  }
  // One enrollment address for the site, set in either section: the
  // gateway hands the keystore the mail sent to it.
  if (const toml::node* gateway_address = (*document)["gateway"]["enrollment_address"].node()) {
    std::string address;
    if (auto read = as_mail_address(*gateway_address, "enrollment_address", true, address); !read) {
      return make_error(Errc::invalid_argument, path.string() + ": gateway." + read.error().message);
    }
    auto& ours = config.enrollment.enrollment_address;
    if (ours.empty()) {
      ours = address;
    } else if (!address.empty() && smime::normalize_address(ours) != smime::normalize_address(address)) {
      return make_error(Errc::invalid_argument, path.string() + ": keystore.enrollment_address \"" + ours +
                                                    "\" differs from gateway.enrollment_address \"" + address +
                                                    "\"; set it once, in either section");
    }
  }
  if (config.audit_checkpoint_file.empty()) {
    // Beside an SQLite file; in the state directory for a database server.
    config.audit_checkpoint_file = config.database.is_file() ? config.database.file.parent_path() / "audit-checkpoints"
                                                             : std::filesystem::path("/var/lib/mailkms/audit-checkpoints");
  }
  MAILKMS_CHECK(check_tls(config, path));
  if (config.renewal_window_days >= config.certificate_days) {
    return make_error(Errc::invalid_argument, path.string() +
                                                  ": keystore.renewal_window_days must be shorter than certificate_days");
  }
  return config;
}

}  // namespace mailkms::keystore
