// The keystore's socket protocol from whoever may connect: request lines,
// and the parts of requests the service decodes (wrapped keys,
// capabilities, base64); response lines as the client reads them.
#include "fuzz_support.hpp"
#include "mailkms/keystore/protocol.hpp"

using namespace mailkms;
namespace protocol = keystore::protocol;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > protocol::kMaxLine) return 0;
  const std::string_view line = fuzz::as_text(data, size);
  const protocol::ParsedRequest parsed = protocol::parse_request(line);
  if (parsed.request.has_value() == parsed.error.has_value()) fuzz::violated("a request both parsed and refused");
  if (parsed.request) {
    const nlohmann::json& params = parsed.request->params;
    (void)protocol::wrapped_key_from_json(params);
    (void)protocol::capabilities_from_json(params);
    if (params.is_object()) {
      for (const auto& [name, value] : params.items()) {
        (void)protocol::unbase64(value);
        (void)protocol::capabilities_from_json(value);
        // A wrapped key the daemon accepts is one the client could have sent.
        if (auto wrapped = protocol::wrapped_key_from_json(value)) {
          auto again = protocol::wrapped_key_from_json(protocol::to_json(*wrapped));
          if (!again || protocol::to_json(*again) != protocol::to_json(*wrapped)) {
            fuzz::violated("a wrapped key does not read back");
          }
        }
      }
    }
    // What the daemon answers with parses back as the same id.
    auto echoed = protocol::parse_response(protocol::encode_result(parsed.request->id, params));
    if (!echoed || echoed->id != parsed.request->id) fuzz::violated("an encoded result does not read back");
  } else {
    (void)protocol::encode_error(parsed.id, *parsed.error);
  }
  (void)protocol::parse_response(line);
  (void)protocol::parse_errc(line);
  return 0;
}
