#include "mailkms/gateway/reinjection.hpp"
#include "mailkms/errno_text.hpp"

#include "mailkms/smime/certificate.hpp"
#include "mailkms/smime/ossl.hpp"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>

extern char** environ;

namespace mailkms::gateway {
namespace {

constexpr std::time_t mark_lifetime = std::time_t{2} * 24 * 3600;  // a copy may wait in the MTA's queue this long

std::string hex(const unsigned char* data, std::size_t size) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < size; ++i) {
    out += digits[data[i] >> 4];
    out += digits[data[i] & 15];
  }
  return out;
}

std::string field(std::string_view value, std::string_view name) {
  // "v=1; t=123; m=abc" → the value of `name`
  std::size_t at = 0;
  while (at < value.size()) {
    const std::size_t end = std::min(value.find(';', at), value.size());
    std::string_view part = value.substr(at, end - at);
    while (!part.empty() && (part.front() == ' ' || part.front() == '\t')) part.remove_prefix(1);
    while (!part.empty() && (part.back() == ' ' || part.back() == '\t' || part.back() == '\r' || part.back() == '\n')) {
      part.remove_suffix(1);
    }
    if (part.size() > name.size() && part.substr(0, name.size()) == name && part[name.size()] == '=') {
      return std::string(part.substr(name.size() + 1));
    }
    at = end + 1;
  }
  return {};
}

}  // namespace

Result<ReinjectionMark> ReinjectionMark::create(const std::filesystem::path& key_file) {
  ReinjectionMark mark;
  if (key_file.empty()) {
    if (RAND_bytes(mark.key_.data(), static_cast<int>(mark.key_.size())) != 1) return Error{"no randomness for the re-injection key"};
    return mark;
  }
  struct stat st {};
  if (::stat(key_file.c_str(), &st) != 0) return Error{"reinject_key_file " + key_file.string() + ": " + mailkms::errno_text(errno)};
  if ((st.st_mode & 077) != 0) return Error{"reinject_key_file " + key_file.string() + " must not be readable by group or others (chmod 600)"};
  std::ifstream in(key_file, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() < 32) return Error{"reinject_key_file " + key_file.string() + " must hold at least 32 random bytes"};
  // Any length in, a 32-byte key out.
  unsigned int length = 0;
  EVP_Digest(bytes.data(), bytes.size(), mark.key_.data(), &length, EVP_sha256(), nullptr);
  OPENSSL_cleanse(bytes.data(), bytes.size());
  return mark;
}

std::string ReinjectionMark::mac(std::string_view timestamp, std::string_view sender,
                                 std::span<const std::string> recipients, const smime::Spool& message,
                                 std::size_t body_offset) const {
  std::vector<std::string> sorted(recipients.begin(), recipients.end());
  for (auto& r : sorted) r = smime::normalize_address(r);
  std::sort(sorted.begin(), sorted.end());

  const smime::ossl::MdCtx body(EVP_MD_CTX_new());
  EVP_DigestInit_ex(body.get(), EVP_sha256(), nullptr);
  if (body_offset <= message.size()) {
    (void)message.for_each_chunk(body_offset, message.size() - body_offset, [&](std::string_view chunk) -> smime::Status {
      EVP_DigestUpdate(body.get(), chunk.data(), chunk.size());
      return smime::Ok{};
    });
  }
  unsigned char body_hash[EVP_MAX_MD_SIZE];
  unsigned int body_length = 0;
  EVP_DigestFinal_ex(body.get(), body_hash, &body_length);

  std::string input = "mailkms-reinjected-v1\n";
  input.append(timestamp).append("\n").append(smime::normalize_address(sender)).append("\n");
  for (const auto& r : sorted) input.append(r).append(",");
  input.append("\n").append(hex(body_hash, body_length));
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int out_length = 0;
  HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()), reinterpret_cast<const unsigned char*>(input.data()),
       input.size(), out, &out_length);
  return hex(out, out_length);
}

std::string ReinjectionMark::make(std::string_view sender, std::span<const std::string> recipients,
                                  const smime::Spool& message, std::size_t body_offset) const {
  const std::string timestamp = std::to_string(std::time(nullptr));
  return "v=1; t=" + timestamp + "; m=" + mac(timestamp, sender, recipients, message, body_offset);
}

bool ReinjectionMark::check(std::string_view value, std::string_view sender, std::span<const std::string> recipients,
                            const smime::Spool& message, std::size_t body_offset) const {
  if (field(value, "v") != "1") return false;
  const std::string timestamp = field(value, "t");
  const std::string given = field(value, "m");
  if (timestamp.empty() || timestamp.size() > 12 ||
      !std::all_of(timestamp.begin(), timestamp.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return false;
  }
  const std::time_t made = std::stoll(timestamp);
  const std::time_t now = std::time(nullptr);
  if (made > now + 300 || now - made > mark_lifetime) return false;
  const std::string expected = mac(timestamp, sender, recipients, message, body_offset);
  return given.size() == expected.size() && CRYPTO_memcmp(given.data(), expected.data(), given.size()) == 0;
}

Result<Ok> reinject(const std::vector<std::string>& command, std::string_view sender,
                    std::span<const std::string> recipients, const smime::Spool& message) {
  if (command.empty()) return Error{"no reinject_command"};
  std::vector<std::string> args = command;
  args.push_back("-f");
  args.push_back(sender.empty() ? std::string("<>") : std::string(sender));
  args.push_back("--");
  args.insert(args.end(), recipients.begin(), recipients.end());
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return Error{std::string("pipe: ") + mailkms::errno_text(errno)};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[0], STDIN_FILENO);
  pid_t pid = 0;
  const int spawned = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[0]);
  if (spawned != 0) {
    ::close(pipe_fds[1]);
    return Error{command.front() + ": " + mailkms::errno_text(spawned)};
  }
  // The message, with LF line ends as a local sendmail expects. Only the CR
  // of a CRLF goes: a lone CR is content (and may be under a signature).
  const auto write_all = [&](std::string_view bytes) -> smime::Status {
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(pipe_fds[1], bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return smime::make_error(smime::Errc::io_error, mailkms::errno_text(errno));
      done += static_cast<std::size_t>(n);
    }
    return smime::Ok{};
  };
  bool held_cr = false;  // a chunk's last CR, written once we know what follows
  auto written = message.for_each_chunk(0, message.size(), [&](std::string_view chunk) -> smime::Status {
    std::string lf;
    lf.reserve(chunk.size() + 1);
    for (const char c : chunk) {
      if (held_cr && c != '\n') lf += '\r';
      held_cr = c == '\r';
      if (!held_cr) lf += c;
    }
    return write_all(lf);
  });
  if (written && held_cr) written = write_all("\r");
  ::close(pipe_fds[1]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!written) return Error{command.front() + ": writing the message: " + written.error().message};
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Error{command.front() + " failed (exit status " + std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) + ")"};
  }
  return Ok{};
}

}  // namespace mailkms::gateway
