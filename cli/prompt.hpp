// Asking a person for a secret: on the terminal, without echo, never from
// the command line (where ps and shell history would keep it).
#pragma once

#include <string>

#include "io.hpp"

namespace mailkms::cli {

// `file`'s first line if given, else asked on /dev/tty (twice when
// `confirm`). Fails with a usage error when there is no terminal.
Secret secret_from(const std::string& file, const std::string& question, bool confirm = false);

}  // namespace mailkms::cli
