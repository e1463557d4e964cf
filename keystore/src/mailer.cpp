#include "mailkms/keystore/mailer.hpp"
#include "mailkms/errno_text.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <thread>

extern char** environ;

namespace mailkms::keystore {
namespace {

Error failed(const std::string& what) { return make_error(Errc::unavailable, what); }

// Blocks SIGPIPE in this thread while it writes to the child, then drops
// any SIGPIPE that writing raised, so only EPIPE reports it.
class SigpipeHeld {
 public:
  SigpipeHeld() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_, &previous_);
  }
  ~SigpipeHeld() {
    if (!was_pending_) {
      const timespec now{0, 0};
      while (sigtimedwait(&pipe_, nullptr, &now) == SIGPIPE) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
  }
  SigpipeHeld(const SigpipeHeld&) = delete;
  SigpipeHeld& operator=(const SigpipeHeld&) = delete;

 private:
  sigset_t pipe_{};
  sigset_t previous_{};
  bool was_pending_ = false;
};

class SpawnSetup {
 public:
  explicit SpawnSetup(int stdin_fd) {
    posix_spawn_file_actions_init(&actions_);
    posix_spawn_file_actions_adddup2(&actions_, stdin_fd, STDIN_FILENO);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 34)
    // The database, the socket and clients' connections stay ours.
    posix_spawn_file_actions_addclosefrom_np(&actions_, STDERR_FILENO + 1);
#endif
    posix_spawnattr_init(&attributes_);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attributes_, &none);
    // The daemon ignores SIGPIPE, and an ignored signal stays ignored across exec.
    sigset_t defaults;
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    posix_spawnattr_setsigdefault(&attributes_, &defaults);
    posix_spawnattr_setflags(&attributes_, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  }
  ~SpawnSetup() {
    posix_spawn_file_actions_destroy(&actions_);
    posix_spawnattr_destroy(&attributes_);
  }
  SpawnSetup(const SpawnSetup&) = delete;
  SpawnSetup& operator=(const SpawnSetup&) = delete;

  const posix_spawn_file_actions_t* actions() const { return &actions_; }
  const posix_spawnattr_t* attributes() const { return &attributes_; }

 private:
  posix_spawn_file_actions_t actions_{};
  posix_spawnattr_t attributes_{};
};

int remaining_ms(std::chrono::steady_clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  return static_cast<int>(std::max<std::chrono::milliseconds::rep>(0, left.count()));
}

// The child's exit status, or nothing once the deadline passed (it is killed then).
std::optional<int> reap(pid_t pid, std::chrono::steady_clock::time_point deadline) {
  int status = 0;
  while (true) {
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) return status;
    if (done < 0 && errno != EINTR) return status;
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      return std::nullopt;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace

Status send_mail(const std::vector<std::string>& command, std::string_view sender, std::string_view recipient,
                 std::string_view message, std::chrono::milliseconds timeout) {
  if (command.empty() || !command.front().starts_with('/')) return failed("mail_command must start with an absolute path");
  std::vector<std::string> args = command;
  args.insert(args.end(), {"-f", std::string(sender), "--", std::string(recipient)});
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return failed(std::string("pipe: ") + mailkms::errno_text(errno));
  pid_t pid = 0;
  int spawned = 0;
  {
    const SpawnSetup setup(pipe_fds[0]);
    spawned = posix_spawn(&pid, argv[0], setup.actions(), setup.attributes(), argv.data(), environ);
  }
  ::close(pipe_fds[0]);
  if (spawned != 0) {
    ::close(pipe_fds[1]);
    return failed(command.front() + ": " + mailkms::errno_text(spawned));
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string write_error;
  {
    const SigpipeHeld held;
    ::fcntl(pipe_fds[1], F_SETFL, O_NONBLOCK);
    std::size_t done = 0;
    while (done < message.size()) {
      pollfd p{pipe_fds[1], POLLOUT, 0};
      const int ready = ::poll(&p, 1, remaining_ms(deadline));
      if (ready < 0 && errno == EINTR) continue;
      if (ready == 0) {
        write_error = "it did not read the message in time";
        break;
      }
      const ssize_t n = ::write(pipe_fds[1], message.data() + done, message.size() - done);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n < 0) {
        write_error = errno == EPIPE ? "it stopped reading the message" : std::string(mailkms::errno_text(errno));
        break;
      }
      done += static_cast<std::size_t>(n);
    }
    ::close(pipe_fds[1]);
  }
  const auto status = reap(pid, deadline);
  if (!status) return failed(command.front() + " did not finish in time and was killed");
  if (WIFSIGNALED(*status)) return failed(command.front() + " was killed by signal " + std::to_string(WTERMSIG(*status)));
  if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
    return failed(command.front() + " failed (exit status " + std::to_string(WEXITSTATUS(*status)) + ")");
  }
  if (!write_error.empty()) return failed(command.front() + ": " + write_error);
  return Ok{};
}

}  // namespace mailkms::keystore
