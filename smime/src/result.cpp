#include "mailkms/smime/result.hpp"

namespace mailkms::smime {

std::string_view to_string(Errc code) noexcept {
  switch (code) {
    case Errc::malformed_mime: return "malformed_mime";
    case Errc::malformed_cms: return "malformed_cms";
    case Errc::invalid_base64: return "invalid_base64";
    case Errc::limit_exceeded: return "limit_exceeded";
    case Errc::unsupported_algorithm: return "unsupported_algorithm";
    case Errc::legacy_cipher_disabled: return "legacy_cipher_disabled";
    case Errc::no_matching_recipient: return "no_matching_recipient";
    case Errc::decryption_failed: return "decryption_failed";
    case Errc::key_operation_failed: return "key_operation_failed";
    case Errc::invalid_certificate: return "invalid_certificate";
    case Errc::invalid_argument: return "invalid_argument";
    case Errc::not_smime: return "not_smime";
    case Errc::io_error: return "io_error";
    case Errc::internal: return "internal";
  }
  return "unknown";
}

std::string Error::describe() const {
  std::string text(to_string(code));
  text += ": ";
  text += message;
  return text;
}

}  // namespace mailkms::smime
