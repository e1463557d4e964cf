#include "mailkms/smime/ossl.hpp"

#include <climits>

namespace mailkms::smime::ossl {

std::string drain_errors() {
  std::string text;
  const char* data = nullptr;
  int flags = 0;
  // The first error is the cause; later ones are where it surfaced.
  if (const unsigned long code = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags); code != 0) {
    const char* reason = ERR_reason_error_string(code);
    text = reason != nullptr ? reason : "unknown OpenSSL error";
    if (data != nullptr && (flags & ERR_TXT_STRING) != 0 && *data != '\0') {
      text += " (";
      text += data;
      text += ")";
    }
  }
  ERR_clear_error();
  return text;
}

Error error(Errc code, std::string_view what) {
  std::string message(what);
  if (const std::string reason = drain_errors(); !reason.empty()) {
    message += ": ";
    message += reason;
  }
  return Error{code, std::move(message)};
}

Bio memory_bio(std::span<const unsigned char> data) {
  if (data.size() > static_cast<std::size_t>(INT_MAX)) return nullptr;
  return Bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

Bio memory_bio(std::string_view data) { return memory_bio(as_bytes(data)); }

std::string bio_contents(BIO* bio) {
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  if (len <= 0 || data == nullptr) return {};
  return std::string(data, static_cast<std::size_t>(len));
}

}  // namespace mailkms::smime::ossl
