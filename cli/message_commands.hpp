// `mailkmsctl message …`: the S/MIME engine on files, for administrators.
#pragma once

#include <functional>
#include <vector>

namespace CLI {
class App;
}

namespace mailkms::cli {

// A leaf command: when `app` was selected on the command line, main() calls
// `run`, which returns the exit code or throws Failure.
struct Command {
  CLI::App* app;
  std::function<int()> run;
};

// Adds the `message` group to `parent`; its options live in the returned
// commands' closures, so nothing is global.
std::vector<Command> add_message_commands(CLI::App& parent);

}  // namespace mailkms::cli
