#include "keystore_commands.hpp"
#include "mailkms/errno_text.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include <filesystem>
#include <optional>

#include "failure.hpp"
#include "io.hpp"
#include "mailkms/keystore/client.hpp"
#include "mailkms/keystore/config.hpp"
#include "mailkms/keystore/protocol.hpp"
#include "mailkms/keystore/seal.hpp"
#include "mailkms/keystore/service.hpp"
#include "mailkms/keystore/service_ca.hpp"
#include "mailkms/keystore/storage_copy.hpp"
#include "mailkms/smime/certificate.hpp"
#include "prompt.hpp"

namespace mailkms::cli {
namespace {

using nlohmann::json;

std::string default_config() {
  const char* env = std::getenv("MAILKMS_CONFIG");
  return env != nullptr ? env : "/etc/mailkms/mailkms.conf";
}

std::string session_file() {
  if (const char* env = std::getenv("MAILKMS_SESSION_FILE")) return env;
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr ? home : ".") + "/.mailkms-session";
}

template <class T>
T or_fail_keystore(keystore::Result<T> r, const std::string& context) {
  if (!r) {
    const int code = r.error().code == keystore::Errc::invalid_argument ? exit_usage : exit_failure;
    throw Failure(code, context + ": " + r.error().message);
  }
  return std::move(r).value();
}

keystore::Config load(const std::string& config) {
  return or_fail_keystore(keystore::load_config(config), "cannot read the configuration");
}

// The daemon, reached through the configured socket.
class Keystore {
 public:
  explicit Keystore(const std::string& config) : client_(options(load(config))) {}

  json call(std::string_view op, const json& params = json::object()) {
    return or_fail_keystore(client_.call(op, params), std::string(op));
  }
  // The same with the administrator's session from `mailkmsctl login`.
  json admin(std::string_view op, json params = json::object()) {
    std::ifstream in(session_file());
    std::string token;
    std::getline(in, token);
    if (token.empty()) throw Failure(exit_failure, "not logged in: run mailkmsctl login");
    params["session"] = token;
    return call(op, params);
  }

 private:
  static keystore::ClientOptions options(const keystore::Config& config) {
    return config.client_options(std::chrono::minutes(5), 1);
  }
  keystore::KeystoreClient client_;
};

std::string when(std::time_t t) {
  char text[32];
  std::tm tm{};
  if (gmtime_r(&t, &tm) == nullptr || std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%SZ", &tm) == 0) {
    return std::to_string(t);
  }
  return text;
}

// A command whose options live in one shared struct.
template <class Args, class Run>
Command command(CLI::App& parent, const std::string& name, const std::string& help,
                const std::function<void(CLI::App&, Args&)>& options, Run run) {
  auto args = std::make_shared<Args>();
  CLI::App* cmd = parent.add_subcommand(name, help);
  cmd->add_option("--config", args->config, "mailkms.conf (or $MAILKMS_CONFIG)")->capture_default_str();
  options(*cmd, *args);
  return {cmd, [args, run] { return run(*args); }};
}

struct Base {
  std::string config = default_config();
  bool as_json = false;  // --json, where a command lists or shows
};

// --json: the keystore's answer as one JSON document, the fields as the
// README's "Machine-readable output" names them, instead of text.
void json_option(CLI::App& c, Base& a) { c.add_flag("--json", a.as_json, "Print one JSON document instead of text"); }

bool printed_as_json(const Base& a, const json& answer) {
  if (!a.as_json) return false;
  std::cout << answer.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
  return true;
}

// ---- init, unseal, status, login

struct InitArgs : Base {
  std::string admin;
  std::string admin_password_file;
  std::string passphrase_file;
  std::string key_file;
  int shares = 0;
  int threshold = 0;
};

// Creates `path` with `mode` and writes `contents`: never through a
// symbolic link, never over an existing file. A file that could not be
// written whole is removed.
void write_new_file(const std::string& path, std::string_view contents, mode_t mode) {
  const int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_NOFOLLOW | O_WRONLY | O_CLOEXEC, mode);
  if (fd < 0) {
    const int error = errno;
    if (error == EEXIST) throw Failure(exit_usage, path + " exists: choose a new path");
    throw Failure(exit_failure, "cannot create " + path + ": " + mailkms::errno_text(error));
  }
  const auto fail = [&](const char* what, int error) {
    ::unlink(path.c_str());
    throw Failure(exit_failure, std::string("cannot ") + what + " " + path + ": " + mailkms::errno_text(error));
  };
  std::size_t written = 0;
  while (written < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + written, contents.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int error = n < 0 ? errno : EIO;
      ::close(fd);
      fail("write", error);
    }
    written += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int error = errno;
    ::close(fd);
    fail("write", error);
  }
  if (::close(fd) != 0) fail("close", errno);
}

// The same, 0600 from the start: never readable by others for an instant.
void write_new_private_file(const std::string& path, std::string_view contents) { write_new_file(path, contents, 0600); }

int run_init(const InitArgs& a) {
  const keystore::Config config = load(a.config);
  const int methods = (a.key_file.empty() ? 0 : 1) + (a.shares > 0 ? 1 : 0);
  if (methods > 1) throw Failure(exit_usage, "choose one: a passphrase, --key-file or --shares");
  auto ctx = or_fail(smime::CryptoContext::create(), "cannot set up OpenSSL");
  const Secret admin_password = secret_from(a.admin_password_file, "password for administrator " + a.admin + " (at least 12 characters)", true);
  auto master = keystore::new_master_key();
  keystore::SealRecord record;
  std::vector<std::string> shares;
  if (!a.key_file.empty()) {
    auto [sealed, contents] = or_fail_keystore(keystore::seal_with_key_file(master), "cannot seal");
    write_new_private_file(a.key_file, contents);
    record = std::move(sealed);
  } else if (a.shares > 0) {
    auto [sealed, made] = or_fail_keystore(keystore::seal_with_shares(master, a.shares, a.threshold), "cannot seal");
    record = std::move(sealed);
    shares = std::move(made);
  } else {
    const Secret passphrase = secret_from(a.passphrase_file, "unseal passphrase (at least 12 characters)", true);
    record = or_fail_keystore(keystore::seal_with_passphrase(master, passphrase.view()), "cannot seal");
  }
  or_fail_keystore(keystore::KeystoreService::initialize(config.database, ctx, record, std::move(master), a.admin,
                                                         admin_password.view(), {}),
                   "cannot create the keystore");
  std::cout << "keystore created: " << config.database.describe() << "\n"
            << "administrator: " << a.admin << "\n"
            << "sealed with: " << keystore::to_string(record.method) << "\n";
  if (!shares.empty()) {
    std::cout << "\nGive one share to each of " << a.shares << " administrators; any " << a.threshold
              << " of them unseal the keystore. They are shown once, now:\n";
    for (const auto& s : shares) std::cout << "  " << s << "\n";
  }
  return 0;
}

struct UnsealArgs : Base {
  std::string passphrase_file;
  std::vector<std::string> shares;
  std::string shares_file;
};

// The shares given as arguments, then those in the file, one a line.
std::vector<std::string> shares_of(const UnsealArgs& a) {
  std::vector<std::string> shares = a.shares;
  if (!a.shares_file.empty()) {
    std::istringstream lines(read_file(a.shares_file));
    for (std::string line; std::getline(lines, line);) {
      if (!line.empty()) shares.push_back(line);
    }
  }
  return shares;
}

int run_unseal(const UnsealArgs& a) {
  Keystore keystore(a.config);
  json params;
  const std::vector<std::string> shares = shares_of(a);
  if (!shares.empty()) {
    params["shares"] = shares;
  } else {
    const Secret passphrase = secret_from(a.passphrase_file, "unseal passphrase");
    params["passphrase"] = std::string(passphrase.view());
  }
  keystore.call("unseal", params);
  std::cout << "unsealed\n";
  return 0;
}

// A new master key under the same seal: the unseal secret is asked for
// again (a key file, the daemon reads itself).
int run_rekey(const UnsealArgs& a) {
  Keystore keystore(a.config);
  json params = json::object();
  const std::vector<std::string> shares = shares_of(a);
  const std::string seal = keystore.call("status").value("seal", "");
  if (seal == "shares") {
    if (shares.empty()) throw Failure(exit_usage, "this keystore is sealed with shares: give enough of them (--share, --shares-file)");
    params["shares"] = shares;
  } else if (seal == "passphrase") {
    const Secret passphrase = secret_from(a.passphrase_file, "unseal passphrase");
    params["passphrase"] = std::string(passphrase.view());
  }
  const json r = keystore.admin("rekey", params);
  std::cout << "master key rotated: generation " << r.value("generation", 0) << " (" << r.value("resealed", 0)
            << " barrier records sealed again, " << r.value("tagged", 0) << " rows tagged again)\n";
  if (r.value("left", 0) > 0) {
    std::cerr << r.value("left", 0)
              << " row(s) that had failed their integrity check before were left as they were: see the audit log\n";
  }
  return 0;
}

// The administrators' part of status: where this keystored is, and what
// needs doing (requests to approve, certificates to renew, CRLs).
void print_health(const json& h) {
  std::cout << "instance: " << h.value("instance", "") << "\n"
            << "database: " << h.value("database", "") << "\n";
  const json head = h.value("audit_head", json::object());
  std::cout << "audit: " << head.value("sequence", std::uint64_t{0}) << " records, head "
            << head.value("hash", "").substr(0, 16) << "\n"
            << "pending requests: " << h.value("pending_requests", 0) << "\n";
  const json expiring = h.value("expiring", json::object());
  std::cout << "certificates in use expiring within " << expiring.value("within_days", 30)
            << " days: " << expiring.value("count", 0) << "\n";
  for (const auto& c : expiring.value("first", json::array())) {
    std::cout << "  " << c.value("address", "") << "  " << c.value("profile", "") << "  " << c.value("serial", "")
              << "  until " << when(c.value("not_after", std::time_t{0})) << "\n";
  }
  for (const auto& crl : h.value("crls", json::array())) {
    std::cout << "CRL of " << crl.value("ca", "") << ": ";
    if (crl.value("made", json()).is_null()) {
      std::cout << "none made yet (made when a gateway or crl export asks)\n";
    } else {
      std::cout << "made " << when(crl.value("made", std::time_t{0})) << ", next update "
                << when(crl.value("next_update", std::time_t{0})) << "\n";
    }
  }
}

void print_status(const json& status) {
  std::cout << (status.value("sealed", true) ? "sealed" : "unsealed") << "\n";
  if (status.contains("key_generation")) {
    const auto rotated = status.value("key_rotated", std::time_t{0});
    std::cout << "master key generation " << status.value("key_generation", 0) << ", "
              << (rotated == 0 ? std::string("never rotated") : "rotated " + when(rotated)) << "\n";
  } else if (status.contains("key_generation_problem")) {
    std::cout << "master key generation unknown: " << status.value("key_generation_problem", "") << "\n";
  }
  if (status.contains("health")) print_health(status["health"]);
  // What each gateway did with users' keys since the daemon started.
  for (const auto& g : status.value("gateways", json::array())) {
    std::cout << "gateway " << g.value("gateway", "") << ": " << g.value("signed", 0) << " signed, " << g.value("unwrapped", 0)
              << " unwrapped, " << g.value("rate_limited", 0) << " refused by the rate limit\n";
  }
  if (const auto counted = status.value("audit_counted", std::uint64_t{0}); counted > 0) {
    std::cout << "audit: " << counted << " event(s) anyone can cause counted past their limit, not recorded one by one\n";
  }
}

int run_status(const Base& a) {
  Keystore keystore(a.config);
  json status = keystore.call("status");
  // The rest is for administrators: with a session, an unsealed keystore
  // says it too; without one, status says how to see it.
  std::string why_not;
  if (status.value("sealed", true)) {
    why_not = "sealed";
  } else if (std::ifstream(session_file()).good()) {
    try {
      status["health"] = keystore.admin("health");
    } catch (const Failure& f) {
      why_not = f.what();
    }
  } else {
    why_not = "not logged in: mailkmsctl login shows the instance, database, audit head, requests, expiring "
              "certificates and CRLs here";
  }
  if (printed_as_json(a, status)) return 0;
  print_status(status);
  if (!why_not.empty() && why_not != "sealed") std::cerr << "mailkmsctl: " << why_not << "\n";
  return 0;
}

struct LoginArgs : Base {
  std::string name;
  std::string password_file;
};

int run_login(const LoginArgs& a) {
  Keystore keystore(a.config);
  const Secret password = secret_from(a.password_file, "password for " + a.name);
  const json session = keystore.call("login", {{"name", a.name}, {"password", std::string(password.view())}});
  const std::string path = session_file();
  std::filesystem::remove(path);
  {
    // Created 0600 before anything is written to it.
    const int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) throw Failure(exit_failure, "cannot write the session file " + path);
    const std::string token = session.value("token", "") + "\n";
    (void)!::write(fd, token.data(), token.size());
    ::close(fd);
  }
  std::cout << "logged in as " << a.name << " until " << when(session.value("expires", std::time_t{0})) << "\n";
  return 0;
}

int run_logout(const Base& a) {
  Keystore(a.config).admin("logout");
  std::filesystem::remove(session_file());
  std::cout << "logged out\n";
  return 0;
}

// ---- CA

struct CaArgs : Base {
  std::vector<std::string> domains;  // trust add --domains
  std::string id;
  std::string parent;
  std::string name;
  std::string key_type;
  int days = 0;
  int priority = 100;
  std::string in;
  std::string out;
  bool chain = false;  // ca export
  bool der = false;
};

// "  for partner.example, .partner.example": a trust anchor's scope, if any.
std::string scope_text(const json& domains) {
  std::string out;
  for (const auto& d : domains) out += (out.empty() ? "  for " : ", ") + d.get<std::string>();
  return out;
}

void print_ca(const json& ca) {
  std::cout << ca.value("id", "") << "  " << ca.value("role", "") << (ca.value("enabled", false) ? "" : " (disabled)")
            << "  priority " << ca.value("priority", 0) << "  " << ca.value("subject", "");
  if (ca.value("not_after", 0) > 0) std::cout << "  until " << when(ca.value("not_after", std::time_t{0}));
  std::cout << "\n";
}

// What `ca export` writes: PEM, one certificate or the chain; DER, one
// certificate, or the chain as the PKCS#7 bundle DER needs for more than one.
std::string ca_export_output(const CaArgs& a, const json& exported) {
  std::vector<smime::Certificate> chain;
  for (const auto& pem : exported.value("chain", json::array())) {
    auto cert = pem.is_string() ? smime::Certificate::from_pem(pem.get_ref<const std::string&>())
                                : smime::Certificate::from_pem("");
    if (!cert) throw Failure(exit_failure, "the keystore sent an unreadable certificate for CA " + a.id);
    chain.push_back(std::move(*cert));
    if (!a.chain) break;
  }
  if (chain.empty()) throw Failure(exit_failure, "the keystore sent no certificate for CA " + a.id);
  if (!a.der) {
    std::string pem;
    for (const auto& cert : chain) pem += cert.pem();
    return pem;
  }
  if (chain.size() == 1 && !a.chain) return chain.front().der();
  auto bundle = smime::certificates_only_der(chain);
  if (!bundle) throw Failure(exit_failure, bundle.error().describe());
  return std::move(*bundle);
}

int run_ca_export(const CaArgs& a) {
  write_output(a.out, ca_export_output(a, Keystore(a.config).admin("ca-export", {{"id", a.id}})));
  return 0;
}

json ca_params(const CaArgs& a) {
  json p{{"id", a.id}, {"priority", a.priority}};
  if (!a.parent.empty()) p["parent"] = a.parent;
  if (!a.name.empty()) p["name"] = a.name;
  if (!a.key_type.empty()) p["key_type"] = a.key_type;
  if (a.days > 0) p["validity_days"] = a.days;
  return p;
}

void pending_or(const json& result, const std::function<void()>& done) {
  if (result.value("status", "") == "pending") {
    std::cout << "request " << result.value("request", "") << " needs " << result.value("required", 0)
              << " approvals (has " << result.value("approvals", 0) << "): other administrators run\n"
              << "  mailkmsctl approve " << result.value("request", "") << "\n";
    return;
  }
  done();
}

// ---- users

struct UserArgs : Base {
  std::vector<std::string> addresses;
  std::string file;
  std::string after;
  int limit = 1000;
};

// The addresses given as arguments, then those in the file, one a line.
std::vector<std::string> addresses_of(const UserArgs& a) {
  std::vector<std::string> all = a.addresses;
  if (!a.file.empty()) {
    std::istringstream lines(read_input(a.file));
    for (std::string line; std::getline(lines, line);) {
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
      if (!line.empty() && line.front() != '#') all.push_back(line);
    }
  }
  if (all.empty()) throw Failure(exit_usage, "no addresses: give them as arguments or with --file");
  return all;
}

// Sends `all` in batches of 25 to `op`, with a progress bar on a terminal.
void in_batches(Keystore& keystore, const std::string& op, const std::vector<std::string>& all, const json& extra,
                const std::function<void(const json&)>& take) {
  const bool bar = ::isatty(STDERR_FILENO) != 0 && all.size() > 1;
  constexpr std::size_t kBatch = 25;
  for (std::size_t i = 0; i < all.size(); i += kBatch) {
    const std::vector<std::string> batch(all.begin() + static_cast<std::ptrdiff_t>(i),
                                         all.begin() + static_cast<std::ptrdiff_t>(std::min(all.size(), i + kBatch)));
    json params = extra;
    params["addresses"] = batch;
    take(keystore.admin(op, params));
    if (bar) {
      const std::size_t done = std::min(all.size(), i + kBatch);
      const std::size_t width = 40 * done / all.size();
      std::cerr << "\r[" << std::string(width, '=') << std::string(40 - width, ' ') << "] " << done << "/" << all.size()
                << std::flush;
    }
  }
  if (bar) std::cerr << "\n";
}

int run_user_add(const UserArgs& a) {
  const std::vector<std::string> all = addresses_of(a);
  Keystore keystore(a.config);
  std::size_t added = 0;
  std::size_t present = 0;
  std::vector<std::pair<std::string, std::string>> failed;
  in_batches(keystore, "user-add", all, json::object(), [&](const json& r) {
    added += r.value("added", std::size_t{0});
    present += r.value("already_present", std::size_t{0});
    for (const auto& f : r.value("failed", json::array())) failed.emplace_back(f.value("address", ""), f.value("reason", ""));
  });
  for (const auto& [address, why] : failed) std::cerr << "not added: " << address << ": " << why << "\n";
  std::cout << added << " added, " << present << " already present, " << failed.size() << " failed\n";
  return failed.empty() ? 0 : exit_failure;
}

struct EnrollArgs : UserArgs {
  bool reissue = false;
};

int run_enroll(const EnrollArgs& a) {
  const std::vector<std::string> all = addresses_of(a);
  Keystore keystore(a.config);
  std::size_t sent = 0;
  std::size_t enrolled = 0;
  std::vector<std::pair<std::string, std::string>> failed;
  in_batches(keystore, "enroll", all, {{"reissue", a.reissue}}, [&](const json& r) {
    sent += r.value("sent", std::size_t{0});
    enrolled += r.value("already_enrolled", std::size_t{0});
    for (const auto& o : r.value("results", json::array())) {
      if (o.value("status", "") == "failed") failed.emplace_back(o.value("address", ""), o.value("reason", ""));
    }
  });
  for (const auto& [address, why] : failed) std::cerr << "not sent: " << address << ": " << why << "\n";
  std::cout << sent << " sent, " << enrolled << " already enrolled, " << failed.size() << " failed\n";
  if (enrolled > 0) std::cout << "(--reissue mails a new token to those already enrolled)\n";
  return failed.empty() ? 0 : exit_failure;
}

int run_user_list(const UserArgs& a) {
  const json users = Keystore(a.config).admin("user-list", {{"after", a.after}, {"limit", a.limit}});
  if (printed_as_json(a, users)) return 0;
  for (const auto& u : users) {
    std::cout << u.value("address", "") << (u.value("enabled", true) ? "" : "  (disabled)") << "\n";
  }
  return 0;
}

int run_user_show(const UserArgs& a) {
  if (a.addresses.size() != 1) throw Failure(exit_usage, "give one address");
  const json u = Keystore(a.config).admin("user-show", {{"address", a.addresses.front()}});
  if (printed_as_json(a, u)) return 0;
  std::cout << "address: " << u.value("address", "") << "\n"
            << "enabled: " << (u.value("enabled", true) ? "yes" : "no") << "\n"
            << "created: " << when(u.value("created", std::time_t{0})) << "\n"
            << "signing key: " << (u.value("signing_key_held", true) ? "held by the keystore" : "kept by the user") << "\n"
            << "enrolled by mail: "
            << (u.value("enrolled", std::time_t{0}) > 0 ? when(u.value("enrolled", std::time_t{0})) : std::string("no")) << "\n";
  for (const auto& c : u.value("certificates", json::array())) {
    std::cout << "certificate: " << c.value("serial", "") << "  " << c.value("profile", "") << "  from "
              << c.value("ca", "") << "  until " << when(c.value("not_after", std::time_t{0}))
              << (c.value("revoked", false) ? "  REVOKED" : "") << "\n";
  }
  return 0;
}

int run_user_simple(const UserArgs& a, const std::string& op, const std::string& said) {
  if (a.addresses.empty()) throw Failure(exit_usage, "give an address");
  Keystore keystore(a.config);
  for (const auto& address : a.addresses) {
    keystore.admin(op, {{"address", address}});
    std::cout << address << ": " << said << "\n";
  }
  return 0;
}

// ---- administrators, approvals, recovery, revocation, audit, CRLs

struct NamedArgs : Base {
  std::string name;
  std::string password_file;
};

struct RecoverArgs : Base {
  std::string address;
  std::string out;
  std::string password_file;
  bool legacy = false;
  bool by_mail = false;
};

struct IdArgs : Base {
  std::string id;
  std::string out;
};

// Writes a recovery's PKCS#12 file, or an export's bundle, 0600.
void write_pkcs12(const json& result, const std::string& out) {
  if (result.contains("bundle")) {
    const int fd = ::open(out.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) throw Failure(exit_usage, "cannot create " + out + " (it must not exist yet)");
    const std::string bundle = result.value("bundle", "");
    (void)!::write(fd, bundle.data(), bundle.size());
    ::close(fd);
    std::cout << "wrote " << out << "\n";
    return;
  }
  auto der = keystore::protocol::unbase64(result.value("pkcs12", json()));
  if (!der) throw Failure(exit_failure, "the keystore sent no PKCS#12 file");
  {
    const int fd = ::open(out.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) throw Failure(exit_usage, "cannot create " + out + " (it must not exist yet)");
    (void)!::write(fd, der->data(), der->size());
    ::close(fd);
  }
  std::cout << "wrote " << out << " with " << result.value("keys", 0) << " escrowed key(s)\n";
}

struct RevokeArgs : Base {
  std::string address;
  std::string serial;
  std::string reason = "unspecified";
};

struct AuditArgs : Base {
  int after = 0;
  int limit = 100;
  std::string checkpoint_file;
};

// The newest checkpoints of a file: the keystore checks at most these.
std::string newest_lines(const std::string& text, std::size_t count) {
  std::size_t start = text.size();
  if (start > 0 && text[start - 1] == '\n') --start;
  for (std::size_t seen = 0; start > 0; --start) {
    if (text[start - 1] == '\n' && ++seen == count) break;
  }
  return text.substr(start);
}

int run_audit_verify(const AuditArgs& a) {
  json params = json::object();
  if (!a.checkpoint_file.empty()) params["checkpoints"] = newest_lines(read_file(a.checkpoint_file), 100);
  const json r = Keystore(a.config).admin("audit-verify", params);
  if (!r.value("intact", false)) {
    std::cout << "BROKEN: " << r.value("problem", "") << "\n";
    return exit_failure;
  }
  std::cout << "intact: " << r.value("records", 0) << " records";
  if (r.value("checkpoints", 0) > 0) {
    std::cout << "; holds the " << r.value("checkpoints", 0) << " newest checkpoint(s) of "
              << r.value("checkpoint_source", "") << ", the last at record " << r.value("checkpoint", 0);
  } else {
    std::cout << "; no checkpoint to check it against in " << r.value("checkpoint_source", "");
  }
  std::cout << "\n";
  return 0;
}

// ---- storage

struct MigrateArgs : UnsealArgs {
  std::string to;
  std::string key_file;
};

// The unseal secret the seal asks for, from the command line (a key file
// defaults to the configuration's), checked against the seal before
// anything is copied.
struct UnsealSecret {
  std::string key_file;
  Secret passphrase;
  std::vector<std::string> shares;
};

UnsealSecret unseal_secret(const keystore::SealRecord& seal, const MigrateArgs& a, const keystore::Config& config) {
  UnsealSecret secret;
  const std::string check = "the secret given";
  switch (seal.method) {
    case keystore::SealMethod::key_file:
      secret.key_file = a.key_file.empty() ? config.unseal_key_file.string() : a.key_file;
      if (secret.key_file.empty()) throw Failure(exit_usage, "this keystore is sealed with a key file: give it (--key-file)");
      or_fail_keystore(keystore::unseal_with_key_file(seal, secret.key_file), check);
      break;
    case keystore::SealMethod::shares:
      secret.shares = shares_of(a);
      if (secret.shares.empty()) {
        throw Failure(exit_usage, "this keystore is sealed with shares: give enough of them (--share, --shares-file)");
      }
      or_fail_keystore(keystore::unseal_with_shares(seal, secret.shares), check);
      break;
    case keystore::SealMethod::passphrase:
      secret.passphrase = secret_from(a.passphrase_file, "unseal passphrase");
      or_fail_keystore(keystore::unseal_with_passphrase(seal, secret.passphrase.view()), check);
      break;
  }
  return secret;
}

void unseal_copy(keystore::KeystoreService& service, const UnsealSecret& secret) {
  if (!secret.key_file.empty()) {
    or_fail_keystore(service.unseal_with_key_file(secret.key_file), "cannot unseal the copy");
    return;
  }
  json params;
  if (!secret.shares.empty()) {
    params["shares"] = secret.shares;
  } else {
    params["passphrase"] = std::string(secret.passphrase.view());
  }
  const keystore::Caller self{::getuid(), ::getgid(), ::getpid()};
  or_fail_keystore(service.handle(self, {1, "unseal", params}), "cannot unseal the copy");
}

keystore::SealRecord seal_of(keystore::Storage& storage, const std::string& name) {
  const auto stored = or_fail_keystore(storage.get("core/seal"), "cannot read the seal of " + name);
  if (!stored) throw Failure(exit_failure, name + " is not an initialized keystore (no seal)");
  return or_fail_keystore(keystore::SealRecord::from_json(*stored), "the seal of " + name);
}

// Copies the configured database into another (SQLite to PostgreSQL, or
// back), checks the copy row by row and its audit chain with the master
// key, and leaves the source as it was: it is opened read-only.
int run_storage_migrate(const MigrateArgs& a) {
  const keystore::Config config = load(a.config);
  const auto target = or_fail_keystore(keystore::DatabaseLocation::parse(a.to), "--to");
  if (target == config.database) throw Failure(exit_usage, "--to names the database the configuration uses");
  const std::string source_name = config.database.describe();
  auto from = or_fail_keystore(keystore::open_storage(config.database, keystore::OpenMode::read_only),
                               "cannot open " + source_name);
  const UnsealSecret secret = unseal_secret(seal_of(*from, source_name), a, config);
  auto to = or_fail_keystore(keystore::open_storage(target, keystore::OpenMode::create), "cannot open " + target.describe());
  const auto copied = or_fail_keystore(keystore::copy_storage(*from, *to), "cannot copy into " + target.describe());
  std::cout << "copied " << copied.rows << " rows (" << copied.bytes << " bytes) from " << source_name << " to "
            << target.describe() << "; each read back equal\n";

  auto ctx = or_fail(smime::CryptoContext::create(), "cannot set up OpenSSL");
  auto service = or_fail_keystore(keystore::KeystoreService::open(target, ctx, {}), "cannot open the copy");
  unseal_copy(*service, secret);
  const auto audit = or_fail_keystore(service->audit().verify(), "cannot verify the copy's audit chain");
  if (!audit.intact) throw Failure(exit_failure, "the copy's audit chain is broken: " + audit.problem);
  std::cout << "audit chain intact in the copy: " << audit.records << " records\n"
            << "the source is unchanged; to serve from the copy, set database in mailkms.conf and restart "
               "mailkms-keystored\n";
  return 0;
}

// ---- harvested certificates

void print_harvested(const json& h) {
  std::cout << h.value("address", "") << "  " << h.value("subject", "") << "  until "
            << when(h.value("not_after", std::time_t{0})) << "  ";
  const json& caps = h.contains("capabilities") ? h["capabilities"] : json();
  if (!caps.is_object()) {
    std::cout << "capabilities unknown\n";
    return;
  }
  std::string ciphers;
  for (const auto& c : caps.value("ciphers", json::array())) ciphers += (ciphers.empty() ? "" : ",") + c.get<std::string>();
  std::cout << "ciphers " << (ciphers.empty() ? "none" : ciphers) << (caps.value("rsa_oaep", false) ? "  rsa-oaep" : "")
            << "\n";
}

// ---- gateways: certificates from the service CA for the keystore's TLS peers

struct GatewayArgs : Base {
  std::string name;
  std::string role = "gateway";
  std::string csr;
  std::string out = ".";
  int days = 397;
};

// NAME.pem and service-ca.pem in `dir`; the CA file may be there already,
// from an earlier host, but only with the same certificate.
void write_service_certificates(const std::string& dir, const json& issued) {
  const std::string name = issued.value("name", "");
  const std::string ca = issued.value("ca", "");
  const std::string ca_path = dir + "/service-ca.pem";
  if (std::filesystem::exists(ca_path)) {
    if (read_input(ca_path) != ca) throw Failure(exit_failure, ca_path + " holds another CA's certificate");
  } else {
    write_new_file(ca_path, ca, 0644);
  }
  write_new_file(dir + "/" + name + ".pem", issued.value("certificate", ""), 0644);
  std::cout << name << ": " << issued.value("role", "") << " certificate, serial " << issued.value("serial", "")
            << ", until " << when(issued.value("not_after", std::time_t{0})) << ", in " << dir << "/" << name
            << ".pem; service CA in " << ca_path << "\n";
}

int run_gateway_add(const GatewayArgs& a) {
  json params{{"name", a.name}, {"role", a.role}, {"days", a.days}};
  std::optional<Secret> key;
  if (a.csr.empty()) {
    // Made here: the key never passes through the keystore, and is written
    // only where the administrator said.
    auto made = keystore::new_service_key_request(a.name);
    if (!made) throw Failure(exit_failure, made.error().message);
    key = Secret(std::move(made->key_pem));
    params["csr"] = std::move(made->request_pem);
  } else {
    params["csr"] = read_input(a.csr);
  }
  const json r = Keystore(a.config).admin("gateway-add", params);
  // Kept whether or not approvals are pending: the request holds its public key.
  if (key) write_new_private_file(a.out + "/" + a.name + ".key", key->view());
  if (r.value("status", "") == "pending") {
    pending_or(r, [] {});
    std::cout << "then: mailkmsctl gateway fetch " << r.value("request", "") << " --out " << a.out << "\n";
    return 0;
  }
  write_service_certificates(a.out, r);
  return 0;
}

void print_gateway(const json& g) {
  const bool revoked = !g.value("revoked_at", json()).is_null();
  std::cout << g.value("name", "") << "  " << g.value("role", "") << "  serial " << g.value("serial", "") << "  until "
            << when(g.value("not_after", std::time_t{0}))
            << (revoked ? "  revoked " + when(g.value("revoked_at", std::time_t{0})) : std::string("  in force"))
            << "  by " << g.value("issued_by", "") << "\n";
}

void add_gateway_commands(CLI::App& app, std::vector<Command>& commands) {
  CLI::App* gateway = app.add_subcommand("gateway", "Certificates for the keystore's TLS peers: gateways, "
                                                    "administrators' hosts and keystored instances");
  gateway->require_subcommand(1);
  commands.push_back(command<GatewayArgs>(
      *gateway, "add", "Certify a host for TLS to the keystore: writes NAME.key (made here), NAME.pem, service-ca.pem",
      [](CLI::App& c, GatewayArgs& a) {
        c.add_option("name", a.name, "The host's name (as clients dial it, for a keystore) or IP address")->required();
        c.add_option("--role", a.role, "gateway (a milter or proxy), admin (mailkmsctl) or keystore (keystored)")
            ->check(CLI::IsMember({"gateway", "admin", "keystore"}))
            ->capture_default_str();
        c.add_option("--csr", a.csr, "Certify this PKCS#10 request's key instead of making one here");
        c.add_option("--out", a.out, "Directory to write the files in")->capture_default_str();
        c.add_option("--days", a.days, "Validity")->capture_default_str();
      },
      run_gateway_add));
  commands.push_back(command<GatewayArgs>(
      *gateway, "fetch", "Write the certificate of an approved gateway add",
      [](CLI::App& c, GatewayArgs& a) {
        c.add_option("id", a.name, "The request")->required();
        c.add_option("--out", a.out, "Directory to write the files in")->capture_default_str();
      },
      [](const GatewayArgs& a) {
        write_service_certificates(a.out, Keystore(a.config).admin("request-fetch", {{"id", a.name}}));
        return 0;
      }));
  commands.push_back(command<Base>(*gateway, "list", "List the service certificates", json_option, [](const Base& a) {
    const json gateways = Keystore(a.config).admin("gateway-list");
    if (printed_as_json(a, gateways)) return 0;
    for (const auto& g : gateways) print_gateway(g);
    return 0;
  }));
  commands.push_back(command<GatewayArgs>(
      *gateway, "revoke", "Revoke a host's certificates: refused on every keystored instance within a second",
      [](CLI::App& c, GatewayArgs& a) { c.add_option("name", a.name, "The host")->required(); },
      [](const GatewayArgs& a) {
        const json r = Keystore(a.config).admin("gateway-revoke", {{"name", a.name}});
        pending_or(r, [&] { std::cout << a.name << ": " << r.value("revoked", 0) << " certificate(s) revoked\n"; });
        return 0;
      }));
  commands.push_back(command<GatewayArgs>(
      *gateway, "ca", "Write the service CA's certificate (what clients pin, and keystored admits by)",
      [](CLI::App& c, GatewayArgs& a) { c.add_option("--out", a.csr, "Where (default stdout)"); },
      [](const GatewayArgs& a) {
        write_output(a.csr.empty() ? "-" : a.csr, Keystore(a.config).admin("service-ca").value("certificate", ""));
        return 0;
      }));
}

}  // namespace

std::vector<Command> add_keystore_commands(CLI::App& app) {
  std::vector<Command> commands;
  commands.push_back(command<InitArgs>(
      app, "init", "Create the keystore database, its sealed master key and the first administrator",
      [](CLI::App& c, InitArgs& a) {
        c.add_option("--admin", a.admin, "Name of the first administrator")->required();
        c.add_option("--admin-password-file", a.admin_password_file, "Its password (at least 12 characters), first line (else asked)");
        c.add_option("--passphrase-file", a.passphrase_file, "Seal with this passphrase (at least 12 characters), first line (else asked)");
        c.add_option("--key-file", a.key_file, "Seal with a new key file written here (mode 0600)");
        auto* shares = c.add_option("--shares", a.shares, "Seal with this many Shamir shares");
        c.add_option("--threshold", a.threshold, "How many shares unseal")->needs(shares);
      },
      run_init));
  commands.push_back(command<UnsealArgs>(
      app, "unseal", "Unseal mailkms-keystored with the passphrase or enough shares",
      [](CLI::App& c, UnsealArgs& a) {
        c.add_option("--passphrase-file", a.passphrase_file, "The passphrase, first line (else asked)");
        c.add_option("--share", a.shares, "A share (repeat)");
        c.add_option("--shares-file", a.shares_file, "Shares, one per line");
      },
      run_unseal));
  commands.push_back(command<UnsealArgs>(
      app, "rekey", "Rotate the master key: every record sealed again under a new one, the same unseal secret",
      [](CLI::App& c, UnsealArgs& a) {
        c.add_option("--passphrase-file", a.passphrase_file, "The unseal passphrase, first line (else asked)");
        c.add_option("--share", a.shares, "A share (repeat)");
        c.add_option("--shares-file", a.shares_file, "Shares, one per line");
      },
      run_rekey));
  CLI::App* storage = app.add_subcommand("storage", "The keystore's database");
  storage->require_subcommand(1);
  commands.push_back(command<MigrateArgs>(
      *storage, "migrate",
      "Copy the keystore's database into another (an empty PostgreSQL database, or an SQLite file), check the copy "
      "row by row and its audit chain; the source is only read",
      [](CLI::App& c, MigrateArgs& a) {
        c.add_option("--to", a.to, "The target: postgresql://…, a libpq key=value string, or a new file's path")
            ->required();
        c.add_option("--key-file", a.key_file, "The unseal key file (else the configuration's unseal_key_file)");
        c.add_option("--passphrase-file", a.passphrase_file, "The unseal passphrase, first line (else asked)");
        c.add_option("--share", a.shares, "A share (repeat)");
        c.add_option("--shares-file", a.shares_file, "Shares, one per line");
      },
      run_storage_migrate));
  commands.push_back(command<Base>(app, "status",
                                   "The keystore on one screen: sealed or not, the master key's generation; after a login, "
                                   "the instance, database, audit head, pending requests, expiring certificates and CRLs",
                                   json_option, run_status));
  commands.push_back(command<LoginArgs>(
      app, "login", "Start an administrator's session, kept (mode 0600) in $MAILKMS_SESSION_FILE, else ~/.mailkms-session: administrators sharing a Unix account each set their own",
      [](CLI::App& c, LoginArgs& a) {
        c.add_option("name", a.name, "Administrator")->required();
        c.add_option("--password-file", a.password_file, "The password, first line (else asked)");
      },
      run_login));
  commands.push_back(command<Base>(app, "logout", "End the session", [](CLI::App&, Base&) {}, run_logout));

  CLI::App* ca = app.add_subcommand("ca", "The certificate authority");
  ca->require_subcommand(1);
  commands.push_back(command<CaArgs>(
      *ca, "init", "Create the root CA",
      [](CLI::App& c, CaArgs& a) {
        c.add_option("--id", a.id, "CA id (a-z, 0-9, -)")->required();
        c.add_option("--name", a.name, "Subject common name");
        c.add_option("--key-type", a.key_type, "rsa-3072, rsa-4096 or ec-p384 (default)");
        c.add_option("--days", a.days, "Validity (default 3650)");
      },
      [](const CaArgs& a) {
        pending_or(Keystore(a.config).admin("ca-create-root", ca_params(a)), [&] { std::cout << "root CA " << a.id << " created\n"; });
        return 0;
      }));
  commands.push_back(command<CaArgs>(
      *ca, "add-subordinate", "Create an issuing CA under one of ours",
      [](CLI::App& c, CaArgs& a) {
        c.add_option("--id", a.id, "CA id")->required();
        c.add_option("--parent", a.parent, "The CA that signs it")->required();
        c.add_option("--name", a.name, "Subject common name");
        c.add_option("--key-type", a.key_type, "rsa-2048 … ec-p256 (default)");
        c.add_option("--days", a.days, "Validity (default 1825)");
        c.add_option("--priority", a.priority, "Lower issues first")->capture_default_str();
      },
      [](const CaArgs& a) {
        pending_or(Keystore(a.config).admin("ca-create-issuing", ca_params(a)), [&] { std::cout << "issuing CA " << a.id << " created\n"; });
        return 0;
      }));
  commands.push_back(command<CaArgs>(
      *ca, "csr", "Make an issuing CA for an external CA to sign: writes its request",
      [](CLI::App& c, CaArgs& a) {
        c.add_option("--id", a.id, "CA id")->required();
        c.add_option("--name", a.name, "Subject common name");
        c.add_option("--key-type", a.key_type, "Key type (default ec-p256)");
        c.add_option("--priority", a.priority, "Lower issues first")->capture_default_str();
        c.add_option("--out", a.out, "Where to write the request (default stdout)");
      },
      [](const CaArgs& a) {
        const json r = Keystore(a.config).admin("ca-request-external", ca_params(a));
        if (r.contains("csr")) write_output(a.out, r.value("csr", ""));
        else pending_or(r, [] {});
        return 0;
      }));
  commands.push_back(command<CaArgs>(
      *ca, "import", "Install the certificate an external CA issued, with its chain",
      [](CLI::App& c, CaArgs& a) {
        c.add_option("--id", a.id, "CA id")->required();
        c.add_option("--in", a.in, "The certificate, then its chain (PEM; default stdin)");
      },
      [](const CaArgs& a) {
        pending_or(Keystore(a.config).admin("ca-import-external", {{"id", a.id}, {"pem", read_input(a.in)}}),
                   [&] { std::cout << "CA " << a.id << " can issue\n"; });
        return 0;
      }));
  commands.push_back(command<Base>(*ca, "list", "List the CAs", json_option, [](const Base& a) {
    const json cas = Keystore(a.config).admin("ca-list");
    if (printed_as_json(a, cas)) return 0;
    for (const auto& c : cas) print_ca(c);
    return 0;
  }));
  commands.push_back(command<CaArgs>(
      *ca, "export", "Write a CA's certificate, or its chain up to the root, for clients, partners and -CAfile",
      [](CLI::App& c, CaArgs& a) {
        c.add_option("id", a.id, "CA id")->required();
        c.add_flag("--chain", a.chain, "The CA's certificate, then each issuer's up to the root");
        c.add_flag("--der", a.der, "DER instead of PEM; with --chain, a certificates-only PKCS#7 (.p7b)");
        c.add_option("--out", a.out, "Where (default stdout)");
      },
      run_ca_export));
  for (const std::string action : {"enable", "disable"}) {
    commands.push_back(command<CaArgs>(
        *ca, action, action == "enable" ? "Let a CA issue" : "Stop a CA issuing",
        [](CLI::App& c, CaArgs& a) { c.add_option("id", a.id, "CA id")->required(); },
        [action](const CaArgs& a) {
          pending_or(Keystore(a.config).admin("ca-" + action, {{"id", a.id}}), [&] { std::cout << a.id << ": " << action << "d\n"; });
          return 0;
        }));
  }

  CLI::App* crl = app.add_subcommand("crl", "Certificate revocation lists");
  crl->require_subcommand(1);
  commands.push_back(command<IdArgs>(
      *crl, "export", "Write an issuing CA's current CRL (DER)",
      [](CLI::App& c, IdArgs& a) {
        c.add_option("--ca", a.id, "Issuing CA id")->required();
        c.add_option("--out", a.out, "Where (default stdout)");
      },
      [](const IdArgs& a) {
        const json r = Keystore(a.config).admin("crl", {{"ca", a.id}});
        auto der = keystore::protocol::unbase64(r.value("crl", json()));
        if (!der) throw Failure(exit_failure, "the keystore sent no CRL");
        write_output(a.out, *der);
        return 0;
      }));

  CLI::App* user = app.add_subcommand("user", "Users and their keys");
  user->require_subcommand(1);
  commands.push_back(command<UserArgs>(
      *user, "add", "Add users: keys, certificates and escrow for each",
      [](CLI::App& c, UserArgs& a) {
        c.add_option("addresses", a.addresses, "Addresses");
        c.add_option("--file", a.file, "One address per line (- for stdin)");
      },
      run_user_add));
  commands.push_back(command<UserArgs>(
      *user, "list", "List users",
      [](CLI::App& c, UserArgs& a) {
        c.add_option("--after", a.after, "Start after this address");
        c.add_option("--limit", a.limit, "At most this many")->capture_default_str();
        json_option(c, a);
      },
      run_user_list));
  commands.push_back(command<UserArgs>(*user, "show", "Show a user and their certificates",
                                       [](CLI::App& c, UserArgs& a) {
                                         c.add_option("address", a.addresses)->required();
                                         json_option(c, a);
                                       },
                                       run_user_show));
  for (const auto& [name, op, said] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"enable", "user-enable", "enabled"}, {"disable", "user-disable", "disabled"}, {"renew", "user-renew", "renewed"}}) {
    commands.push_back(command<UserArgs>(
        *user, name, name == "renew" ? "Issue new keys and certificates (old encryption keys stay escrowed)" : name + " users",
        [](CLI::App& c, UserArgs& a) { c.add_option("addresses", a.addresses)->required(); },
        [op = op, said = said](const UserArgs& a) { return run_user_simple(a, op, said); }));
  }

  commands.push_back(command<RecoverArgs>(
      *user, "export", "Write users, with their keys, to a password-protected bundle for another keystore",
      [](CLI::App& c, RecoverArgs& a) {
        c.add_option("address", a.address, "The user")->required();
        c.add_option("--out", a.out, "The bundle to write")->required();
        c.add_option("--password-file", a.password_file, "Its password (at least 12 characters), first line (else asked)");
      },
      [](const RecoverArgs& a) {
        const Secret password = secret_from(a.password_file, "password for the bundle", true);
        const json r = Keystore(a.config).admin("users-export", {{"addresses", {a.address}}, {"password", std::string(password.view())}});
        if (r.value("status", "") == "pending") {
          pending_or(r, [] {});
          std::cout << "then: mailkmsctl fetch " << r.value("request", "") << " --out " << a.out << "\n";
          return 0;
        }
        write_pkcs12(r, a.out);
        return 0;
      }));
  commands.push_back(command<RecoverArgs>(
      *user, "import", "Add the users of a bundle another keystore exported",
      [](CLI::App& c, RecoverArgs& a) {
        c.add_option("bundle", a.address, "The bundle file")->required();
        c.add_option("--password-file", a.password_file, "Its password (at least 12 characters), first line (else asked)");
      },
      [](const RecoverArgs& a) {
        const Secret password = secret_from(a.password_file, "password for the bundle");
        const json r = Keystore(a.config).admin("users-import", {{"bundle", read_file(a.address)}, {"password", std::string(password.view())}});
        if (r.value("status", "") == "pending") {
          pending_or(r, [] {});
          return 0;
        }
        for (const auto& s : r.value("skipped", json::array())) std::cout << "already here: " << s.get<std::string>() << "\n";
        std::cout << r.value("imported", 0) << " imported\n";
        return 0;
      }));

  commands.push_back(command<EnrollArgs>(
      app, "enroll", "Enroll users by mail: each gets a one-time token, replies, and receives their keys",
      [](CLI::App& c, EnrollArgs& a) {
        c.add_option("addresses", a.addresses, "Addresses (added as users when new)");
        c.add_option("--file", a.file, "One address per line (- for stdin)");
        c.add_flag("--reissue", a.reissue, "Mail a new token even to users who enrolled already");
      },
      run_enroll));

  CLI::App* admin = app.add_subcommand("admin", "Administrators");
  admin->require_subcommand(1);
  for (const std::string action : {"add", "passwd"}) {
    commands.push_back(command<NamedArgs>(
        *admin, action, action == "add" ? "Add an administrator" : "Set an administrator's password",
        [](CLI::App& c, NamedArgs& a) {
          c.add_option("name", a.name)->required();
          c.add_option("--password-file", a.password_file, "The password (at least 12 characters), first line (else asked)");
        },
        [action](const NamedArgs& a) {
          const Secret password = secret_from(a.password_file, "password for " + a.name + " (at least 12 characters)", true);
          pending_or(Keystore(a.config).admin("admin-" + action, {{"name", a.name}, {"password", std::string(password.view())}}),
                     [&] { std::cout << a.name << ": done\n"; });
          return 0;
        }));
  }
  commands.push_back(command<NamedArgs>(
      *admin, "remove", "Remove an administrator", [](CLI::App& c, NamedArgs& a) { c.add_option("name", a.name)->required(); },
      [](const NamedArgs& a) {
        pending_or(Keystore(a.config).admin("admin-remove", {{"name", a.name}}), [&] { std::cout << a.name << ": removed\n"; });
        return 0;
      }));
  commands.push_back(command<Base>(*admin, "list", "List administrators", json_option, [](const Base& a) {
    const json admins = Keystore(a.config).admin("admin-list");
    if (printed_as_json(a, admins)) return 0;
    for (const auto& x : admins) std::cout << x.value("name", "") << "\n";
    return 0;
  }));

  CLI::App* approvals = app.add_subcommand("approvals", "How many administrators must approve each task");
  approvals->require_subcommand(1);
  commands.push_back(command<NamedArgs>(
      *approvals, "set", "Set the approvals a task needs: admin-change, ca-change, revoke, recover",
      [](CLI::App& c, NamedArgs& a) {
        c.add_option("task", a.name)->required();
        c.add_option("count", a.password_file)->required();
      },
      [](const NamedArgs& a) {
        pending_or(Keystore(a.config).admin("approvals-set", {{"task", a.name}, {"count", std::stoi(a.password_file)}}),
                   [&] { std::cout << a.name << " now needs " << a.password_file << " approval(s)\n"; });
        return 0;
      }));
  commands.push_back(command<Base>(*approvals, "show", "Show the policy", json_option, [](const Base& a) {
    const json policy = Keystore(a.config).admin("approvals-show");
    if (printed_as_json(a, policy)) return 0;
    for (const auto& [task, count] : policy.items()) std::cout << task << ": " << count << "\n";
    return 0;
  }));

  commands.push_back(command<RecoverArgs>(
      app, "recover",
      "Export all of a user's escrowed encryption keys as a password-protected PKCS#12, to a file or (--by-mail) to the user",
      [](CLI::App& c, RecoverArgs& a) {
        c.add_option("address", a.address)->required();
        auto* out = c.add_option("--out", a.out, "The PKCS#12 file to write");
        auto* password = c.add_option("--password-file", a.password_file, "Its password (at least 12 characters), first line (else asked)");
        auto* legacy = c.add_flag("--legacy", a.legacy, "PBE-SHA1-3DES for clients that cannot read the modern profile");
        c.add_flag("--by-mail", a.by_mail,
                   "Mail the user a recovery token instead: they reply with a password of their own and get the PKCS#12")
            ->excludes(out)
            ->excludes(password)
            ->excludes(legacy);
      },
      [](const RecoverArgs& a) {
        if (a.by_mail) {
          const json r = Keystore(a.config).admin("recover", {{"address", a.address}, {"by_mail", true}});
          if (r.value("status", "") == "pending") {
            pending_or(r, [] {});
            std::cout << "once approved, the keystore mails " << a.address << " a recovery token\n";
          } else {
            std::cout << "recovery token mailed to " << r.value("mailed", a.address) << ", valid until "
                      << when(r.value("expires", std::time_t{0})) << "\n";
          }
          return 0;
        }
        if (a.out.empty()) throw Failure(exit_usage, "give --out FILE, or --by-mail");
        const Secret password = secret_from(a.password_file, "password for the PKCS#12 file", true);
        const json r = Keystore(a.config).admin("recover", {{"address", a.address},
                                                           {"password", std::string(password.view())},
                                                           {"profile", a.legacy ? "legacy" : "modern"}});
        if (r.value("status", "") == "pending") {
          pending_or(r, [] {});
          std::cout << "then: mailkmsctl fetch " << r.value("request", "") << " --out " << a.out << "\n";
        } else {
          write_pkcs12(r, a.out);
        }
        return 0;
      }));
  commands.push_back(command<IdArgs>(app, "approve", "Approve a pending request",
                                     [](CLI::App& c, IdArgs& a) { c.add_option("id", a.id)->required(); },
                                     [](const IdArgs& a) {
                                       const json r = Keystore(a.config).admin("approve", {{"id", a.id}});
                                       std::cout << a.id << ": " << r.value("status", "") << " (" << r.value("approvals", 0)
                                                 << " of " << r.value("required", 0) << ")\n";
                                       return 0;
                                     }));
  commands.push_back(command<Base>(app, "requests", "List approval requests", json_option, [](const Base& a) {
    const json requests = Keystore(a.config).admin("requests-list");
    if (printed_as_json(a, requests)) return 0;
    for (const auto& r : requests) {
      std::cout << r.value("id", "") << "  " << r.value("op", "") << " " << r.value("subject", "") << "  "
                << r.value("status", "") << "  by " << r.value("requested_by", "") << "  approvals "
                << r.value("approvals", json::array()).size() << "/" << r.value("required", 0) << "\n";
      // What an approval would let run (passwords are never shown).
      if (const auto p = r.value("parameters", json::object()); !p.empty()) std::cout << "    " << p.dump() << "\n";
    }
    return 0;
  }));
  commands.push_back(command<IdArgs>(
      app, "fetch", "Fetch the result of an approved recovery or export",
      [](CLI::App& c, IdArgs& a) {
        c.add_option("id", a.id)->required();
        c.add_option("--out", a.out, "The PKCS#12 file to write")->required();
      },
      [](const IdArgs& a) {
        write_pkcs12(Keystore(a.config).admin("request-fetch", {{"id", a.id}}), a.out);
        return 0;
      }));
  commands.push_back(command<RevokeArgs>(
      app, "revoke", "Revoke a user's current certificates, or one by serial",
      [](CLI::App& c, RevokeArgs& a) {
        c.add_option("address", a.address, "The user");
        c.add_option("--serial", a.serial, "One certificate");
        c.add_option("--reason", a.reason, "keyCompromise, affiliationChanged, superseded, cessationOfOperation …")
            ->capture_default_str();
      },
      [](const RevokeArgs& a) {
        if (a.address.empty() == a.serial.empty()) throw Failure(exit_usage, "give an address or --serial");
        json params{{"reason", a.reason}};
        if (a.serial.empty()) params["address"] = a.address;
        else params["serial"] = a.serial;
        const json r = Keystore(a.config).admin("revoke", params);
        pending_or(r, [&] {
          for (const auto& s : r.value("revoked", json::array())) std::cout << "revoked " << s.get<std::string>() << "\n";
        });
        return 0;
      }));

  CLI::App* trust = app.add_subcommand("trust", "The anchors inbound signatures may chain to");
  trust->require_subcommand(1);
  commands.push_back(command<CaArgs>(
      *trust, "add", "Trust these CA certificates (PEM) for inbound mail",
      [](CLI::App& c, CaArgs& a) {
        c.add_option("file", a.in, "PEM file (- for stdin)")->required();
        c.add_option("--domains", a.domains,
                     "Vouch only for addresses at these domains (comma-separated; partner.example is that domain, "
                     ".partner.example those below it)")
            ->delimiter(',');
      },
      [](const CaArgs& a) {
        json params{{"pem", read_input(a.in)}};
        if (!a.domains.empty()) params["domains"] = a.domains;
        const json r = Keystore(a.config).admin("trust-add", params);
        pending_or(r, [&] {
          for (const auto& f : r.value("added", json::array())) {
            std::cout << "trusted sha256 " << f.get<std::string>() << scope_text(r.value("domains", json::array())) << "\n";
          }
        });
        return 0;
      }));
  commands.push_back(command<CaArgs>(
      *trust, "remove", "Stop trusting an anchor an administrator added",
      [](CLI::App& c, CaArgs& a) { c.add_option("fingerprint", a.id, "Its SHA-256, as trust list shows it")->required(); },
      [](const CaArgs& a) {
        pending_or(Keystore(a.config).admin("trust-remove", {{"fingerprint", a.id}}), [&] { std::cout << "removed\n"; });
        return 0;
      }));
  commands.push_back(command<CaArgs>(
      *trust, "system", "Trust the operating system's roots too (on) or not (off)",
      [](CLI::App& c, CaArgs& a) { c.add_option("setting", a.id, "on or off")->required()->check(CLI::IsMember({"on", "off"})); },
      [](const CaArgs& a) {
        pending_or(Keystore(a.config).admin("trust-system", {{"enabled", a.id == "on"}}), [&] { std::cout << "system roots: " << a.id << "\n"; });
        return 0;
      }));
  commands.push_back(command<Base>(*trust, "list", "List the trust anchors", json_option, [](const Base& a) {
    const json r = Keystore(a.config).admin("trust-list");
    if (printed_as_json(a, r)) return 0;
    for (const auto& anchor : r.value("anchors", json::array())) {
      std::cout << anchor.value("source", "") << "  " << anchor.value("subject", "");
      if (anchor.contains("fingerprint")) std::cout << "  sha256 " << anchor.value("fingerprint", "");
      std::cout << scope_text(anchor.value("domains", json::array())) << "\n";
    }
    std::cout << "system roots: " << (r.value("system_roots", false) ? "on" : "off") << "\n";
    return 0;
  }));

  CLI::App* harvested = app.add_subcommand("harvested", "Outside senders' certificates remembered from their signed mail");
  harvested->require_subcommand(1);
  commands.push_back(command<UserArgs>(
      *harvested, "list", "List harvested certificates: address, subject, valid until, what the sender can read",
      [](CLI::App& c, UserArgs& a) {
        c.add_option("--after", a.after, "Start after this address");
        c.add_option("--limit", a.limit, "At most this many")->capture_default_str();
        json_option(c, a);
      },
      [](const UserArgs& a) {
        const json remembered = Keystore(a.config).admin("harvested-list", {{"after", a.after}, {"limit", a.limit}});
        if (printed_as_json(a, remembered)) return 0;
        for (const auto& h : remembered) print_harvested(h);
        return 0;
      }));
  commands.push_back(command<UserArgs>(
      *harvested, "remove", "Forget an address's harvested certificate (its next signed message brings one back)",
      [](CLI::App& c, UserArgs& a) { c.add_option("address", a.addresses)->required(); },
      [](const UserArgs& a) { return run_user_simple(a, "harvested-remove", "removed"); }));

  add_gateway_commands(app, commands);
  CLI::App* audit = app.add_subcommand("audit", "The audit log");
  audit->require_subcommand(1);
  commands.push_back(command<AuditArgs>(
      *audit, "show", "Show audit records",
      [](CLI::App& c, AuditArgs& a) {
        c.add_option("--after", a.after, "After this sequence number");
        c.add_option("--limit", a.limit, "At most this many")->capture_default_str();
        json_option(c, a);
      },
      [](const AuditArgs& a) {
        const json records = Keystore(a.config).admin("audit-show", {{"after", a.after}, {"limit", a.limit}});
        if (printed_as_json(a, records)) return 0;
        for (const auto& r : records) {
          std::cout << r.value("sequence", 0) << "  " << when(r.value("time", std::time_t{0})) << "  "
                    << r.value("actor", "") << "  " << r.value("action", "") << "  " << r.value("subject", "") << "  "
                    << r.value("outcome", "") << "  " << r.value("detail", "") << "\n";
        }
        return 0;
      }));
  commands.push_back(command<AuditArgs>(
      *audit, "verify", "Check the audit log's hash chain, and that it still holds what its checkpoints name",
      [](CLI::App& c, AuditArgs& a) {
        c.add_option("--checkpoint", a.checkpoint_file,
                     "A copy of the checkpoint file kept elsewhere (default: the keystore's own)");
      },
      run_audit_verify));
  commands.push_back(command<Base>(
      *audit, "checkpoint", "Sign where the audit chain stands now and append it to the checkpoint file",
      [](CLI::App&, Base&) {},
      [](const Base& a) {
        std::cout << Keystore(a.config).admin("audit-checkpoint").dump() << "\n";
        return 0;
      }));
  commands.push_back(command<Base>(*audit, "key", "Print the public key that signs audit checkpoints (PEM)",
                                   [](CLI::App&, Base&) {},
                                   [](const Base& a) {
                                     std::cout << Keystore(a.config).admin("audit-key").value("public_key", "");
                                     return 0;
                                   }));
  return commands;
}

}  // namespace mailkms::cli
