#include "mailkms/keystore/tokens.hpp"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <cctype>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "aead.hpp"

namespace mailkms::keystore {
namespace {

constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";  // RFC 4648 base32
constexpr std::size_t kLength = 26;                                        // 130 bits
constexpr std::string_view kPrefix = "MKMS";

std::string record_key(std::string_view hash) { return "token/" + std::string(hash); }
std::string index_key(std::string_view address) { return "token-index/" + std::string(address); }

std::string text_of(const smime::SecretBytes& bytes) {
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

}  // namespace

std::string_view to_string(TokenKind kind) noexcept { return kind == TokenKind::recovery ? "recovery" : "enrollment"; }

std::string new_token() {
  unsigned char random[kLength];
  if (RAND_bytes(random, sizeof random) != 1) std::abort();  // no randomness: nothing here can be trusted
  std::string out(kPrefix);
  for (std::size_t i = 0; i < kLength; ++i) {
    if (i % 5 == 0) out += '-';
    out += kAlphabet[random[i] & 31U];  // 256 is a multiple of 32: every character equally likely
  }
  OPENSSL_cleanse(random, sizeof random);
  return out;
}

std::optional<std::string> normalize_token(std::string_view text) {
  std::string out;
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '-' || std::isspace(u) != 0) continue;
    out += static_cast<char>(std::toupper(u));
    if (out.size() > kLength + kPrefix.size()) return std::nullopt;
  }
  // By length, so a token whose own characters begin with MKMS still reads.
  if (out.size() == kLength + kPrefix.size() && out.starts_with(kPrefix)) out.erase(0, kPrefix.size());
  if (out.size() != kLength || out.find_first_not_of(kAlphabet) != std::string::npos) return std::nullopt;
  return out;
}

std::string token_hash(std::string_view normalized) { return detail::hex_sha256(normalized); }

Result<std::optional<TokenRecord>> TokenStore::find(std::string_view hash) {
  MAILKMS_TRY(stored, barrier_.get(record_key(hash)));
  if (!stored) return std::optional<TokenRecord>();
  const auto j = nlohmann::json::parse(text_of(*stored), nullptr, false);
  if (!j.is_object()) return make_error(Errc::corrupt, "a token record does not parse");
  try {
    TokenRecord r;
    r.kind = j.at("kind").get<std::string>() == "recovery" ? TokenKind::recovery : TokenKind::enrollment;
    r.address = j.at("address").get<std::string>();
    r.created = j.at("created").get<std::time_t>();
    r.expires = j.at("expires").get<std::time_t>();
    r.used = j.at("used").get<bool>();
    r.used_at = j.value("used_at", std::time_t{0});
    r.superseded = j.value("superseded", false);
    return std::optional<TokenRecord>(std::move(r));
  } catch (const nlohmann::json::exception&) {
    return make_error(Errc::corrupt, "a token record lacks a field");
  }
}

Status TokenStore::save(std::string_view hash, const TokenRecord& r) {
  const nlohmann::json j{{"kind", std::string(to_string(r.kind))},
                         {"address", r.address},
                         {"created", r.created},
                         {"expires", r.expires},
                         {"used", r.used},
                         {"used_at", r.used_at},
                         {"superseded", r.superseded}};
  return barrier_.put(record_key(hash), j.dump());
}

Status TokenStore::remove(std::string_view hash) { return storage_.remove(record_key(hash)); }

Result<std::optional<std::string>> TokenStore::make_current(std::string_view hash, const TokenRecord& record) {
  std::optional<std::string> superseded;
  MAILKMS_CHECK(storage_.transaction([&]() -> Status {
    MAILKMS_TRY(stored, barrier_.get(index_key(record.address)));
    auto index = stored ? nlohmann::json::parse(text_of(*stored), nullptr, false) : nlohmann::json::object();
    if (!index.is_object()) return make_error(Errc::corrupt, "a token index does not parse");
    const std::string kind(to_string(record.kind));
    const std::string previous = index.value(kind, "");
    if (!previous.empty() && previous != hash) {
      MAILKMS_TRY(old, find(previous));
      if (old && !old->used && !old->superseded) {
        old->superseded = true;
        MAILKMS_CHECK(save(previous, *old));
        superseded = previous;
      }
    }
    index[kind] = std::string(hash);
    return barrier_.put(index_key(record.address), index.dump());
  }));
  return superseded;
}

Status TokenStore::withdraw(std::string_view hash, const TokenRecord& record, const std::optional<std::string>& previous) {
  return storage_.transaction([&]() -> Status {
    MAILKMS_CHECK(remove(hash));
    MAILKMS_TRY(stored, barrier_.get(index_key(record.address)));
    auto index = stored ? nlohmann::json::parse(text_of(*stored), nullptr, false) : nlohmann::json::object();
    if (!index.is_object()) return make_error(Errc::corrupt, "a token index does not parse");
    const std::string kind(to_string(record.kind));
    if (index.value(kind, "") != hash) return Ok{};  // a newer one has taken its place since
    if (previous) {
      MAILKMS_TRY(old, find(*previous));
      if (old && !old->used) {
        old->superseded = false;
        MAILKMS_CHECK(save(*previous, *old));
        index[kind] = *previous;
        return barrier_.put(index_key(record.address), index.dump());
      }
    }
    index.erase(kind);
    return barrier_.put(index_key(record.address), index.dump());
  });
}

Result<bool> TokenStore::pending(std::string_view address, std::time_t now) {
  MAILKMS_TRY(stored, barrier_.get(index_key(address)));
  if (!stored) return false;
  const auto index = nlohmann::json::parse(text_of(*stored), nullptr, false);
  if (!index.is_object()) return make_error(Errc::corrupt, "a token index does not parse");
  for (const auto& [kind, hash] : index.items()) {
    if (!hash.is_string()) continue;
    MAILKMS_TRY(record, find(hash.get<std::string>()));
    if (record && !record->used && !record->superseded && record->expires > now) return true;
  }
  return false;
}

}  // namespace mailkms::keystore
