// The keystore's costs: certificates issued per second, a bulk add of
// 10,000 users (wall time and peak RSS), and lookups and signatures with
// 100,000 users stored: in-process, and through mailkms-keystored over its
// Unix socket and over TLS, at 1 and 8 concurrent clients, each row with
// the CPU every process spent per operation. On SQLite; with --postgresql
// CONNINFO on PostgreSQL as well, there with one and with two keystored
// instances on one database. Targets, checked in the same run: lookup p99
// under 1 ms at 1 client; Unix-socket signing within 1.3x of in-process
// signing, TLS signing within 1.2x of Unix-socket signing (p50, 1 client);
// two instances on one PostgreSQL database at least 1.6x the signatures of
// one, each with cores of its own (projected from CPU per signature where
// the machine has too few cores to show it).
//
//   keystore_bench [--quick] [--postgresql CONNINFO]
//
// CONNINFO: a libpq connection string to a server on which the benchmark
// may create databases (scripts/bench.sh keystore --backend postgresql
// starts a private cluster and passes its own).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "bench_cpu.hpp"
#include "bench_postgres.hpp"
#include "mailkms/keystore/client.hpp"
#include "mailkms/keystore/service.hpp"
#include "mailkms/keystore/service_ca.hpp"
#include "mailkms/smime/sign.hpp"

using namespace mailkms;
using namespace mailkms::keystore;
using mailkms::bench::PostgresServer;
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

[[noreturn]] void fail(const std::string& what) {
  (void)std::fprintf(stderr, "bench: %s\n", what.c_str());
  std::exit(1);
}

const std::string kPassphrase = "benchmark unseal passphrase";

struct Dir {
  std::filesystem::path path = std::filesystem::temp_directory_path() / ("mailkms-bench-" + std::to_string(::getpid()));
  Dir() { std::filesystem::create_directories(path); }
  ~Dir() { std::filesystem::remove_all(path); }
};

std::unique_ptr<KeystoreService> make_keystore(const DatabaseLocation& db, const smime::CryptoContextPtr& ctx,
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

// A: certificates per second from an RSA-2048 and an EC P-256 issuing CA.
void issuance(const smime::CryptoContextPtr& ctx, int count) {
  std::printf("certificate issuance (signing, storing and auditing one certificate)\n");
  for (const KeyType ca_key : {KeyType::rsa2048, KeyType::ec_p256}) {
    const Dir dir;
    auto service = make_keystore(DatabaseLocation::sqlite(dir.path / "k.db"), ctx, KeyType::ec_p256);
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
    {  // the keystore closed and its directory removed before _Exit, which runs no destructor
      const Dir dir;
      auto service = make_keystore(DatabaseLocation::sqlite(dir.path / "k.db"), ctx, KeyType::ec_p256);
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
    }
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

// ---- C: lookups and signatures

// Where the operations' records live.
struct Backend {
  std::string name;  // "SQLite", "PostgreSQL"
  DatabaseLocation location;
  PostgresServer* server = nullptr;  // PostgreSQL's: its CPU and WAL are counted too
};

// One request to the keystore: in-process (KeystoreService::handle) or
// through a KeystoreClient.
using Call = std::function<Result<nlohmann::json>(std::string_view op, const nlohmann::json& params)>;

// Hands the keystore the signed attributes the S/MIME engine makes for a
// short message, and keeps them: what a gateway sends with each "sign".
class AttributeRecorder final : public smime::Signer {
 public:
  AttributeRecorder(Call call, smime::Certificate certificate, smime::SignatureScheme scheme)
      : call_(std::move(call)), certificate_(std::move(certificate)), scheme_(scheme) {}
  [[nodiscard]] const smime::Certificate& certificate() const override { return certificate_; }
  [[nodiscard]] const std::vector<smime::Certificate>& chain() const override { return chain_; }
  [[nodiscard]] smime::SignatureScheme scheme() const override { return scheme_; }
  smime::Result<std::string> sign(smime::Digest digest, std::string_view to_be_signed) override {
    attributes = std::string(to_be_signed);
    const auto signed_ = call_(protocol::op::sign, {{"address", "alice@example.org"},
                                                    {"digest", std::string(smime::name(digest))},
                                                    {"data", protocol::base64(to_be_signed)}});
    if (!signed_) return smime::make_error(smime::Errc::key_operation_failed, signed_.error().message);
    auto signature = protocol::unbase64(signed_->value("signature", ""));
    if (!signature) return smime::make_error(smime::Errc::key_operation_failed, signature.error().message);
    return std::move(*signature);
  }
  std::string attributes;

 private:
  Call call_;
  smime::Certificate certificate_;
  std::vector<smime::Certificate> chain_;
  smime::SignatureScheme scheme_;
};

// The parameters of alice's "sign", with signed attributes made now: the
// keystore signs only a signingTime within five minutes of its clock, and
// a whole run takes longer, so each phase asks for its own.
nlohmann::json fresh_sign_params(const smime::CryptoContext& ctx, const Call& call) {
  const auto identity = must(call(protocol::op::signing_identity, {{"address", "alice@example.org"}}), "signing identity");
  auto certificate = must(smime::Certificate::from_pem(identity.value("certificate", "")), "alice's certificate");
  AttributeRecorder recorder(call, std::move(certificate),
                             identity.value("scheme", "") == "ecdsa" ? smime::SignatureScheme::ecdsa
                                                                     : smime::SignatureScheme::rsa_pkcs1v15);
  const std::string message =
      "From: alice@example.org\r\nTo: bob@example.net\r\nSubject: benchmark\r\n\r\nA short message.\r\n";
  must(smime::sign_message(ctx, message, recorder, smime::SignOptions{}), "sign a message");
  return {{"address", "alice@example.org"}, {"digest", "sha256"}, {"data", protocol::base64(recorder.attributes)}};
}

nlohmann::json lookup_params(std::mt19937& rng, int stored_users) {
  return {{"addresses", {"user" + std::to_string(rng() % static_cast<unsigned>(stored_users)) + "@example.org"}}};
}

// What a phase cost each process: CPU seconds, and PostgreSQL's WAL bytes.
struct Usage {
  double own = 0;        // this process: the clients, or the whole keystore in-process
  double keystored = 0;  // every keystored instance serving the phase
  double postgres = 0;   // the postmaster and all its children
  double wal = 0;
};

// Reads the counters a phase's cost is the difference of.
struct Meter {
  std::vector<pid_t> keystored;
  PostgresServer* server = nullptr;

  [[nodiscard]] Usage now() const {
    Usage u;
    u.own = bench::own_cpu_seconds();
    for (const pid_t pid : keystored) u.keystored += bench::cpu_seconds(pid);
    if (server != nullptr && server->postmaster()) u.postgres = bench::tree_cpu_seconds(*server->postmaster());
    if (server != nullptr) u.wal = static_cast<double>(server->wal_bytes());
    return u;
  }
};

struct Phase {
  std::string op;     // "lookup", "sign"
  std::string where;  // "in-process", "unix", "tls"
  int instances = 0;  // keystored instances serving it; 0 in-process
  int clients = 1;
  Latencies latencies;
  Usage per_op;  // CPU in microseconds, WAL in bytes
};

void print_header() {
  std::printf("%-9s %-10s %4s %7s %9s %8s %8s %10s %12s %11s %8s\n", "operation", "where", "inst", "clients", "ops/s",
              "p50 us", "p99 us", "client us", "keystored us", "postgres us", "WAL B");
}

void print_row(const Phase& p, bool postgres) {
  const auto cpu = [](double us, bool shown) {
    char cell[32];
    if (shown) (void)std::snprintf(cell, sizeof cell, "%.0f", us);
    else (void)std::snprintf(cell, sizeof cell, "-");
    return std::string(cell);
  };
  std::printf("%-9s %-10s %4s %7d %9.0f %8.0f %8.0f %10s %12s %11s %8s\n", p.op.c_str(), p.where.c_str(),
              p.instances == 0 ? "-" : std::to_string(p.instances).c_str(), p.clients, p.latencies.rate(),
              p.latencies.percentile(0.50), p.latencies.percentile(0.99), cpu(p.per_op.own, true).c_str(),
              cpu(p.per_op.keystored, p.instances > 0).c_str(), cpu(p.per_op.postgres, postgres).c_str(),
              cpu(p.per_op.wal, postgres).c_str());
  (void)std::fflush(stdout);
}

// Runs `op` `total` times over `clients` threads, after a few untimed
// calls each (connections made, TLS handshakes done), and charges the
// phase's CPU and WAL to its operations.
template <class Op>
Phase measure(const Meter& meter, Phase phase, int total, Op op) {
  (void)run_clients(phase.clients, 4, op);
  const Usage before = meter.now();
  phase.latencies = run_clients(phase.clients, total / phase.clients, op);
  const Usage after = meter.now();
  const auto n = static_cast<double>(phase.latencies.micros.size());
  phase.per_op = {(after.own - before.own) * 1e6 / n, (after.keystored - before.keystored) * 1e6 / n,
                  (after.postgres - before.postgres) * 1e6 / n, (after.wal - before.wal) / n};
  print_row(phase, meter.server != nullptr);
  return phase;
}

// The keystore's service CA certifies both ends of TLS: keystored's
// certificate names 127.0.0.1, what clients dial; the gateway's is what
// may look up and sign.
struct TlsFiles {
  std::filesystem::path service_ca;
  std::filesystem::path server_certificate;
  std::filesystem::path server_key;
  std::filesystem::path client_certificate;
  std::filesystem::path client_key;
};

void write_file(const std::filesystem::path& path, const std::string& content, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0 || ::write(fd, content.data(), content.size()) != static_cast<ssize_t>(content.size())) {
    fail("cannot write " + path.string() + ": " + std::strerror(errno));
  }
  ::close(fd);
}

TlsFiles issue_tls_files(KeystoreService& service, const std::filesystem::path& dir) {
  TlsFiles files{dir / "service-ca.pem", dir / "keystore.pem", dir / "keystore.key", dir / "gateway.pem",
                       dir / "gateway.key"};
  write_file(files.service_ca, must(service.service_ca().certificate("bench"), "service CA").pem(), 0644);
  const auto certify = [&](const std::string& name, PeerRole role, const std::filesystem::path& certificate,
                           const std::filesystem::path& key) {
    const auto made = must(new_service_key_request(name), "service key");
    write_file(key, made.key_pem, 0600);  // keystored refuses a TLS key others can read
    write_file(certificate,
               must(service.service_ca().issue(name, role, made.request_pem, 30, "bench"), "service certificate").certificate.pem(),
               0644);
  };
  certify("127.0.0.1", PeerRole::keystore, files.server_certificate, files.server_key);
  certify("mx1.bench.example", PeerRole::gateway, files.client_certificate, files.client_key);
  return files;
}

// A new keystore with alice and `stored_users` more, and the TLS files.
TlsFiles prepare_keystore(const Backend& backend, const smime::CryptoContextPtr& ctx, int stored_users,
                          const std::filesystem::path& dir) {
  auto service = make_keystore(backend.location, ctx, KeyType::rsa2048);
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
  return issue_tls_files(*service, dir);
}

// Lookups and signatures, one client, in this process.
std::vector<Phase> measure_in_process(const Backend& backend, const smime::CryptoContextPtr& ctx, int stored_users,
                                      int ops) {
  AccessPolicy access;
  access.key_uses_per_second = 0;  // no rate limit: the benchmark measures what the keystore can do
  auto service = must(KeystoreService::open(backend.location, ctx, access), "open");
  must(service->handle({}, {1, std::string(protocol::op::unseal), {{"passphrase", kPassphrase}}}), "unseal");
  const Caller root{};
  const Call call = [&](std::string_view op, const nlohmann::json& params) {
    return service->handle(root, {1, std::string(op), params});
  };
  const Meter meter{{}, backend.server};
  std::vector<Phase> phases;
  phases.push_back(measure(meter, {"lookup", "in-process", 0, 1, {}, {}}, ops, [&](int, std::mt19937& rng) {
    must(call(protocol::op::lookup_certificates, lookup_params(rng, stored_users)), "lookup");
  }));
  const auto sign_params = fresh_sign_params(*ctx, call);
  phases.push_back(measure(meter, {"sign", "in-process", 0, 1, {}, {}}, ops / 4,
                           [&](int, std::mt19937&) { must(call(protocol::op::sign, sign_params), "sign"); }));
  return phases;
}

// ---- keystored instances

struct Instance {
  pid_t pid = -1;
  std::filesystem::path socket;
  std::string tls_port;
  std::filesystem::path log;
};

// A TCP port on 127.0.0.1 that nothing listens on now.
std::string free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    fail(std::string("cannot find a free port: ") + std::strerror(errno));
  }
  ::close(fd);
  return std::to_string(ntohs(address.sin_port));
}

std::string toml_string(const std::string& text) {
  std::string quoted = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') quoted += '\\';
    quoted += c;
  }
  return quoted + "\"";
}

// mailkms.conf for instance `index`: its own socket, port and audit
// checkpoints, the one database. It runs as this process's user, which is
// also the gateway's (as the milter's user would be); no rate limit.
std::filesystem::path write_config(const Backend& backend, const TlsFiles& tls, const std::filesystem::path& dir,
                                   int index, const Instance& instance) {
  auto config = dir / ("mailkms-" + std::to_string(index) + ".conf");
  const std::string uid = std::to_string(::geteuid());
  const std::string database =
      backend.location.is_file() ? backend.location.file.string() : backend.location.conninfo;
  std::ofstream(config) << "[keystore]\ndatabase = " << toml_string(database)
                        << "\nsocket = " << toml_string(instance.socket.string()) << "\nuser = " << uid
                        << "\ngateway_users = [" << uid << "]\ngateway_rate_limit = 0\nlock_memory = false\nworkers = 2\n"
                        << "audit_checkpoint_file = "
                        << toml_string((dir / ("audit-checkpoints-" + std::to_string(index))).string())
                        << "\ntls_listen = [\"127.0.0.1:" << instance.tls_port << "\"]\ntls_certificate = "
                        << toml_string(tls.server_certificate.string()) << "\ntls_key = " << toml_string(tls.server_key.string())
                        << "\nservice_ca = " << toml_string(tls.service_ca.string()) << "\n";
  return config;
}

void stop(Instance& instance) {
  if (instance.pid <= 0) return;
  ::kill(instance.pid, SIGTERM);
  ::waitpid(instance.pid, nullptr, 0);
  instance.pid = -1;
}

std::unique_ptr<KeystoreClient> make_client(const std::vector<std::string>& endpoints, const TlsFiles& tls) {
  ClientOptions options{{}, std::chrono::seconds(30), 16, std::to_string(::geteuid())};
  for (const auto& e : endpoints) options.endpoints.push_back(must(Endpoint::parse(e), "endpoint"));
  options.tls = {tls.client_certificate, tls.client_key, tls.service_ca};
  return std::make_unique<KeystoreClient>(std::move(options));
}

// Starts keystored `index` on the backend's database and unseals it over
// its socket (TLS unseals for administrators' hosts alone).
Instance start_keystored(const Backend& backend, const TlsFiles& tls, const std::filesystem::path& dir, int index) {
  Instance instance{-1, dir / ("k" + std::to_string(index) + ".sock"), free_port(),
                    dir / ("keystored-" + std::to_string(index) + ".log")};
  const auto config = write_config(backend, tls, dir, index, instance);
  (void)std::fflush(stdout);
  instance.pid = ::fork();
  if (instance.pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // gone with the benchmark, however it ends
    if (std::freopen(instance.log.c_str(), "w", stderr) == nullptr) std::_Exit(126);
    ::execl(MAILKMS_KEYSTORED, MAILKMS_KEYSTORED, "--config", config.c_str(), static_cast<char*>(nullptr));
    std::_Exit(127);
  }
  for (int i = 0; i < 1000 && !std::filesystem::exists(instance.socket); ++i) {
    if (::waitpid(instance.pid, nullptr, WNOHANG) == instance.pid) {
      std::ifstream log(instance.log);
      fail("mailkms-keystored " + std::to_string(index) + " exited: " +
           std::string(std::istreambuf_iterator<char>(log), std::istreambuf_iterator<char>()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  must(make_client({"unix:" + instance.socket.string()}, tls)->call(protocol::op::unseal, {{"passphrase", kPassphrase}}),
       "unseal keystored");
  return instance;
}

// Lookups and signatures through `endpoints` (one instance's, or each of
// several instances' in turn), at each number of clients.
std::vector<Phase> measure_served(const smime::CryptoContext& ctx, const Meter& meter, const std::string& where,
                                  const std::vector<std::string>& endpoints, const TlsFiles& tls,
                                  const std::vector<int>& client_counts, int stored_users, int ops) {
  auto client = make_client(endpoints, tls);
  const Call call = [&](std::string_view op, const nlohmann::json& params) { return client->call(op, params); };
  const int instances = static_cast<int>(endpoints.size());
  std::vector<Phase> phases;
  for (const int clients : client_counts) {
    phases.push_back(measure(meter, {"lookup", where, instances, clients, {}, {}}, ops, [&](int, std::mt19937& rng) {
      must(call(protocol::op::lookup_certificates, lookup_params(rng, stored_users)), "lookup");
    }));
    const auto sign_params = fresh_sign_params(ctx, call);
    phases.push_back(measure(meter, {"sign", where, instances, clients, {}, {}}, ops / 4,
                             [&](int, std::mt19937&) { must(call(protocol::op::sign, sign_params), "sign"); }));
  }
  return phases;
}

// Unix-socket and TLS signs at 1 client, in alternating rounds: the two
// phases above run a minute apart, and this machine's speed drifts more
// than that within a minute (a sign's p50 moved 30% between runs of the
// same build). Alternating, each sees the same drift.
struct Interleaved {
  Latencies unix_socket;
  Latencies tls;
  int rounds = 0;
  int per_round = 0;
};

Interleaved interleave_signs(const smime::CryptoContext& ctx, const std::string& unix_endpoint,
                             const std::string& tls_endpoint, const TlsFiles& tls, int ops) {
  auto over_unix = make_client({unix_endpoint}, tls);
  auto over_tls = make_client({tls_endpoint}, tls);
  const Call call = [&](std::string_view op, const nlohmann::json& params) { return over_unix->call(op, params); };
  const auto sign_params = fresh_sign_params(ctx, call);
  Interleaved out;
  out.rounds = 20;
  out.per_round = std::max(5, ops / 4 / out.rounds);
  const auto sign_with = [&](KeystoreClient& client) {
    return [&](int, std::mt19937&) { must(client.call(protocol::op::sign, sign_params), "sign"); };
  };
  (void)run_clients(1, 4, sign_with(*over_unix));
  (void)run_clients(1, 4, sign_with(*over_tls));
  const auto append = [](Latencies& all, const Latencies& round) {
    all.micros.insert(all.micros.end(), round.micros.begin(), round.micros.end());
    all.seconds += round.seconds;
  };
  for (int round = 0; round < out.rounds; ++round) {
    // ABBA: neither goes first more often than the other.
    const bool unix_first = round % 2 == 0;
    for (int half = 0; half < 2; ++half) {
      const bool unix_now = (half == 0) == unix_first;
      append(unix_now ? out.unix_socket : out.tls,
             run_clients(1, out.per_round, sign_with(unix_now ? *over_unix : *over_tls)));
    }
  }
  return out;
}

// ---- the targets

const Phase& phase_of(const std::vector<Phase>& phases, const std::string& op, const std::string& where, int instances,
                  int clients) {
  for (const auto& p : phases) {
    if (p.op == op && p.where == where && p.instances == instances && p.clients == clients) return p;
  }
  fail("no phase " + op + " " + where + " x" + std::to_string(instances) + " at " + std::to_string(clients));
}

const char* verdict(bool held) { return held ? "" : "  MISSED"; }

void report_latency_targets(const std::vector<Phase>& phases, const Interleaved& interleaved) {
  const double in_process = phase_of(phases, "lookup", "in-process", 0, 1).latencies.percentile(0.99);
  const double unix_socket = phase_of(phases, "lookup", "unix", 1, 1).latencies.percentile(0.99);
  const double tls = phase_of(phases, "lookup", "tls", 1, 1).latencies.percentile(0.99);
  const double worst = std::max({in_process, unix_socket, tls});
  std::printf("lookup p99, 1 client: in-process %.0f us, unix %.0f us, TLS %.0f us (target < 1000 us)%s\n", in_process,
              unix_socket, tls, verdict(worst < 1000));
  const double sign_in = phase_of(phases, "sign", "in-process", 0, 1).latencies.percentile(0.50);
  const double sign_unix = phase_of(phases, "sign", "unix", 1, 1).latencies.percentile(0.50);
  const double sign_tls = phase_of(phases, "sign", "tls", 1, 1).latencies.percentile(0.50);
  std::printf("unix sign p50 / in-process sign p50 = %.0f / %.0f us = %.2fx (target <= 1.30x)%s\n", sign_unix, sign_in,
              sign_unix / sign_in, verdict(sign_unix / sign_in <= 1.3));
  std::printf("TLS sign p50 / unix sign p50, in the phases above = %.0f / %.0f us = %.2fx\n", sign_tls, sign_unix,
              sign_tls / sign_unix);
  const double unix_alternating = interleaved.unix_socket.percentile(0.50);
  const double tls_alternating = interleaved.tls.percentile(0.50);
  std::printf("TLS sign p50 / unix sign p50, in %d alternating rounds of %d = %.0f / %.0f us = %.2fx "
              "(target <= 1.20x)%s\n",
              interleaved.rounds, interleaved.per_round, tls_alternating, unix_alternating,
              tls_alternating / unix_alternating, verdict(tls_alternating / unix_alternating <= 1.2));
}

// Two instances against one, signing over TLS at 8 clients. On a machine
// where the clients, both instances and PostgreSQL share two cores, the
// measured ratio says little; the CPU each spends per signature says what
// a core per instance (and one for PostgreSQL) would give.
void report_scaling_target(const std::vector<Phase>& phases) {
  const Phase& one = phase_of(phases, "sign", "tls", 1, 8);
  const Phase& two = phase_of(phases, "sign", "tls", 2, 8);
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const double all = one.per_op.own + one.per_op.keystored + one.per_op.postgres;
  std::printf("two keystored instances on one PostgreSQL database, signing over TLS, 8 clients:\n");
  std::printf("  measured: %.0f signs/s = %.2fx one instance's %.0f, on %u cores shared by the clients, the\n"
              "  instances and PostgreSQL (one instance's run kept %.2f of them busy, %.0f us of CPU per sign)\n",
              two.latencies.rate(), two.latencies.rate() / one.latencies.rate(), one.latencies.rate(), cores,
              one.latencies.rate() * all / 1e6, all);
  const double keystored = one.per_op.keystored;
  const double postgres = std::max(one.per_op.postgres, 1.0);
  const double one_bound = std::min(1e6 / keystored, 1e6 / postgres);
  const double two_bound = std::min(2e6 / keystored, 1e6 / postgres);
  const double projected = two_bound / one_bound;
  std::printf("  CPU per sign, one instance: keystored %.0f us, PostgreSQL %.0f us, clients %.0f us\n", keystored,
              one.per_op.postgres, one.per_op.own);
  std::printf("  -> with a core per instance and one for PostgreSQL: one instance <= %.0f signs/s, two <= %.0f\n"
              "  (PostgreSQL's core then %.0f%% busy): two / one = %.2fx (target >= 1.60x, projected)%s\n"
              "  (a bound from CPU alone: what else the instances share is in bench/README.md)\n",
              one_bound, two_bound, 100.0 * two_bound * postgres / 1e6, projected, verdict(projected >= 1.6));
}

// ---- C, on one backend

void print_backend(const Backend& backend, int stored_users) {
  std::printf("lookups and signatures, %s, %d users stored (RSA-2048 signing key); CPU per operation\n",
              backend.name.c_str(), stored_users);
  if (backend.server != nullptr) {
    const std::string durability = backend.server->durability();
    std::printf("  %s\n", durability.c_str());
    if (durability.find("fsync=off") != std::string::npos) {
      std::printf("  (fsync off, as in tests/integration/postgresql.sh's cluster, made by initdb --no-sync: no commit\n"
                  "  waits for the disk; \"WAL B\" is what each operation writes, the audit records in batches)\n");
    }
    if (!backend.server->postmaster()) std::printf("  (the server is on another host: its CPU is not counted)\n");
  }
  print_header();
}

void operations(const smime::CryptoContextPtr& ctx, const Backend& backend, const std::filesystem::path& dir,
                int stored_users, int ops) {
  const auto prepare_start = Stopwatch::now();
  const TlsFiles tls = prepare_keystore(backend, ctx, stored_users, dir);
  const double prepared = std::chrono::duration<double>(Stopwatch::now() - prepare_start).count();
  print_backend(backend, stored_users);
  std::vector<Phase> phases = measure_in_process(backend, ctx, stored_users, ops);

  Instance first = start_keystored(backend, tls, dir, 0);
  Meter meter{{first.pid}, backend.server};
  for (const auto& [where, endpoint] : {std::pair{"unix", "unix:" + first.socket.string()},
                                        std::pair{"tls", "tls://127.0.0.1:" + first.tls_port}}) {
    auto measured = measure_served(*ctx, meter, where, {endpoint}, tls, {1, 8}, stored_users, ops);
    phases.insert(phases.end(), measured.begin(), measured.end());
  }
  const Interleaved interleaved =
      interleave_signs(*ctx, "unix:" + first.socket.string(), "tls://127.0.0.1:" + first.tls_port, tls, ops);
  const bool shared_database = !backend.location.is_file();
  if (shared_database) {
    Instance second = start_keystored(backend, tls, dir, 1);
    meter.keystored.push_back(second.pid);
    for (const auto& [where, a, b] :
         {std::tuple{"unix", "unix:" + first.socket.string(), "unix:" + second.socket.string()},
          std::tuple{"tls", "tls://127.0.0.1:" + first.tls_port, "tls://127.0.0.1:" + second.tls_port}}) {
      auto measured = measure_served(*ctx, meter, where, {a, b}, tls, {1, 8}, stored_users, ops);
      phases.insert(phases.end(), measured.begin(), measured.end());
    }
    stop(second);
  }
  stop(first);

  std::printf("(keystore made and %d users stored in %.1f s)\n", stored_users, prepared);
  report_latency_targets(phases, interleaved);
  if (shared_database) report_scaling_target(phases);
}

struct Options {
  bool quick = false;
  std::string postgresql;  // a server's connection string: PostgreSQL as well
};

Options parse_options(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      options.quick = true;
    } else if (arg == "--postgresql" && i + 1 < argc) {
      options.postgresql = argv[++i];
    } else {
      fail("usage: keystore_bench [--quick] [--postgresql CONNINFO]; not " + arg);
    }
  }
  return options;
}

}  // namespace

int run(int argc, char** argv) {
  const Options options = parse_options(argc, argv);
  auto ctx = must(smime::CryptoContext::create(), "OpenSSL");
  issuance(ctx, options.quick ? 100 : 500);
  std::printf("\n");
  bulk_add(ctx, options.quick ? 1000 : 10000);
  const int stored_users = options.quick ? 10000 : 100000;
  const int ops = options.quick ? 2000 : 8000;
  {
    const Dir dir;
    std::printf("\n");
    operations(ctx, {"SQLite", DatabaseLocation::sqlite(dir.path / "k.db")}, dir.path, stored_users, ops);
  }
  if (!options.postgresql.empty()) {
    PostgresServer server(options.postgresql);
    const std::string name = "mailkms_bench_" + std::to_string(::getpid());
    const auto location = must(DatabaseLocation::parse(server.create_database(name)), "database");
    {
      const Dir dir;
      std::printf("\n");
      operations(ctx, {"PostgreSQL", location, &server}, dir.path, stored_users, ops);
    }
    server.drop_database(name);
  }
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
