// Inbound mail as the gateway reads it: the MIME parser, verification of
// either form of signature, decryption with a test key, unwrapping of any
// nesting of layers, and the administrators' description of each layer.
#include <array>

#include "fuzz_support.hpp"
#include "mailkms/smime/mime.hpp"
#include "mailkms/smime/open.hpp"

using namespace mailkms;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > std::size_t{64} * 1024) return 0;  // the shapes of MIME and CMS fit; bigger only slows the search
  const std::string_view text = fuzz::as_text(data, size);
  const smime::CryptoContext& ctx = fuzz::context();
  smime::VerifyOptions options;
  options.trust = &fuzz::trust();
  options.at = 1'900'000'000;  // one instant, so every run judges the same
  const std::array<smime::KeyUnwrapper*, 1> keys{&fuzz::bob_unwrapper()};

  auto message = smime::parse_message(text);
  if (!message) return 0;
  (void)message->serialize();
  (void)smime::author_addresses(*message);
  (void)smime::content_type(message->entity);
  (void)smime::verify_entity(ctx, message->entity, options);
  (void)smime::decrypt_entity(ctx, message->entity, keys);
  (void)smime::classify(ctx, message->entity);
  (void)smime::is_complete_encryption(ctx, message->entity);
  (void)smime::open_message(ctx, text, keys, options);
  (void)smime::inspect_entity(ctx, message->entity, keys, {});
  (void)smime::canonicalize_for_signing(message->entity);
  return 0;
}
