// mailkms.conf, as each component reads its sections: the keystore's
// [keystore] (with [gateway] enrollment_address) and the gateway's
// [gateway] (with [keystore] socket, user and enrollment_address).
#include "fuzz_support.hpp"
#include "mailkms/gateway/settings.hpp"
#include "mailkms/keystore/config.hpp"

using namespace mailkms;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > std::size_t{16} * 1024) return 0;
  static fuzz::MemoryFile file;
  const auto path = file.holding(fuzz::as_text(data, size));
  (void)keystore::load_config(path);
  (void)gateway::load_settings(path);
  return 0;
}
