// mailkms-milter's own settings, from the [milter] table of mailkms.conf:
// where it listens and as whom it runs. What it does to mail is the
// gateway's ([gateway]) and the policy file's.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>

#include "mailkms/gateway/settings.hpp"

namespace mailkms::milter {

struct Settings {
  // OpenDKIM's forms: unix:/path, local:/path, inet:PORT@HOST, inet6:PORT@HOST.
  std::string socket = "unix:/run/mailkms-milter/milter.sock";
  mode_t socket_mode = 0660;                 // for unix sockets
  std::optional<uid_t> user;                 // drop to this user after opening the socket
  std::optional<gid_t> group;                // and this group (the MTA's, for a unix socket)
  std::filesystem::path pid_file;            // none if empty
  std::filesystem::path log_file;            // none if empty: stderr in the foreground, else syslog
  int timeout_seconds = 300;                 // silence from the MTA before giving up a connection
  int backlog = 64;
  std::string metrics_listen;                // "127.0.0.1:9470": serve Prometheus metrics; none if empty
};

gateway::Result<Settings> load_settings(const std::filesystem::path& path);

}  // namespace mailkms::milter
