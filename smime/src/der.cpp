#include "der.hpp"

namespace mailkms::smime::der {

std::optional<std::uint8_t> Reader::peek_tag() const {
  if (rest_.empty()) return std::nullopt;
  return static_cast<std::uint8_t>(rest_[0]);
}

std::optional<Element> Reader::next() {
  if (rest_.size() < 2) return std::nullopt;
  const auto t = static_cast<std::uint8_t>(rest_[0]);
  if ((t & 0x1f) == 0x1f) return std::nullopt;  // high tag numbers never occur in CMS
  std::size_t pos = 1;
  std::size_t len = static_cast<std::uint8_t>(rest_[pos++]);
  if (len & 0x80) {
    const std::size_t n = len & 0x7f;
    if (n == 0 || n > sizeof(std::size_t) - 1 || rest_.size() < pos + n) return std::nullopt;  // indefinite or absurd
    len = 0;
    for (std::size_t i = 0; i < n; ++i) len = (len << 8) | static_cast<std::uint8_t>(rest_[pos++]);
  }
  if (rest_.size() - pos < len) return std::nullopt;
  Element e{t, rest_.substr(pos, len), rest_.substr(0, pos + len)};
  rest_.remove_prefix(pos + len);
  return e;
}

std::optional<Element> Reader::next_if(std::uint8_t t) {
  if (peek_tag() != t) return std::nullopt;
  return next();
}

std::optional<Element> Reader::expect(std::uint8_t t) {
  auto e = next();
  if (!e || e->tag != t) return std::nullopt;
  return e;
}

std::string encode(std::uint8_t t, std::string_view contents) {
  std::string out;
  out.reserve(contents.size() + 6);
  out.push_back(static_cast<char>(t));
  const std::size_t len = contents.size();
  if (len < 0x80) {
    out.push_back(static_cast<char>(len));
  } else {
    std::string octets;
    for (std::size_t v = len; v != 0; v >>= 8) octets.insert(octets.begin(), static_cast<char>(v & 0xff));
    out.push_back(static_cast<char>(0x80 | octets.size()));
    out += octets;
  }
  out.append(contents);
  return out;
}

}  // namespace mailkms::smime::der
