#include "mailkms/keystore/mail_mark.hpp"

#include <openssl/crypto.h>

#include <charconv>

#include "aead.hpp"
#include "mailkms/keystore/users.hpp"

namespace mailkms::keystore {
namespace {

constexpr std::string_view kKeyRecord = "core/mail-mark-key";
constexpr std::size_t kKeyBytes = 32;

}  // namespace

Result<smime::SecretBytes> MailMark::key() {
  MAILKMS_TRY(stored, barrier_.get(kKeyRecord));
  if (stored) return std::move(*stored);
  const std::lock_guard lock(creating_);
  MAILKMS_TRY(again, barrier_.get(kKeyRecord));  // another thread may have made it meanwhile
  if (again) return std::move(*again);
  smime::SecretBytes made = detail::random_secret(kKeyBytes);
  MAILKMS_CHECK(barrier_.put(kKeyRecord, std::string_view(reinterpret_cast<const char*>(made.data()), made.size())));
  return made;
}

Result<std::string> MailMark::mac(std::time_t made, std::string_view recipient, std::string_view message_id) {
  MAILKMS_TRY(secret, key());
  std::string input = "mailkms mail mark 1";
  input.push_back('\0');
  input += std::to_string(made);
  input.push_back('\0');
  input += Users::normalize(recipient);
  input.push_back('\0');
  input += message_id;
  return detail::hex_hmac_sha256(secret, input);
}

Result<std::string> MailMark::make(std::string_view recipient, std::string_view message_id, std::time_t now) {
  MAILKMS_TRY(tag, mac(now, recipient, message_id));
  return "1." + std::to_string(now) + "." + tag;
}

Result<bool> MailMark::check(std::string_view mark, std::string_view recipient, std::string_view message_id,
                             std::time_t now) {
  // "1.<time>.<hex>", nothing around it.
  const std::size_t first = mark.find('.');
  const std::size_t second = first == std::string_view::npos ? first : mark.find('.', first + 1);
  if (second == std::string_view::npos || mark.substr(0, first) != "1") return false;
  const std::string_view time_text = mark.substr(first + 1, second - first - 1);
  std::time_t made = 0;
  const auto [end, error] = std::from_chars(time_text.data(), time_text.data() + time_text.size(), made);
  if (error != std::errc() || end != time_text.data() + time_text.size()) return false;
  if (made > now + 300 || now - made > kLifetime) return false;  // five minutes of clock skew
  MAILKMS_TRY(expected, mac(made, recipient, message_id));
  const std::string_view given = mark.substr(second + 1);
  return given.size() == expected.size() && CRYPTO_memcmp(given.data(), expected.data(), given.size()) == 0;
}

}  // namespace mailkms::keystore
