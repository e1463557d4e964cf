// The keystore's wire protocol, shared by daemon and client: one JSON
// object per line each way. A request is {"id": N, "op": "...", "params":
// {...}}; its response carries the same id and either "result" or "error"
// ({"code": "<Errc name>", "message": "..."}). Responses may come back in
// any order: clients match them by id. Binary values are base64.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "mailkms/keystore/error.hpp"
#include "mailkms/smime/algorithms.hpp"
#include "mailkms/smime/decrypt.hpp"

namespace mailkms::keystore::protocol {

inline constexpr std::size_t kMaxLine = 1 << 20;  // a request or response line, newline included
// The header field of the keystore's mark on its own mail (mail_mark.hpp).
inline constexpr std::string_view kMailMarkHeader = "X-Mailkms-Keystore-Mark";
// Addresses in one lookup-certificates request: 1000 of the longest still fit a line.
inline constexpr std::size_t kMaxLookupAddresses = 1000;

namespace op {
inline constexpr std::string_view status = "status";
inline constexpr std::string_view unseal = "unseal";
inline constexpr std::string_view lookup_certificates = "lookup-certificates";
inline constexpr std::string_view signing_identity = "signing-identity";
inline constexpr std::string_view sign = "sign";
inline constexpr std::string_view unwrap = "unwrap";
inline constexpr std::string_view remember_certificate = "remember-certificate";
inline constexpr std::string_view redeem_token = "redeem-token";
inline constexpr std::string_view check_mail_mark = "check-mail-mark";
}  // namespace op

struct Request {
  std::uint64_t id = 0;
  std::string op;
  nlohmann::json params = nlohmann::json::object();
};

// A request line (without its newline), or an error saying what is wrong;
// the id is recovered when it can be, so the error can answer it.
struct ParsedRequest {
  std::optional<Request> request;
  std::optional<Error> error;
  std::uint64_t id = 0;
};
ParsedRequest parse_request(std::string_view line);

std::string encode_request(const Request& request);
std::string encode_result(std::uint64_t id, const nlohmann::json& result);
std::string encode_error(std::uint64_t id, const Error& error);

// A response line: the id and the result, or the error it carried.
struct Response {
  std::uint64_t id = 0;
  Result<nlohmann::json> outcome = nlohmann::json();
};
Result<Response> parse_response(std::string_view line);

std::optional<Errc> parse_errc(std::string_view name);

// The engine's wrapped content-encryption key, as "unwrap" carries it.
nlohmann::json to_json(const smime::WrappedKey& wrapped);
Result<smime::WrappedKey> wrapped_key_from_json(const nlohmann::json& j);

// A correspondent's SMIMECapabilities: {"ciphers": ["aes-256-cbc", …],
// "rsa_oaep": bool}. Cipher names this build does not know are skipped, so
// a newer peer's list still reads.
nlohmann::json capabilities_to_json(const smime::Capabilities& capabilities);
Result<smime::Capabilities> capabilities_from_json(const nlohmann::json& j);

std::string base64(std::string_view bytes);
Result<std::string> unbase64(const nlohmann::json& value);

}  // namespace mailkms::keystore::protocol
