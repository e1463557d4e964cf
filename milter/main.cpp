// mailkms-milter: the S/MIME gateway as a milter for Postfix and Sendmail.
// Start-up order as Postfix's daemons do it: read and check the settings
// and the policy, open the socket, drop privileges, then serve. Any
// failure before serving is fatal; after it, bad input is a verdict.
#include <grp.h>
#include <malloc.h>
#include <libmilter/mfapi.h>
#include <pthread.h>
#include <signal.h>
#include <spdlog/details/file_helper.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <fstream>
#include <exception>
#include <iostream>
#include <thread>

#include <boost/asio/io_context.hpp>

#include "mailkms/errno_text.hpp"
#include "mailkms/guarded_main.hpp"
#include "mailkms/metrics_server.hpp"
#include "mailkms/service_manager.hpp"
#include "callbacks.hpp"
#include "mailkms/gateway/gateway.hpp"
#include "settings.hpp"

namespace {

// Until the milter detaches, a fatal error is also shown on the terminal
// that started it, wherever the log goes.
bool logging_to_stderr = true;
bool attached = true;

[[noreturn]] void fatal(const std::string& message) {
  spdlog::critical("fatal: {}", message);
  if (attached && !logging_to_stderr) std::cerr << "mailkms-milter: fatal: " << message << "\n";
  // NOLINTNEXTLINE(concurrency-mt-unsafe): only while starting, before any thread serves
  std::exit(1);
}

// libmilter writes each reply and edit as its own small packet; over TCP,
// Nagle's algorithm holds them back for the MTA's delayed ACK (about 40 ms
// each). libmilter does not expose its listening socket, so find it among
// our descriptors: accepted connections inherit TCP_NODELAY from it.
void disable_nagle_on_listener() {
  for (int fd = 0; fd < 1024; ++fd) {
    sockaddr_storage address{};
    socklen_t length = sizeof address;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) continue;
    if (address.ss_family != AF_INET && address.ss_family != AF_INET6) continue;
    int listening = 0;
    socklen_t size = sizeof listening;
    if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &size) != 0 || listening == 0) continue;
    const int on = 1;
    if (::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) != 0) {
      spdlog::warn("TCP_NODELAY on the milter socket: {}", mailkms::errno_text(errno));
    }
  }
}

// The main thread's wake-ups: a byte from the signal handler to reload the
// policy, or from the serving thread once libmilter has stopped.
int wakeups[2] = {-1, -1};
std::atomic<bool> stopped{false};

void wake() {
  const int saved = errno;
  (void)!::write(wakeups[1], "!", 1);  // async-signal-safe; a full pipe has a wake-up pending anyway
  errno = saved;
}

void on_reload_signal(int) { wake(); }

void reload_policy(mailkms::gateway::Gateway& gateway, const std::string& policy_path) {
  // Whatever becomes of the file: a reload is also how an administrator has
  // a trust anchor added, or a certificate revoked, count at once.
  gateway.forget_caches();
  spdlog::info("caches forgotten: certificates, signing identities, trust anchors, CRLs");
  auto fresh = mailkms::policy::load_policy(policy_path);
  if (!fresh) {
    spdlog::error("policy reload refused, the running policy stays: {}", fresh.error().message);
    return;
  }
  const auto rules = (*fresh)->rules.size();
  gateway.replace_policy(std::move(*fresh));
  spdlog::info("policy reloaded from {}: {} rule(s)", policy_path, rules);
}

std::string socket_path(const std::string& socket) {
  if (socket.starts_with("unix:")) return socket.substr(5);
  if (socket.starts_with("local:")) return socket.substr(6);
  if (socket.starts_with('/')) return socket;
  return {};
}

// A log file that SIGHUP reopens, so that logrotate can move it away.
class ReopenableFileSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit ReopenableFileSink(const std::filesystem::path& path) { file_.open(path.string()); }
  void reopen() {
    const std::lock_guard lock(mutex_);
    file_.reopen(false);
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& message) override {
    spdlog::memory_buf_t line;
    formatter_->format(message, line);
    file_.write(line);
  }
  void flush_() override { file_.flush(); }

 private:
  spdlog::details::file_helper file_;
};

// Where the log goes: syslog when asked; else the log file when one is
// set; else stderr in the foreground (systemd's journal), syslog in the
// background. A daemon with no log file and no syslog socket to write to
// would log into the void: it refuses to start instead, and says so.
std::shared_ptr<ReopenableFileSink> start_logging(bool syslog, bool foreground, const std::filesystem::path& log_file) {
  const bool to_syslog = syslog || (log_file.empty() && !foreground);
  if (to_syslog && !syslog && ::access("/dev/log", W_OK) != 0) {
    fatal("no log_file is set and there is no syslog socket (/dev/log): in the background the milter's log would go "
          "nowhere; set [milter] log_file, or run with --foreground");
  }
  if (!to_syslog && log_file.empty()) return nullptr;  // stderr, as it is
  std::shared_ptr<ReopenableFileSink> sink;
  if (!to_syslog) {
    try {
      sink = std::make_shared<ReopenableFileSink>(log_file);
    } catch (const spdlog::spdlog_ex& e) {
      fatal("log_file " + log_file.string() + ": " + e.what());
    }
  }
  spdlog::drop("mailkms");
  if (to_syslog) {
    spdlog::set_default_logger(spdlog::syslog_logger_mt("mailkms", "mailkms-milter", LOG_PID, LOG_MAIL));
    spdlog::set_pattern("%v");
  } else {
    auto logger = std::make_shared<spdlog::logger>("mailkms", sink);
    logger->flush_on(spdlog::level::info);
    spdlog::set_default_logger(logger);
    spdlog::set_pattern("%Y-%m-%d %H:%M:%S mailkms-milter[%P]: %l: %v");
  }
  logging_to_stderr = false;
  return sink;
}

// The milter's own socket, as libmilter listens on it.
struct Listener {
  std::string socket;  // as configured
  std::string path;    // for a unix socket; empty for TCP
  struct stat bound {};
};

// A unix socket is bound under a temporary name, given its mode and owner,
// then renamed over any stale socket of an earlier run: the MTA never finds
// one that refuses it or one it may not open. libmilter leaves the socket
// behind when it runs as root, so we take ours away on the way out.
Listener open_listener(const mailkms::milter::Settings& settings) {
  Listener listener{settings.socket, socket_path(settings.socket)};
  const std::string& path = listener.path;
  std::string staging = path.empty() ? std::string() : path + ".new";
  if (staging.size() >= sizeof(sockaddr_un::sun_path)) staging = path;  // no room for the suffix
  std::string listen_on = path.empty() ? settings.socket : "unix:" + staging;
  if (smfi_setconn(listen_on.data()) != MI_SUCCESS) fatal("cannot use socket " + settings.socket);
  smfi_settimeout(settings.timeout_seconds);
  smfi_setbacklog(settings.backlog);
  if (smfi_opensocket(true) != MI_SUCCESS) fatal("cannot open socket " + settings.socket);
  disable_nagle_on_listener();
  if (path.empty()) return listener;
  if (::chmod(staging.c_str(), settings.socket_mode) != 0) fatal("chmod " + path + ": " + mailkms::errno_text(errno));
  if (settings.user || settings.group) {
    if (::chown(staging.c_str(), settings.user.value_or(static_cast<uid_t>(-1)),
                settings.group.value_or(static_cast<gid_t>(-1))) != 0) {
      fatal("chown " + path + ": " + mailkms::errno_text(errno));
    }
  }
  if (::stat(staging.c_str(), &listener.bound) != 0) fatal("stat " + path + ": " + mailkms::errno_text(errno));
  if (staging != path && ::rename(staging.c_str(), path.c_str()) != 0) {
    fatal("rename " + staging + " to " + path + ": " + mailkms::errno_text(errno));
  }
  return listener;
}

void remove_own_socket(const Listener& listener) {
  struct stat now {};
  if (!listener.path.empty() && ::stat(listener.path.c_str(), &now) == 0 && now.st_dev == listener.bound.st_dev &&
      now.st_ino == listener.bound.st_ino) {
    ::unlink(listener.path.c_str());  // still ours, not a successor's
  }
}

// What the milter counts, and where it serves the counts when [milter]
// metrics_listen names an address: bound while the milter still runs as
// root and on its terminal (an address in use is said there), served on a
// thread of its own once serve() has set the threads' signal masks.
class MetricsEndpoint {
 public:
  MetricsEndpoint() : gateway_(std::make_shared<mailkms::gateway::GatewayMetrics>(registry_)) {}
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;
  ~MetricsEndpoint() { stop(); }

  // What the gateway counts into.
  [[nodiscard]] const std::shared_ptr<mailkms::gateway::GatewayMetrics>& gateway() const { return gateway_; }

  void listen(const std::string& address) {
    if (address.empty()) return;
    if (auto error = server_.listen(address)) fatal(*error);
    listening_ = true;
    spdlog::info("metrics on http://{}/metrics", address);
  }
  // Around daemon(): the io_context's epoll set is shared with the parent.
  void before_fork() { io_.notify_fork(boost::asio::io_context::fork_prepare); }
  void in_child() { io_.notify_fork(boost::asio::io_context::fork_child); }
  void start() {
    if (listening_) thread_ = std::thread([this] { io_.run(); });
  }
  void stop() {
    server_.stop();
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }

 private:
  mailkms::metrics::Registry registry_;
  boost::asio::io_context io_;
  mailkms::metrics::Server server_{io_, registry_};
  std::thread thread_;
  bool listening_ = false;
  std::shared_ptr<mailkms::gateway::GatewayMetrics> gateway_;
};

// Detaches (unless in the foreground), then writes the pid file: the pid
// it names is the process that serves, not a parent that has exited. Then
// drops privileges.
void detach_and_drop_privileges(const mailkms::milter::Settings& settings, bool foreground, MetricsEndpoint& metrics) {
  if (!foreground) {
    metrics.before_fork();
    if (::daemon(0, 0) != 0) fatal(std::string("daemon: ") + mailkms::errno_text(errno));
    metrics.in_child();
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

// libmilter's own signal thread stops the milter on SIGHUP, SIGTERM and
// SIGINT. SIGHUP and SIGUSR1 mean "reload" here instead: every thread
// blocks them but this, the main one, where a handler takes them. Linux
// gives a process's signal to its main thread whenever that thread does
// not block it, so a reload never reaches libmilter's thread, not even
// one that comes while an earlier reload is still being read.
// Returns libmilter's result once it has stopped.
int serve(mailkms::gateway::Gateway& gateway, const std::string& socket, const std::string& policy_path,
          ReopenableFileSink* log_file, MetricsEndpoint& metrics) {
  sigset_t reload;
  sigemptyset(&reload);
  sigaddset(&reload, SIGHUP);
  sigaddset(&reload, SIGUSR1);
  sigset_t blocked = reload;
  sigaddset(&blocked, SIGTERM);  // for libmilter's thread, which stops gracefully
  sigaddset(&blocked, SIGINT);
  pthread_sigmask(SIG_BLOCK, &blocked, nullptr);
  if (::pipe2(wakeups, O_CLOEXEC) != 0 || ::fcntl(wakeups[1], F_SETFL, O_NONBLOCK) != 0) {
    fatal(std::string("pipe: ") + mailkms::errno_text(errno));
  }
  metrics.start();  // its thread inherits the mask
  int result = 0;
  std::thread serving([&] {
    spdlog::info("serving {} with policy {}", socket, policy_path);
    result = smfi_main();
    mailkms::service_manager::stopping();
    stopped = true;
    wake();
  });
  // The socket has listened since smfi_opensocket.
  mailkms::service_manager::ready("serving " + socket);
  struct sigaction action {};
  action.sa_handler = on_reload_signal;
  action.sa_flags = SA_RESTART;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGHUP, &action, nullptr);
  ::sigaction(SIGUSR1, &action, nullptr);
  pthread_sigmask(SIG_UNBLOCK, &reload, nullptr);
  for (;;) {
    char byte = 0;
    const ssize_t got = ::read(wakeups[0], &byte, 1);
    if (got < 0 && errno == EINTR) continue;
    if (got != 1 || stopped) break;
    mailkms::service_manager::reloading();
    if (log_file != nullptr) log_file->reopen();
    reload_policy(gateway, policy_path);
    mailkms::service_manager::ready("serving " + socket);
  }
  serving.join();
  metrics.stop();
  return result;
}

}  // namespace

namespace {

int run(int argc, char** argv) {
  CLI::App app{"mailkms-milter: signs, encrypts, verifies and decrypts mail per policy, as a milter"};
  std::string config = "/etc/mailkms/mailkms.conf";
  bool foreground = false;
  bool syslog = false;
  bool check = false;
  app.add_option("-c,--config", config, "mailkms.conf to read")->capture_default_str();
  app.add_flag("-f,--foreground", foreground, "stay in the foreground (for systemd); logs go to stderr");
  app.add_flag("--syslog", syslog, "log to syslog (mail facility) instead of stderr or the log file");
  app.add_flag("--check", check, "check the configuration and the policy, then exit");
  app.set_version_flag("--version", std::string("mailkms-milter ") + MAILKMS_VERSION);
  CLI11_PARSE(app, argc, argv);
  // libmilter runs each connection on a short-lived thread, whose malloc
  // arena glibc would otherwise trim (madvise, with a TLB shootdown on every
  // core) after nearly every message. Keep up to 8 MiB of free memory per
  // arena instead; blocks over 1 MiB (large spools) still go back at once.
  // NOLINTBEGIN(concurrency-mt-unsafe): set before libmilter starts any thread
  (void)::mallopt(M_TRIM_THRESHOLD, 8 << 20);  // a hint: glibc's defaults if refused
  (void)::mallopt(M_MMAP_THRESHOLD, 1 << 20);
  // NOLINTEND(concurrency-mt-unsafe)

  spdlog::set_default_logger(spdlog::stderr_logger_mt("mailkms"));
  spdlog::set_pattern("mailkms-milter[%P]: %l: %v");
  auto milter_settings = mailkms::milter::load_settings(config);
  if (!milter_settings) fatal(milter_settings.error().message);
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
  const auto log_file = start_logging(syslog, foreground, milter_settings->log_file);
  const std::string policy_path = settings->policy.string();
  MetricsEndpoint metrics;
  auto keystore = std::make_shared<mailkms::gateway::KeystoreAdapter>(
      mailkms::gateway::GatewayMetrics::observed(settings->keystore_client(8), metrics.gateway()));
  mailkms::gateway::Gateway gateway(std::move(*settings), std::move(*policy), std::move(*ctx), *mark,
                                    std::move(keystore), mailkms::gateway::steady_clock(), metrics.gateway());
  const bool over_tcp = socket_path(milter_settings->socket).empty();
  mailkms::milter::install(gateway, over_tcp ? mailkms::milter::Transport::tcp : mailkms::milter::Transport::local);

  // Re-injection writes to a child's pipe: a child that dies must not kill us.
  (void)::signal(SIGPIPE, SIG_IGN);

  auto description = mailkms::milter::description();
  if (smfi_register(description) != MI_SUCCESS) fatal("smfi_register failed");
  metrics.listen(milter_settings->metrics_listen);  // first: listening once the MTA's socket is
  const Listener listener = open_listener(*milter_settings);
  detach_and_drop_privileges(*milter_settings, foreground, metrics);
  const int result = serve(gateway, listener.socket, policy_path, log_file.get(), metrics);
  remove_own_socket(listener);
  if (!milter_settings->pid_file.empty()) ::unlink(milter_settings->pid_file.c_str());
  spdlog::info("stopped");
  return result == MI_SUCCESS ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) { return mailkms::guarded_main("mailkms-milter", run, argc, argv); }
