// The S/MIME engine's errors: a closed set of error codes, each with a
// message for humans. The engine never throws for bad input; it
// returns an Error that says what was wrong and where.
#pragma once

#include <string>
#include <string_view>

#include "mailkms/basic_result.hpp"

namespace mailkms::smime {

enum class Errc {
  malformed_mime,         // MIME structure broken: boundaries, headers, nesting
  malformed_cms,          // CMS/PKCS#7 that does not parse or is not what it claims
  invalid_base64,         // a base64 body that does not decode
  limit_exceeded,         // a configured size or depth limit was hit
  unsupported_algorithm,  // an algorithm we do not implement or refuse to use
  legacy_cipher_disabled, // a legacy cipher seen while the legacy provider is off
  no_matching_recipient,  // none of our keys is a recipient of the message
  decryption_failed,      // the content-encryption key or the content is wrong
  key_operation_failed,   // the signer or unwrapper (maybe remote) failed
  invalid_certificate,    // a certificate or key that cannot be used as asked
  invalid_argument,       // the caller asked for something inconsistent
  not_smime,              // the message has no S/MIME layer at all
  io_error,               // reading or writing a file or spool failed
  internal,               // a library call failed where it should not: our bug
};

std::string_view to_string(Errc code) noexcept;

struct Error {
  Errc code;
  std::string message;

  // "malformed_cms: no SignerInfo" — for logs and the command line.
  [[nodiscard]] std::string describe() const;
};

template <class T>
using Result = BasicResult<T, Error>;
using mailkms::Ok;
using Status = Result<Ok>;

inline Error make_error(Errc code, std::string message) { return Error{code, std::move(message)}; }

}  // namespace mailkms::smime
