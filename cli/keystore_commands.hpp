// mailkmsctl's keystore commands: init (offline), then everything else
// through mailkms-keystored's socket with an administrator's session.
#pragma once

#include <vector>

#include "message_commands.hpp"

namespace mailkms::cli {

std::vector<Command> add_keystore_commands(CLI::App& app);

}  // namespace mailkms::cli
