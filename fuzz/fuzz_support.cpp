#include "fuzz_support.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace mailkms::fuzz {
namespace {

template <class T, class E>
T or_abort(BasicResult<T, E> result, std::string_view what) {
  if (!result) violated(std::string(what) + ": " + result.error().describe());
  return std::move(result).value();
}

std::string read_pki_file(const std::string& name) {
  const auto path = pki_dir() / name;
  std::ifstream in(path, std::ios::binary);
  if (!in) violated("cannot read " + path.string() + " (set MAILKMS_TEST_PKI to the test PKI's directory)");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

void violated(std::string_view what) {
  (void)std::fprintf(stderr, "fuzz target: %.*s\n", static_cast<int>(what.size()), what.data());
  std::abort();
}

const smime::CryptoContextPtr& context_ptr() {
  static const smime::CryptoContextPtr ctx = or_abort(smime::CryptoContext::create(), "crypto context");
  return ctx;
}

const smime::CryptoContext& context() { return *context_ptr(); }

std::filesystem::path pki_dir() {
  if (const char* dir = std::getenv("MAILKMS_TEST_PKI"); dir != nullptr && *dir != '\0') return dir;
  return MAILKMS_FUZZ_PKI;
}

smime::Certificate pki_certificate(const std::string& name) {
  return or_abort(smime::Certificate::from_pem(read_pki_file(name + ".pem")), name + ".pem");
}

smime::PrivateKey pki_key(const std::string& name) {
  return or_abort(smime::PrivateKey::from_pem(context(), read_pki_file(name + ".key")), name + ".key");
}

const smime::TrustStore& trust() {
  static const smime::TrustStore store = [] {
    smime::TrustStore s;
    s.add(pki_certificate("root"));
    return s;
  }();
  return store;
}

smime::KeyUnwrapper& bob_unwrapper() {
  static smime::LocalKeyUnwrapper bob =
      or_abort(smime::LocalKeyUnwrapper::create(context_ptr(), pki_certificate("bob"), pki_key("bob")), "bob");
  return bob;
}

MemoryFile::MemoryFile() : fd_(memfd_create("mailkms-fuzz", 0)) {
  if (fd_ < 0) violated("memfd_create failed");
}

MemoryFile::~MemoryFile() { close(fd_); }

std::filesystem::path MemoryFile::holding(std::string_view bytes) {
  if (ftruncate(fd_, 0) != 0 || pwrite(fd_, bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size())) {
    violated("cannot write the in-memory file");
  }
  return "/proc/self/fd/" + std::to_string(fd_);
}

}  // namespace mailkms::fuzz
