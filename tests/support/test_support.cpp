#include "test_support.hpp"

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

namespace mailkms::test {

namespace fs = std::filesystem;

// For fixtures made outside any test case, where FAIL cannot be used.
template <class T>
T or_throw(smime::Result<T> r) {
  if (!r) throw std::runtime_error(r.error().describe());
  return std::move(r).value();
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_file(const fs::path& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

fs::path pki_dir() {
  const char* dir = std::getenv("MAILKMS_TEST_PKI");
  return dir != nullptr ? dir : MAILKMS_TEST_PKI_DIR;
}

std::string pki_path(const std::string& file) { return (pki_dir() / file).string(); }

namespace {
fs::path unique_temp_path() {
  std::random_device rd;
  return fs::temp_directory_path() / ("mailkms-test-" + std::to_string(rd()) + std::to_string(rd()));
}
}  // namespace

TempDir::TempDir() : dir_(unique_temp_path()) { fs::create_directories(dir_); }

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

CommandResult run(const std::string& command) {
  TempDir dir;
  const auto out = dir.path("out");
  const auto err = dir.path("err");
  // Grouped, so the redirections apply to a whole pipeline.
  const std::string line = "( " + command + " ) </dev/null >'" + out.string() + "' 2>'" + err.string() + "'";
  const int status = std::system(line.c_str());
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return {code, read_file(out), read_file(err)};
}

const smime::CryptoContextPtr& context() {
  static const smime::CryptoContextPtr ctx = or_throw(smime::CryptoContext::create());
  return ctx;
}

const smime::CryptoContextPtr& legacy_context() {
  static const smime::CryptoContextPtr ctx = or_throw(smime::CryptoContext::create({.legacy_ciphers = true}));
  return ctx;
}

smime::Certificate cert(const std::string& user) { return or_throw(smime::Certificate::from_pem(read_file(pki_path(user + ".pem")))); }

smime::PrivateKey key(const std::string& user) {
  return or_throw(smime::PrivateKey::from_pem(*context(), read_file(pki_path(user + ".key"))));
}

std::vector<smime::Certificate> chain() { return or_throw(smime::Certificate::all_from_pem(read_file(pki_path("chain.pem")))); }

smime::LocalSigner signer(const std::string& user, std::optional<smime::SignatureScheme> scheme) {
  return or_throw(smime::LocalSigner::create(context(), cert(user), key(user), chain(), scheme));
}

smime::LocalKeyUnwrapper unwrapper(const std::string& user) {
  return or_throw(smime::LocalKeyUnwrapper::create(context(), cert(user), key(user)));
}

const smime::TrustStore& trust() {
  static const smime::TrustStore store = [] {
    smime::TrustStore s;
    s.add(cert("root"));
    return s;
  }();
  return store;
}

std::string sample_message(const std::string& from, const std::string& to) {
  return "From: Alice <" + from + ">\r\n"
         "To: Bob <" + to + ">\r\n"
         "Subject: quarterly figures\r\n"
         "Date: Wed, 25 Nov 2026 10:00:00 +0000\r\n"
         "Message-ID: <figures-1@example.org>\r\n"
         "MIME-Version: 1.0\r\n"
         "Content-Type: text/plain; charset=us-ascii\r\n"
         "\r\n"
         "The figures are attached in spirit.\r\n"
         "Regards, Alice\r\n";
}

}  // namespace mailkms::test
