// Hands a message to the local MTA through a sendmail-compatible command,
// so the keystore can mail users their tokens and keys itself. The child
// gets only stdin, stdout and stderr, default signal handling, and a
// deadline; SIGPIPE is held off in the writing thread, so a command that
// stops reading is an error, never the end of the process.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "mailkms/keystore/error.hpp"

namespace mailkms::keystore {

// Runs `command` (absolute path first) with "-f <sender> -- <recipient>"
// appended and `message` (LF line ends) on its stdin. Errc::unavailable
// when it cannot be started, fails, or outlasts `timeout`.
Status send_mail(const std::vector<std::string>& command, std::string_view sender, std::string_view recipient,
                 std::string_view message, std::chrono::milliseconds timeout = std::chrono::seconds(60));

}  // namespace mailkms::keystore
