// A PKCS#10 request a user attaches to an enrollment reply: what the
// keystore's CA reads before it certifies the key for signing.
#include "fuzz_support.hpp"
#include "mailkms/keystore/signing_request.hpp"

using namespace mailkms;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > std::size_t{16} * 1024) return 0;
  auto key = keystore::read_signing_request(fuzz::as_text(data, size));
  if (key && keystore::unacceptable_key(key->get())) fuzz::violated("a refused key was accepted");
  return 0;
}
