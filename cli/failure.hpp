// How a mailkmsctl command fails: a message for stderr and an exit code.
// Commands throw Failure so that they read top to bottom like the steps an
// administrator would take; main() is the only place that catches it.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "mailkms/smime/result.hpp"

namespace mailkms::cli {

// Scripts must be able to tell "the message is bad" (1) from "the command
// line, or a file it names, is wrong" (2): `message verify` relies on it.
inline constexpr int exit_failure = 1;
inline constexpr int exit_usage = 2;

class Failure : public std::runtime_error {
 public:
  Failure(int exit_code, const std::string& message) : std::runtime_error(message), exit_code_(exit_code) {}
  [[nodiscard]] int exit_code() const noexcept { return exit_code_; }

 private:
  int exit_code_;
};

// The value, or a Failure that says what we were working on and why it failed.
template <class T>
T or_fail(smime::Result<T> result, std::string_view context, int exit_code = exit_failure) {
  if (!result) throw Failure(exit_code, std::string(context) + ": " + result.error().describe());
  return std::move(result).value();
}

}  // namespace mailkms::cli
