// Copies of a message that the gateway hands back to the MTA for the
// recipients who could not share the original transaction, and the mark
// that lets the gateway recognize them when they come round again: a MAC
// keyed with a site secret over the sender, the recipients and the body,
// so a header copied onto another message, or written by anyone else, is
// not honoured.
#pragma once

#include <array>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "mailkms/gateway/settings.hpp"
#include "mailkms/smime/spool.hpp"

namespace mailkms::gateway {

inline constexpr std::string_view reinjection_header = "X-Mailkms-Reinjected";

class ReinjectionMark {
 public:
  // The key from `key_file` (mode 0600, at least 32 bytes), else random.
  static Result<ReinjectionMark> create(const std::filesystem::path& key_file);

  // The header value for a message from `sender` to `recipients` whose
  // body (after the header section) is `body`.
  [[nodiscard]] std::string make(std::string_view sender, std::span<const std::string> recipients,
                                 const smime::Spool& message, std::size_t body_offset) const;
  // Whether `value` is a mark this site made for exactly that envelope and body.
  [[nodiscard]] bool check(std::string_view value, std::string_view sender, std::span<const std::string> recipients,
                           const smime::Spool& message, std::size_t body_offset) const;

 private:
  [[nodiscard]] std::string mac(std::string_view timestamp, std::string_view sender,
                                std::span<const std::string> recipients, const smime::Spool& message,
                                std::size_t body_offset) const;
  std::array<unsigned char, 32> key_{};
};

// Runs the configured sendmail-compatible command for one copy. Fails with
// a message when the command cannot run or exits non-zero.
Result<Ok> reinject(const std::vector<std::string>& command, std::string_view sender,
                          std::span<const std::string> recipients, const smime::Spool& message);

}  // namespace mailkms::gateway
