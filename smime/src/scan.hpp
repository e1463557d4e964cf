// What a body needs before it can be signed, found in one pass over its
// chunks: bare LF line ends (to become CRLF) and content no transport may carry
// unchanged (8bit, NUL, lines over 998 octets). Runs on every message we
// sign, so it works a line at a time with memchr and eight octets at a time
// within a line.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

namespace mailkms::smime::detail {

class BodyScan {
 public:
  void feed(std::string_view chunk) {
    const char* p = chunk.data();
    const char* const end = p + chunk.size();
    if (p == end) return;
    if (!encode_) encode_ = has_8bit_or_nul(p, end);
    while (p < end) {
      const auto* nl = static_cast<const char*>(std::memchr(p, '\n', static_cast<std::size_t>(end - p)));
      const char* stop = nl != nullptr ? nl : end;
      const bool cr_last = stop > p && stop[-1] == '\r';
      if (nl != nullptr && !(stop > p ? cr_last : previous_cr_)) bare_ = true;
      const char* content_end = cr_last ? stop - 1 : stop;
      line_ += static_cast<std::size_t>(content_end - p);
      if (line_ > kMaxLine) encode_ = true;
      if (nl != nullptr) {
        line_ = 0;
        previous_cr_ = false;
        p = nl + 1;
      } else {
        previous_cr_ = cr_last;
        p = end;
      }
    }
  }

  [[nodiscard]] bool bare_line_feeds() const { return bare_; }
  [[nodiscard]] bool needs_encoding() const { return encode_; }

 private:
  static constexpr std::size_t kMaxLine = 998;  // RFC 5322 §2.1.1, without CRLF

  static bool has_8bit_or_nul(const char* p, const char* end) {
    for (; p + 8 <= end; p += 8) {
      std::uint64_t w;
      std::memcpy(&w, p, 8);
      if ((w & 0x8080808080808080ULL) != 0 || ((w - 0x0101010101010101ULL) & ~w & 0x8080808080808080ULL) != 0) {
        return true;
      }
    }
    for (; p < end; ++p) {
      const auto c = static_cast<unsigned char>(*p);
      if (c >= 0x80 || c == 0) return true;
    }
    return false;
  }

  bool previous_cr_ = false;
  std::size_t line_ = 0;
  bool bare_ = false;
  bool encode_ = false;
};

}  // namespace mailkms::smime::detail
