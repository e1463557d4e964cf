#include "policy_commands.hpp"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

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

// What `policy explain` found, said once for both readers: each item as a
// line of text for people, and as a JSON value under the same name ("cipher
// used" becomes "cipher_used") for scripts, printed as one document at the
// end. Recipients are an array of objects, in the order given.
class Report {
 public:
  explicit Report(bool as_json) : as_json_(as_json) {}

  void top(std::string_view label, const std::string& text, nlohmann::json value) {
    if (as_json_) {
      document_[name_of(label)] = std::move(value);
    } else {
      print_line("", label, kTopWidth, text);
    }
  }
  void recipient(const std::string& address) {
    if (as_json_) {
      document_["recipients"].push_back({{"recipient", address}});
    } else {
      std::cout << "\nrecipient " << address << "\n";
    }
  }
  // No text: the item is for scripts only (people read its absence).
  void item(std::string_view label, const std::optional<std::string>& text, nlohmann::json value) {
    if (as_json_) {
      document_["recipients"].back()[name_of(label)] = std::move(value);
    } else if (text) {
      print_line("  ", label, kRecipientWidth, *text);
    }
  }
  void finish() {
    if (!as_json_) return;
    if (!document_.contains("recipients")) document_["recipients"] = nlohmann::json::array();
    std::cout << document_.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }

 private:
  static std::string name_of(std::string_view label) {
    std::string name(label);
    std::replace(name.begin(), name.end(), ' ', '_');
    return name;
  }
  bool as_json_;
  nlohmann::json document_ = nlohmann::json::object();
};

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
  bool as_json = false;
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

void explain_certificate(Report& report, const policy::Settings& settings, const std::string& recipient,
                         const CertificateReport& certificates) {
  using nlohmann::json;
  if (settings.encrypt == policy::Mode::never) {
    report.item("certificate", "not needed (encrypt = never)", {{"status", "not-needed"}});
    return;
  }
  if (certificates.failure) {
    report.item("certificate", *certificates.failure, {{"status", "unchecked"}, {"reason", *certificates.failure}});
    return;
  }
  if (const auto* found = certificate_of(certificates, recipient)) {
    const std::string until = day(found->certificate.not_after());
    report.item("certificate", "found (" + found->certificate.subject() + ", valid until " + until + ")",
                {{"status", "found"}, {"subject", found->certificate.subject()}, {"not_after", until}});
    return;
  }
  const bool required = settings.encrypt == policy::Mode::always;
  const std::string action(policy::to_string(settings.on_missing_certificate));
  report.item("certificate",
              required ? "none — on_missing_certificate = " + action + " applies"
                       : "none — not encrypted for this recipient (encrypt = if-possible)",
              required ? json{{"status", "none"}, {"on_missing_certificate", action}}
                       : json{{"status", "none"}, {"encrypted", false}});
}

// The cipher this recipient's copy gets, as the gateway chooses it: the
// first of the rule's ciphers they can read, when the keystore knows what
// that is (from their signed mail), else the rule's first. Recipients who
// read different ciphers get different copies.
void explain_cipher(Report& report, const policy::Settings& settings,
                    const keystore::CertificateLookup::Found& found) {
  const std::optional<smime::Capabilities> capabilities[] = {found.capabilities};
  const auto chosen = smime::choose_cipher(capabilities, settings.ciphers, settings.ciphers.front());
  if (!chosen) {
    report.item("cipher used", "none: they read none of the allowed ciphers", nullptr);
    return;
  }
  const std::string name(smime::name(*chosen));
  report.item("cipher used",
              name + (found.capabilities ? " — the first allowed one they can read (from their signed mail)"
                                         : " — the first allowed: what they can read is not known"),
              {{"name", name}, {"capabilities_known", found.capabilities.has_value()}});
}

policy::DirectionDecision direction_of(const ExplainArgs& args, const policy::Policy& p) {
  if (args.inbound) return {policy::Direction::inbound, "given with --inbound"};
  if (args.outbound) return {policy::Direction::outbound, "given with --outbound"};
  return policy::decide_direction(p, args.from, connection_of(args));
}

// Whom the message would be signed as, and why; with --login, everything
// that login may sign as.
void explain_signer(Report& report, const ExplainArgs& args, const policy::Policy& p) {
  const std::optional<std::string> author = args.author.empty() ? args.from : args.author;
  const auto authorization = policy::authorize_signer(p, connection_of(args), args.from, author);
  report.top("signer",
             authorization.authorized
                 ? authorization.identity + " (" + authorization.reason + ")"
                 : "none: not authorized to sign as " + authorization.identity + " (" + authorization.reason + ")",
             {{"authorized", authorization.authorized},
              {"identity", authorization.identity},
              {"reason", authorization.reason}});
  if (!args.login.empty()) {
    const auto owned = policy::addresses_of_login(p, args.login);
    report.top("login owns", owned.empty() ? "nothing: it may sign as no one" : join(owned), owned);
  }
}

void explain_outbound_settings(Report& report, const policy::Settings& s) {
  const std::string sign(policy::to_string(s.sign));
  const std::string encrypt(policy::to_string(s.encrypt));
  report.item("sign", sign, sign);
  report.item("encrypt", encrypt, encrypt);
  std::vector<std::string> ciphers;
  for (const smime::Cipher c : s.ciphers) ciphers.emplace_back(smime::name(c));
  report.item("ciphers", join(ciphers), ciphers);
  report.item("digest", std::string(smime::name(s.digest)), smime::name(s.digest));
  const std::string on_missing(policy::to_string(s.on_missing_certificate));
  report.item("on_missing_certificate", on_missing, on_missing);
  report.item("encrypt_to_sender", yes_no(s.encrypt_to_sender), s.encrypt_to_sender);
  report.item("exempt_calendar", yes_no(s.exempt_calendar), s.exempt_calendar);
}

void explain_inbound_settings(Report& report, const policy::Settings& s, bool decrypts_here) {
  report.item("verify", yes_no(s.verify), s.verify);
  report.item("decrypt",
              s.decrypt && !decrypts_here ? "yes, but not in this connection (see decryption)" : yes_no(s.decrypt),
              {{"policy", s.decrypt}, {"here", s.decrypt && decrypts_here}});
  if (s.decrypt) {
    report.item("decrypt_unauthenticated",
                s.decrypt_unauthenticated ? "yes"
                                          : "no — CBC-encrypted mail without a signature that passes stays encrypted",
                s.decrypt_unauthenticated);
  }
  report.item("harvest", yes_no(s.harvest), s.harvest);
}

// One recipient: the rule that decided, and what it says.
void explain_recipient(Report& report, const ExplainArgs& args, const policy::Policy& p,
                       const policy::RecipientDecision& d, policy::Direction direction, const policy::Headers& headers,
                       bool decrypts_here, const std::optional<CertificateReport>& certificates) {
  report.recipient(d.recipient);
  report.item("policy", d.reason, {{"rule", d.rule_name()}, {"reason", d.reason}});
  bool uncertain = false;
  (void)policy::decide(p, direction, args.from, d.recipient, nullptr, &uncertain);
  report.item("decided", uncertain ? std::optional<std::string>("at end of message, when the headers are known") : std::nullopt,
              uncertain ? "end-of-message" : "rcpt");
  if (d.matched_subject_tag) {
    const auto subject = headers.find("Subject").value_or("");
    const auto untagged = policy::remove_subject_tag(subject, *d.rule->subject_tag);
    report.item("subject", "\"" + untagged + "\" (tag " + *d.rule->subject_tag + " removed)",
                {{"sent", untagged}, {"tag_removed", *d.rule->subject_tag}});
  }
  if (direction == policy::Direction::outbound) {
    explain_outbound_settings(report, *d.settings);
  } else {
    explain_inbound_settings(report, *d.settings, decrypts_here);
  }
  if (certificates) {
    explain_certificate(report, *d.settings, d.recipient, *certificates);
    const auto* found = certificates->failure ? nullptr : certificate_of(*certificates, d.recipient);
    if (found != nullptr && d.settings->encrypt != policy::Mode::never) explain_cipher(report, *d.settings, *found);
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

  Report report(args.as_json);
  report.top("policy", args.policy, args.policy);
  report.top("sender", args.from, args.from);
  const std::string way(policy::to_string(direction.direction));
  report.top("direction", way + " (" + direction.reason + ")", {{"value", way}, {"reason", direction.reason}});
  const auto here = policy::decryption_here(p, connection_of(args));
  if (!outbound) {
    report.top("decryption", (here.allowed ? "here: " : "not here: ") + here.reason,
               {{"here", here.allowed}, {"reason", here.reason}});
  }
  if (outbound) explain_signer(report, args, p);
  if (outbound && !config) report.top("certificates", "not checked (no keystore configured)", {{"checked", false}});
  if (outbound && config) {
    report.top("certificates", "from the keystore of " + *config, {{"checked", true}, {"config", *config}});
  }
  for (const auto& d : decisions) {
    explain_recipient(report, args, p, d, direction.direction, headers, here.allowed, certificates);
  }
  report.finish();
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
  cmd->add_flag("--json", args->as_json, "Print one JSON document instead of text");
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
