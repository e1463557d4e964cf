// One-time tokens mailed to users for enrollment and key recovery. A
// token is 130 random bits shown as "MKMS-" and 26 base32 characters in
// groups of five; only its SHA-256 is stored (behind the barrier, under
// "token/<hex hash>"), so neither storage nor administrators ever see one.
// Each is bound to one address and used once.
#pragma once

#include <ctime>
#include <optional>
#include <string>
#include <string_view>

#include "mailkms/keystore/barrier.hpp"
#include "mailkms/keystore/error.hpp"
#include "mailkms/keystore/storage.hpp"

namespace mailkms::keystore {

enum class TokenKind { enrollment, recovery };
std::string_view to_string(TokenKind kind) noexcept;

// A new token as the user sees it: "MKMS-ABCDE-FGHIJ-KLMNO-PQRST-UVWXY-Z".
std::string new_token();
// The 26 characters that count, whatever a mail client did to the token
// (case, hyphens, white space, line breaks); nothing if it is not one.
std::optional<std::string> normalize_token(std::string_view text);
// The hex SHA-256 a normalized token is stored under.
std::string token_hash(std::string_view normalized);

struct TokenRecord {
  TokenKind kind = TokenKind::enrollment;
  std::string address;  // lower case
  std::time_t created = 0;
  std::time_t expires = 0;
  bool used = false;
  std::time_t used_at = 0;
  bool superseded = false;  // a newer token of its kind was mailed to the address
};

class TokenStore {
 public:
  TokenStore(Storage& storage, Barrier& barrier) : storage_(storage), barrier_(barrier) {}

  Result<std::optional<TokenRecord>> find(std::string_view hash);
  Status save(std::string_view hash, const TokenRecord& record);
  Status remove(std::string_view hash);
  // Makes `hash` the address's current token of its kind; the one before,
  // if still unused, can no longer be redeemed. Returns that one's hash.
  Result<std::optional<std::string>> make_current(std::string_view hash, const TokenRecord& record);
  // Undoes make_current for a token that was never mailed: `hash` is
  // forgotten, and `previous` (what make_current returned) is current and
  // redeemable again.
  Status withdraw(std::string_view hash, const TokenRecord& record, const std::optional<std::string>& previous);
  // Whether `address` has a current token, of either kind, that is neither
  // used nor expired at `now`.
  Result<bool> pending(std::string_view address, std::time_t now);

 private:
  Storage& storage_;
  Barrier& barrier_;
};

}  // namespace mailkms::keystore
