// Errors as values, shared by every component: a value or that component's
// Error (each component has its own closed set of error codes). std::expected
// is C++23 and our compilers are C++20.
#pragma once

#include <utility>
#include <variant>

namespace mailkms {

template <class T, class E>
class [[nodiscard]] BasicResult {
 public:
  BasicResult(T value) : state_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  BasicResult(E error) : state_(std::in_place_index<1>, std::move(error)) {}  // NOLINT

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

  [[nodiscard]] const E& error() const& { return std::get<1>(state_); }
  [[nodiscard]] E&& error() && { return std::get<1>(std::move(state_)); }

 private:
  std::variant<T, E> state_;
};

// The value of a successful operation that returns nothing.
struct Ok {};

}  // namespace mailkms

// Propagates an error from an expression returning a result, else yields
// its value into `var`. (`var` names a declaration: it cannot be put in
// parentheses.)
// NOLINTBEGIN(bugprone-macro-parentheses)
#define MAILKMS_TRY(var, expr)                                  \
  auto var##_result_ = (expr);                                  \
  if (!var##_result_) return std::move(var##_result_).error();  \
  auto var = std::move(var##_result_).value()

#define MAILKMS_CHECK(expr) MAILKMS_CHECK_NAMED_(expr, MAILKMS_CONCAT_(check_result_, __COUNTER__))
#define MAILKMS_CHECK_NAMED_(expr, name)              \
  do {                                                \
    auto name = (expr);                               \
    if (!name) return std::move(name).error();        \
  } while (false)
#define MAILKMS_CONCAT_(a, b) MAILKMS_CONCAT_IMPL_(a, b)
#define MAILKMS_CONCAT_IMPL_(a, b) a##b
// NOLINTEND(bugprone-macro-parentheses)
