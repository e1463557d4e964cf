// The keystore's mark on its own mail.
//
// The keystore mails users their tokens and keys from the enrollment
// address, and the gateway lets that mail through as it is: a user cannot
// decrypt anything before they have their keys. Anyone on the host can
// also submit mail from that address (`sendmail -f`); the mark tells ours
// apart. It is an HMAC-SHA256, under a key kept behind the barrier, of the
// recipient, the Message-ID and the time it was made: it vouches for one
// mail to one recipient for two days, reveals nothing, and can be checked
// only by the keystore.
#pragma once

#include <ctime>
#include <mutex>
#include <string>
#include <string_view>

#include "mailkms/keystore/barrier.hpp"
#include "mailkms/keystore/error.hpp"
#include "mailkms/keystore/protocol.hpp"

namespace mailkms::keystore {

class MailMark {
 public:
  // A mail may wait in the MTA's queue this long before the gateway sees it.
  static constexpr std::time_t kLifetime = std::time_t{2} * 24 * 3600;

  explicit MailMark(Barrier& barrier) : barrier_(barrier) {}

  // "1.<unix time>.<hex HMAC>" for a mail to `recipient` with `message_id`.
  Result<std::string> make(std::string_view recipient, std::string_view message_id, std::time_t now);
  // Whether `mark` is one of ours for this recipient and Message-ID, made
  // no longer than kLifetime before `now` (and not in its future).
  Result<bool> check(std::string_view mark, std::string_view recipient, std::string_view message_id, std::time_t now);

 private:
  // Made on first use and kept behind the barrier; never cached outside it.
  Result<smime::SecretBytes> key();
  Result<std::string> mac(std::time_t made, std::string_view recipient, std::string_view message_id);

  Barrier& barrier_;
  std::mutex creating_;
};

}  // namespace mailkms::keystore
