#include "mailkms/keystore/protocol.hpp"

#include <algorithm>
#include <array>

#include "mailkms/smime/mime.hpp"

namespace mailkms::keystore::protocol {

namespace {

// nlohmann::json parses and frees nested values without recursion, but copies
// and compares them recursively: a line of brackets nested a few hundred
// thousand deep would overflow the stack. No message of ours nests deeper
// than a few levels, so a line that does is refused before it is parsed.
constexpr int kMaxNesting = 32;

bool nests_too_deep(std::string_view line) {
  int depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (const char c : line) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxNesting) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

std::size_t kek_length_of(smime::KeyAgreementInput::Wrap wrap) {
  using Wrap = smime::KeyAgreementInput::Wrap;
  switch (wrap) {
    case Wrap::aes128: return 16;
    case Wrap::aes192: return 24;
    case Wrap::aes256: return 32;
    case Wrap::des_ede3: return 24;
  }
  return 0;
}

// A whole number in [low, high], or nothing: a peer's 1e300 or 2.5 must
// never reach a conversion to an integer type (undefined for 1e300).
std::optional<std::int64_t> whole_number(const nlohmann::json& j, std::int64_t low, std::int64_t high) {
  if (!j.is_number_integer()) return std::nullopt;
  if (j.is_number_unsigned()) {
    const auto u = j.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(high)) return std::nullopt;
    return static_cast<std::int64_t>(u);
  }
  const auto i = j.get<std::int64_t>();
  if (i < low || i > high) return std::nullopt;
  return i;
}

}  // namespace

ParsedRequest parse_request(std::string_view line) {
  ParsedRequest out;
  if (nests_too_deep(line)) {
    out.error = make_error(Errc::invalid_argument, "the request nests deeper than " + std::to_string(kMaxNesting) + " levels");
    return out;
  }
  auto j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    out.error = make_error(Errc::invalid_argument, "the request is not a JSON object");
    return out;
  }
  const auto id = j.find("id");
  if (id == j.end() || !id->is_number_unsigned()) {
    out.error = make_error(Errc::invalid_argument, "the request has no numeric id");
    return out;
  }
  out.id = id->get<std::uint64_t>();
  const auto op = j.find("op");
  if (op == j.end() || !op->is_string()) {
    out.error = make_error(Errc::invalid_argument, "the request has no op");
    return out;
  }
  Request request{out.id, op->get<std::string>(), nlohmann::json::object()};
  if (const auto params = j.find("params"); params != j.end()) {
    if (!params->is_object()) {
      out.error = make_error(Errc::invalid_argument, "params must be an object");
      return out;
    }
    request.params = std::move(*params);
  }
  out.request = std::move(request);
  return out;
}

std::string encode_request(const Request& request) {
  return nlohmann::json{{"id", request.id}, {"op", request.op}, {"params", request.params}}.dump() + "\n";
}

std::string encode_result(std::uint64_t id, const nlohmann::json& result) {
  return nlohmann::json{{"id", id}, {"result", result}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

std::string encode_error(std::uint64_t id, const Error& error) {
  return nlohmann::json{{"id", id}, {"error", {{"code", std::string(to_string(error.code))}, {"message", error.message}}}}
             .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
         "\n";
}

std::optional<Errc> parse_errc(std::string_view name) {
  constexpr std::array all{Errc::sealed, Errc::not_found, Errc::already_exists, Errc::wrong_secret, Errc::corrupt,
                           Errc::storage_failed, Errc::invalid_argument, Errc::permission_denied, Errc::crypto_failed,
                           Errc::unavailable, Errc::internal};
  for (const Errc e : all) {
    if (to_string(e) == name) return e;
  }
  return std::nullopt;
}

Result<Response> parse_response(std::string_view line) {
  const Error bad = make_error(Errc::internal, "the keystore sent a malformed response");
  if (nests_too_deep(line)) return bad;
  auto j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("id") || !j["id"].is_number_unsigned()) return bad;
  Response r;
  r.id = j["id"].get<std::uint64_t>();
  if (const auto result = j.find("result"); result != j.end()) {
    r.outcome = std::move(*result);
    return r;
  }
  const auto error = j.find("error");
  if (error == j.end() || !error->is_object()) return bad;
  const auto code = parse_errc(error->value("code", ""));
  r.outcome = make_error(code.value_or(Errc::internal), error->value("message", "unknown error"));
  return r;
}

nlohmann::json capabilities_to_json(const smime::Capabilities& capabilities) {
  nlohmann::json ciphers = nlohmann::json::array();
  for (const smime::Cipher c : capabilities.ciphers) ciphers.push_back(std::string(smime::name(c)));
  return {{"ciphers", ciphers}, {"rsa_oaep", capabilities.rsa_oaep}};
}

Result<smime::Capabilities> capabilities_from_json(const nlohmann::json& j) {
  const auto ciphers = j.is_object() ? j.find("ciphers") : j.end();
  const auto oaep = j.is_object() ? j.find("rsa_oaep") : j.end();
  if (!j.is_object() || (ciphers != j.end() && !ciphers->is_array()) || (oaep != j.end() && !oaep->is_boolean())) {
    return make_error(Errc::invalid_argument,
                      "capabilities are {\"ciphers\": [names], \"rsa_oaep\": true or false}");
  }
  smime::Capabilities out;
  if (oaep != j.end()) out.rsa_oaep = oaep->get<bool>();
  if (ciphers == j.end()) return out;
  for (const auto& name : *ciphers) {
    if (!name.is_string()) return make_error(Errc::invalid_argument, "cipher names are strings");
    const auto cipher = smime::parse_cipher(name.get<std::string>());
    if (cipher && std::find(out.ciphers.begin(), out.ciphers.end(), *cipher) == out.ciphers.end()) {
      out.ciphers.push_back(*cipher);
    }
  }
  return out;
}

std::string base64(std::string_view bytes) {
  std::string out = smime::base64_encode_mime(bytes);
  out.erase(std::remove(out.begin(), out.end(), '\r'), out.end());
  out.erase(std::remove(out.begin(), out.end(), '\n'), out.end());
  return out;
}

Result<std::string> unbase64(const nlohmann::json& value) {
  if (!value.is_string()) return make_error(Errc::invalid_argument, "expected a base64 string");
  auto decoded = smime::base64_decode(value.get<std::string>());
  if (!decoded) return make_error(Errc::invalid_argument, "invalid base64");
  return std::move(*decoded);
}

nlohmann::json to_json(const smime::WrappedKey& wrapped) {
  if (const auto* kt = std::get_if<smime::KeyTransportInput>(&wrapped)) {
    return {{"kind", "key-transport"},
            {"oaep", kt->oaep},
            {"oaep_digest", std::string(smime::name(kt->oaep_digest))},
            {"mgf1_digest", std::string(smime::name(kt->mgf1_digest))},
            {"encrypted_key", base64(kt->encrypted_key)},
            {"content_key_length", kt->content_key_length}};
  }
  const auto& ka = std::get<smime::KeyAgreementInput>(wrapped);
  return {{"kind", "key-agreement"},
          {"originator_point", base64(ka.originator_point)},
          {"ukm", base64(ka.ukm)},
          {"kdf_digest", std::string(smime::name(ka.kdf_digest))},
          {"key_wrap_algorithm", base64(ka.key_wrap_algorithm)},
          {"wrap", static_cast<int>(ka.wrap)},
          {"kek_length", ka.kek_length},
          {"encrypted_key", base64(ka.encrypted_key)}};
}

Result<smime::WrappedKey> wrapped_key_from_json(const nlohmann::json& j) {
  const Error bad = make_error(Errc::invalid_argument, "malformed wrapped key");
  if (!j.is_object()) return bad;
  try {
    const std::string kind = j.at("kind").get<std::string>();
    if (kind == "key-transport") {
      smime::KeyTransportInput in;
      in.oaep = j.at("oaep").get<bool>();
      const auto oaep = smime::parse_digest(j.at("oaep_digest").get<std::string>());
      const auto mgf1 = smime::parse_digest(j.at("mgf1_digest").get<std::string>());
      MAILKMS_TRY(key, unbase64(j.at("encrypted_key")));
      if (!oaep || !mgf1) return bad;
      in.oaep_digest = *oaep;
      in.mgf1_digest = *mgf1;
      in.encrypted_key = std::move(key);
      const auto content_key_length = whole_number(j.at("content_key_length"), 1, 64);
      if (!content_key_length) return bad;
      in.content_key_length = static_cast<std::size_t>(*content_key_length);
      return smime::WrappedKey{std::move(in)};
    }
    if (kind == "key-agreement") {
      smime::KeyAgreementInput in;
      MAILKMS_TRY(point, unbase64(j.at("originator_point")));
      MAILKMS_TRY(ukm, unbase64(j.at("ukm")));
      MAILKMS_TRY(algorithm, unbase64(j.at("key_wrap_algorithm")));
      MAILKMS_TRY(key, unbase64(j.at("encrypted_key")));
      const auto kdf = smime::parse_digest(j.at("kdf_digest").get<std::string>());
      const auto wrap = whole_number(j.at("wrap"), 0, 3);
      if (!kdf || !wrap) return bad;
      in.originator_point = std::move(point);
      in.ukm = std::move(ukm);
      in.key_wrap_algorithm = std::move(algorithm);
      in.encrypted_key = std::move(key);
      in.kdf_digest = *kdf;
      in.wrap = static_cast<smime::KeyAgreementInput::Wrap>(*wrap);
      const auto kek_length = whole_number(j.at("kek_length"), 1, 64);
      if (!kek_length) return bad;
      in.kek_length = static_cast<std::size_t>(*kek_length);
      // The wrap algorithm fixes the KEK's length: a shorter one would be read past.
      if (in.kek_length != kek_length_of(in.wrap)) return bad;
      return smime::WrappedKey{std::move(in)};
    }
  } catch (const nlohmann::json::exception&) {
  }
  return bad;
}

}  // namespace mailkms::keystore::protocol
