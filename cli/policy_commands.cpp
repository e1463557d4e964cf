#include "policy_commands.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "failure.hpp"
#include "mailkms/keystore/client.hpp"
#include "mailkms/keystore/config.hpp"
#include "mailkms/policy/policy.hpp"
#include "mailkms/smime/algorithms.hpp"

namespace mailkms::cli {
namespace {

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

std::string yes_no(bool value) { return value ? "yes" : "no"; }

std::string day(std::time_t t) {
  char text[16];
  std::tm tm{};
  if (gmtime_r(&t, &tm) == nullptr || std::strftime(text, sizeof text, "%Y-%m-%d", &tm) == 0) return std::to_string(t);
  return text;
}

// "label:" padded so that the values line up in a column.
void print_line(std::string_view indent, std::string_view label, std::size_t width, const std::string& value) {
  std::string head(indent);
  head += label;
  head += ':';
  head.resize(std::max(width, head.size() + 1), ' ');
  std::cout << head << value << "\n";
}

constexpr std::size_t kTopWidth = 14;        // "certificates: "
constexpr std::size_t kRecipientWidth = 26;  // "  on_missing_certificate: "

void top_line(std::string_view label, const std::string& value) { print_line("", label, kTopWidth, value); }
void recipient_line(std::string_view label, const std::string& value) {
  print_line("  ", label, kRecipientWidth, value);
}

// ---- policy check

struct CheckArgs {
  std::string file;
};

// The error goes to stderr as it is, "FILE:LINE:COL: …", so that editors
// and scripts can jump to it.
int run_check(const CheckArgs& args) {
  const auto policy = policy::load_policy(args.file);
  if (!policy) {
    std::cerr << policy.error().message << "\n";
    return exit_failure;
  }
  const auto& p = **policy;
  const std::size_t rules = p.rules.size();
  std::cout << args.file << ": OK: " << rules << (rules == 1 ? " rule" : " rules")
            << ", local domains: " << (p.locality.domains.empty() ? "none" : join(p.locality.domains)) << "\n";
  return 0;
}

Command add_check(CLI::App& group) {
  auto args = std::make_shared<CheckArgs>();
  CLI::App* cmd = group.add_subcommand("check", "Check a policy file; errors name the line and column");
  cmd->add_option("file", args->file, "The policy file")->required()->type_name("FILE");
  return {cmd, [args] { return run_check(*args); }};
}

// ---- policy explain

struct ExplainArgs {
  std::string policy;
  std::string from;
  std::vector<std::string> to;
  std::string subject;
  std::vector<std::string> headers;
  bool inbound = false;
  bool outbound = false;
  std::string client;
  bool authenticated = false;
  std::string login;
  std::string author;
  std::string config;
  bool final_hop = false;
};

// The submission as the milter would see it: no --client is local submission.
policy::Connection connection_of(const ExplainArgs& args) {
  policy::Connection connection;
  connection.client_address = args.client;
  connection.login = args.login;
  connection.authenticated = args.authenticated || !args.login.empty();
  connection.local_submission = args.client.empty();
  connection.final_hop = args.final_hop;
  return connection;
}

policy::Headers make_headers(const ExplainArgs& args, bool subject_given) {
  policy::Headers headers;
  if (subject_given) headers.fields.emplace_back("Subject", args.subject);
  for (const std::string& field : args.headers) {
    const auto colon = field.find(':');
    if (colon == std::string::npos || colon == 0) {
      throw Failure(exit_usage, "--header \"" + field + "\": expected \"Name: value\"");
    }
    const auto start = field.find_first_not_of(" \t", colon + 1);
    headers.fields.emplace_back(field.substr(0, colon), start == std::string::npos ? "" : field.substr(start));
  }
  return headers;
}

// The mailkms.conf whose keystore to ask for certificates: --config, else
// $MAILKMS_CONFIG, else the default path if it exists. None: not checked.
std::optional<std::string> keystore_config(const std::string& given) {
  if (!given.empty()) return given;
  if (const char* env = std::getenv("MAILKMS_CONFIG"); env != nullptr && *env != '\0') return std::string(env);
  const std::string fallback = "/etc/mailkms/mailkms.conf";
  std::error_code ec;
  if (std::filesystem::exists(fallback, ec)) return fallback;
  return std::nullopt;
}

// What the keystore said about each recipient's certificate.
struct CertificateReport {
  std::map<std::string, keystore::CertificateLookup::Found> found;
  std::optional<std::string> failure;  // the lookup failed as a whole
};

CertificateReport look_up(const std::string& config, const std::vector<std::string>& addresses) {
  auto loaded = keystore::load_config(config);
  if (!loaded) throw Failure(exit_usage, "cannot read " + config + ": " + loaded.error().message);
  keystore::KeystoreClient client({loaded->socket, std::chrono::seconds(10), 1, loaded->user});
  CertificateReport report;
  auto lookup = keystore::lookup_certificates(client, addresses);
  if (!lookup) {
    if (lookup.error().code == keystore::Errc::unavailable) {
      std::string_view why = lookup.error().message;
      constexpr std::string_view said = "keystore unavailable: ";  // the client's own prefix
      if (why.starts_with(said)) why.remove_prefix(said.size());
      report.failure = "keystore unreachable: " + std::string(why);
    } else {
      report.failure = "not checked: " + lookup.error().describe();
    }
    return report;
  }
  for (auto& [address, entry] : lookup->found) report.found.emplace(address, std::move(entry));
  return report;
}

const keystore::CertificateLookup::Found* certificate_of(const CertificateReport& report, const std::string& address) {
  // The keystore answers with addresses as it stores them: lower case.
  std::string key = address;
  for (char& c : key) c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  const auto it = report.found.find(key);
  if (it != report.found.end()) return &it->second;
  const auto exact = report.found.find(address);
  return exact != report.found.end() ? &exact->second : nullptr;
}

void explain_certificate(const policy::Settings& settings, const std::string& recipient,
                         const CertificateReport& report) {
  if (settings.encrypt == policy::Mode::never) {
    recipient_line("certificate", "not needed (encrypt = never)");
    return;
  }
  if (report.failure) {
    recipient_line("certificate", *report.failure);
    return;
  }
  if (const auto* found = certificate_of(report, recipient)) {
    recipient_line("certificate", "found (" + found->certificate.subject() + ", valid until " +
                                      day(found->certificate.not_after()) + ")");
    return;
  }
  if (settings.encrypt == policy::Mode::always) {
    recipient_line("certificate", "none — on_missing_certificate = " +
                                      std::string(policy::to_string(settings.on_missing_certificate)) + " applies");
  } else {
    recipient_line("certificate", "none — not encrypted for this recipient (encrypt = if-possible)");
  }
}

// The cipher this recipient's copy gets, as the gateway chooses it: the
// first of the rule's ciphers they can read, when the keystore knows what
// that is (from their signed mail), else the rule's first. Recipients who
// read different ciphers get different copies.
void explain_cipher(const policy::Settings& settings, const keystore::CertificateLookup::Found& found) {
  const std::optional<smime::Capabilities> capabilities[] = {found.capabilities};
  const auto chosen = smime::choose_cipher(capabilities, settings.ciphers, settings.ciphers.front());
  if (!chosen) {
    recipient_line("cipher used", "none: they read none of the allowed ciphers");
    return;
  }
  recipient_line("cipher used", std::string(smime::name(*chosen)) +
                                    (found.capabilities ? " — the first allowed one they can read (from their signed mail)"
                                                        : " — the first allowed: what they can read is not known"));
}

policy::DirectionDecision direction_of(const ExplainArgs& args, const policy::Policy& p) {
  if (args.inbound) return {policy::Direction::inbound, "given with --inbound"};
  if (args.outbound) return {policy::Direction::outbound, "given with --outbound"};
  return policy::decide_direction(p, args.from, connection_of(args));
}

// Whom the message would be signed as, and why; with --login, everything
// that login may sign as.
void explain_signer(const ExplainArgs& args, const policy::Policy& p) {
  const std::optional<std::string> author = args.author.empty() ? args.from : args.author;
  const auto authorization = policy::authorize_signer(p, connection_of(args), args.from, author);
  top_line("signer", authorization.authorized
                         ? authorization.identity + " (" + authorization.reason + ")"
                         : "none: not authorized to sign as " + authorization.identity + " (" + authorization.reason + ")");
  if (!args.login.empty()) {
    const auto owned = policy::addresses_of_login(p, args.login);
    top_line("login owns", owned.empty() ? "nothing: it may sign as no one" : join(owned));
  }
}

void explain_settings(policy::Direction direction, const policy::Settings& s, bool decrypts_here) {
  if (direction == policy::Direction::outbound) {
    recipient_line("sign", std::string(policy::to_string(s.sign)));
    recipient_line("encrypt", std::string(policy::to_string(s.encrypt)));
    std::vector<std::string> ciphers;
    for (const smime::Cipher c : s.ciphers) ciphers.emplace_back(smime::name(c));
    recipient_line("ciphers", join(ciphers));
    recipient_line("digest", std::string(smime::name(s.digest)));
    recipient_line("on_missing_certificate", std::string(policy::to_string(s.on_missing_certificate)));
    recipient_line("encrypt_to_sender", yes_no(s.encrypt_to_sender));
    recipient_line("exempt_calendar", yes_no(s.exempt_calendar));
  } else {
    recipient_line("verify", yes_no(s.verify));
    recipient_line("decrypt", s.decrypt && !decrypts_here ? "yes, but not in this connection (see decryption)"
                                                          : yes_no(s.decrypt));
    if (s.decrypt) {
      recipient_line("decrypt_unauthenticated",
                     s.decrypt_unauthenticated ? "yes"
                                               : "no — CBC-encrypted mail without a signature that passes stays encrypted");
    }
    recipient_line("harvest", yes_no(s.harvest));
  }
}

int run_explain(const ExplainArgs& args, bool subject_given) {
  auto loaded = policy::load_policy(args.policy);
  if (!loaded) throw Failure(exit_usage, loaded.error().message);
  const policy::Policy& p = **loaded;
  const policy::Headers headers = make_headers(args, subject_given);
  const policy::DirectionDecision direction = direction_of(args, p);
  const bool outbound = direction.direction == policy::Direction::outbound;

  std::vector<policy::RecipientDecision> decisions;
  for (const std::string& recipient : args.to) {
    decisions.push_back(policy::decide(p, direction.direction, args.from, recipient, &headers));
  }

  std::optional<CertificateReport> certificates;
  const auto config = outbound ? keystore_config(args.config) : std::nullopt;
  if (config) certificates = look_up(*config, args.to);

  top_line("policy", args.policy);
  top_line("sender", args.from);
  top_line("direction", std::string(policy::to_string(direction.direction)) + " (" + direction.reason + ")");
  const auto here = policy::decryption_here(p, connection_of(args));
  if (!outbound) top_line("decryption", (here.allowed ? "here: " : "not here: ") + here.reason);
  if (outbound) explain_signer(args, p);
  if (outbound && !config) top_line("certificates", "not checked (no keystore configured)");
  if (outbound && config) top_line("certificates", "from the keystore of " + *config);

  for (const auto& d : decisions) {
    std::cout << "\nrecipient " << d.recipient << "\n";
    recipient_line("policy", d.reason);
    bool uncertain = false;
    (void)policy::decide(p, direction.direction, args.from, d.recipient, nullptr, &uncertain);
    if (uncertain) recipient_line("decided", "at end of message, when the headers are known");
    if (d.matched_subject_tag) {
      const auto subject = headers.find("Subject").value_or("");
      recipient_line("subject", "\"" + policy::remove_subject_tag(subject, *d.rule->subject_tag) + "\" (tag " +
                                    *d.rule->subject_tag + " removed)");
    }
    explain_settings(direction.direction, *d.settings, here.allowed);
    if (certificates) {
      explain_certificate(*d.settings, d.recipient, *certificates);
      const auto* found = certificates->failure ? nullptr : certificate_of(*certificates, d.recipient);
      if (found != nullptr && d.settings->encrypt != policy::Mode::never) explain_cipher(*d.settings, *found);
    }
  }
  return 0;
}

Command add_explain(CLI::App& group) {
  auto args = std::make_shared<ExplainArgs>();
  CLI::App* cmd = group.add_subcommand("explain", "Show what a policy decides for a message, recipient by recipient");
  cmd->add_option("--policy", args->policy, "The policy file")->required()->type_name("FILE");
  cmd->add_option("--from", args->from, "The envelope sender")->required()->type_name("ADDR");
  cmd->add_option("--to", args->to, "A recipient; repeat for more")->required()->type_name("ADDR")->take_all();
  auto* subject = cmd->add_option("--subject", args->subject, "The Subject header field")->type_name("TEXT");
  cmd->add_option("--header", args->headers, "A header field; repeat for more")
      ->type_name("\"Name: value\"")
      ->take_all();
  auto* inbound = cmd->add_flag("--inbound", args->inbound, "Treat the message as inbound");
  auto* outbound = cmd->add_flag("--outbound", args->outbound, "Treat the message as outbound");
  inbound->excludes(outbound);
  outbound->excludes(inbound);
  cmd->add_option("--client", args->client, "The SMTP client's address (default: submitted locally)")
      ->type_name("IP");
  cmd->add_flag("--authenticated", args->authenticated, "The client authenticated with SMTP AUTH");
  cmd->add_flag("--final-hop", args->final_hop,
                "The MTA service is the final hop ({daemon_name} mailkms-final-hop): recipients already expanded");
  cmd->add_option("--login", args->login, "The client's SMTP AUTH login (implies --authenticated)")->type_name("LOGIN");
  cmd->add_option("--author", args->author, "The address in From (default: the envelope sender)")->type_name("ADDR");
  cmd->add_option("--config", args->config,
                  "mailkms.conf, to look up certificates (or $MAILKMS_CONFIG, else /etc/mailkms/mailkms.conf "
                  "if it exists)")
      ->type_name("FILE");
  return {cmd, [args, subject] { return run_explain(*args, subject->count() > 0); }};
}

}  // namespace

std::vector<Command> add_policy_commands(CLI::App& parent) {
  CLI::App* group = parent.add_subcommand("policy", "The gateway's policy file: check it, explain its decisions");
  group->require_subcommand(1);
  group->footer("Exit status: 0 success; 1 the policy file is invalid (check); 2 the command line or a file it "
                "names is wrong.\n");
  return {add_check(*group), add_explain(*group)};
}

}  // namespace mailkms::cli
