// The keystore's errors: a closed set of codes, each with a message for
// humans (and for the protocol, where the code is sent by name).
#pragma once

#include <string>
#include <string_view>

#include "mailkms/basic_result.hpp"

namespace mailkms::keystore {

enum class Errc {
  sealed,             // the master key is not loaded: unseal first
  not_found,
  already_exists,
  wrong_secret,       // an unseal passphrase, key file or share set that does not open the seal
  corrupt,            // stored data failed authentication or does not parse: never used
  storage_failed,     // the database could not be read or written (full disk, read-only, locked)
  invalid_argument,
  permission_denied,
  crypto_failed,      // an OpenSSL operation failed where it should not
  unavailable,        // the keystore daemon cannot be reached or did not answer in time
  internal,
};

std::string_view to_string(Errc code) noexcept;

struct Error {
  Errc code;
  std::string message;
  [[nodiscard]] std::string describe() const;
};

template <class T>
using Result = BasicResult<T, Error>;
using mailkms::Ok;
using Status = Result<Ok>;

inline Error make_error(Errc code, std::string message) { return Error{code, std::move(message)}; }

}  // namespace mailkms::keystore
