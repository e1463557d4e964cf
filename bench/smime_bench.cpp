// Sign+encrypt throughput of the engine next to its cost floor: OpenSSL's
// CMS called directly on the same bytes with the same keys, measured in the
// same run. Prints a comparison table; the targets are the engine within
// 1.25x of the floor at 10 KB and 1.1x at 1 MB.
#include <openssl/cms.h>
#include <openssl/x509.h>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench_pki.hpp"
#include "mailkms/smime/encrypt.hpp"
#include "mailkms/smime/sign.hpp"

using namespace mailkms;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::string_view kHeaders =
    "From: user0@example.org\r\nTo: user1@example.org\r\nSubject: benchmark\r\n"
    "Date: Wed, 25 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bench@example.org>\r\nMIME-Version: 1.0\r\n";
constexpr std::string_view kContentHeaders = "Content-Type: text/plain; charset=us-ascii\r\n";

std::string body_of(std::size_t size) {
  std::string body;
  body.reserve(size + 80);
  const std::string line = "The quick brown fox jumps over the lazy dog while the figures are tallied.\r\n";
  while (body.size() < size) body += line;
  body.resize(size - 2);
  body += "\r\n";
  return body;
}

struct Fixture {
  smime::CryptoContextPtr ctx;
  std::unique_ptr<bench::BenchPki> pki;
  std::string message;  // the whole message, for the engine
  std::string entity;   // the same content entity, for the floor
  int recipients;
};

template <class T>
T must(smime::Result<T> r) {
  if (!r) {
    (void)std::fprintf(stderr, "bench: %s\n", r.error().describe().c_str());
    std::exit(1);
  }
  return std::move(r).value();
}

std::size_t engine_once(const Fixture& f) {
  const auto& users = f.pki->users();
  auto signer = must(smime::LocalSigner::create(f.ctx, smime::Certificate::share(users[0].cert),
                                                smime::PrivateKey::adopt((EVP_PKEY_up_ref(users[0].key), users[0].key))));
  std::vector<smime::Recipient> to;
  to.reserve(static_cast<std::size_t>(f.recipients));
  for (int i = 0; i < f.recipients; ++i) to.push_back({smime::Certificate::share(users[static_cast<std::size_t>(i)].cert)});
  const std::string out = must(smime::sign_and_encrypt_message(*f.ctx, f.message, signer, {}, to, {}));
  return out.size();
}

// The floor: CMS_sign and CMS_encrypt streaming into SMIME_write_CMS.
std::size_t floor_once(const Fixture& f) {
  const auto& users = f.pki->users();
  BIO* in = BIO_new_mem_buf(f.entity.data(), static_cast<int>(f.entity.size()));
  CMS_ContentInfo* sig = CMS_sign(users[0].cert, users[0].key, nullptr, in, CMS_DETACHED | CMS_BINARY | CMS_STREAM);
  BIO* signed_mime = BIO_new(BIO_s_mem());
  SMIME_write_CMS(signed_mime, sig, in, CMS_DETACHED | CMS_BINARY | CMS_STREAM);
  STACK_OF(X509)* recips = sk_X509_new_null();
  for (int i = 0; i < f.recipients; ++i) sk_X509_push(recips, users[static_cast<std::size_t>(i)].cert);
  CMS_ContentInfo* env = CMS_encrypt(recips, signed_mime, EVP_aes_256_cbc(), CMS_BINARY | CMS_STREAM);
  BIO* out = BIO_new(BIO_s_mem());
  SMIME_write_CMS(out, env, signed_mime, CMS_BINARY | CMS_STREAM);
  char* data = nullptr;
  const long n = BIO_get_mem_data(out, &data);
  BIO_free(out);
  CMS_ContentInfo_free(env);
  sk_X509_free(recips);
  BIO_free(signed_mime);
  CMS_ContentInfo_free(sig);
  BIO_free(in);
  return static_cast<std::size_t>(n);
}

// Alternates short batches of both so drift hits them alike; returns
// messages per second for each.
std::pair<double, double> measure(const Fixture& f, double seconds) {
  using Fn = std::size_t (*)(const Fixture&);
  const Fn fns[2] = {engine_once, floor_once};
  double spent[2] = {0, 0};
  long done[2] = {0, 0};
  for (const Fn fn : fns) fn(f);  // warm up
  while (spent[0] + spent[1] < seconds) {
    for (int which = 0; which < 2; ++which) {
      const auto start = Clock::now();
      for (int i = 0; i < 3; ++i) fns[which](f);
      spent[which] += std::chrono::duration<double>(Clock::now() - start).count();
      done[which] += 3;
    }
  }
  return {static_cast<double>(done[0]) / spent[0], static_cast<double>(done[1]) / spent[1]};
}

// Signs and encrypts a message with a 100 MB attachment, spool to spool,
// as the milter will; run in a child process so its peak RSS is its own.
int large_message_child() {
  auto ctx = must(smime::CryptoContext::create());
  bench::BenchPki pki(false, 2);
  const auto& users = pki.users();
  smime::Spool in;
  const auto append = [&in](std::string_view s) {
    if (auto r = in.append(s); !r) {
      (void)std::fprintf(stderr, "bench: %s\n", r.error().describe().c_str());
      std::exit(1);
    }
  };
  append(std::string(kHeaders) + "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n" +
         std::string(kContentHeaders) +
         "\r\nThe archive is attached.\r\n--b\r\nContent-Type: application/octet-stream; name=\"archive.bin\"\r\n"
         "Content-Transfer-Encoding: base64\r\n\r\n");
  std::string block;
  for (int i = 0; i < 57 * 1024; ++i) block.push_back(static_cast<char>((i * 7919) & 0xff));
  const std::string encoded = smime::base64_encode_mime(block);
  for (std::size_t written = 0; written < (std::size_t{100} << 20); written += block.size()) append(encoded);
  append("--b--\r\n");

  auto signer = must(smime::LocalSigner::create(ctx, smime::Certificate::share(users[0].cert),
                                                smime::PrivateKey::adopt((EVP_PKEY_up_ref(users[0].key), users[0].key))));
  const std::vector<smime::Recipient> to{{smime::Certificate::share(users[1].cert)},
                                         {smime::Certificate::share(users[0].cert)}};
  smime::Spool out;
  const auto start = Clock::now();
  if (auto r = smime::sign_and_encrypt_message(*ctx, in, out, signer, {}, to, {}); !r) {
    (void)std::fprintf(stderr, "bench: %s\n", r.error().describe().c_str());
    return 1;
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("%.1f MB in, %.1f MB out, %.2f s\n", static_cast<double>(in.size()) / 1048576.0,
              static_cast<double>(out.size()) / 1048576.0, seconds);
  return 0;
}

// Peak RSS of this program re-run as the large-message child, in MiB.
double large_message_peak_rss() {
  (void)std::fflush(stdout);
  const pid_t pid = fork();
  if (pid == 0) {
    execl("/proc/self/exe", "smime_bench", "--large-message-child", static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  rusage usage{};
  if (pid < 0 || wait4(pid, &status, 0, &usage) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 2.0;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) seconds = 0.3;
    if (std::strcmp(argv[i], "--large-message-child") == 0) return large_message_child();
  }
  auto ctx = must(smime::CryptoContext::create());
  std::printf("sign+encrypt (SHA-256, AES-256-CBC), messages per second; floor = OpenSSL CMS called directly\n\n");
  std::printf("%-6s %-7s %-10s %12s %12s %8s %8s\n", "size", "key", "recipients", "mailkms/s", "floor/s", "ratio",
              "target");
  bool all_met = true;
  for (const bool ec : {false, true}) {
    auto pki = std::make_unique<bench::BenchPki>(ec, 10);
    for (const std::size_t size : {std::size_t{10} << 10, std::size_t{1} << 20}) {
      for (const int recipients : {1, 10}) {
        Fixture f{ctx, nullptr, std::string(kHeaders).append(kContentHeaders) + "\r\n" + body_of(size),
                  std::string(kContentHeaders) + "\r\n" + body_of(size), recipients};
        f.pki.swap(pki);
        const auto [ours, floor] = measure(f, seconds);
        f.pki.swap(pki);
        const double ratio = floor / ours;  // time ratio: how much slower than the floor
        const double target = size < (std::size_t{1} << 20) ? 1.25 : 1.10;
        all_met = all_met && ratio <= target;
        std::printf("%-6s %-7s %-10d %12.1f %12.1f %7.2fx %7.2fx%s\n", size < (1u << 20) ? "10KB" : "1MB",
                    ec ? "P-256" : "RSA2048", recipients, ours, floor, ratio, target, ratio <= target ? "" : "  MISSED");
      }
    }
  }

  std::printf("\nsign+encrypt of a message with a 100 MB attachment, spool to spool (RSA-2048, 2 recipients):\n");
  const double rss = large_message_peak_rss();
  const bool rss_met = rss > 0 && rss < 64.0;
  all_met = all_met && rss_met;
  std::printf("peak RSS %.1f MiB, target < 64 MiB%s\n", rss, rss_met ? "" : "  MISSED");
  std::printf("\n%s\n", all_met ? "all targets met" : "some targets missed");
  return 0;
}
