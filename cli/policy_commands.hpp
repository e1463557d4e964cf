// `mailkmsctl policy …`: check a policy.toml before the gateway loads it,
// and explain what it decides for a message, with the rule and the reason.
#pragma once

#include <vector>

#include "message_commands.hpp"

namespace mailkms::cli {

std::vector<Command> add_policy_commands(CLI::App& parent);

}  // namespace mailkms::cli
