// The gateway's settings, from the [gateway] table of mailkms.conf, shared
// by mailkms-milter and mailkms-proxy. Every key is declared once with its
// default and its check; an unknown key is an error that names it.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "mailkms/basic_result.hpp"
#include "mailkms/keystore/client.hpp"

namespace mailkms::gateway {

struct Error {
  std::string message;  // for the log and the command line: what failed and why
};
template <class T>
using Result = BasicResult<T, Error>;

// What to do with a message when something goes wrong (OpenDKIM's On-*).
enum class FailureAction { accept, reject, tempfail, quarantine };
std::string_view to_string(FailureAction action) noexcept;

// How recipients that need different treatment are kept apart.
enum class MixedRecipients {
  defer,     // 452 4.5.3 at RCPT: the client sends them in another transaction
  reinject,  // at end of message: removed here, their own copy re-injected
};

struct Settings {
  std::filesystem::path policy = "/etc/mailkms/policy.toml";
  std::filesystem::path keystore_socket = "/run/mailkms-keystore/keystore.sock";  // [keystore] socket
  std::string keystore_user = "mailkms-keystore";  // [keystore] user: who must serve that socket
  // [keystore] endpoints, client_certificate, client_key, service_ca: the
  // keystore on other hosts, over TLS. Empty: the socket.
  std::vector<keystore::Endpoint> keystore_endpoints;
  keystore::ClientTls keystore_tls;
  std::string authserv_id;  // Authentication-Results; default: this host's name
  std::chrono::seconds certificate_ttl{300};          // found certificates cached this long
  std::chrono::seconds missing_certificate_ttl{60};   // "no certificate" cached this long
  std::chrono::milliseconds keystore_timeout{5000};
  MixedRecipients mixed_recipients = MixedRecipients::defer;
  // A sendmail-compatible command; the sender and recipients are appended
  // as `-f SENDER -- RCPT…` and the message is written to its input.
  std::vector<std::string> reinject_command{"/usr/sbin/sendmail", "-G", "-i"};
  // 32 or more random bytes shared by every gateway of one site, mode 0600;
  // without it each process makes its own key.
  std::filesystem::path reinject_key_file;
  std::string enrollment_address;  // mail to it goes to the keystore, never to a mailbox
  FailureAction on_keystore_unavailable = FailureAction::tempfail;
  FailureAction on_internal_error = FailureAction::tempfail;
  FailureAction on_bad_signature = FailureAction::accept;  // inbound: marked smime=fail
  FailureAction on_malformed = FailureAction::accept;      // inbound: marked, delivered as it came
  std::size_t spool_memory_limit = 1 << 20;
  std::filesystem::path spool_directory = std::filesystem::temp_directory_path();
  std::size_t max_message_size = 100u << 20;  // larger messages are refused (5.3.4)
  // Inbound encrypted and signed-data mail is opened in memory (OpenSSL needs
  // its CMS whole), at several times its size; larger mail is delivered as it
  // came, marked. multipart/signed is verified from the spool at any size.
  // Outbound, larger mail labelled encrypted is not checked: it is encrypted again.
  std::size_t inbound_memory_limit = 32u << 20;

  // How this gateway reaches the keystore, `pool` connections kept.
  [[nodiscard]] keystore::ClientOptions keystore_client(std::size_t pool) const {
    keystore::ClientOptions options{keystore_socket, keystore_timeout, pool, keystore_user};
    options.endpoints = keystore_endpoints;
    options.tls = keystore_tls;
    return options;
  }
};

// Reads [gateway] (and the socket of [keystore]) from mailkms.conf.
Result<Settings> load_settings(const std::filesystem::path& path);

}  // namespace mailkms::gateway
