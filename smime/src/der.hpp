// A minimal DER reader and writer for the few CMS fields OpenSSL 3.0 offers
// no getter for (encryptedKey, GCM parameters, the signed-attribute SET).
// The reader accepts definite lengths only: callers first let OpenSSL
// re-encode BER input as DER. Every read is bounds-checked.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mailkms::smime::der {

namespace tag {
inline constexpr std::uint8_t integer = 0x02;
inline constexpr std::uint8_t bit_string = 0x03;
inline constexpr std::uint8_t octet_string = 0x04;
inline constexpr std::uint8_t null = 0x05;
inline constexpr std::uint8_t oid = 0x06;
inline constexpr std::uint8_t sequence = 0x30;
inline constexpr std::uint8_t set = 0x31;
inline constexpr std::uint8_t context(unsigned n, bool constructed) {
  return static_cast<std::uint8_t>(0x80 | (constructed ? 0x20 : 0) | n);
}
}  // namespace tag

struct Element {
  std::uint8_t tag = 0;
  std::string_view value;  // contents octets
  std::string_view whole;  // tag, length and contents
};

class Reader {
 public:
  explicit Reader(std::string_view data) : rest_(data) {}

  [[nodiscard]] bool empty() const { return rest_.empty(); }
  [[nodiscard]] std::optional<std::uint8_t> peek_tag() const;
  // The next element, or nullopt if the input is malformed.
  std::optional<Element> next();
  // The next element if it has tag `t`, else nullopt and nothing consumed.
  std::optional<Element> next_if(std::uint8_t t);
  // The next element, which must have tag `t`.
  std::optional<Element> expect(std::uint8_t t);

 private:
  std::string_view rest_;
};

// Encodes a tag-length-value.
std::string encode(std::uint8_t tag, std::string_view contents);

}  // namespace mailkms::smime::der
