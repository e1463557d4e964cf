// The keystore's settings, from the [keystore] table of mailkms.conf: read
// by mailkms-keystored, and by mailkmsctl to find the socket and database.
// Every key is declared once, with its default and its check; an unknown
// key is an error that names it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "mailkms/keystore/ca.hpp"
#include "mailkms/keystore/client.hpp"
#include "mailkms/keystore/database.hpp"
#include "mailkms/keystore/enrollment.hpp"
#include "mailkms/keystore/error.hpp"

namespace mailkms::keystore {

struct Config {
  DatabaseLocation database = DatabaseLocation::sqlite("/var/lib/mailkms/keystore.db");
  // The daemon's own runtime directory: no other unit may own or write it.
  std::filesystem::path socket = "/run/mailkms-keystore/keystore.sock";
  mode_t socket_mode = 0660;  // never anything for others: refused
  // The user mailkms-keystored runs as (name or uid). Clients talk only to
  // a socket served by this user or by root, and the daemon refuses to
  // start as anyone else.
  std::string user = "mailkms-keystore";
  std::vector<uid_t> gateway_uids;    // gateway_users: names or numbers
  std::vector<gid_t> gateway_gids;    // gateway_groups: names or numbers
  unsigned gateway_rate_limit = 1000;  // signatures and unwraps a second per gateway uid; 0: none
  std::filesystem::path unseal_key_file;  // unseal at start with this key file, if set
  // Signed audit checkpoints are appended here (default: audit-checkpoints
  // beside an SQLite database, /var/lib/mailkms/audit-checkpoints beside a
  // PostgreSQL one), one whenever the log grew, at most this often.
  std::filesystem::path audit_checkpoint_file;
  std::chrono::seconds audit_checkpoint_interval{60};
  std::chrono::seconds idle_timeout{300};  // close a connection silent this long
  int workers = 2;                         // threads serving connections and requests
  bool lock_memory = true;                 // mlockall, so keys never reach swap
  // Users' keys and certificates: the administrators choose the algorithms.
  KeyType encryption_key_type = KeyType::rsa2048;  // RSA: every deployed client encrypts to it
  KeyType signing_key_type = KeyType::rsa2048;
  int certificate_days = 365;
  int renewal_window_days = 30;  // renew users' certificates this long before they end
  // Domains the keystore serves besides its users' (lower case): no
  // certificate for an address in them, or below them, is harvested.
  std::vector<std::string> local_domains;
  // Enrollment and recovery by mail: mail_command, mail_from,
  // enrollment_address, templates, token_lifetime_hours, pkcs12_profile.
  EnrollmentSettings enrollment;

  // Front ends and administrators on other hosts (off by default): TLS 1.3
  // on these addresses ("127.0.0.1:7443", "[::1]:7443"), with this
  // instance's certificate (role keystore) and key; peers must present a
  // certificate from the service CA (`mailkmsctl gateway add`).
  std::vector<std::pair<std::string, std::string>> tls_listen;  // IP, port
  // Prometheus metrics over HTTP on this address ("127.0.0.1:9470"); empty: off.
  std::string metrics_listen;
  std::filesystem::path tls_certificate;
  std::filesystem::path tls_key;
  // The service CA's certificate: whom keystored admits, and what clients
  // pin the keystore's own certificate to.
  std::filesystem::path service_ca;
  // Where clients (gateways, mailkmsctl) reach the keystore; empty: the
  // socket. With a tls:// endpoint, this host's certificate and key.
  std::vector<Endpoint> endpoints;
  std::filesystem::path client_certificate;
  std::filesystem::path client_key;

  // What a client on this host connects with.
  [[nodiscard]] ClientOptions client_options(std::chrono::milliseconds timeout, std::size_t pool) const;
};

Result<Config> load_config(const std::filesystem::path& path);

}  // namespace mailkms::keystore
