// Every row the keystore stores is a JSON object. One that does not parse,
// or lacks a field of the right type, fails the request that read it with
// Errc::corrupt naming its key, so that an administrator knows which row
// to look at; never an exception that leaves a transaction open.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "mailkms/keystore/error.hpp"

namespace mailkms::keystore::detail {

inline Error corrupt_row(std::string_view key, std::string_view problem) {
  return make_error(Errc::corrupt, "the stored row " + std::string(key) + " " + std::string(problem));
}

inline Result<nlohmann::json> parse_row(std::string_view key, std::string_view text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object()) return corrupt_row(key, "is not a JSON object");
  return j;
}

}  // namespace mailkms::keystore::detail
