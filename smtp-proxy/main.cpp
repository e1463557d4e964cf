// mailkms-proxy: the S/MIME gateway as an SMTP proxy, for MTAs without
// milter support. Start-up order as the milter's: read and check the
// settings and the policy, open the listening socket, detach, write the
// pid file, drop privileges, then serve. Any failure before serving is
// fatal; after it, bad input is a verdict.
#include <grp.h>
#include <signal.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/asio.hpp>
#include <cerrno>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <thread>
#include <memory>
#include <string>
#include <vector>

#include "mailkms/errno_text.hpp"
#include "mailkms/guarded_main.hpp"
#include "mailkms/metrics_server.hpp"
#include "mailkms/service_manager.hpp"
#include "mailkms/gateway/gateway.hpp"
#include "session.hpp"
#include "settings.hpp"

namespace {

namespace asio = boost::asio;

// Until the proxy detaches, a fatal error is also shown on the terminal
// that started it, wherever the log goes.
bool logging_to_stderr = true;
bool attached = true;

[[noreturn]] void fatal(const std::string& message) {
  spdlog::critical("fatal: {}", message);
  if (attached && !logging_to_stderr) std::cerr << "mailkms-proxy: fatal: " << message << "\n";
  // NOLINTNEXTLINE(concurrency-mt-unsafe): only while starting, before any thread serves
  std::exit(1);
}

// Where the log goes, as for the milter: syslog when asked; else the log
// file when one is set; else stderr in the foreground, syslog in the
// background, and no start where that syslog does not exist.
void start_logging(bool syslog, bool foreground, const std::filesystem::path& log_file) {
  const bool to_syslog = syslog || (log_file.empty() && !foreground);
  if (to_syslog && !syslog && ::access("/dev/log", W_OK) != 0) {
    fatal("no log_file is set and there is no syslog socket (/dev/log): in the background the proxy's log would go "
          "nowhere; set [proxy] log_file, or run with --foreground");
  }
  if (!to_syslog && log_file.empty()) return;  // stderr, as it is
  spdlog::drop("mailkms");
  if (to_syslog) {
    spdlog::set_default_logger(spdlog::syslog_logger_mt("mailkms", "mailkms-proxy", LOG_PID, LOG_MAIL));
    spdlog::set_pattern("%v");
  } else {
    try {
      auto logger = spdlog::basic_logger_mt("mailkms", log_file.string());
      logger->flush_on(spdlog::level::info);
      spdlog::set_default_logger(logger);
    } catch (const spdlog::spdlog_ex& e) {
      fatal("log_file " + log_file.string() + ": " + e.what());
    }
    spdlog::set_pattern("%Y-%m-%d %H:%M:%S mailkms-proxy[%P]: %l: %v");
  }
  logging_to_stderr = false;
}

asio::ip::tcp::acceptor open_listener(asio::io_context& io, const mailkms::proxy::Settings& settings) {
  asio::ip::tcp::acceptor acceptor(io);
  boost::system::error_code ec;
  const asio::ip::tcp::endpoint endpoint(asio::ip::make_address(settings.listen.host), settings.listen.port);
  const std::string name = settings.listen.host + ":" + std::to_string(settings.listen.port);
  if (acceptor.open(endpoint.protocol(), ec) || acceptor.set_option(asio::socket_base::reuse_address(true), ec) ||
      acceptor.bind(endpoint, ec) || acceptor.listen(asio::socket_base::max_listen_connections, ec)) {
    fatal("cannot listen on " + name + ": " + ec.message());
  }
  return acceptor;
}

// Detaches (unless in the foreground), then writes the pid file: the pid
// it names is the process that serves. Then drops privileges.
void detach_and_drop_privileges(asio::io_context& io, const mailkms::proxy::Settings& settings, bool foreground) {
  if (!foreground) {
    io.notify_fork(asio::execution_context::fork_prepare);
    if (::daemon(0, 0) != 0) fatal(std::string("daemon: ") + mailkms::errno_text(errno));
    io.notify_fork(asio::execution_context::fork_child);
    attached = false;
  }
  if (!settings.pid_file.empty()) {
    std::ofstream pid(settings.pid_file);
    pid << ::getpid() << "\n";
    if (!pid.flush()) fatal("cannot write pid file " + settings.pid_file.string());
  }
  if (settings.group && ::getegid() != *settings.group) {
    if (::setgroups(0, nullptr) != 0 || ::setgid(*settings.group) != 0) fatal(std::string("setgid: ") + mailkms::errno_text(errno));
  }
  if (settings.user && ::geteuid() != *settings.user) {
    if (::setuid(*settings.user) != 0) fatal(std::string("setuid: ") + mailkms::errno_text(errno));
  }
}

// The settings only a restart can change (the socket is open, the process
// detached, its privileges dropped) keep their running values; says which.
std::vector<std::string> keep_for_restart(mailkms::proxy::Settings& fresh, const mailkms::proxy::Settings& running) {
  std::vector<std::string> kept;
  if (fresh.listen.host != running.listen.host || fresh.listen.port != running.listen.port) kept.emplace_back("listen");
  if (fresh.threads != running.threads) kept.emplace_back("threads");
  if (fresh.user != running.user || fresh.group != running.group) kept.emplace_back("user/group");
  if (fresh.pid_file != running.pid_file) kept.emplace_back("pid_file");
  if (fresh.log_file != running.log_file) kept.emplace_back("log_file");
  if (fresh.metrics_listen != running.metrics_listen) kept.emplace_back("metrics_listen");
  fresh.listen = running.listen;
  fresh.threads = running.threads;
  fresh.user = running.user;
  fresh.group = running.group;
  fresh.pid_file = running.pid_file;
  fresh.log_file = running.log_file;
  fresh.metrics_listen = running.metrics_listen;
  return kept;
}

// What a gateway is built from besides its settings and policy. The
// re-injection key is kept while reinject_key_file names the same file:
// without one it is the process's own, and marks made with it must go on
// checking. Every gateway counts into the same metrics, across reloads.
struct GatewayParts {
  mailkms::smime::CryptoContextPtr ctx;
  mailkms::gateway::ReinjectionMark mark;
  std::filesystem::path mark_file;
  std::shared_ptr<mailkms::gateway::GatewayMetrics> metrics;
};

std::shared_ptr<mailkms::gateway::Gateway> build_gateway(mailkms::gateway::Settings settings,
                                                        std::shared_ptr<const mailkms::policy::Policy> policy,
                                                        const GatewayParts& parts) {
  auto keystore = std::make_shared<mailkms::gateway::KeystoreAdapter>(
      mailkms::gateway::GatewayMetrics::observed(settings.keystore_client(8), parts.metrics));
  return std::make_shared<mailkms::gateway::Gateway>(std::move(settings), std::move(policy), parts.ctx, parts.mark,
                                                     std::move(keystore), mailkms::gateway::steady_clock(), parts.metrics);
}

// SIGTERM: no new sessions; those in flight finish their message, within
// shutdown_timeout; then the I/O stops, cutting any left.
void stop_gracefully(asio::io_context& io, mailkms::proxy::ServerContext& context,
                     const std::function<void()>& stop_listening) {
  const auto deadline = context.settings()->shutdown_timeout;
  spdlog::info("stopping: no new sessions; {} in flight get up to {} s to finish", context.sessions.load(),
               deadline.count());
  mailkms::service_manager::stopping();
  stop_listening();
  asio::co_spawn(io, mailkms::proxy::drain(context, deadline), [&io](const std::exception_ptr&, unsigned left) {
    if (left != 0) spdlog::warn("{} session(s) still open at shutdown_timeout: cut, nothing answered", left);
    io.stop();
  });
}

// SIGHUP, for [gateway] and the policy: a new gateway from the file as it
// is now, for transactions that start from then on; one in flight keeps
// the gateway it began with. Whatever becomes of the files, what the
// gateway keeps from the keystore is forgotten, as in the milter: a reload
// is how an administrator has a `trust add` or a revocation count at once.
// A file that does not parse is refused, and what runs stays.
void reload_gateway(const std::string& config, mailkms::proxy::ServerContext& context, GatewayParts& parts) {
  const auto running = context.gateway();
  running->forget_caches();
  spdlog::info("caches forgotten: certificates, signing identities, trust anchors, CRLs");
  auto settings = mailkms::gateway::load_settings(config);
  bool fresh = settings.has_value();
  if (!fresh) {
    spdlog::error("gateway settings reload refused, the running ones stay: {}", settings.error().message);
    settings = running->settings();
  }
  auto policy = mailkms::policy::load_policy(settings->policy);
  if (!policy) {
    spdlog::error("policy reload refused, the running policy stays: {}", policy.error().message);
    policy = running->policy();
  } else {
    spdlog::info("policy reloaded from {}: {} rule(s)", settings->policy.string(), (*policy)->rules.size());
  }
  if (settings->reinject_key_file != parts.mark_file) {
    auto mark = mailkms::gateway::ReinjectionMark::create(settings->reinject_key_file);
    if (!mark) {
      spdlog::error("gateway settings reload refused, the running ones stay: {}", mark.error().message);
      settings = running->settings();
      fresh = false;
    } else {
      parts.mark = *mark;
      parts.mark_file = settings->reinject_key_file;
    }
  }
  context.replace_gateway(build_gateway(std::move(*settings), std::move(*policy), parts));
  if (fresh) spdlog::info("gateway settings reloaded from {}", config);
}

// SIGHUP: the gateway, its policy and the [proxy] settings again, for
// sessions and transactions that start from then on.
void reload(const std::string& config, mailkms::proxy::ServerContext& context, GatewayParts& parts) {
  reload_gateway(config, context, parts);
  auto settings = mailkms::proxy::load_settings(config);
  if (!settings) {
    spdlog::error("proxy settings reload refused, the running ones stay: {}", settings.error().message);
    return;
  }
  const auto kept = keep_for_restart(*settings, *context.settings());
  for (const auto& name : kept) spdlog::warn("[proxy] {} changed in {}: it takes effect at the next start", name, config);
  context.replace_settings(std::make_shared<const mailkms::proxy::Settings>(std::move(*settings)));
  spdlog::info("proxy settings reloaded from {}", config);
}

// Each SIGHUP, reload() while `hangup` is not cancelled.
void reload_on_hangup(asio::signal_set& hangup, const std::string& config, mailkms::proxy::ServerContext& context,
                      GatewayParts& parts) {
  hangup.async_wait([&hangup, &config, &context, &parts](const boost::system::error_code& ec, int) {
    if (ec) return;
    mailkms::service_manager::reloading();
    reload(config, context, parts);
    mailkms::service_manager::ready("serving");
    reload_on_hangup(hangup, config, context, parts);
  });
}

// io.run() on `threads` threads, this one among them, until it stops.
void run_on_threads(asio::io_context& io, unsigned threads) {
  std::vector<std::thread> workers;
  for (unsigned i = 1; i < threads; ++i) workers.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& worker : workers) worker.join();
}

}  // namespace

namespace {

int serve(int argc, char** argv) {
  CLI::App app{"mailkms-proxy: signs, encrypts, verifies and decrypts mail per policy, as an SMTP proxy"};
  std::string config = "/etc/mailkms/mailkms.conf";
  bool foreground = false;
  bool syslog = false;
  bool check = false;
  app.add_option("-c,--config", config, "mailkms.conf to read")->capture_default_str();
  app.add_flag("-f,--foreground", foreground, "stay in the foreground (for systemd); logs go to stderr");
  app.add_flag("--syslog", syslog, "log to syslog (mail facility) instead of stderr or the log file");
  app.add_flag("--check", check, "check the configuration and the policy, then exit");
  app.set_version_flag("--version", std::string("mailkms-proxy ") + MAILKMS_VERSION);
  CLI11_PARSE(app, argc, argv);

  spdlog::set_default_logger(spdlog::stderr_logger_mt("mailkms"));
  spdlog::set_pattern("mailkms-proxy[%P]: %l: %v");
  auto proxy_settings = mailkms::proxy::load_settings(config);
  if (!proxy_settings) fatal(proxy_settings.error().message);
  auto settings = mailkms::gateway::load_settings(config);
  if (!settings) fatal(settings.error().message);
  auto policy = mailkms::policy::load_policy(settings->policy);
  if (!policy) fatal("policy: " + policy.error().message);
  auto mark = mailkms::gateway::ReinjectionMark::create(settings->reinject_key_file);
  if (!mark) fatal(mark.error().message);
  auto ctx = mailkms::smime::CryptoContext::create({.legacy_ciphers = true});  // archived mail may use DES or RC2
  if (!ctx) fatal("OpenSSL: " + ctx.error().message);
  if (check) {
    std::cout << config << ": OK; policy " << settings->policy.string() << ": OK, " << (*policy)->rules.size()
              << " rule(s)\n";
    return 0;
  }
  start_logging(syslog, foreground, proxy_settings->log_file);
  (void)::signal(SIGPIPE, SIG_IGN);  // a peer gone mid-write is an error code, not the end of the process

  asio::io_context io;
  mailkms::metrics::Registry registry;
  mailkms::metrics::Server metrics(io, registry);
  if (!proxy_settings->metrics_listen.empty()) {  // first: serving once the SMTP port listens
    if (auto error = metrics.listen(proxy_settings->metrics_listen)) fatal(*error);
  }
  auto acceptor = open_listener(io, *proxy_settings);
  detach_and_drop_privileges(io, *proxy_settings, foreground);

  GatewayParts parts{std::move(*ctx), *mark, settings->reinject_key_file,
                     std::make_shared<mailkms::gateway::GatewayMetrics>(registry)};
  const std::string policy_path = settings->policy.string();
  auto gateway = build_gateway(std::move(*settings), std::move(*policy), parts);
  const unsigned threads = proxy_settings->threads != 0 ? proxy_settings->threads
                                                        : std::max(1u, std::thread::hardware_concurrency());
  asio::thread_pool blocking(threads + 8);  // the keystore client keeps 8 connections
  mailkms::proxy::ServerContext context{std::make_shared<const mailkms::proxy::Settings>(*proxy_settings), std::move(gateway),
                                        blocking};
  registry.gauge("mailkms_proxy_sessions", "SMTP sessions open now.",
                 [&context] { return static_cast<double>(context.sessions.load()); });

  asio::signal_set hangup(io, SIGHUP);
  reload_on_hangup(hangup, config, context, parts);
  asio::signal_set stop(io, SIGTERM, SIGINT);
  stop.async_wait([&](const boost::system::error_code& ec, int) {
    if (ec) return;
    stop_gracefully(io, context, [&] {
      boost::system::error_code ignored;
      acceptor.close(ignored);
      metrics.stop();
      hangup.cancel();
    });
  });
  asio::co_spawn(io, mailkms::proxy::accept_sessions(acceptor, context), asio::detached);
  spdlog::info("listening on {}:{}, relaying to {}:{}, with policy {}{}", proxy_settings->listen.host,
               proxy_settings->listen.port, proxy_settings->next_hop.host, proxy_settings->next_hop.port, policy_path,
               proxy_settings->metrics_listen.empty() ? "" : "; metrics on http://" + proxy_settings->metrics_listen + "/metrics");
  mailkms::service_manager::ready("serving");
  run_on_threads(io, threads);
  blocking.join();
  if (!proxy_settings->pid_file.empty()) ::unlink(proxy_settings->pid_file.c_str());
  spdlog::info("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return mailkms::guarded_main("mailkms-proxy", serve, argc, argv); }
