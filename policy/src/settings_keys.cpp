#include "settings_keys.hpp"

#include <algorithm>
#include <array>
#include <string>

#include "names.hpp"

namespace mailkms::policy {
namespace {

template <class Enum>
Status read_enum(const Place& place, const toml::node& node, std::string_view key,
                 std::optional<Enum> (*parse)(std::string_view) noexcept, std::string_view choices, Enum& out) {
  const auto* text = node.as_string();
  const auto value = text != nullptr ? parse(text->get()) : std::nullopt;
  if (!value) {
    std::string what(choices);
    if (text != nullptr) what += ", not " + in_quotes(text->get());
    return place.expected(node, key, what);
  }
  out = *value;
  return Ok{};
}

Status read_mode(const Place& place, const toml::node& node, std::string_view key, Mode& out) {
  return read_enum(place, node, key, parse_mode, "never, if-possible or always", out);
}

Status read_flag(const Place& place, const toml::node& node, std::string_view key, bool& out) {
  MAILKMS_TRY(value, read_bool(place, node, key));
  out = value;
  return Ok{};
}

std::string encryption_cipher_names() {
  std::string names;
  std::vector<std::string_view> usable;
  for (const smime::Cipher c : smime::all_ciphers()) {
    if (!smime::is_decrypt_only(c)) usable.push_back(smime::name(c));
  }
  for (std::size_t i = 0; i < usable.size(); ++i) {
    if (i > 0) names += i + 1 == usable.size() ? " or " : ", ";
    names += usable[i];
  }
  return names;
}

Result<smime::Cipher> read_cipher(const Place& place, const toml::node& node) {
  const auto* text = node.as_string();
  if (text == nullptr) return place.expected(node, "cipher", "cipher names such as \"aes-256-cbc\"");
  const auto cipher = smime::parse_cipher(text->get());
  if (!cipher) return place.expected(node, "cipher", encryption_cipher_names() + ", not " + in_quotes(text->get()));
  if (smime::is_decrypt_only(*cipher)) {
    return place.error(node.source(), "cipher: " + std::string(smime::name(*cipher)) +
                                          " is only used to read old mail; expected " + encryption_cipher_names());
  }
  return *cipher;
}

// A list in order of preference, or one name.
Status read_ciphers(const Place& place, const toml::node& node, Settings& settings) {
  std::vector<smime::Cipher> ciphers;
  if (node.is_string()) {
    MAILKMS_TRY(cipher, read_cipher(place, node));
    ciphers.push_back(cipher);
  } else if (const auto* list = node.as_array()) {
    if (list->empty()) return place.expected(node, "cipher", "at least one cipher");
    for (const toml::node& item : *list) {
      MAILKMS_TRY(cipher, read_cipher(place, item));
      if (std::find(ciphers.begin(), ciphers.end(), cipher) != ciphers.end()) {
        return place.error(item.source(), "cipher: " + std::string(smime::name(cipher)) + " is listed twice");
      }
      ciphers.push_back(cipher);
    }
  } else {
    return place.expected(node, "cipher", "a list of ciphers such as [\"aes-256-cbc\", \"aes-128-cbc\"]");
  }
  settings.ciphers = std::move(ciphers);
  return Ok{};
}

Status read_digest(const Place& place, const toml::node& node, Settings& settings) {
  constexpr std::string_view choices = "sha256, sha384 or sha512";
  const auto* text = node.as_string();
  if (text == nullptr) return place.expected(node, "digest", choices);
  const auto digest = smime::parse_digest(text->get());
  if (!digest) return place.expected(node, "digest", std::string(choices) + ", not " + in_quotes(text->get()));
  if (smime::is_weak(*digest)) {
    return place.error(node.source(),
                       "digest: " + std::string(smime::name(*digest)) + " is too weak to sign with; expected " +
                           std::string(choices));
  }
  settings.digest = *digest;
  return Ok{};
}

constexpr std::array kSettingKeys{
    SettingKey{"sign",
               [](const Place& p, const toml::node& n, Settings& s) { return read_mode(p, n, "sign", s.sign); }},
    SettingKey{"encrypt",
               [](const Place& p, const toml::node& n, Settings& s) { return read_mode(p, n, "encrypt", s.encrypt); }},
    SettingKey{"cipher", read_ciphers},
    SettingKey{"digest", read_digest},
    SettingKey{"on_missing_certificate",
               [](const Place& p, const toml::node& n, Settings& s) {
                 return read_enum(p, n, "on_missing_certificate", parse_missing_certificate,
                                  "send-plain, reject, tempfail or quarantine", s.on_missing_certificate);
               }},
    SettingKey{"encrypt_to_sender",
               [](const Place& p, const toml::node& n, Settings& s) {
                 return read_flag(p, n, "encrypt_to_sender", s.encrypt_to_sender);
               }},
    SettingKey{"exempt_calendar",
               [](const Place& p, const toml::node& n, Settings& s) {
                 return read_flag(p, n, "exempt_calendar", s.exempt_calendar);
               }},
    SettingKey{"verify",
               [](const Place& p, const toml::node& n, Settings& s) { return read_flag(p, n, "verify", s.verify); }},
    SettingKey{"decrypt",
               [](const Place& p, const toml::node& n, Settings& s) { return read_flag(p, n, "decrypt", s.decrypt); }},
    SettingKey{"decrypt_unauthenticated",
               [](const Place& p, const toml::node& n, Settings& s) {
                 return read_flag(p, n, "decrypt_unauthenticated", s.decrypt_unauthenticated);
               }},
    SettingKey{"harvest",
               [](const Place& p, const toml::node& n, Settings& s) { return read_flag(p, n, "harvest", s.harvest); }},
};

}  // namespace

std::span<const SettingKey> setting_keys() { return kSettingKeys; }

const SettingKey* find_setting_key(std::string_view name) {
  const auto* it = std::find_if(kSettingKeys.begin(), kSettingKeys.end(),
                                [&](const SettingKey& key) { return key.name == name; });
  return it != kSettingKeys.end() ? it : nullptr;
}

}  // namespace mailkms::policy
