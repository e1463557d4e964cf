#include "keystored_process.hpp"

#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <sstream>
#include <thread>
#include <vector>

#include "mailkms/keystore/client.hpp"
#include "test_support.hpp"

namespace mailkms::test {

using namespace std::chrono_literals;

KeystoredProcess::KeystoredProcess(std::filesystem::path binary, std::filesystem::path config,
                                   std::filesystem::path socket, std::filesystem::path log)
    : binary_(std::move(binary)), config_(std::move(config)), socket_(std::move(socket)), log_(std::move(log)) {}

void KeystoredProcess::start() {
  pid_ = ::fork();
  REQUIRE(pid_ >= 0);
  if (pid_ == 0) {
    if (std::freopen(log_.c_str(), "a", stderr) == nullptr) ::_exit(126);
    ::execl(binary_.c_str(), binary_.c_str(), "--config", config_.c_str(), "--foreground", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  // Under a sanitizer, on a busy machine, a start can take seconds.
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!answers_status()) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      FAIL("mailkms-keystored exited before it answered status; the end of its log:\n" << log_tail());
    }
    if (std::chrono::steady_clock::now() > deadline) {
      FAIL("mailkms-keystored did not answer status on " << socket_ << " within 30 s; the end of its log:\n"
                                                         << log_tail());
    }
    std::this_thread::sleep_for(20ms);
  }
}

bool KeystoredProcess::answers_status() const {
  if (!std::filesystem::exists(socket_)) return false;
  keystore::KeystoreClient client({socket_, 2s, 1});
  return client.call("status", {}).has_value();
}

int KeystoredProcess::stop() {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void KeystoredProcess::signal(int number) const {
  if (pid_ > 0) ::kill(pid_, number);
}

std::string KeystoredProcess::log() const { return std::filesystem::exists(log_) ? read_file(log_) : std::string(); }

std::string KeystoredProcess::log_tail(std::size_t lines) const {
  std::vector<std::string> all;
  std::istringstream in(log());
  for (std::string line; std::getline(in, line);) all.push_back(std::move(line));
  std::string tail;
  for (std::size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) tail += "  " + all[i] + "\n";
  return tail;
}

}  // namespace mailkms::test
