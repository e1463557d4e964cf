// The keystore's costs: certificates issued per second, a bulk add of
// 10,000 users (wall time and peak RSS), and lookups and signatures over
// the daemon's socket at 1 and 8 concurrent clients next to the same
// operations in-process, measured in the same run. Targets: lookup p99
// under 1 ms with 100,000 users stored; socket signing within 1.3x of
// in-process signing.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "mailkms/keystore/client.hpp"
#include "mailkms/keystore/service.hpp"

using namespace mailkms;
using namespace mailkms::keystore;
using Stopwatch = std::chrono::steady_clock;  // not keystore::Clock, the service's injectable time

namespace {

template <class R>
auto must(R r, const char* what) {
  if (!r) {
    (void)std::fprintf(stderr, "bench: %s: %s\n", what, r.error().describe().c_str());
    std::exit(1);
  }
  return std::move(r).value();
}

const std::string kPassphrase = "benchmark unseal passphrase";

struct Dir {
  std::filesystem::path path = std::filesystem::temp_directory_path() / ("mailkms-bench-" + std::to_string(::getpid()));
  Dir() { std::filesystem::create_directories(path); }
  ~Dir() { std::filesystem::remove_all(path); }
};

std::unique_ptr<KeystoreService> make_keystore(const std::filesystem::path& db, const smime::CryptoContextPtr& ctx,
                                               KeyType user_keys) {
  auto master = new_master_key();
  const auto seal = must(seal_with_passphrase(master, kPassphrase, {1 << 14, 8, 1}), "seal");
  KeystoreService::Policies policies;
  policies.users = {user_keys, user_keys, 365};
  policies.admins.password_kdf = {1 << 10, 8, 1};
  auto service = must(KeystoreService::initialize(db, ctx, seal, std::move(master), "bench", "benchmark password", {},
                                                  policies),
                      "initialize");
  must(service->ca().create_root("root", "Bench Root", KeyType::ec_p384, 3650, "bench"), "root");
  return service;
}

struct Latencies {
  std::vector<double> micros;
  double seconds = 0;
  [[nodiscard]] double percentile(double p) const {
    std::vector<double> sorted = micros;
    std::sort(sorted.begin(), sorted.end());
    return sorted[std::min(sorted.size() - 1, static_cast<std::size_t>(p * static_cast<double>(sorted.size())))];
  }
  [[nodiscard]] double rate() const { return static_cast<double>(micros.size()) / seconds; }
};

template <class Op>
Latencies run_clients(int clients, int per_client, Op op) {
  std::vector<std::vector<double>> each(static_cast<std::size_t>(clients));
  const auto start = Stopwatch::now();
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(clients));
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      std::mt19937 rng(static_cast<unsigned>(c) * 7919u + 1);
      for (int i = 0; i < per_client; ++i) {
        const auto t0 = Stopwatch::now();
        op(c, rng);
        each[static_cast<std::size_t>(c)].push_back(std::chrono::duration<double, std::micro>(Stopwatch::now() - t0).count());
      }
    });
  }
  for (auto& t : threads) t.join();
  Latencies out;
  out.seconds = std::chrono::duration<double>(Stopwatch::now() - start).count();
  for (const auto& e : each) out.micros.insert(out.micros.end(), e.begin(), e.end());
  return out;
}

void row(const char* what, const char* where, int clients, const Latencies& l) {
  std::printf("%-10s %-11s %7d %12.0f %10.0f %10.0f\n", what, where, clients, l.rate(), l.percentile(0.50),
              l.percentile(0.99));
}

// A: certificates per second from an RSA-2048 and an EC P-256 issuing CA.
void issuance(const smime::CryptoContextPtr& ctx, int count) {
  std::printf("certificate issuance (signing, storing and auditing one certificate)\n");
  for (const KeyType ca_key : {KeyType::rsa2048, KeyType::ec_p256}) {
    Dir dir;
    auto service = make_keystore(dir.path / "k.db", ctx, KeyType::ec_p256);
    must(service->ca().create_issuing("issuing", "root", "Bench Issuing", ca_key, 365, 1, "bench"), "issuing");
    std::vector<smime::PrivateKey> keys;
    keys.reserve(static_cast<std::size_t>(count));
    for (int i = 0; i < count; ++i) keys.push_back(must(generate_key(*ctx, KeyType::ec_p256), "key"));
    const auto start = Stopwatch::now();
    for (int i = 0; i < count; ++i) {
      must(service->ca().issue(keys[static_cast<std::size_t>(i)].native(), "u" + std::to_string(i) + "@example.org",
                               Profile::encryption, 365, "bench"),
           "issue");
    }
    const double s = std::chrono::duration<double>(Stopwatch::now() - start).count();
    std::printf("  issuing CA %-9s %8.0f certificates/s\n", std::string(to_string(ca_key)).c_str(), count / s);
  }
}

// B: a bulk add, in a child so its peak RSS is its own.
void bulk_add(const smime::CryptoContextPtr& ctx, int users) {
  (void)std::fflush(stdout);
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) return;
  const pid_t child = ::fork();
  if (child == 0) {
    Dir dir;
    auto service = make_keystore(dir.path / "k.db", ctx, KeyType::ec_p256);
    must(service->ca().create_issuing("issuing", "root", "Bench Issuing", KeyType::ec_p256, 365, 1, "bench"), "issuing");
    std::vector<std::string> addresses;
    addresses.reserve(static_cast<std::size_t>(users));
    for (int i = 0; i < users; ++i) addresses.push_back("user" + std::to_string(i) + "@example.org");
    const auto start = Stopwatch::now();
    const BulkSummary summary = service->users().add_many(addresses, "bench");
    const double s = std::chrono::duration<double>(Stopwatch::now() - start).count();
    char line[128];
    const int n = std::snprintf(line, sizeof line, "%zu %.2f", summary.added, s);
    (void)!::write(pipe_fds[1], line, static_cast<std::size_t>(n));
    std::_Exit(0);
  }
  ::close(pipe_fds[1]);
  char line[128] = {};
  (void)!::read(pipe_fds[0], line, sizeof line - 1);
  ::close(pipe_fds[0]);
  int status = 0;
  rusage usage{};
  ::wait4(child, &status, 0, &usage);
  std::size_t added = 0;
  double seconds = 0;
  std::istringstream(line) >> added >> seconds;
  std::printf("bulk add of %d users (EC P-256 keys, 2 certificates each, escrow, audit)\n", users);
  std::printf("  %zu added in %.1f s (%.0f users/s), peak RSS %.1f MiB\n", added, seconds, static_cast<double>(added) / seconds,
              static_cast<double>(usage.ru_maxrss) / 1024.0);
}

// C: lookups and signatures, in-process and over the socket.
void operations(const smime::CryptoContextPtr& ctx, int stored_users, int ops) {
  Dir dir;
  const auto db = dir.path / "k.db";
  {
    auto service = make_keystore(db, ctx, KeyType::rsa2048);
    must(service->ca().create_issuing("issuing", "root", "Bench Issuing", KeyType::ec_p256, 365, 1, "bench"), "issuing");
    must(service->users().add("alice@example.org", "bench"), "alice");
    // The stored population: records like alice's, sharing her certificate,
    // so that 100,000 users cost no 200,000 key generations.
    const auto alice = must(service->storage().get("users/alice@example.org"), "alice record");
    must(service->storage().transaction([&]() -> Status {
      for (int i = 0; i < stored_users; ++i) {
        std::string record = *alice;
        const std::string address = "user" + std::to_string(i) + "@example.org";
        record.replace(record.find("alice@example.org"), 17, address);
        MAILKMS_CHECK(service->storage().put("users/" + address, record));
      }
      return Ok{};
    }), "populate");
  }
  auto service = must(KeystoreService::open(db, ctx, {}), "open");
  must(service->handle({}, {1, "unseal", {{"passphrase", kPassphrase}}}), "unseal");
  const Caller root{};
  std::string tbs(180, 'a');  // about the size of real signed attributes
  const nlohmann::json sign_params{{"address", "alice@example.org"}, {"digest", "sha256"}, {"data", protocol::base64(tbs)}};
  const auto lookup_params = [&](std::mt19937& rng) {
    return nlohmann::json{{"addresses", {"user" + std::to_string(rng() % static_cast<unsigned>(stored_users)) + "@example.org"}}};
  };

  std::printf("lookups and signatures, %d users stored (RSA-2048 signing key)\n", stored_users);
  std::printf("%-10s %-11s %7s %12s %10s %10s\n", "operation", "where", "clients", "ops/s", "p50 us", "p99 us");
  const Latencies lookup_in = run_clients(1, ops, [&](int, std::mt19937& rng) {
    must(service->handle(root, {1, "lookup-certificates", lookup_params(rng)}), "lookup");
  });
  row("lookup", "in-process", 1, lookup_in);
  const Latencies sign_in = run_clients(1, ops / 4, [&](int, std::mt19937&) { must(service->handle(root, {1, "sign", sign_params}), "sign"); });
  row("sign", "in-process", 1, sign_in);
  service.reset();

  // The daemon, on the same database.
  const auto config = dir.path / "mailkms.conf";
  {
    std::ofstream(config) << "[keystore]\ndatabase = \"" << db.string() << "\"\nsocket = \"" << (dir.path / "k.sock").string()
                          << "\"\nlock_memory = false\nworkers = 2\n";
  }
  const pid_t daemon = ::fork();
  if (daemon == 0) {
    if (std::freopen("/dev/null", "w", stderr) == nullptr) std::_Exit(126);
    ::execl(MAILKMS_KEYSTORED, MAILKMS_KEYSTORED, "--config", config.c_str(), static_cast<char*>(nullptr));
    std::_Exit(127);
  }
  for (int i = 0; i < 500 && !std::filesystem::exists(dir.path / "k.sock"); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  KeystoreClient client({dir.path / "k.sock", std::chrono::seconds(30), 16});
  must(client.call("unseal", {{"passphrase", kPassphrase}}), "unseal daemon");
  Latencies lookup_socket[2];
  Latencies sign_socket[2];
  for (int i = 0; i < 2; ++i) {
    const int clients = i == 0 ? 1 : 8;
    lookup_socket[i] = run_clients(clients, ops / clients, [&](int, std::mt19937& rng) { must(client.call("lookup-certificates", lookup_params(rng)), "lookup"); });
    row("lookup", "socket", clients, lookup_socket[i]);
    sign_socket[i] = run_clients(clients, ops / 4 / clients, [&](int, std::mt19937&) { must(client.call("sign", sign_params), "sign"); });
    row("sign", "socket", clients, sign_socket[i]);
  }
  ::kill(daemon, SIGTERM);
  ::waitpid(daemon, nullptr, 0);

  const double p99 = std::max(lookup_socket[0].percentile(0.99), lookup_in.percentile(0.99));
  const double ratio = sign_socket[0].percentile(0.50) / sign_in.percentile(0.50);
  std::printf("\nlookup p99 %.0f us (target < 1000 us)%s\n", p99, p99 < 1000 ? "" : "  MISSED");
  std::printf("socket sign p50 / in-process sign p50 = %.2fx (target <= 1.30x)%s\n", ratio, ratio <= 1.3 ? "" : "  MISSED");
}

}  // namespace

int run(int argc, char** argv) {
  bool quick = false;
  for (int i = 1; i < argc; ++i) quick = quick || std::strcmp(argv[i], "--quick") == 0;
  auto ctx = must(smime::CryptoContext::create(), "OpenSSL");
  issuance(ctx, quick ? 100 : 500);
  std::printf("\n");
  bulk_add(ctx, quick ? 1000 : 10000);
  std::printf("\n");
  operations(ctx, quick ? 10000 : 100000, quick ? 2000 : 8000);
  return 0;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    (void)std::fprintf(stderr, "bench: %s\n", e.what());
  } catch (...) {
    (void)std::fprintf(stderr, "bench: an unknown exception\n");
  }
  return 1;
}
