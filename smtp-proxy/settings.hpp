// mailkms-proxy's own settings, from the [proxy] table of mailkms.conf:
// where it listens, where it relays, its limits and as whom it runs. What
// it does to mail is the gateway's ([gateway]) and the policy file's.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/ssl/context.hpp>

#include "mailkms/gateway/settings.hpp"
#include "mailkms/policy/policy.hpp"

namespace mailkms::proxy {

struct Endpoint {
  std::string host;  // an IP address; IPv6 written in [] in the file
  std::uint16_t port = 0;
};

// STARTTLS to the next hop (RFC 3207), as Postfix's smtp_tls_security_level:
// none: never; may: when offered, certificate unchecked, in the clear when
// not offered; encrypt: TLS or no relay, certificate unchecked; verify: TLS
// with a certificate for next_hop_tls_name that next_hop_tls_ca vouches for.
enum class HopTls { none, may, encrypt, verify };

struct Settings {
  Endpoint listen{"127.0.0.1", 10025};
  Endpoint next_hop{"127.0.0.1", 10026};
  std::string hostname;  // in the greeting and EHLO; default: this host's name
  unsigned threads = 0;  // 0: one per core
  unsigned max_sessions = 100;
  unsigned max_sessions_per_client = 50;  // for clients outside the policy's [local] networks
  std::chrono::seconds command_timeout{300};  // RFC 5321 4.5.3.2.7
  std::chrono::seconds data_timeout{180};     // per read inside DATA, 4.5.3.2.5
  std::chrono::seconds next_hop_timeout{120};  // connecting, and each reply of the next hop
  // How long a connection whose message the next hop took is kept for the
  // next message; 0: a connection per message.
  std::chrono::seconds next_hop_idle{5};
  std::chrono::seconds shutdown_timeout{60};   // after SIGTERM, for messages in flight to finish
  // MTAs whose XFORWARD (the client they served) the proxy believes; none by default.
  std::vector<policy::Locality::Network> xforward_peers;
  // Proxies in front whose XCLIENT (the client they serve, its SMTP AUTH
  // login) the proxy believes for the rest of the session; none by default.
  std::vector<policy::Locality::Network> xclient_peers;
  // STARTTLS for clients (RFC 3207): the certificate chain and its key, PEM.
  std::filesystem::path tls_certificate;
  std::filesystem::path tls_key;
  // Made from them by load_settings; none: STARTTLS is not offered.
  std::shared_ptr<boost::asio::ssl::context> tls;
  HopTls next_hop_tls = HopTls::may;
  std::filesystem::path next_hop_tls_ca;  // PEM trust anchors for verify; none: the system's
  std::string next_hop_tls_name;          // the name verify expects; none: next_hop's address
  // Made from them by load_settings; none with next_hop_tls "none".
  std::shared_ptr<boost::asio::ssl::context> next_hop_tls_context;
  std::optional<uid_t> user;
  std::optional<gid_t> group;
  std::filesystem::path pid_file;
  std::filesystem::path log_file;
  std::string metrics_listen;  // "127.0.0.1:9471": serve Prometheus metrics; none if empty
};

gateway::Result<Settings> load_settings(const std::filesystem::path& path);
// "host:port" or "[v6]:port", or nothing.
std::optional<Endpoint> parse_endpoint(std::string_view text);

}  // namespace mailkms::proxy
