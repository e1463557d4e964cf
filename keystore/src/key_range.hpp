// Key ranges shared by the storage backends.
#pragma once

#include <optional>
#include <string>

namespace mailkms::keystore {

// The smallest key greater than every key that starts with `prefix`, or
// nullopt when there is none (a prefix of 0xff bytes, or none at all).
inline std::optional<std::string> prefix_end(std::string prefix) {
  while (!prefix.empty()) {
    auto& last = reinterpret_cast<unsigned char&>(prefix.back());
    if (last != 0xff) {
      ++last;
      return prefix;
    }
    prefix.pop_back();
  }
  return std::nullopt;
}

}  // namespace mailkms::keystore
