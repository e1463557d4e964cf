#include "prompt.hpp"

#include <fcntl.h>
#include <termios.h>
#include <unistd.h>

#include "failure.hpp"

namespace mailkms::cli {
namespace {

Secret ask(int tty, const std::string& question) {
  (void)!::write(tty, question.data(), question.size());
  termios saved{};
  const bool terminal = ::tcgetattr(tty, &saved) == 0;
  if (terminal) {
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(tty, TCSAFLUSH, &quiet);
  }
  std::string answer;
  char c = 0;
  while (::read(tty, &c, 1) == 1 && c != '\n') answer.push_back(c);
  if (terminal) ::tcsetattr(tty, TCSAFLUSH, &saved);
  (void)!::write(tty, "\n", 1);
  return Secret(std::move(answer));
}

}  // namespace

Secret secret_from(const std::string& file, const std::string& question, bool confirm) {
  if (!file.empty()) return read_password_file(file);
  const int tty = ::open("/dev/tty", O_RDWR | O_CLOEXEC);
  if (tty < 0) throw Failure(exit_usage, "no terminal to ask for " + question + ": give it in a file");
  Secret first = ask(tty, question + ": ");
  if (confirm) {
    const Secret again = ask(tty, "again: ");
    if (again.view() != first.view()) {
      ::close(tty);
      throw Failure(exit_usage, "the two entries differ");
    }
  }
  ::close(tty);
  return first;
}

}  // namespace mailkms::cli
