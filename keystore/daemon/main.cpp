// mailkms-keystored: the only process that holds private keys in the
// clear. Start-up follows a fixed order — configuration, hardening, the
// database, the socket, then serving — and any failure in it is fatal.
// After that a peer's bad input is an error answer, never an exit.
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <boost/asio.hpp>
#include <exception>
#include <iostream>
#include <functional>
#include <thread>

#include "mailkms/guarded_main.hpp"
#include "mailkms/keystore/client.hpp"
#include "mailkms/keystore/config.hpp"
#include "mailkms/keystore/service.hpp"
#include "mailkms/metrics_server.hpp"
#include "mailkms/service_manager.hpp"
#include "safe_paths.hpp"
#include "server.hpp"

namespace {

int fatal(const std::string& message) {
  std::cerr << "mailkms-keystored: fatal: " << message << "\n";
  return 1;
}

void warn(const std::string& message) { std::cerr << "mailkms-keystored: warning: " << message << "\n"; }

// No core dumps, no ptrace by other users, and (when asked) no swap: the
// master key and private keys must not leak out of memory.
void harden(bool lock_memory) {
  const rlimit no_core{0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  if (lock_memory && ::mlockall(MCL_CURRENT | MCL_FUTURE) != 0) {
    warn("cannot lock memory (raise RLIMIT_MEMLOCK or grant CAP_IPC_LOCK); keys may reach swap");
  }
}

// The daemon's chores besides answering requests: certificates renewed
// every hour, the audit kept every few seconds, the configuration read
// again on SIGHUP, and on SIGTERM requests in flight answered, then exit.
class Chores {
 public:
  Chores(boost::asio::io_context& io, mailkms::keystore::KeystoreService& service, mailkms::keystored::Server& server,
         const mailkms::keystore::Config& config, std::string config_path)
      : io_(io), service_(service), server_(server), config_(config), config_path_(std::move(config_path)),
        renewals_(io), upkeep_(io), deadline_(io), hangups_(io, SIGHUP), stops_(io, SIGTERM, SIGINT) {}

  void stop_with(mailkms::metrics::Server& metrics) { metrics_ = &metrics; }

  void start() {
    renewals_.expires_after(std::chrono::minutes(1));
    renewals_.async_wait([this](boost::system::error_code ec) { renew(ec); });
    upkeep_.expires_after(std::chrono::seconds(5));
    upkeep_.async_wait([this](boost::system::error_code ec) { keep_audit(ec); });
    hangups_.async_wait([this](boost::system::error_code ec, int) { reload(ec); });
    stops_.async_wait([this](boost::system::error_code, int signal) { stop(signal); });
  }

 private:
  // Users whose certificates end within the renewal window get new ones.
  void renew(boost::system::error_code ec) {
    if (ec) return;
    if (!service_.sealed()) {
      const auto before = std::time(nullptr) + 86400L * config_.renewal_window_days;
      auto renewed = service_.renew_expiring(before);
      if (!renewed) {
        std::cerr << "mailkms-keystored: renewal failed: " << renewed.error().message << "\n";
      } else if (*renewed > 0) {
        std::cerr << "mailkms-keystored: renewed " << *renewed << " user(s)\n";
      }
    }
    renewals_.expires_after(std::chrono::hours(1));
    renewals_.async_wait([this](boost::system::error_code next) { renew(next); });
  }

  // Counted audit records whose window ended, and a checkpoint of the
  // chain when one is due.
  void keep_audit(boost::system::error_code ec) {
    if (ec) return;
    service_.audit_upkeep(false);
    upkeep_.expires_after(std::chrono::seconds(5));
    upkeep_.async_wait([this](boost::system::error_code next) { keep_audit(next); });
  }

  // Who counts as a gateway, and how users are mailed, change at once; a
  // file that does not load is refused and the running settings stay.
  // Paths and threads need a restart.
  void reload(boost::system::error_code ec) {
    if (ec) return;
    mailkms::service_manager::reloading();
    auto fresh = mailkms::keystore::load_config(config_path_);
    if (!fresh) {
      std::cerr << "mailkms-keystored: reload refused, running configuration kept: " << fresh.error().message << "\n";
    } else {
      service_.set_access({fresh->gateway_uids, fresh->gateway_gids, fresh->gateway_rate_limit});
      service_.set_enrollment(fresh->enrollment);
      service_.set_local_domains(fresh->local_domains);
      if (fresh->database != config_.database || fresh->socket != config_.socket || fresh->workers != config_.workers) {
        std::cerr << "mailkms-keystored: database, socket and workers change only on restart\n";
      }
      std::cerr << "mailkms-keystored: configuration reloaded\n";
    }
    mailkms::service_manager::ready(service_.sealed() ? "serving, sealed" : "serving");
    hangups_.async_wait([this](boost::system::error_code next, int) { reload(next); });
  }

  // Stop accepting, answer what is in flight, then exit; a client that
  // will not take its answers gets 10 seconds.
  void stop(int signal) {
    std::cerr << "mailkms-keystored: signal " << signal << ", finishing requests in flight\n";
    mailkms::service_manager::stopping();
    deadline_.expires_after(std::chrono::seconds(10));
    deadline_.async_wait([this](boost::system::error_code ec) {
      if (!ec) io_.stop();
    });
    hangups_.cancel();
    renewals_.cancel();
    upkeep_.cancel();
    if (metrics_ != nullptr) metrics_->stop();
    server_.stop([this] { io_.stop(); });  // every answer is out
  }

  boost::asio::io_context& io_;
  mailkms::keystore::KeystoreService& service_;
  mailkms::keystored::Server& server_;
  const mailkms::keystore::Config& config_;
  std::string config_path_;
  boost::asio::steady_timer renewals_, upkeep_, deadline_;
  boost::asio::signal_set hangups_, stops_;
  mailkms::metrics::Server* metrics_ = nullptr;
};

// The service over the database, unsealed when a key file is configured;
// else what went wrong, to say before exiting.
mailkms::BasicResult<std::unique_ptr<mailkms::keystore::KeystoreService>, std::string> open_service(
    const mailkms::keystore::Config& config, mailkms::smime::CryptoContextPtr ctx) {
  mailkms::keystore::AccessPolicy access{config.gateway_uids, config.gateway_gids, config.gateway_rate_limit};
  mailkms::keystore::KeystoreService::Policies policies;
  policies.users = {config.encryption_key_type, config.signing_key_type, config.certificate_days};
  policies.enrollment = config.enrollment;
  policies.local_domains = config.local_domains;
  auto service = mailkms::keystore::KeystoreService::open(config.database, std::move(ctx), access, policies);
  if (!service) return service.error().describe();
  // Guarded rows that fail their checks: a database writer at work.
  (*service)->set_integrity_reporter([](const std::string& message) { warn(message); });
  // A database lost and found again, and which server after a failover.
  (*service)->storage().set_events([](const std::string& line) { std::cerr << "mailkms-keystored: " << line << "\n"; });
  (*service)->set_audit_checkpoints(config.audit_checkpoint_file, config.audit_checkpoint_interval,
                                    [](const std::string& line) { std::cerr << "mailkms-keystored: " << line << "\n"; });
  if (!config.unseal_key_file.empty()) {
    if (auto unsealed = (*service)->unseal_with_key_file(config.unseal_key_file); !unsealed) {
      return "cannot unseal with " + config.unseal_key_file.string() + ": " + unsealed.error().message;
    }
  }
  return std::move(*service);
}

}  // namespace

namespace {

int serve(int argc, char** argv) {
  CLI::App app{"mailkms-keystored: the mailkms key management daemon"};
  std::string config_path = "/etc/mailkms/mailkms.conf";
  bool foreground = false;
  bool check = false;
  app.add_option("-c,--config", config_path, "mailkms.conf to read")->capture_default_str();
  app.add_flag("-f,--foreground", foreground, "stay in the foreground (for systemd); the only mode for now");
  app.add_flag("--check", check, "check the configuration and the safety of the paths it names, then exit");
  app.set_version_flag("--version", "mailkms-keystored " MAILKMS_VERSION);
  CLI11_PARSE(app, argc, argv);

  auto config = mailkms::keystore::load_config(config_path);
  if (!config) return fatal(config.error().message);
  if (!check) {
    if (auto own = mailkms::keystored::check_own_user(*config); !own) return fatal(own.error().message);
  }
  // Checked as its user would find them: root checking for it (--check)
  // judges the paths by the configured user, as the daemon will run.
  uid_t owner = ::geteuid();
  if (const auto configured = mailkms::keystore::resolve_user(config->user); check && owner == 0 && configured) {
    owner = *configured;
  }
  if (auto safe = mailkms::keystored::check_safe_paths(*config, owner); !safe) return fatal(safe.error().message);
  if (check) {
    std::cout << config_path << ": OK; database " << config->database.describe() << ", socket "
              << config->socket.string() << "\n";
    return 0;
  }
  harden(config->lock_memory);

  auto ctx = mailkms::smime::CryptoContext::create();
  if (!ctx) return fatal(ctx.error().describe());
  auto service = open_service(*config, *ctx);
  if (!service) return fatal(service.error());

  boost::asio::io_context io(config->workers);
  mailkms::keystored::Server server(io, **service, *config);
  if (auto listening = server.listen(); !listening) return fatal(listening.error().message);
  Chores chores(io, **service, server, *config, config_path);
  mailkms::metrics::Registry registry;
  mailkms::metrics::Server metrics(io, registry);
  if (!config->metrics_listen.empty()) {
    auto& keystore = **service;
    registry.gauge("mailkms_keystore_sealed", "1 while the keystore is sealed, else 0.",
                   [&keystore] { return keystore.sealed() ? 1.0 : 0.0; });
    server.count_in(registry);
    if (auto failed = metrics.listen(config->metrics_listen)) return fatal(*failed);
    chores.stop_with(metrics);
  }
  chores.start();
  (void)::signal(SIGPIPE, SIG_IGN);
  std::string tls;
  for (const auto& [host, port] : config->tls_listen) {
    tls += (tls.empty() ? " and TLS on " : ", ") + (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + port;
  }
  std::cerr << "mailkms-keystored: serving " << config->socket.string() << tls << " ("
            << ((*service)->sealed() ? "sealed" : "unsealed") << "), records in " << config->database.describe()
            << "\n";
  mailkms::service_manager::ready((*service)->sealed() ? "serving, sealed: unseal with mailkmsctl unseal"
                                                      : "serving");
  std::vector<std::thread> threads;
  for (int i = 1; i < config->workers; ++i) threads.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& t : threads) t.join();
  (*service)->audit_upkeep(true);  // the last counts, and where the chain ends
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return mailkms::guarded_main("mailkms-keystored", serve, argc, argv); }
