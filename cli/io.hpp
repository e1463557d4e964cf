// Files and standard streams for mailkmsctl. Every failure is a Failure
// that names the file; messages are bytes, never re-encoded.
#pragma once

#include <string>
#include <string_view>
#include <utility>

namespace mailkms::cli {

// Text that must not outlive its use: private keys, PKCS#12 files and
// passwords are wiped from memory when it is destroyed.
class Secret {
 public:
  Secret() = default;
  explicit Secret(std::string text) : text_(std::move(text)) {}
  Secret(Secret&&) noexcept = default;
  Secret& operator=(Secret&&) noexcept = default;
  Secret(const Secret&) = delete;
  Secret& operator=(const Secret&) = delete;
  ~Secret();

  [[nodiscard]] std::string_view view() const noexcept { return text_; }

 private:
  std::string text_;
};

// A file named on the command line; failing to read it is a usage error.
std::string read_file(const std::string& path);
Secret read_secret_file(const std::string& path);
// The first line of `path`, without its line ending: the convention of
// `openssl -passin file:`, so the same files work with both tools.
Secret read_password_file(const std::string& path);

// The message to work on: `path`, or stdin when it is empty or "-".
std::string read_input(const std::string& path);
// The result: `path`, or stdout when it is empty or "-".
void write_output(const std::string& path, std::string_view data);

}  // namespace mailkms::cli
