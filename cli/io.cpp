#include "io.hpp"
#include "mailkms/errno_text.hpp"

#include <openssl/crypto.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "failure.hpp"

namespace mailkms::cli {
namespace {

struct FileCloser {
  // Files read, and a written one whose write already failed: a written
  // file is closed by hand, its fclose checked (see write_output).
  void operator()(std::FILE* file) const noexcept { (void)std::fclose(file); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

std::string system_error(const std::string& doing) { return doing + ": " + mailkms::errno_text(errno); }

void read_all(std::FILE* file, std::string& out, const std::string& name, int exit_code) {
  char buffer[1 << 16];
  std::size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof buffer, file)) > 0) out.append(buffer, n);
  if (std::ferror(file) != 0) throw Failure(exit_code, system_error("cannot read " + name));
}

std::string read_named_file(const std::string& path, int exit_code) {
  const File file(std::fopen(path.c_str(), "rb"));
  if (!file) throw Failure(exit_code, system_error("cannot open " + path));
  std::string out;
  // Reserving the size up front also keeps secrets from being copied
  // around by reallocations, where Secret could not wipe them.
  std::error_code ignored;
  if (const auto size = std::filesystem::file_size(path, ignored); !ignored) out.reserve(size);
  read_all(file.get(), out, path, exit_code);
  return out;
}

bool is_stdio(const std::string& path) { return path.empty() || path == "-"; }

}  // namespace

Secret::~Secret() { OPENSSL_cleanse(text_.data(), text_.size()); }

std::string read_file(const std::string& path) { return read_named_file(path, exit_usage); }

Secret read_secret_file(const std::string& path) { return Secret(read_named_file(path, exit_usage)); }

Secret read_password_file(const std::string& path) {
  const Secret all = read_secret_file(path);
  std::string_view line = all.view().substr(0, all.view().find('\n'));
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return Secret(std::string(line));
}

std::string read_input(const std::string& path) {
  if (!is_stdio(path)) return read_named_file(path, exit_usage);
  std::string out;
  read_all(stdin, out, "stdin", exit_failure);
  return out;
}

void write_output(const std::string& path, std::string_view data) {
  if (is_stdio(path)) {
    if (std::fwrite(data.data(), 1, data.size(), stdout) != data.size() || std::fflush(stdout) != 0) {
      throw Failure(exit_failure, system_error("cannot write to stdout"));
    }
    return;
  }
  File file(std::fopen(path.c_str(), "wb"));
  if (!file) throw Failure(exit_failure, system_error("cannot create " + path));
  const bool written = std::fwrite(data.data(), 1, data.size(), file.get()) == data.size();
  // fclose flushes: its failure is a failed write too (a full disk shows here).
  if (!written || std::fclose(file.release()) != 0) throw Failure(exit_failure, system_error("cannot write " + path));
}

}  // namespace mailkms::cli
