// mailkms-milter: the S/MIME gateway as a milter for Postfix and Sendmail.
// Start-up order as Postfix's daemons do it: read and check the settings
// and the policy, open the socket, drop privileges, then serve. Any
// failure before serving is fatal; after it, bad input is a verdict.
#include <grp.h>
#include <malloc.h>
#include <libmilter/mfapi.h>
#include <pthread.h>
#include <signal.h>
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
#include <fstream>
#include <iostream>
#include <thread>

#include "callbacks.hpp"
#include "mailkms/gateway/gateway.hpp"
#include "settings.hpp"

namespace {

[[noreturn]] void fatal(const std::string& message) {
  spdlog::critical("fatal: {}", message);
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
      spdlog::warn("TCP_NODELAY on the milter socket: {}", std::strerror(errno));
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

std::string socket_path(const std::string& socket) {
  if (socket.starts_with("unix:")) return socket.substr(5);
  if (socket.starts_with("local:")) return socket.substr(6);
  if (socket.starts_with('/')) return socket;
  return {};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mailkms-milter: signs, encrypts, verifies and decrypts mail per policy, as a milter"};
  std::string config = "/etc/mailkms/mailkms.conf";
  bool foreground = false;
  bool syslog = false;
  bool check = false;
  app.add_option("-c,--config", config, "mailkms.conf to read")->capture_default_str();
  app.add_flag("-f,--foreground", foreground, "stay in the foreground (for systemd); logs go to stderr");
  app.add_flag("--syslog", syslog, "log to syslog (mail facility) instead of stderr");
  app.add_flag("--check", check, "check the configuration and the policy, then exit");
  app.set_version_flag("--version", std::string("mailkms-milter ") + MAILKMS_VERSION);
  CLI11_PARSE(app, argc, argv);
  // libmilter runs each connection on a short-lived thread, whose malloc
  // arena glibc would otherwise trim (madvise, with a TLB shootdown on every
  // core) after nearly every message. Keep up to 8 MiB of free memory per
  // arena instead; blocks over 1 MiB (large spools) still go back at once.
  ::mallopt(M_TRIM_THRESHOLD, 8 << 20);
  ::mallopt(M_MMAP_THRESHOLD, 1 << 20);

  if (syslog) {
    spdlog::set_default_logger(spdlog::syslog_logger_mt("mailkms", "mailkms-milter", LOG_PID, LOG_MAIL));
    spdlog::set_pattern("%v");
  } else {
    spdlog::set_default_logger(spdlog::stderr_logger_mt("mailkms"));
    spdlog::set_pattern("mailkms-milter[%P]: %l: %v");
  }

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
  const std::string policy_path = settings->policy.string();
  auto keystore = std::make_shared<mailkms::gateway::KeystoreAdapter>(mailkms::keystore::ClientOptions{
      settings->keystore_socket, settings->keystore_timeout, 8, settings->keystore_user});
  mailkms::gateway::Gateway gateway(std::move(*settings), std::move(*policy), std::move(*ctx), std::move(*mark),
                                    std::move(keystore));
  const bool over_tcp = socket_path(milter_settings->socket).empty();
  mailkms::milter::install(gateway, over_tcp ? mailkms::milter::Transport::tcp : mailkms::milter::Transport::local);

  // Re-injection writes to a child's pipe: a child that dies must not kill us.
  ::signal(SIGPIPE, SIG_IGN);

  auto description = mailkms::milter::description();
  if (smfi_register(description) != MI_SUCCESS) fatal("smfi_register failed");
  // A unix socket is bound under a temporary name, given its mode and owner,
  // then renamed over any stale socket of an earlier run: the MTA never finds
  // one that refuses it or one it may not open. libmilter leaves the socket
  // behind when it runs as root, so we take ours away on the way out.
  const std::string socket = milter_settings->socket;
  const std::string path = socket_path(socket);
  std::string staging = path.empty() ? std::string() : path + ".new";
  if (staging.size() >= sizeof(sockaddr_un::sun_path)) staging = path;  // no room for the suffix
  std::string listen_on = path.empty() ? socket : "unix:" + staging;
  if (smfi_setconn(listen_on.data()) != MI_SUCCESS) fatal("cannot use socket " + socket);
  smfi_settimeout(milter_settings->timeout_seconds);
  smfi_setbacklog(milter_settings->backlog);
  if (smfi_opensocket(true) != MI_SUCCESS) fatal("cannot open socket " + socket);
  disable_nagle_on_listener();
  struct stat bound {};
  if (!path.empty()) {
    if (::chmod(staging.c_str(), milter_settings->socket_mode) != 0) fatal("chmod " + path + ": " + std::strerror(errno));
    if (milter_settings->user || milter_settings->group) {
      if (::chown(staging.c_str(), milter_settings->user.value_or(static_cast<uid_t>(-1)),
                  milter_settings->group.value_or(static_cast<gid_t>(-1))) != 0) {
        fatal("chown " + path + ": " + std::strerror(errno));
      }
    }
    if (::stat(staging.c_str(), &bound) != 0) fatal("stat " + path + ": " + std::strerror(errno));
    if (staging != path && ::rename(staging.c_str(), path.c_str()) != 0) {
      fatal("rename " + staging + " to " + path + ": " + std::strerror(errno));
    }
  }
  if (!milter_settings->pid_file.empty()) {
    std::ofstream pid(milter_settings->pid_file);
    pid << ::getpid() << "\n";
    if (!pid) fatal("cannot write pid file " + milter_settings->pid_file.string());
  }
  if (milter_settings->group && ::getegid() != *milter_settings->group) {
    if (::setgroups(0, nullptr) != 0 || ::setgid(*milter_settings->group) != 0) fatal(std::string("setgid: ") + std::strerror(errno));
  }
  if (milter_settings->user && ::geteuid() != *milter_settings->user) {
    if (::setuid(*milter_settings->user) != 0) fatal(std::string("setuid: ") + std::strerror(errno));
  }
  if (!foreground && ::daemon(0, 0) != 0) fatal(std::string("daemon: ") + std::strerror(errno));

  // libmilter's own signal thread stops the milter on SIGHUP, SIGTERM and
  // SIGINT. SIGHUP and SIGUSR1 mean "reload" here instead: every thread
  // blocks them but this, the main one, where a handler takes them. Linux
  // gives a process's signal to its main thread whenever that thread does
  // not block it, so a reload never reaches libmilter's thread, not even
  // one that comes while an earlier reload is still being read.
  sigset_t reload;
  sigemptyset(&reload);
  sigaddset(&reload, SIGHUP);
  sigaddset(&reload, SIGUSR1);
  sigset_t blocked = reload;
  sigaddset(&blocked, SIGTERM);  // for libmilter's thread, which stops gracefully
  sigaddset(&blocked, SIGINT);
  pthread_sigmask(SIG_BLOCK, &blocked, nullptr);
  if (::pipe2(wakeups, O_CLOEXEC) != 0 || ::fcntl(wakeups[1], F_SETFL, O_NONBLOCK) != 0) {
    fatal(std::string("pipe: ") + std::strerror(errno));
  }
  int result = 0;
  std::thread serving([&] {
    spdlog::info("serving {} with policy {}", socket, policy_path);
    result = smfi_main();
    stopped = true;
    wake();
  });
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
    auto fresh = mailkms::policy::load_policy(policy_path);
    if (!fresh) {
      spdlog::error("policy reload refused, the running policy stays: {}", fresh.error().message);
      continue;
    }
    const auto rules = (*fresh)->rules.size();
    gateway.replace_policy(std::move(*fresh));
    spdlog::info("policy reloaded from {}: {} rule(s)", policy_path, rules);
  }
  serving.join();
  struct stat now {};
  if (!path.empty() && ::stat(path.c_str(), &now) == 0 && now.st_dev == bound.st_dev && now.st_ino == bound.st_ino) {
    ::unlink(path.c_str());  // still ours, not a successor's
  }
  if (!milter_settings->pid_file.empty()) ::unlink(milter_settings->pid_file.c_str());
  spdlog::info("stopped");
  return result == MI_SUCCESS ? 0 : 1;
}
