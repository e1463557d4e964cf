// Errors as values for the S/MIME engine: a closed set of error codes, each
// with a message for humans. The engine never throws for bad input; it
// returns an Error that says what was wrong and where.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <variant>

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

// A value or an Error; std::expected is C++23 and our compilers are C++20.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Error error) : state_(std::in_place_index<1>, std::move(error)) {}  // NOLINT

  [[nodiscard]] bool has_value() const noexcept { return state_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & { return std::get<0>(state_); }
  const T& value() const& { return std::get<0>(state_); }
  T&& value() && { return std::get<0>(std::move(state_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  [[nodiscard]] const Error& error() const& { return std::get<1>(state_); }
  [[nodiscard]] Error&& error() && { return std::get<1>(std::move(state_)); }

 private:
  std::variant<T, Error> state_;
};

// Result<void>: success or an Error.
struct Ok {};
using Status = Result<Ok>;

inline Error make_error(Errc code, std::string message) { return Error{code, std::move(message)}; }

}  // namespace mailkms::smime

// Propagates an error from an expression returning Result<T>, else yields T.
#define MAILKMS_TRY(var, expr)                   \
  auto var##_result_ = (expr);                   \
  if (!var##_result_) return std::move(var##_result_).error(); \
  auto var = std::move(var##_result_).value()

#define MAILKMS_CHECK(expr)                      \
  do {                                           \
    auto check_result_ = (expr);                 \
    if (!check_result_) return std::move(check_result_).error(); \
  } while (false)
