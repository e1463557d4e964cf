// The two readers of a multipart/signed message must agree: verification
// in memory (verify_message on a string) and verification streamed from a
// spool (verify_message on a Spool, as the milter does). A message one
// calls good and the other bad is a signature the gateway can be made to
// report either way; the target aborts on any difference of verdict.
#include "fuzz_support.hpp"
#include "mailkms/smime/spool.hpp"

using namespace mailkms;

namespace {

smime::VerifyOptions options() {
  smime::VerifyOptions o;
  o.trust = &fuzz::trust();
  o.at = 1'900'000'000;  // one instant, so every run judges the same
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > std::size_t{64} * 1024) return 0;
  const std::string_view text = fuzz::as_text(data, size);
  const smime::CryptoContext& ctx = fuzz::context();
  const smime::VerifyResult in_memory = smime::verify_message(ctx, text, options());
  const smime::VerifyResult streamed = smime::verify_message(ctx, smime::Spool::borrow(text), options());
  if (in_memory.status != streamed.status) {
    fuzz::violated("in memory: " + std::string(smime::to_string(in_memory.status)) + " (" + in_memory.reason +
                   "); streamed: " + std::string(smime::to_string(streamed.status)) + " (" + streamed.reason + ")");
  }
  return 0;
}
