// mailkmsctl: the administrator's command line for mailkms.
#include <CLI/CLI.hpp>

#include <exception>
#include <iostream>

#include "failure.hpp"
#include "keystore_commands.hpp"
#include "message_commands.hpp"
#include "policy_commands.hpp"

namespace {

int run(int argc, char** argv) {
  using namespace mailkms::cli;

  CLI::App app{"mailkms administration", "mailkmsctl"};
  app.set_version_flag("--version", "mailkmsctl " MAILKMS_VERSION);
  app.require_subcommand(1);
  std::vector<Command> commands = add_message_commands(app);
  for (auto& c : add_keystore_commands(app)) commands.push_back(std::move(c));
  for (auto& c : add_policy_commands(app)) commands.push_back(std::move(c));

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --version
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "mailkmsctl: " << e.what() << "\nRun with --help for more information.\n";
    return exit_usage;
  }

  try {
    for (const Command& command : commands) {
      if (command.app->parsed()) return command.run();
    }
    std::cerr << "mailkmsctl: no command given\n";  // require_subcommand should make this unreachable
    return exit_usage;
  } catch (const Failure& failure) {
    std::cerr << "mailkmsctl: " << failure.what() << "\n";
    return failure.exit_code();
  } catch (const std::exception& e) {
    std::cerr << "mailkmsctl: internal error: " << e.what() << "\n";
    return exit_failure;
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {  // setting the commands up failed
    std::cerr << "mailkmsctl: internal error: " << e.what() << "\n";
  } catch (...) {
    std::cerr << "mailkmsctl: internal error\n";
  }
  return mailkms::cli::exit_failure;
}
