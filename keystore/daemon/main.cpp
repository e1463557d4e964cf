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
#include "mailkms/keystore/config.hpp"
#include "mailkms/keystore/service.hpp"
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

}  // namespace

namespace {

int serve(int argc, char** argv) {
  CLI::App app{"mailkms-keystored: the mailkms key management daemon"};
  std::string config_path = "/etc/mailkms/mailkms.conf";
  bool foreground = false;
  app.add_option("-c,--config", config_path, "Configuration file")->capture_default_str();
  app.add_flag("-f,--foreground", foreground, "Stay in the foreground (for systemd); the only mode for now");
  app.set_version_flag("--version", "mailkms-keystored " MAILKMS_VERSION);
  CLI11_PARSE(app, argc, argv);

  auto config = mailkms::keystore::load_config(config_path);
  if (!config) return fatal(config.error().message);
  if (auto own = mailkms::keystored::check_own_user(*config); !own) return fatal(own.error().message);
  if (auto safe = mailkms::keystored::check_safe_paths(*config); !safe) return fatal(safe.error().message);
  harden(config->lock_memory);

  auto ctx = mailkms::smime::CryptoContext::create();
  if (!ctx) return fatal(ctx.error().describe());
  mailkms::keystore::AccessPolicy access{config->gateway_uids, config->gateway_gids, config->gateway_rate_limit};
  mailkms::keystore::KeystoreService::Policies policies;
  policies.users = {config->encryption_key_type, config->signing_key_type, config->certificate_days};
  policies.enrollment = config->enrollment;
  policies.local_domains = config->local_domains;
  auto service = mailkms::keystore::KeystoreService::open(config->database, *ctx, access, policies);
  if (!service) return fatal(service.error().describe());
  // Guarded rows that fail their checks: a database writer at work.
  (*service)->set_integrity_reporter([](const std::string& message) { warn(message); });
  (*service)->set_audit_checkpoints(config->audit_checkpoint_file, config->audit_checkpoint_interval,
                                    [](const std::string& line) { std::cerr << "mailkms-keystored: " << line << "\n"; });
  if (!config->unseal_key_file.empty()) {
    if (auto unsealed = (*service)->unseal_with_key_file(config->unseal_key_file); !unsealed) {
      return fatal("cannot unseal with " + config->unseal_key_file.string() + ": " + unsealed.error().message);
    }
  }

  boost::asio::io_context io(config->workers);
  mailkms::keystored::Server server(io, **service, *config);
  if (auto listening = server.listen(); !listening) return fatal(listening.error().message);

  // Every hour, renew users whose certificates end within the window.
  boost::asio::steady_timer renewals(io);
  std::function<void(boost::system::error_code)> renew = [&](boost::system::error_code ec) {
    if (ec) return;
    if (!(*service)->sealed()) {
      const auto before = std::time(nullptr) + 86400L * config->renewal_window_days;
      auto renewed = (*service)->renew_expiring(before);
      if (!renewed) {
        std::cerr << "mailkms-keystored: renewal failed: " << renewed.error().message << "\n";
      } else if (*renewed > 0) {
        std::cerr << "mailkms-keystored: renewed " << *renewed << " user(s)\n";
      }
    }
    renewals.expires_after(std::chrono::hours(1));
    renewals.async_wait(renew);
  };
  renewals.expires_after(std::chrono::minutes(1));
  renewals.async_wait(renew);

  // Every few seconds: counted audit records whose window ended, and a
  // checkpoint of the chain when one is due.
  boost::asio::steady_timer upkeep(io);
  std::function<void(boost::system::error_code)> keep_audit = [&](boost::system::error_code ec) {
    if (ec) return;
    (*service)->audit_upkeep(false);
    upkeep.expires_after(std::chrono::seconds(5));
    upkeep.async_wait(keep_audit);
  };
  upkeep.expires_after(std::chrono::seconds(5));
  upkeep.async_wait(keep_audit);

  boost::asio::signal_set hangups(io, SIGHUP);
  // SIGTERM: stop accepting, answer what is in flight, then exit; a client
  // that will not take its answers gets 10 seconds.
  boost::asio::signal_set signals(io, SIGTERM, SIGINT);
  boost::asio::steady_timer deadline(io);
  signals.async_wait([&](boost::system::error_code, int signal) {
    std::cerr << "mailkms-keystored: signal " << signal << ", finishing requests in flight\n";
    deadline.expires_after(std::chrono::seconds(10));
    deadline.async_wait([&io](boost::system::error_code ec) {
      if (!ec) io.stop();
    });
    hangups.cancel();
    renewals.cancel();
    upkeep.cancel();
    server.stop([&io] { io.stop(); });  // every answer is out
  });
  // SIGHUP: read the configuration again. Who counts as a gateway, and how
  // users are mailed, change at once; a file that does not load is refused
  // and the running settings stay. Paths and threads need a restart.
  std::function<void(boost::system::error_code, int)> reload = [&](boost::system::error_code ec, int) {
    if (ec) return;
    auto fresh = mailkms::keystore::load_config(config_path);
    if (!fresh) {
      std::cerr << "mailkms-keystored: reload refused, running configuration kept: " << fresh.error().message << "\n";
    } else {
      (*service)->set_access({fresh->gateway_uids, fresh->gateway_gids, fresh->gateway_rate_limit});
      (*service)->set_enrollment(fresh->enrollment);
      (*service)->set_local_domains(fresh->local_domains);
      if (fresh->database != config->database || fresh->socket != config->socket || fresh->workers != config->workers) {
        std::cerr << "mailkms-keystored: database, socket and workers change only on restart\n";
      }
      std::cerr << "mailkms-keystored: configuration reloaded\n";
    }
    hangups.async_wait(reload);
  };
  hangups.async_wait(reload);
  (void)::signal(SIGPIPE, SIG_IGN);
  std::cerr << "mailkms-keystored: serving " << config->socket.string() << " ("
            << ((*service)->sealed() ? "sealed" : "unsealed") << ")\n";
  std::vector<std::thread> threads;
  for (int i = 1; i < config->workers; ++i) threads.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& t : threads) t.join();
  (*service)->audit_upkeep(true);  // the last counts, and where the chain ends
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return mailkms::guarded_main("mailkms-keystored", serve, argc, argv); }
