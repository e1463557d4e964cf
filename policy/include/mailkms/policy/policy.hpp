// The policy file (policy.toml) as an immutable value, and the decision it
// gives for one message: per recipient, whether to sign, encrypt, verify or
// decrypt, with which algorithms, and what to do when a certificate is
// missing; and who may sign as whom. Pure: no I/O beyond reading the file
// (and the login map it names), no keystore, no clock.
// A Policy never changes once loaded; a reload makes a new one, and each
// message keeps the snapshot (shared_ptr<const Policy>) it started with.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mailkms/basic_result.hpp"
#include "mailkms/smime/algorithms.hpp"

namespace mailkms::policy {

// Why a policy file was refused: always names the file, line and column and
// what was expected there.
struct Error {
  std::string message;
};
template <class T>
using Result = BasicResult<T, Error>;

enum class Direction { outbound, inbound };
std::string_view to_string(Direction direction) noexcept;  // "outbound", "inbound"

enum class Mode { never, if_possible, always };
std::string_view to_string(Mode mode) noexcept;  // "never", "if-possible", "always"

// What happens to a message that policy says to encrypt (encrypt = always)
// when a recipient has no usable certificate.
enum class MissingCertificate { send_plain, reject, tempfail, quarantine };
std::string_view to_string(MissingCertificate action) noexcept;  // "send-plain" …

// Everything a rule can set. [defaults] fills every field; a rule's own
// keys override them for the recipients it matches.
struct Settings {
  // Outbound.
  Mode sign = Mode::if_possible;     // with the sender's keystore identity
  Mode encrypt = Mode::if_possible;  // to every recipient (and the sender)
  // The content-encryption algorithms allowed, in order of preference;
  // never empty, never a decrypt-only cipher (DES, RC2).
  std::vector<smime::Cipher> ciphers{smime::Cipher::aes256_cbc, smime::Cipher::aes128_cbc};
  smime::Digest digest = smime::Digest::sha256;
  MissingCertificate on_missing_certificate = MissingCertificate::tempfail;
  bool encrypt_to_sender = true;  // so the sender's sent copy stays readable
  // Calendar invitations (a text/calendar part with a method, RFC 6047) are
  // sent signed but never encrypted: Outlook cannot process encrypted ones.
  // A rule or [defaults] that sets encrypt = "always" exempts them only if it
  // says exempt_calendar = true itself.
  bool exempt_calendar = true;
  // Inbound.
  bool verify = true;    // add Authentication-Results with the smime method
  bool decrypt = false;  // decrypt for local recipients with escrowed keys
  // Decrypt content whose integrity nothing protects (CBC, EnvelopedData)
  // even when no signature that passes vouches for it (EFAIL); off, such
  // mail is delivered still encrypted.
  bool decrypt_unauthenticated = false;
  bool harvest = true;   // remember trusted senders' certificates
};

// `alice@example.org`, `*@example.org`, `*@*.example.org` (any subdomain,
// not the domain itself) or `*` — matched case-insensitively.
class AddressPattern {
 public:
  static std::optional<AddressPattern> parse(std::string_view text);
  [[nodiscard]] bool matches(std::string_view address) const;
  [[nodiscard]] const std::string& text() const noexcept { return text_; }

 private:
  enum class Kind { any, address, domain, subdomains };
  Kind kind_ = Kind::any;
  std::string text_;   // as written, for explanations
  std::string value_;  // lower-cased address or domain
};

struct HeaderCondition {
  std::string name;      // matched case-insensitively
  std::string contains;  // substring of the unfolded value, case-insensitive
};

struct Rule {
  std::string name;  // the rule's `name`, or "rule N" (1-based)
  int line = 0;      // where it starts in the file
  std::vector<AddressPattern> from;  // empty: any sender
  std::vector<AddressPattern> to;    // empty: any recipient
  std::optional<Direction> direction;
  // A tag such as "[secure]" that must appear in Subject (case-insensitive);
  // when the rule matched on it, the gateway removes it from the subject.
  std::optional<std::string> subject_tag;
  std::optional<HeaderCondition> header;
  Settings settings;  // [defaults] with this rule's keys applied
  // Whether the rule looks at the message's headers (subject or header):
  // such a rule can only be decided at end of message.
  [[nodiscard]] bool needs_headers() const noexcept { return subject_tag.has_value() || header.has_value(); }
};

// How the gateway tells outbound from inbound mail (see decide_direction).
struct Locality {
  std::vector<std::string> domains;  // local domains, lower case
  struct Network {
    std::array<std::uint8_t, 16> address{};  // IPv4 as ::ffff:a.b.c.d
    int prefix = 128;
  };
  std::vector<Network> networks;     // internal client networks
};

// Who may sign as whom ([signing]): the signing identity must be one the
// submission is authorized for, as Postfix's smtpd_sender_login_maps binds
// sender addresses to SASL logins. See authorize_signer.
struct Signing {
  // The login map, in Postfix's "address  login, login" form: who, besides
  // a login that is the address itself, may sign as an address ("@domain":
  // as any address there). Read with the policy, so a reload reads it again.
  std::filesystem::path login_map;  // empty: none
  std::map<std::string, std::vector<std::string>, std::less<>> owners;  // lower-case address or @domain → logins
  // Clients in these networks may have mail signed without SMTP AUTH, as
  // their envelope sender when it is also the author in From.
  std::vector<Locality::Network> unauthenticated_networks;
  // The same for mail submitted locally (sendmail, pickup).
  bool local_submission = false;
};

// Where a rule's decrypt = true takes effect ([decryption] at). The MTA
// expands aliases, virtual aliases and .forward after the milter has seen
// the recipients, so a copy decrypted for bob@ would go wherever bob@
// forwards; only the final hop sees recipients that are no longer expanded.
enum class DecryptionPlace {
  final_hop,  // only in connections from the MTA service that is the final hop
  anywhere,   // in every connection: for an MTA that sends no recipient's mail on
};
std::string_view to_string(DecryptionPlace place) noexcept;  // "final-hop", "anywhere"

struct Policy {
  std::filesystem::path source;  // the file it came from
  Locality locality;
  Signing signing;
  DecryptionPlace decryption = DecryptionPlace::final_hop;
  Settings defaults;
  std::vector<Rule> rules;  // in file order; the first match wins
};

Result<std::shared_ptr<const Policy>> load_policy(const std::filesystem::path& path);
// The same from text; `source` names it in error messages.
Result<std::shared_ptr<const Policy>> parse_policy(std::string_view text, const std::filesystem::path& source);

// ---- Direction -------------------------------------------------------------

struct Connection {
  std::string client_address;  // "192.0.2.1", "2001:db8::1"; empty if the MTA knows none
  bool authenticated = false;  // SMTP AUTH succeeded ({auth_authen} set)
  std::string login;           // the SMTP AUTH login ({auth_authen})
  // Taken without a network client: Postfix's sendmail and pickup. Never
  // inferred from a missing address, which a PROXY "UNKNOWN" or an XCLIENT
  // ADDR=[UNAVAILABLE] gives too.
  bool local_submission = false;
  // The MTA service said it is the final hop ({daemon_name} is
  // final_hop_daemon_name): it takes mail whose recipients are already
  // expanded and hands it to mailboxes without expanding them again.
  bool final_hop = false;
};

// The {daemon_name} of the final hop (Postfix: milter_macro_daemon_name in
// that service's master.cf entry; Sendmail: DaemonPortOptions Name=). One
// fixed name, so that nothing has to be kept in step with the MTA's files.
inline constexpr std::string_view final_hop_daemon_name = "mailkms-final-hop";

struct DirectionDecision {
  Direction direction;
  std::string reason;  // "sender domain example.org is local and client 10.0.0.5 is in 10.0.0.0/8"
};

// Outbound when the sender's domain is local and the client is internal or
// authenticated, or the mail was submitted locally; otherwise inbound. The
// reason is meant for the log line.
DirectionDecision decide_direction(const Policy& policy, std::string_view sender, const Connection& connection);

// "10.0.0.0/8", "2001:db8::/32", or a bare address (/32, /128). The error
// says what is wrong with the text.
BasicResult<Locality::Network, std::string> parse_network(std::string_view text);

// The first of `networks` that holds this client address ("10.0.0.5",
// "[2001:db8::1]", as an MTA reports it), written as in the file; nothing
// for an address outside them, or one that does not parse.
std::optional<std::string> network_of(const std::vector<Locality::Network>& networks, std::string_view client_address);

// The same for the policy's [local] networks.
std::optional<std::string> internal_network_of(const Policy& policy, std::string_view client_address);

struct DecryptionHere {
  bool allowed = false;
  std::string reason;  // for the log line and policy explain
};

// Whether mail may be decrypted in this connection: [decryption] at =
// "anywhere", or the connection is the final hop.
DecryptionHere decryption_here(const Policy& policy, const Connection& connection);

// ---- Who may sign as whom -----------------------------------------------------

struct SignerAuthorization {
  bool authorized = false;
  std::string identity;  // the address the message would be signed as
  // Why, for the log line: "login bob@example.org signs as itself",
  // "client 10.1.2.3 is in none of [signing] unauthenticated_networks".
  std::string reason;
};

// Whether this submission may have its mail signed as its author: the
// single address in From (`author`), else the envelope sender. An
// authenticated client signs only as its login (when that is an address)
// and what the login map gives the login; an unauthenticated one only from
// [signing] unauthenticated_networks, or by local submission with
// local_submission = true, and only when From is the envelope sender.
// Nothing is signed at the final hop, whose client is the MTA itself.
SignerAuthorization authorize_signer(const Policy& policy, const Connection& connection, std::string_view sender,
                                     const std::optional<std::string>& author);

// The addresses `login` may sign as: itself when it is an address, then
// what the login map gives it, sorted ("@domain" for a whole domain).
std::vector<std::string> addresses_of_login(const Policy& policy, std::string_view login);

// Reads a login map ("address  login, login" per line, "#" comments, lines
// that start with white space continue the one before). Errors name the
// file and line.
Result<std::map<std::string, std::vector<std::string>, std::less<>>> parse_login_map(std::string_view text,
                                                                                     const std::filesystem::path& source);

// ---- Decisions -------------------------------------------------------------

// The message's header fields that rules can look at; unfolded values.
struct Headers {
  std::vector<std::pair<std::string, std::string>> fields;
  [[nodiscard]] std::optional<std::string_view> find(std::string_view name) const;
};

struct RecipientDecision {
  std::string recipient;
  const Rule* rule = nullptr;  // nullptr: [defaults] applied
  const Settings* settings = nullptr;
  bool matched_subject_tag = false;
  // "rule \"partners\" (line 12): to matches *@partner.example"
  std::string reason;
  [[nodiscard]] std::string rule_name() const { return rule != nullptr ? rule->name : "defaults"; }
};

// Decides for one recipient. With `headers` null (at RCPT time, before the
// headers are known), rules that need headers are skipped, and
// `uncertain` (if given) is set when one of them could still match; it is
// never cleared, so one flag can gather a message's recipients.
RecipientDecision decide(const Policy& policy, Direction direction, std::string_view sender,
                         std::string_view recipient, const Headers* headers, bool* uncertain = nullptr);

// The subject with `tag` removed once (case-insensitive), and the space
// around it tidied; unchanged if the tag is absent.
std::string remove_subject_tag(std::string_view subject, std::string_view tag);

}  // namespace mailkms::policy
