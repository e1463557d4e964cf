// Helpers the engine tests share: the test PKI made by scripts/make-throwaway-pki.sh,
// temporary files, and running the real openssl command line.
#pragma once

#include <catch2/catch.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "mailkms/smime/certificate.hpp"
#include "mailkms/smime/crypto_context.hpp"
#include "mailkms/smime/decrypt.hpp"
#include "mailkms/smime/sign.hpp"
#include "mailkms/smime/verify.hpp"

namespace mailkms::test {

// The value of a result (of any component), or the test fails with the
// error's description.
template <class R>
auto must(R result) {
  if (!result) FAIL(result.error().describe());
  return std::move(result).value();
}

std::string read_file(const std::filesystem::path& path);
void write_file(const std::filesystem::path& path, const std::string& data);

// The directory of the test PKI (MAILKMS_TEST_PKI, set by CTest, or where
// the build made it).
std::filesystem::path pki_dir();
std::string pki_path(const std::string& file);

// A fresh directory removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] std::filesystem::path path(const std::string& name) const { return dir_ / name; }

 private:
  std::filesystem::path dir_;
};

struct CommandResult {
  int exit_code;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs a shell command line; stdin is /dev/null.
CommandResult run(const std::string& command);

// The shared strict context (no legacy ciphers).
const smime::CryptoContextPtr& context();
const smime::CryptoContextPtr& legacy_context();

smime::Certificate cert(const std::string& user);
smime::PrivateKey key(const std::string& user);
std::vector<smime::Certificate> chain();
smime::LocalSigner signer(const std::string& user,
                          std::optional<smime::SignatureScheme> scheme = std::nullopt);
smime::LocalKeyUnwrapper unwrapper(const std::string& user);
// Trusts our test root only.
const smime::TrustStore& trust();

// A small message from alice to bob.
std::string sample_message(const std::string& from = "alice@example.org", const std::string& to = "bob@example.org");

}  // namespace mailkms::test
