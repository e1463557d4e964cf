// mailkms-keystored as a child process for C++ tests: the one way they
// start it. It runs in the foreground with its stderr appended to a log;
// start() returns once the daemon answers `status` on its socket, and
// fails the test — naming the daemon and showing the end of its log — if
// it exits or does not answer within 30 s. Never a sleep in place of that
// answer.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>

namespace mailkms::test {

class KeystoredProcess {
 public:
  // `binary` from the build; `config` names `socket`, the socket it serves.
  KeystoredProcess(std::filesystem::path binary, std::filesystem::path config, std::filesystem::path socket,
                   std::filesystem::path log);
  ~KeystoredProcess() { stop(); }
  KeystoredProcess(const KeystoredProcess&) = delete;
  KeystoredProcess& operator=(const KeystoredProcess&) = delete;

  void start();
  // SIGTERM, then its exit status (-1 when it did not exit by itself, or
  // was not running).
  int stop();
  void signal(int number) const;
  [[nodiscard]] std::string log() const;
  // The last lines of its log, for a failure's message.
  [[nodiscard]] std::string log_tail(std::size_t lines = 20) const;

 private:
  [[nodiscard]] bool answers_status() const;

  std::filesystem::path binary_, config_, socket_, log_;
  pid_t pid_ = -1;
};

}  // namespace mailkms::test
