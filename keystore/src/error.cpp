#include "mailkms/keystore/error.hpp"

namespace mailkms::keystore {

std::string_view to_string(Errc code) noexcept {
  switch (code) {
    case Errc::sealed: return "sealed";
    case Errc::not_found: return "not_found";
    case Errc::already_exists: return "already_exists";
    case Errc::wrong_secret: return "wrong_secret";
    case Errc::corrupt: return "corrupt";
    case Errc::storage_failed: return "storage_failed";
    case Errc::invalid_argument: return "invalid_argument";
    case Errc::permission_denied: return "permission_denied";
    case Errc::crypto_failed: return "crypto_failed";
    case Errc::unavailable: return "unavailable";
    case Errc::internal: return "internal";
  }
  return "internal";
}

std::string Error::describe() const { return std::string(to_string(code)) + ": " + message; }

}  // namespace mailkms::keystore
