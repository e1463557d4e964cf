// Case-insensitive comparison of ASCII text: addresses, domains, header
// names and subject tags. Never locale-dependent, so a server's LANG cannot
// change a policy decision.
#pragma once

#include <algorithm>
#include <string>
#include <string_view>

namespace mailkms::policy {

constexpr char ascii_lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

inline std::string ascii_lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](char c) { return ascii_lower(c); });
  return out;
}

inline bool iequals(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return ascii_lower(x) == ascii_lower(y); });
}

// Where `needle` first occurs in `haystack`, ignoring case; npos if nowhere.
inline std::size_t ifind(std::string_view haystack, std::string_view needle) noexcept {
  const auto it = std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end(),
                              [](char x, char y) { return ascii_lower(x) == ascii_lower(y); });
  return it == haystack.end() && !needle.empty() ? std::string_view::npos
                                                 : static_cast<std::size_t>(it - haystack.begin());
}

inline bool icontains(std::string_view haystack, std::string_view needle) noexcept {
  return ifind(haystack, needle) != std::string_view::npos;
}

// An address as found in an envelope or header: without surrounding space
// and angle brackets.
inline std::string_view bare_address(std::string_view address) noexcept {
  const auto space = [](char c) { return c == ' ' || c == '\t'; };
  while (!address.empty() && space(address.front())) address.remove_prefix(1);
  while (!address.empty() && space(address.back())) address.remove_suffix(1);
  if (address.size() >= 2 && address.front() == '<' && address.back() == '>') {
    address = address.substr(1, address.size() - 2);
  }
  return address;
}

}  // namespace mailkms::policy
