// The real mailkms-keystored on a temporary socket, driven through the
// client library: unsealing, the gateway's lookups, signing and
// decryption with keys that never leave the daemon, harvested outside
// certificates, enrollment by mail, and bad input.
#include <catch2/catch.hpp>

#include <poll.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <regex>
#include <thread>

#include "mailkms/keystore/client.hpp"
#include "mailkms/keystore/protocol.hpp"
#include "mailkms/keystore/service.hpp"
#include "mailkms/smime/encrypt.hpp"
#include "mailkms/smime/open.hpp"
#include "keystored_process.hpp"
#include "test_database.hpp"
#include "test_support.hpp"

using namespace mailkms;
using namespace mailkms::keystore;
using test::must;
using namespace std::chrono_literals;

namespace {

const std::string kPassphrase = "a long enough passphrase";
const std::string kAdminPassword = "carol's long password";

// A keystore with a CA and two users, made with the library, then the
// daemon started on it.
class Daemon {
 public:
  explicit Daemon(const std::string& extra_config = "") {
    chmod(dir.path("").c_str(), 0755);  // so a test client running as nobody, in root's group, can reach the socket
    {
      auto record = must(seal_with_passphrase(ok_master(), kPassphrase, {1 << 10, 8, 1}));
      KeystoreService::Policies policies;
      policies.users = {KeyType::rsa2048, KeyType::rsa2048, 365};
      policies.admins.password_kdf = {1 << 10, 8, 1};
      auto service = must(KeystoreService::initialize(database.location(), test::context(), record, take_master(), "carol",
                                                    kAdminPassword, {}, policies));
      must(service->ca().create_root("root", "Root", KeyType::ec_p384, 3650, "test"));
      must(service->ca().create_issuing("issuing", "root", "Issuing", KeyType::ec_p256, 1825, 1, "test"));
      must(service->users().add("alice@example.org", "test"));
      must(service->users().add("bob@example.org", "test"));
      root_pem = must(service->ca().get("root")).certificate->pem();
    }
    test::write_file(dir.path("mailkms.conf"), "[keystore]\n"
                                               "database = " + database.toml() + "\n"
                                               "socket = \"" + socket().string() + "\"\n"
                                               "socket_mode = \"0660\"\n"
                                               "lock_memory = false\n" + extra_config);
    start();
  }
  ~Daemon() { stop(); }

  void start() { process_.start(); }
  void signal(int number) { process_.signal(number); }

  // SIGHUP, then waits until the daemon says it took the file or refused it.
  void reload() {
    const auto answers = [&] {
      const std::string text = log();
      std::size_t n = 0;
      for (const char* said : {"configuration reloaded", "reload refused"}) {
        for (auto at = text.find(said); at != std::string::npos; at = text.find(said, at + 1)) ++n;
      }
      return n;
    };
    const std::size_t before = answers();
    signal(SIGHUP);
    for (int i = 0; i < 3000 && answers() == before; ++i) std::this_thread::sleep_for(10ms);
    INFO(process_.log_tail());
    REQUIRE(answers() > before);
  }

  int stop() { return process_.stop(); }

  KeystoreClient client(std::chrono::milliseconds timeout = 10s) { return KeystoreClient({socket(), timeout, 4}); }
  std::filesystem::path socket() const { return dir.path("keystore.sock"); }
  std::string log() const { return process_.log(); }

  test::TempDir dir;
  test::TestDatabase database{dir};
  std::string root_pem;

 private:
  smime::SecretBytes& ok_master() {
    master_ = new_master_key();
    return master_;
  }
  smime::SecretBytes take_master() { return std::move(master_); }
  smime::SecretBytes master_;
  test::KeystoredProcess process_{MAILKMS_KEYSTORED, dir.path("mailkms.conf"), socket(), dir.path("daemon.log")};
};

void unseal(KeystoreClient& client) { must(client.call("unseal", {{"passphrase", kPassphrase}})); }

// Sends raw bytes on a fresh connection and returns what comes back until
// the daemon closes it or `wait` passes.
std::string raw_exchange(const std::filesystem::path& socket, const std::string& bytes, std::chrono::milliseconds wait) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strcpy(address.sun_path, socket.c_str());
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the daemon may close on us mid-way
    sent += static_cast<std::size_t>(n);
  }
  std::string out;
  char buffer[4096];
  const auto deadline = std::chrono::steady_clock::now() + wait;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) {
      out += n == 0 ? "<closed>" : "<error>";
      break;
    }
    out.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

}  // namespace


TEST_CASE("the gateway's operations through the daemon", "[keystored]") {
  Daemon daemon;
  auto client = daemon.client();
  unseal(client);

  SECTION("lookups return current certificates and name the missing") {
    const std::vector<std::string> addresses{"Alice@Example.org", "nobody@example.org"};
    const CertificateLookup found = must(lookup_certificates(client, addresses));
    REQUIRE(found.found.size() == 1);
    CHECK(found.found[0].first == "alice@example.org");
    CHECK(found.found[0].second.certificate.has_email("alice@example.org"));
    CHECK(found.found[0].second.chain.size() == 2);
    CHECK(found.missing == std::vector<std::string>{"nobody@example.org"});
  }

  SECTION("a lookup of more addresses than one request may carry is answered in full") {
    std::vector<std::string> addresses;
    addresses.reserve(2500);
    for (int i = 0; i < 2500; ++i) addresses.push_back("nobody" + std::to_string(i) + "@example.org");
    addresses[2400] = "alice@example.org";
    const CertificateLookup found = must(lookup_certificates(client, addresses));
    REQUIRE(found.found.size() == 1);
    CHECK(found.found[0].first == "alice@example.org");
    CHECK(found.missing.size() == 2499);
  }

  SECTION("a message signed through the daemon verifies with openssl") {
    RemoteSigner signer = must(RemoteSigner::create(client, "alice@example.org"));
    const auto signed_message = smime::sign_message(*test::context(), test::sample_message(), signer, {});
    REQUIRE(signed_message);
    test::write_file(daemon.dir.path("signed.eml"), *signed_message);
    test::write_file(daemon.dir.path("root.pem"), daemon.root_pem);
    const auto r = test::run("openssl cms -verify -purpose smimesign -in " + daemon.dir.path("signed.eml").string() +
                             " -CAfile " + daemon.dir.path("root.pem").string() + " -out /dev/null");
    INFO(r.err);
    CHECK(r.exit_code == 0);
  }

  SECTION("a message encrypted to a user decrypts through the daemon") {
    const std::vector<std::string> bob{"bob@example.org"};
    const auto cert = must(lookup_certificates(client, bob)).found.at(0).second.certificate;
    const std::vector<smime::Recipient> to{{cert, smime::KeyTransport::rsa_oaep_sha256}};
    const auto encrypted = smime::encrypt_message(*test::context(), test::sample_message(), to, {});
    REQUIRE(encrypted);
    RemoteKeyUnwrapper key(client, "bob@example.org", cert);
    smime::KeyUnwrapper* keys[] = {&key};
    const auto opened = smime::open_message(*test::context(), *encrypted, keys, {});
    REQUIRE_FALSE(opened.error);
    CHECK(opened.content.body == "The figures are attached in spirit.\r\nRegards, Alice\r\n");
  }

  SECTION("gateways get the trust anchors and every issuing CA's CRL") {
    const auto trust = must(client.call("trust-anchors", {}));
    REQUIRE(trust["anchors"].size() == 1);
    CHECK(trust["anchors"][0]["certificate"] == daemon.root_pem);
    CHECK(trust["system_roots"] == false);
    const auto crls = must(client.call("crls", {}));
    REQUIRE(crls["crls"].contains("issuing"));
    const auto der = protocol::unbase64(crls["crls"]["issuing"]);
    REQUIRE(der);
    test::write_file(daemon.dir.path("issuing.crl"), *der);
    CHECK(test::run("openssl crl -inform DER -noout -in " + daemon.dir.path("issuing.crl").string()).exit_code == 0);
  }

  SECTION("another user's key is not used, and no key leaves the daemon") {
    const std::vector<std::string> bob{"bob@example.org"};
    const auto cert = must(lookup_certificates(client, bob)).found.at(0).second.certificate;
    const std::vector<smime::Recipient> to{{cert}};
    const auto encrypted = smime::encrypt_message(*test::context(), test::sample_message(), to, {});
    RemoteKeyUnwrapper wrong(client, "alice@example.org", cert);
    smime::KeyUnwrapper* keys[] = {&wrong};
    const auto opened = smime::open_message(*test::context(), *encrypted, keys, {});
    REQUIRE(opened.error);
    CHECK(opened.error->message.find("no encryption key") != std::string::npos);
  }
}

TEST_CASE("a gateway remembers an outside sender's certificate, and lookups hand it out", "[keystored][harvest]") {
  Daemon daemon;
  auto client = daemon.client(60s);
  unseal(client);
  const std::string carol = must(client.call("login", {{"name", "carol"}, {"password", kAdminPassword}}))["token"];
  must(client.call("trust-add", {{"session", carol}, {"pem", test::read_file(test::pki_path("root.pem"))}}));

  const std::vector<smime::Certificate> chain = test::chain();
  const smime::Capabilities capabilities{{smime::Cipher::aes256_gcm, smime::Cipher::aes256_cbc}, true};
  const auto zoe_cert = test::cert("zoe");
  CHECK(must(remember_certificate(client, "Zoe@Partner.Example", zoe_cert, chain, capabilities, 1'700'000'000)));
  // An older message does not roll it back; our own users are never harvested.
  CHECK_FALSE(must(remember_certificate(client, "zoe@partner.example", zoe_cert, chain, std::nullopt, 1'600'000'000)));
  const auto alice = must(lookup_certificates(client, std::vector<std::string>{"alice@example.org"})).found.at(0).second;
  CHECK_FALSE(must(remember_certificate(client, "alice@example.org", alice.certificate, alice.chain, {}, {})));
  // Nor anyone else in their domain, however trusted the CA: a gateway
  // must not plant the certificate mail to our own addresses is encrypted to.
  const auto planted = remember_certificate(client, "frank@example.org", test::cert("frank"), chain, {}, {});
  REQUIRE_FALSE(planted);
  CHECK(planted.error().code == Errc::permission_denied);
  CHECK(planted.error().message.find("frank@example.org is in example.org, a domain this keystore serves") !=
        std::string::npos);
  const auto untrusted = remember_certificate(client, "zoe@partner.example", zoe_cert, {}, {}, {});
  REQUIRE_FALSE(untrusted);
  CHECK(untrusted.error().code == Errc::permission_denied);

  const std::vector<std::string> addresses{"zoe@partner.example", "alice@example.org", "frank@example.org"};
  const CertificateLookup found = must(lookup_certificates(client, addresses));
  REQUIRE(found.found.size() == 2);
  const auto entry = [&](const std::string& address) {
    return std::find_if(found.found.begin(), found.found.end(), [&](const auto& f) { return f.first == address; });
  };
  const auto zoe = entry("zoe@partner.example");
  REQUIRE(zoe != found.found.end());
  CHECK(zoe->second.source == "harvested");
  CHECK(zoe->second.certificate == zoe_cert);
  CHECK(zoe->second.chain == chain);
  REQUIRE(zoe->second.capabilities);
  CHECK(zoe->second.capabilities->ciphers == capabilities.ciphers);
  CHECK(zoe->second.capabilities->rsa_oaep);
  const auto ours = entry("alice@example.org");
  REQUIRE(ours != found.found.end());
  CHECK(ours->second.source == "keystore");
  CHECK_FALSE(ours->second.capabilities);
  CHECK(found.missing == std::vector<std::string>{"frank@example.org"});

  // A message encrypted to what the lookup returned opens with zoe's own key.
  const std::vector<smime::Recipient> to{{zoe->second.certificate, smime::KeyTransport::rsa_oaep_sha256}};
  const auto encrypted = smime::encrypt_message(*test::context(), test::sample_message(), to, {});
  REQUIRE(encrypted);
  auto key = test::unwrapper("zoe");
  smime::KeyUnwrapper* keys[] = {&key};
  const auto opened = smime::open_message(*test::context(), *encrypted, keys, {});
  REQUIRE_FALSE(opened.error);
  CHECK(opened.content.body == "The figures are attached in spirit.\r\nRegards, Alice\r\n");
}

TEST_CASE("bad input gets an answer, not a crash", "[keystored]") {
  Daemon daemon("idle_timeout_seconds = 1\n");
  auto client = daemon.client();
  unseal(client);

  CHECK(client.call("no-such-op", {}).error().code == Errc::invalid_argument);
  CHECK(client.call("sign", {{"address", "alice@example.org"}, {"digest", "sha256"}, {"data", 42}}).error().code ==
        Errc::invalid_argument);
  CHECK(client.call("unwrap", {{"address", "alice@example.org"}, {"serial", "00"}, {"wrapped", "junk"}}).error().code ==
        Errc::invalid_argument);

  const std::string garbage = raw_exchange(daemon.socket(), "{not json\n", 3000ms);
  CHECK(garbage.find("\"code\":\"invalid_argument\"") != std::string::npos);

  const std::string huge = raw_exchange(daemon.socket(), std::string(2 << 20, 'x') + "\n", 3000ms);
  CHECK(huge.find("longer than 1 MiB") != std::string::npos);
  CHECK(huge.find("<closed>") != std::string::npos);

  // Valid JSON nested 400,000 deep, which a recursive copy would overflow the
  // stack on: refused before it is parsed, and the daemon lives on.
  const std::size_t levels = 400'000;
  const std::string deep = raw_exchange(
      daemon.socket(),
      R"({"id":9,"op":"status","params":{"a":)" + std::string(levels, '[') + std::string(levels, ']') + "}}\n", 3000ms);
  CHECK(deep.find("\"id\":0") != std::string::npos);
  CHECK(deep.find("nests deeper than 32 levels") != std::string::npos);

  // A client that connects and never writes is let go after the idle timeout.
  const auto start = std::chrono::steady_clock::now();
  const std::string silent = raw_exchange(daemon.socket(), "", 5000ms);
  CHECK(silent == "<closed>");
  CHECK(std::chrono::steady_clock::now() - start < 4s);

  // Pipelined: two requests in one write, two answers, matched by id.
  const std::string both = raw_exchange(daemon.socket(),
                                        protocol::encode_request({7, "status", {}}) +
                                            protocol::encode_request({8, "status", {}}),
                                        3000ms);
  CHECK(both.find("\"id\":7") != std::string::npos);
  CHECK(both.find("\"id\":8") != std::string::npos);

  // The daemon is still well.
  CHECK(must(client.call("status", {}))["sealed"] == false);
}

namespace {

// What `op` answers to the user nobody (in the socket's group, root's):
// "ok" or an error code.
std::string as_nobody(const Daemon& daemon, const std::string& op = "signing-identity",
                      const nlohmann::json& params = {{"address", "alice@example.org"}}) {
  const passwd* nobody = ::getpwnam("nobody");
  REQUIRE(nobody != nullptr);
  int pipe_fds[2];
  REQUIRE(::pipe(pipe_fds) == 0);
  const pid_t child = ::fork();
  if (child == 0) {
    ::close(pipe_fds[0]);
    const gid_t socket_group = 0;
    if (::setgroups(1, &socket_group) != 0 || ::setgid(nobody->pw_gid) != 0 || ::setuid(nobody->pw_uid) != 0) ::_exit(2);
    KeystoreClient client({daemon.socket(), 5s, 1});
    const auto r = client.call(op, params);
    const std::string code = r ? "ok" : std::string(to_string(r.error().code));
    (void)!::write(pipe_fds[1], code.data(), code.size());
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  char buffer[64] = {};
  const ssize_t n = ::read(pipe_fds[0], buffer, sizeof buffer - 1);
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  return std::string(buffer, static_cast<std::size_t>(std::max<ssize_t>(n, 0)));
}

}  // namespace

// How long a guesser waits is tested on a clock the test moves
// (unseal_throttle_test.cpp); here, that the daemon applies it per peer.
TEST_CASE("the daemon starts sealed, slows a guesser, and unseals for another peer", "[keystored]") {
  Daemon daemon;
  auto client = daemon.client();
  CHECK(must(client.call("status", {}))["sealed"] == true);
  const std::vector<std::string> alice{"alice@example.org"};
  CHECK(lookup_certificates(client, alice).error().code == Errc::sealed);

  CHECK(as_nobody(daemon, "unseal", {{"passphrase", "not the passphrase at all"}}) == "wrong_secret");
  CHECK(as_nobody(daemon, "unseal", {{"passphrase", kPassphrase}}) == "permission_denied");  // even the right one
  CHECK(must(client.call("status", {}))["sealed"] == true);
  unseal(client);  // root guessed nothing
  CHECK(must(client.call("status", {}))["sealed"] == false);
  CHECK(lookup_certificates(client, alice));
  CHECK(daemon.log().find(kPassphrase) == std::string::npos);
}

TEST_CASE("only gateways may use keys, as the configuration says, reloaded on SIGHUP", "[keystored]") {
  Daemon daemon;
  auto client = daemon.client();
  unseal(client);
  CHECK(as_nobody(daemon) == "permission_denied");

  const auto config = daemon.dir.path("mailkms.conf");
  const std::string original = test::read_file(config);
  test::write_file(config, original + "gateway_users = [\"nobody\"]\n");
  daemon.reload();
  CHECK(as_nobody(daemon) == "ok");

  // A broken file is refused; the running policy stays.
  test::write_file(config, original + "gateway_users = [\"no-such-user-anywhere\"]\n");
  daemon.reload();
  CHECK(as_nobody(daemon) == "ok");
  CHECK(daemon.log().find("reload refused") != std::string::npos);
}


TEST_CASE("a client that pipelines without reading is held back, and what it got in is answered", "[keystored]") {
  Daemon daemon;
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strcpy(address.sun_path, daemon.socket().c_str());
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  constexpr std::uint64_t kRequests = 100'000;
  std::string stream;
  for (std::uint64_t id = 1; id <= kRequests; ++id) {
    stream += protocol::encode_request({id, "status", nlohmann::json::object()});
  }
  // Writes until the daemon stops taking requests for 10 s (it holds the
  // client back) or all are in: a daemon that reads on, however slowly
  // under a sanitizer, takes them all and queues every answer.
  std::size_t sent = 0;
  bool held_back = false;
  while (sent < stream.size()) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, 10000) == 0) {
      held_back = true;
      break;
    }
    const ssize_t n = ::send(fd, stream.data() + sent, stream.size() - sent, MSG_NOSIGNAL);
    if (n > 0) sent += static_cast<std::size_t>(n);
  }
  const auto complete = static_cast<std::size_t>(std::count(stream.begin(), stream.begin() + static_cast<std::ptrdiff_t>(sent), '\n'));
  CHECK(held_back);
  CHECK(complete < kRequests);
  // Every complete request gets its answer once the client reads.
  ::shutdown(fd, SHUT_WR);
  std::string answers;
  char buffer[65536];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 10000) <= 0) break;
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) break;
    answers.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fd);
  CHECK(static_cast<std::size_t>(std::count(answers.begin(), answers.end(), '\n')) == complete);
  INFO(answers.substr(0, 200));
  CHECK(answers.find("\"id\":" + std::to_string(complete) + ",") != std::string::npos);
  CHECK(answers.find("error") == std::string::npos);
}

namespace {

// A socket served by the user nobody, as anyone who could write the
// keystore's socket directory could serve one: it accepts `connections`
// connections and reports, for each, how many bytes it received.
class ForeignServer {
 public:
  ForeignServer(const std::filesystem::path& socket, int connections) {
    int ready[2];
    REQUIRE(::pipe(ready) == 0);
    REQUIRE(::pipe(received_) == 0);
    const passwd* nobody = ::getpwnam("nobody");
    REQUIRE(nobody != nullptr);
    pid_ = ::fork();
    if (pid_ == 0) serve(socket, connections, nobody, ready[1]);
    ::close(ready[1]);
    ::close(received_[1]);
    char byte = 0;
    REQUIRE(::read(ready[0], &byte, 1) == 1);
    ::close(ready[0]);
  }
  ~ForeignServer() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    ::close(received_[0]);
  }
  // The bytes the next connection brought.
  long next_received() {
    std::string line;
    char c = 0;
    while (::read(received_[0], &c, 1) == 1 && c != '\n') line += c;
    return line.empty() ? -1 : std::stol(line);
  }

 private:
  [[noreturn]] void serve(const std::filesystem::path& socket, int connections, const passwd* nobody, int ready) {
    if (::setgid(nobody->pw_gid) != 0 || ::setuid(nobody->pw_uid) != 0) ::_exit(2);
    const int listener = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strcpy(address.sun_path, socket.c_str());
    if (::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 || ::listen(listener, 4) != 0) ::_exit(3);
    (void)!::write(ready, "r", 1);
    for (int i = 0; i < connections; ++i) {
      const int fd = ::accept(listener, nullptr, nullptr);
      long total = 0;
      char buffer[4096];
      for (;;) {  // up to the first line, or the client's close
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 5000) <= 0) break;
        const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
        if (n <= 0) break;
        total += n;
        if (std::memchr(buffer, '\n', static_cast<std::size_t>(n)) != nullptr) break;
      }
      ::close(fd);
      const std::string report = std::to_string(total) + "\n";
      (void)!::write(received_[1], report.data(), report.size());
    }
    ::_exit(0);
  }

  pid_t pid_ = -1;
  int received_[2] = {-1, -1};
};

}  // namespace

TEST_CASE("a client sends nothing to a socket served by anyone but the keystore's user or root", "[keystored]") {
  test::TempDir dir;
  ::chmod(dir.path("").c_str(), 0777);  // where nobody can put a socket
  const auto socket = dir.path("keystore.sock");
  ForeignServer foreign(socket, 2);

  KeystoreClient client({socket, 5s, 1, "mailkms-keystore"});
  const auto refused = client.call("unseal", {{"passphrase", kPassphrase}});
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == Errc::unavailable);
  CHECK(refused.error().message.find(socket.string() + " is served by uid " +
                                     std::to_string(::getpwnam("nobody")->pw_uid) + ", not by mailkms-keystore") !=
        std::string::npos);
  CHECK(foreign.next_received() == 0);

  // Configured as the keystore's user, the same server is talked to.
  KeystoreClient trusting({socket, 5s, 1, "nobody"});
  (void)trusting.call("status", {});
  CHECK(foreign.next_received() > 0);
}

TEST_CASE("SIGTERM stops the daemon cleanly, and the client reports it unavailable", "[keystored]") {
  Daemon daemon;
  auto client = daemon.client(2s);
  unseal(client);
  CHECK(daemon.stop() == 0);
  const auto r = client.call("status", {});
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::unavailable);
}

TEST_CASE("after a restart of the daemon, a client's stale pooled connections cost no call", "[keystored]") {
  Daemon daemon;
  auto client = daemon.client(5s);
  // Calls at once from four threads leave several connections in the pool.
  for (int round = 0; round < 20; ++round) {
    std::vector<std::thread> threads;
    threads.reserve(4);
    for (int t = 0; t < 4; ++t) threads.emplace_back([&] { (void)client.call("status", {}); });
    for (auto& thread : threads) thread.join();
  }
  REQUIRE(daemon.stop() == 0);
  daemon.start();
  const auto first = client.call("status", {});
  CHECK(first);
  for (int i = 0; i < 5; ++i) CHECK(client.call("status", {}));
}

TEST_CASE("administration needs a session, and recovery needs the approvals policy asks for", "[keystored][admin]") {
  Daemon daemon;
  auto client = daemon.client(60s);
  unseal(client);

  const std::string carol = must(client.call("login", {{"name", "carol"}, {"password", kAdminPassword}}))["token"];
  CHECK(client.call("login", {{"name", "carol"}, {"password", "not carol's password"}}).error().code ==
        Errc::permission_denied);
  // The failure slows carol's next login (how long: admins_test.cpp), not her session.
  const auto too_soon = client.call("login", {{"name", "carol"}, {"password", kAdminPassword}});
  REQUIRE_FALSE(too_soon);
  CHECK(too_soon.error().message.starts_with("too many failed logins for carol"));
  CHECK(client.call("user-add", {{"addresses", {"dave@example.org"}}}).error().code == Errc::permission_denied);
  CHECK(client.call("user-add", {{"session", "forged-token"}, {"addresses", {"dave@example.org"}}}).error().code ==
        Errc::permission_denied);

  const auto added = must(client.call("user-add", {{"session", carol}, {"addresses", {"dave@example.org", "not an address"}}}));
  CHECK(added["added"] == 1);
  CHECK(added["failed"].size() == 1);

  must(client.call("admin-add", {{"session", carol}, {"name", "erin"}, {"password", "erin's long password"}}));
  must(client.call("approvals-set", {{"session", carol}, {"task", "recover"}, {"count", 2}}));

  const auto pending = must(client.call("recover", {{"session", carol},
                                                  {"address", "dave@example.org"},
                                                  {"password", "dave's new p12 password"}}));
  CHECK(pending["status"] == "pending");
  const std::string id = pending["request"];
  // An id an administrator passes as an argument: never "-" anything.
  CHECK(std::regex_match(id, std::regex("[a-z2-7]{12}")));
  CHECK(client.call("approve", {{"session", carol}, {"id", id}}).error().code == Errc::invalid_argument);
  CHECK(client.call("request-fetch", {{"session", carol}, {"id", id}}).error().code == Errc::invalid_argument);

  const std::string erin = must(client.call("login", {{"name", "erin"}, {"password", "erin's long password"}}))["token"];
  CHECK(must(client.call("approve", {{"session", erin}, {"id", id}}))["status"] == "done");
  CHECK(client.call("request-fetch", {{"session", erin}, {"id", id}}).error().code == Errc::permission_denied);

  const auto fetched = must(client.call("request-fetch", {{"session", carol}, {"id", id}}));
  const auto p12 = protocol::unbase64(fetched["pkcs12"]);
  REQUIRE(p12);
  test::write_file(daemon.dir.path("dave.p12"), *p12);
  const auto info = test::run("openssl pkcs12 -info -noout -in " + daemon.dir.path("dave.p12").string() +
                              " -passin 'pass:dave'\"'\"'s new p12 password'");
  INFO(info.err);
  CHECK(info.exit_code == 0);
  CHECK(client.call("request-fetch", {{"session", carol}, {"id", id}}).error().code == Errc::not_found);

  // Revocation reaches the gateway's lookups at once.
  const std::vector<std::string> dave{"dave@example.org"};
  CHECK(must(lookup_certificates(client, dave)).found.size() == 1);
  must(client.call("revoke", {{"session", carol}, {"address", "dave@example.org"}, {"reason", "keyCompromise"}}));
  CHECK(must(lookup_certificates(client, dave)).missing == dave);

  const auto verified = must(client.call("audit-verify", {{"session", carol}}));
  CHECK(verified["intact"] == true);
  const auto records = must(client.call("audit-show", {{"session", carol}, {"limit", 1000}}));
  const auto has = [&](const std::string& action, const std::string& outcome) {
    return std::any_of(records.begin(), records.end(), [&](const nlohmann::json& r) {
      return r["action"] == action && r["outcome"] == outcome;
    });
  };
  CHECK(has("login", "failed"));
  CHECK(has("recover", "ok"));
  CHECK(has("approve", "ok"));
  CHECK(has("revoke", "ok"));
  CHECK(has("user-add", "denied"));
  // No password, of an administrator or of a PKCS#12, is ever logged.
  for (const std::string& secret : {kAdminPassword, std::string("erin's long password"),
                                   std::string("dave's new p12 password"), carol, erin}) {
    CHECK(records.dump().find(secret) == std::string::npos);
    CHECK(daemon.log().find(secret) == std::string::npos);
    CHECK(daemon.database.raw_contents().find(secret) == std::string::npos);
  }
}

TEST_CASE("changing administrators or approval counts takes as many approvals as the strictest task",
          "[keystored][admin]") {
  Daemon daemon;
  auto client = daemon.client(60s);
  unseal(client);
  const std::string carol = must(client.call("login", {{"name", "carol"}, {"password", kAdminPassword}}))["token"];
  must(client.call("admin-add", {{"session", carol}, {"name", "erin"}, {"password", "erin's long password"}}));
  must(client.call("approvals-set", {{"session", carol}, {"task", "recover"}, {"count", 2}}));
  const auto approvals = [&] { return must(client.call("approvals-show", {{"session", carol}})); };
  CHECK(approvals()["admin-change"] == 1);  // as set: the stricter count applies to it anyway

  // Carol alone can no longer make a second administrator for herself…
  const auto added = must(client.call("admin-add", {{"session", carol}, {"name", "carol2"}, {"password", "carol's second password"}}));
  CHECK(added["status"] == "pending");
  CHECK(added["required"] == 2);
  const auto administrators = [&] {
    std::vector<std::string> names;
    for (const auto& a : must(client.call("admin-list", {{"session", carol}}))) names.push_back(a["name"]);
    return names;
  };
  CHECK(administrators() == std::vector<std::string>{"carol", "erin"});
  // …nor take over erin's account, nor remove her, nor lower the count.
  CHECK(must(client.call("admin-passwd", {{"session", carol}, {"name", "erin"}, {"password", "carol knows it now"}}))["status"] ==
        "pending");
  CHECK(must(client.call("admin-remove", {{"session", carol}, {"name", "erin"}}))["status"] == "pending");
  const auto lowered = must(client.call("approvals-set", {{"session", carol}, {"task", "recover"}, {"count", 1}}));
  CHECK(lowered["status"] == "pending");
  CHECK(approvals()["recover"] == 2);
  CHECK(must(client.call("recover", {{"session", carol}, {"address", "alice@example.org"}, {"password", "a p12 password"}}))["status"] ==
        "pending");
  // Her own password is still hers to change.
  CHECK_FALSE(must(client.call("admin-passwd", {{"session", carol}, {"name", "carol"}, {"password", kAdminPassword}})).contains("status"));

  // Erin sees everything she is asked to approve, but no password.
  const std::string erin = must(client.call("login", {{"name", "erin"}, {"password", "erin's long password"}}))["token"];
  const auto requests = must(client.call("requests-list", {{"session", erin}}));
  const auto find = [&](const std::string& id) {
    const auto it = std::find_if(requests.begin(), requests.end(), [&](const nlohmann::json& r) { return r["id"] == id; });
    REQUIRE(it != requests.end());
    return *it;
  };
  const auto shown_add = find(added["request"]);
  CHECK(shown_add["op"] == "admin-add");
  CHECK(shown_add["parameters"] == nlohmann::json{{"name", "carol2"}});
  const auto shown_lower = find(lowered["request"]);
  CHECK(shown_lower["parameters"] == nlohmann::json{{"task", "recover"}, {"count", 1}});
  CHECK(requests.dump().find("carol's second password") == std::string::npos);
  CHECK(requests.dump().find("carol knows it now") == std::string::npos);
  CHECK(requests.dump().find("a p12 password") == std::string::npos);

  CHECK(must(client.call("approve", {{"session", erin}, {"id", lowered["request"]}}))["status"] == "done");
  CHECK(approvals()["recover"] == 1);
  CHECK(must(client.call("approve", {{"session", erin}, {"id", added["request"]}}))["status"] == "done");
  CHECK(administrators() == std::vector<std::string>{"carol", "carol2", "erin"});
}

TEST_CASE("two approvals at once run a request once, and two fetches at once get its result once", "[keystored][admin]") {
  Daemon daemon("workers = 4\n");
  auto client = daemon.client(120s);
  unseal(client);
  const auto login = [&](const std::string& name, const std::string& password) -> std::string {
    return must(client.call("login", {{"name", name}, {"password", password}}))["token"];
  };
  const std::string carol = login("carol", kAdminPassword);
  must(client.call("admin-add", {{"session", carol}, {"name", "erin"}, {"password", "erin's long password"}}));
  must(client.call("admin-add", {{"session", carol}, {"name", "frank"}, {"password", "frank's long password"}}));
  must(client.call("approvals-set", {{"session", carol}, {"task", "recover"}, {"count", 2}}));
  const std::string erin = login("erin", "erin's long password");
  const std::string frank = login("frank", "frank's long password");
  const auto pending = must(client.call("recover", {{"session", carol},
                                                  {"address", "alice@example.org"},
                                                  {"password", "alice's new p12 password"}}));
  const std::string id = pending["request"];

  // Each call on its own connection, all let go at once.
  const auto at_once = [&](const std::vector<std::pair<std::string, std::string>>& calls) {
    std::vector<Result<nlohmann::json>> results(calls.size(), make_error(Errc::internal, "not run"));
    std::vector<std::thread> threads;
    std::atomic<bool> go{false};
    for (std::size_t i = 0; i < calls.size(); ++i) {
      threads.emplace_back([&, i] {
        auto own = daemon.client(120s);
        while (!go) std::this_thread::yield();
        results[i] = own.call(calls[i].first, {{"session", calls[i].second}, {"id", id}});
      });
    }
    go = true;
    for (auto& t : threads) t.join();
    return results;
  };
  const auto approved = at_once({{"approve", erin}, {"approve", frank}});
  CHECK(std::count_if(approved.begin(), approved.end(), [](const auto& r) { return r && (*r)["status"] == "done"; }) == 1);
  CHECK(std::count_if(approved.begin(), approved.end(), [](const auto& r) {
          return !r && r.error().code == Errc::invalid_argument;
        }) == 1);
  const auto records = must(client.call("audit-show", {{"session", carol}, {"limit", 1000}}));
  CHECK(std::count_if(records.begin(), records.end(), [](const nlohmann::json& r) {
          return r["action"] == "recover" && r["outcome"] == "ok";
        }) == 1);

  const auto fetched = at_once({{"request-fetch", carol}, {"request-fetch", carol}, {"request-fetch", carol}});
  CHECK(std::count_if(fetched.begin(), fetched.end(), [](const auto& r) { return r && r->contains("pkcs12"); }) == 1);
  CHECK(std::count_if(fetched.begin(), fetched.end(), [](const auto& r) {
          return !r && r.error().code == Errc::not_found;
        }) == 2);
}

TEST_CASE("a user enrolls by mail through the daemon, and the token works once", "[keystored][enrollment]") {
  // The mail command keeps each message in `outbox`, named in sending order.
  test::TempDir mail;
  const auto outbox = mail.path("outbox");
  std::filesystem::create_directories(outbox);
  test::write_file(mail.path("capture"), "#!/bin/sh\nout=$1\nshift\ncat > \"$out/$(date +%s%N)-$4.eml\"\n");
  ::chmod(mail.path("capture").c_str(), 0755);
  Daemon daemon("mail_command = [\"" + mail.path("capture").string() + "\", \"" + outbox.string() + "\"]\n" +
                "mail_from = \"mailkms@example.org\"\n"
                "enrollment_address = \"enroll@example.org\"\n"
                "templates = \"" MAILKMS_TEMPLATES "\"\n");
  auto client = daemon.client(60s);
  unseal(client);
  const std::string carol = must(client.call("login", {{"name", "carol"}, {"password", kAdminPassword}}))["token"];
  const auto last_mail = [&] {
    std::vector<std::filesystem::path> files;
    for (const auto& e : std::filesystem::directory_iterator(outbox)) files.push_back(e.path());
    REQUIRE_FALSE(files.empty());
    std::sort(files.begin(), files.end());
    CHECK(files.back().filename().string().ends_with("-alice@example.org.eml"));
    return test::read_file(files.back());
  };

  const auto enrolled = must(client.call("enroll", {{"session", carol}, {"addresses", {"alice@example.org"}}}));
  CHECK(enrolled["sent"] == 1);
  std::smatch token;
  const std::string invitation = last_mail();
  REQUIRE(std::regex_search(invitation, token, std::regex("Token: (MKMS[-A-Z2-7]{32})")));
  const std::string password = "alice's chosen password";
  CHECK(must(redeem_token(client, "alice@example.org", token[1], password)));

  const std::string keys = last_mail();
  const auto at = keys.find("filename=\"alice.p12\"");
  REQUIRE(at != std::string::npos);
  const auto start = keys.find("\n\n", at) + 2;
  std::string b64 = keys.substr(start, keys.find("\n--", start) - start);
  b64.erase(std::remove(b64.begin(), b64.end(), '\n'), b64.end());
  const auto p12 = must(protocol::unbase64(nlohmann::json(b64)));
  const auto bundle = must(smime::read_pkcs12(*test::context(), p12, password));
  const std::vector<std::string> alice{"alice@example.org"};
  CHECK(bundle.certificate == must(lookup_certificates(client, alice)).found.at(0).second.certificate);

  CHECK_FALSE(must(redeem_token(client, "alice@example.org", token[1], password)));
  CHECK(last_mail() == keys);  // she has no token pending: a reused one is refused unanswered
  const auto again = must(client.call("enroll", {{"session", carol}, {"addresses", {"alice@example.org"}}}));
  CHECK(again["already_enrolled"] == 1);
  for (const std::string& secret : {std::string(token[1]), password}) {
    CHECK(daemon.log().find(secret) == std::string::npos);
    CHECK(daemon.database.raw_contents().find(secret) == std::string::npos);
  }

  // SIGHUP: without an enrollment address, enrollment by mail is off.
  const auto config = daemon.dir.path("mailkms.conf");
  const std::string text = test::read_file(config);
  test::write_file(config, text.substr(0, text.find("enrollment_address")) + text.substr(text.find("templates")));
  daemon.reload();
  const auto off = client.call("enroll", {{"session", carol}, {"addresses", {"bob@example.org"}}});
  REQUIRE_FALSE(off);
  CHECK(off.error().message.find("enrollment by mail is off") != std::string::npos);
}

namespace {

// Keeps the signed attributes the engine hands the daemon to sign.
class RecordingSigner final : public smime::Signer {
 public:
  explicit RecordingSigner(RemoteSigner inner) : inner_(std::move(inner)) {}
  const smime::Certificate& certificate() const override { return inner_.certificate(); }
  const std::vector<smime::Certificate>& chain() const override { return inner_.chain(); }
  smime::SignatureScheme scheme() const override { return inner_.scheme(); }
  smime::Result<std::string> sign(smime::Digest digest, std::string_view to_be_signed) override {
    signed_attributes = std::string(to_be_signed);
    return inner_.sign(digest, to_be_signed);
  }
  std::string signed_attributes;

 private:
  RemoteSigner inner_;
};

Result<nlohmann::json> sign_raw(KeystoreClient& client, const std::string& data) {
  return client.call("sign", {{"address", "alice@example.org"}, {"digest", "sha256"}, {"data", protocol::base64(data)}});
}

}  // namespace

TEST_CASE("a gateway gets S/MIME signed attributes signed, nothing else, and each use is audited", "[keystored]") {
  Daemon daemon;
  auto client = daemon.client();
  unseal(client);
  RecordingSigner signer(must(RemoteSigner::create(client, "alice@example.org")));
  REQUIRE(smime::sign_message(*test::context(), test::sample_message(), signer, {}));
  const std::string attributes = signer.signed_attributes;
  CHECK(sign_raw(client, attributes));

  // A certificate for the gateway's own key, to be signed with alice's.
  const auto tbs = test::cert("bob").der();
  const auto certificate = sign_raw(client, tbs);
  REQUIRE_FALSE(certificate);
  CHECK(certificate.error().code == Errc::invalid_argument);
  CHECK(certificate.error().message == "not S/MIME signed attributes: not one SET OF Attribute");
  // Signed attributes from yesterday: their signingTime is far from now.
  std::string stale = attributes;
  const auto at = stale.find(std::string("\x17\x0d", 2));
  REQUIRE(at != std::string::npos);
  stale[at + 2] = static_cast<char>(stale[at + 2] - 1);  // ten years back
  const auto old = sign_raw(client, stale);
  REQUIRE_FALSE(old);
  CHECK(old.error().message.find("the signingTime is -") != std::string::npos);

  const std::string carol = must(client.call("login", {{"name", "carol"}, {"password", kAdminPassword}}))["token"];
  const auto records = must(client.call("audit-show", {{"session", carol}, {"limit", 1000}}));
  std::vector<std::string> gateway_signs;
  for (const auto& r : records) {
    if (r["action"] == "sign" && r["actor"].get<std::string>().starts_with("gateway:uid " + std::to_string(::getuid()))) {
      gateway_signs.push_back(r["subject"].get<std::string>() + " " + r["outcome"].get<std::string>() + " " +
                              r["detail"].get<std::string>().substr(0, 30));
    }
  }
  CHECK(gateway_signs == std::vector<std::string>{"alice@example.org ok sha256", "alice@example.org ok sha256",
                                                  "alice@example.org refused not S/MIME signed attributes: ",
                                                  "alice@example.org refused not S/MIME signed attributes: "});
  CHECK(must(client.call("audit-verify", {{"session", carol}}))["intact"] == true);
}

TEST_CASE("a gateway's unwraps are audited with the key they used", "[keystored]") {
  Daemon daemon;
  auto client = daemon.client();
  unseal(client);
  const std::vector<std::string> bob{"bob@example.org"};
  const auto cert = must(lookup_certificates(client, bob)).found.at(0).second.certificate;
  const std::vector<smime::Recipient> to{{cert, smime::KeyTransport::rsa_oaep_sha256}};
  const auto encrypted = must(smime::encrypt_message(*test::context(), test::sample_message(), to, {}));
  RemoteKeyUnwrapper key(client, "bob@example.org", cert);
  smime::KeyUnwrapper* keys[] = {&key};
  REQUIRE_FALSE(smime::open_message(*test::context(), encrypted, keys, {}).error);

  const std::string carol = must(client.call("login", {{"name", "carol"}, {"password", kAdminPassword}}))["token"];
  const auto records = must(client.call("audit-show", {{"session", carol}, {"limit", 1000}}));
  const auto unwrap = std::find_if(records.begin(), records.end(), [](const auto& r) { return r["action"] == "unwrap"; });
  REQUIRE(unwrap != records.end());
  CHECK((*unwrap)["subject"] == "bob@example.org");
  CHECK((*unwrap)["outcome"] == "ok");
  CHECK((*unwrap)["detail"] == "key " + cert.serial_hex());
}

TEST_CASE("a gateway past its rate limit is refused, and counted in the status", "[keystored]") {
  Daemon daemon("gateway_rate_limit = 5\n");
  auto client = daemon.client();
  unseal(client);
  int limited = 0;
  for (int i = 0; i < 30; ++i) {
    const auto r = sign_raw(client, "not signed attributes");
    REQUIRE_FALSE(r);
    if (r.error().message.starts_with("rate limit: uid " + std::to_string(::getuid()))) {
      CHECK(r.error().code == Errc::permission_denied);
      CHECK(r.error().message.find("more than 5 times a second (keystore.gateway_rate_limit)") != std::string::npos);
      ++limited;
    }
  }
  CHECK(limited >= 20);
  const auto status = must(client.call("status", {}));
  REQUIRE(status["gateways"].size() == 1);
  CHECK(status["gateways"][0]["gateway"] == "uid " + std::to_string(::getuid()));
  CHECK(status["gateways"][0]["rate_limited"] == limited);
  CHECK(status["gateways"][0]["signed"] == 0);
}
