#include "settings.hpp"

#include <arpa/inet.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <boost/asio/ssl.hpp>
#include <toml++/toml.h>
#include <vector>

#include "mailkms/conf_section.hpp"
#include "mailkms/metrics_conf.hpp"

namespace mailkms::proxy {
namespace {

using conf::Problem;

Problem wrong(const toml::node& node, std::string_view key, std::string_view expected) {
  return conf::expected("proxy", key, node, expected);
}

bool plain_host_name(std::string_view name) {
  return !name.empty() && name.size() <= 255 && std::all_of(name.begin(), name.end(), [](unsigned char c) {
    return std::isalnum(c) != 0 || c == '.' || c == '-';
  });
}

conf::Key<Settings> endpoint_key(std::string_view name, Endpoint Settings::*field) {
  return {name, [name, field](const toml::node& n, Settings& s) -> std::optional<Problem> {
            const auto* v = n.as_string();
            auto endpoint = v != nullptr ? parse_endpoint(v->get()) : std::nullopt;
            if (!endpoint) return wrong(n, name, "\"IP:PORT\" or \"[IPv6]:PORT\"");
            s.*field = *endpoint;
            return std::nullopt;
          }};
}

conf::Key<Settings> seconds_key(std::string_view name, std::chrono::seconds Settings::*field) {
  return {name, [name, field](const toml::node& n, Settings& s) -> std::optional<Problem> {
            const auto* v = n.as_integer();
            if (v == nullptr || v->get() < 1 || v->get() > 3600) return wrong(n, name, "1 to 3600");
            s.*field = std::chrono::seconds(v->get());
            return std::nullopt;
          }};
}

conf::Key<Settings> path_key(std::string_view name, std::filesystem::path Settings::*field) {
  return {name, [name, field](const toml::node& n, Settings& s) -> std::optional<Problem> {
            const auto* v = n.as_string();
            if (v == nullptr || !v->get().starts_with('/')) return wrong(n, name, "an absolute path");
            s.*field = v->get();
            return std::nullopt;
          }};
}

conf::Key<Settings> networks_key(std::string_view name, std::vector<policy::Locality::Network> Settings::*field) {
  return {name, [name, field](const toml::node& n, Settings& s) -> std::optional<Problem> {
            const auto* list = n.as_array();
            if (list == nullptr) return wrong(n, name, "a list of networks (\"127.0.0.1/32\", \"::1\")");
            (s.*field).clear();
            for (const auto& item : *list) {
              const auto* text = item.as_string();
              if (text == nullptr) return wrong(item, name, "networks such as \"127.0.0.1/32\"");
              auto network = policy::parse_network(text->get());
              if (!network) return wrong(item, name, "networks such as \"127.0.0.1/32\" (" + network.error() + ")");
              (s.*field).push_back(*network);
            }
            return std::nullopt;
          }};
}

const std::vector<conf::Key<Settings>>& keys() {
  static const std::vector<conf::Key<Settings>> table{
      endpoint_key("listen", &Settings::listen),
      endpoint_key("next_hop", &Settings::next_hop),
      {"hostname",
       [](const toml::node& n, Settings& s) -> std::optional<Problem> {
         const auto* v = n.as_string();
         if (v == nullptr || !plain_host_name(v->get())) {
           return wrong(n, "hostname", "a host name (letters, digits, dots, hyphens)");
         }
         s.hostname = v->get();
         return std::nullopt;
       }},
      {"threads",
       [](const toml::node& n, Settings& s) -> std::optional<Problem> {
         const auto* v = n.as_integer();
         if (v == nullptr || v->get() < 0 || v->get() > 256) return wrong(n, "threads", "0 (one per core) to 256");
         s.threads = static_cast<unsigned>(v->get());
         return std::nullopt;
       }},
      {"max_sessions",
       [](const toml::node& n, Settings& s) -> std::optional<Problem> {
         const auto* v = n.as_integer();
         if (v == nullptr || v->get() < 1 || v->get() > 100000) return wrong(n, "max_sessions", "1 to 100000");
         s.max_sessions = static_cast<unsigned>(v->get());
         return std::nullopt;
       }},
      {"max_sessions_per_client",
       [](const toml::node& n, Settings& s) -> std::optional<Problem> {
         const auto* v = n.as_integer();
         if (v == nullptr || v->get() < 1 || v->get() > 100000) return wrong(n, "max_sessions_per_client", "1 to 100000");
         s.max_sessions_per_client = static_cast<unsigned>(v->get());
         return std::nullopt;
       }},
      seconds_key("command_timeout_seconds", &Settings::command_timeout),
      seconds_key("data_timeout_seconds", &Settings::data_timeout),
      seconds_key("next_hop_timeout_seconds", &Settings::next_hop_timeout),
      seconds_key("shutdown_timeout_seconds", &Settings::shutdown_timeout),
      {"next_hop_idle_seconds",
       [](const toml::node& n, Settings& s) -> std::optional<Problem> {
         const auto* v = n.as_integer();
         if (v == nullptr || v->get() < 0 || v->get() > 300) return wrong(n, "next_hop_idle_seconds", "0 to 300");
         s.next_hop_idle = std::chrono::seconds(v->get());
         return std::nullopt;
       }},
      conf::user_key<Settings>("proxy"),
      conf::group_key<Settings>("proxy"),
      networks_key("xforward_peers", &Settings::xforward_peers),
      networks_key("xclient_peers", &Settings::xclient_peers),
      {"next_hop_tls",
       [](const toml::node& n, Settings& s) -> std::optional<Problem> {
         static constexpr std::pair<std::string_view, HopTls> levels[] = {
             {"none", HopTls::none}, {"may", HopTls::may}, {"encrypt", HopTls::encrypt}, {"verify", HopTls::verify}};
         const auto* v = n.as_string();
         const auto level = std::find_if(std::begin(levels), std::end(levels),
                                         [&](const auto& l) { return v != nullptr && l.first == v->get(); });
         if (level == std::end(levels)) return wrong(n, "next_hop_tls", "\"none\", \"may\", \"encrypt\" or \"verify\"");
         s.next_hop_tls = level->second;
         return std::nullopt;
       }},
      path_key("next_hop_tls_ca", &Settings::next_hop_tls_ca),
      {"next_hop_tls_name",
       [](const toml::node& n, Settings& s) -> std::optional<Problem> {
         const auto* v = n.as_string();
         if (v == nullptr || !plain_host_name(v->get())) {
           return wrong(n, "next_hop_tls_name", "a host name (letters, digits, dots, hyphens)");
         }
         s.next_hop_tls_name = v->get();
         return std::nullopt;
       }},
      path_key("tls_certificate", &Settings::tls_certificate),
      path_key("tls_key", &Settings::tls_key),
      path_key("pid_file", &Settings::pid_file),
      path_key("log_file", &Settings::log_file),
      metrics::listen_key<Settings>("proxy"),
  };
  return table;
}

// TLS 1.2 and later, with the certificate chain and the key that goes
// with it, or an error naming the file at fault.
gateway::Result<std::shared_ptr<boost::asio::ssl::context>> server_tls(const Settings& settings) {
  namespace ssl = boost::asio::ssl;
  if (settings.tls_certificate.empty() != settings.tls_key.empty()) {
    return gateway::Error{"[proxy] tls_certificate and tls_key go together: set both, or neither"};
  }
  if (settings.tls_certificate.empty()) return std::shared_ptr<ssl::context>();
  auto tls = std::make_shared<ssl::context>(ssl::context::tls_server);
  boost::system::error_code ec;
  tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                       ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use,
                   ec);
  if (!ec) tls->use_certificate_chain_file(settings.tls_certificate.string(), ec);
  if (ec) return gateway::Error{"[proxy] tls_certificate " + settings.tls_certificate.string() + ": " + ec.message()};
  // OpenSSL refuses a key that is not the certificate's ("key values mismatch").
  tls->use_private_key_file(settings.tls_key.string(), ssl::context::pem, ec);
  if (ec) return gateway::Error{"[proxy] tls_key " + settings.tls_key.string() + ": " + ec.message()};
  return tls;
}

// The context of every STARTTLS to the next hop: TLS 1.2 and later; for
// verify, the peer's chain must lead to next_hop_tls_ca (or the system's
// anchors); the name is checked per connection (see next_hop.cpp).
gateway::Result<std::shared_ptr<boost::asio::ssl::context>> client_tls(const Settings& settings) {
  namespace ssl = boost::asio::ssl;
  if (settings.next_hop_tls != HopTls::verify && !settings.next_hop_tls_ca.empty()) {
    return gateway::Error{"[proxy] next_hop_tls_ca is for next_hop_tls = \"verify\""};
  }
  if (settings.next_hop_tls == HopTls::none) return std::shared_ptr<ssl::context>();
  auto tls = std::make_shared<ssl::context>(ssl::context::tls_client);
  boost::system::error_code ec;
  tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                       ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1,
                   ec);
  if (ec) return gateway::Error{"[proxy] next_hop_tls: " + ec.message()};
  if (settings.next_hop_tls != HopTls::verify) {
    tls->set_verify_mode(ssl::verify_none);
    return tls;
  }
  tls->set_verify_mode(ssl::verify_peer);
  if (settings.next_hop_tls_ca.empty()) {
    tls->set_default_verify_paths(ec);
  } else {
    tls->load_verify_file(settings.next_hop_tls_ca.string(), ec);
  }
  if (ec) return gateway::Error{"[proxy] next_hop_tls_ca " + settings.next_hop_tls_ca.string() + ": " + ec.message()};
  return tls;
}

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

}  // namespace

std::optional<Endpoint> parse_endpoint(std::string_view text) {
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  std::string_view host = text.substr(0, colon);
  const std::string_view port = text.substr(colon + 1);
  const bool v6 = host.starts_with('[') && host.ends_with(']');
  if (v6) host = host.substr(1, host.size() - 2);
  unsigned char address[16];
  const std::string h(host);
  if (::inet_pton(v6 ? AF_INET6 : AF_INET, h.c_str(), address) != 1) return std::nullopt;
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535) return std::nullopt;
  return Endpoint{h, static_cast<std::uint16_t>(value)};
}

gateway::Result<Settings> load_settings(const std::filesystem::path& path) {
  auto document = conf::parse_file(path);
  if (!document) return gateway::Error{document.error().message};
  Settings settings;
  static constexpr std::string_view group_last[] = {"group"};
  if (auto problem = conf::read_section<Settings>(*document, "proxy", keys(), settings, path, group_last)) {
    return gateway::Error{std::move(problem->message)};
  }
  if (settings.hostname.empty()) settings.hostname = host_name();
  auto tls = server_tls(settings);
  if (!tls) return std::move(tls).error();
  settings.tls = std::move(*tls);
  auto hop_tls = client_tls(settings);
  if (!hop_tls) return std::move(hop_tls).error();
  settings.next_hop_tls_context = std::move(*hop_tls);
  if (settings.next_hop_tls_name.empty()) settings.next_hop_tls_name = settings.next_hop.host;
  return settings;
}

}  // namespace mailkms::proxy
