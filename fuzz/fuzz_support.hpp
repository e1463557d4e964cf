// What the fuzz targets share: the test PKI's keys, loaded once per process
// (never made per input: a target must stay fast), and a file in memory for
// parsers that only read files.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "mailkms/smime/certificate.hpp"
#include "mailkms/smime/crypto_context.hpp"
#include "mailkms/smime/decrypt.hpp"
#include "mailkms/smime/verify.hpp"

namespace mailkms::fuzz {

// The bytes libFuzzer hands a target, as text.
inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Aborts with `what` on stderr: a property the target checks does not hold.
[[noreturn]] void violated(std::string_view what);

// The strict context (no legacy ciphers), made once.
const smime::CryptoContext& context();
const smime::CryptoContextPtr& context_ptr();

// The test PKI made by scripts/make-throwaway-pki.sh: MAILKMS_TEST_PKI, or
// the directory this build made it in.
std::filesystem::path pki_dir();
smime::Certificate pki_certificate(const std::string& name);
smime::PrivateKey pki_key(const std::string& name);
// Trusts the test root only.
const smime::TrustStore& trust();
// Bob's key, which opens what the seeds encrypt to him.
smime::KeyUnwrapper& bob_unwrapper();

// One anonymous in-memory file whose contents each call replaces: for
// parsers that read a path (mailkms.conf), without touching the disk.
class MemoryFile {
 public:
  MemoryFile();
  ~MemoryFile();
  MemoryFile(const MemoryFile&) = delete;
  MemoryFile& operator=(const MemoryFile&) = delete;
  // Replaces the contents and returns a path that reads them.
  std::filesystem::path holding(std::string_view bytes);

 private:
  int fd_ = -1;
};

}  // namespace mailkms::fuzz
