// Enrollment and recovery by mail, through the service as the daemon
// serves it. The mail command is a script that keeps each message in a
// directory, so a test reads its token from the mail as a user would, and
// opens the PKCS#12 that comes back with the password it chose.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <algorithm>
#include <regex>
#include <set>

#include "mailkms/keystore/config.hpp"
#include "mailkms/keystore/enrollment.hpp"
#include "mailkms/keystore/mail_message.hpp"
#include "mailkms/keystore/mailer.hpp"
#include "mailkms/keystore/protocol.hpp"
#include "mailkms/keystore/seal.hpp"
#include "mailkms/keystore/service.hpp"
#include "mailkms/keystore/tokens.hpp"
#include "keystore_fixture.hpp"
#include "test_database.hpp"
#include "test_support.hpp"

using namespace mailkms;
using namespace mailkms::keystore;
using nlohmann::json;
using test::must;
using namespace std::chrono_literals;

namespace {

const std::string kAdminPassword = "carol's long password";
const std::regex kTokenLine("Token: (MKMS(-[A-Z2-7]{5}){5}-[A-Z2-7])");

// Keeps each message as NNN.eml and what was appended to the command as
// NNN.args; refuses (exit 75) any recipient with "bounce" in it.
const char* const kCaptureScript = R"(#!/bin/sh
out=$1
shift
case "$*" in *bounce*) exit 75;; esac
n=$(date +%s%N)-$$
printf '%s\n' "$*" > "$out/$n.args"
cat > "$out/$n.eml"
)";

struct Mail {
  std::string args;
  std::string text;
  [[nodiscard]] std::string recipient() const { return args.substr(args.rfind(' ') + 1); }
  [[nodiscard]] bool has(const std::string& s) const { return text.find(s) != std::string::npos; }
};

std::string token_in(const Mail& mail) {
  std::smatch m;
  REQUIRE(std::regex_search(mail.text, m, kTokenLine));
  return m[1];
}

// The attachment named `filename`, decoded.
std::string attachment(const Mail& mail, const std::string& filename) {
  const auto at = mail.text.find("filename=\"" + filename + "\"");
  REQUIRE(at != std::string::npos);
  const auto start = mail.text.find("\n\n", at) + 2;
  const auto end = mail.text.find("\n--", start);
  std::string b64;
  for (const char c : mail.text.substr(start, end - start)) {
    if (c != '\n') b64 += c;
  }
  return must(protocol::unbase64(json(b64)));
}

void write_script(const std::filesystem::path& path, const std::string& text) {
  test::write_file(path, text);
  ::chmod(path.c_str(), 0755);
}

class Keystore {
 public:
  Keystore() {
    std::filesystem::create_directories(outbox());
    write_script(dir.path("capture-mail"), kCaptureScript);
    settings.mail_command = {dir.path("capture-mail").string(), outbox().string()};
    settings.mail_from = "mailkms@example.org";
    settings.enrollment_address = "enroll@example.org";
    settings.templates = MAILKMS_TEMPLATES;
    KeystoreService::Policies policies;
    policies.users = {KeyType::rsa2048, KeyType::ec_p256, 365};
    policies.admins.password_kdf = {1 << 10, 8, 1};
    policies.pkcs12.iterations = 10'000;  // the default, 600,000, is slow under sanitizers
    policies.enrollment = settings;
    policies.clock = time.clock();
    auto master = new_master_key();
    const auto seal = must(seal_with_passphrase(master, "a long enough passphrase", {1 << 10, 8, 1}));
    service = must(KeystoreService::initialize(database.location(), test::context(), seal, std::move(master), "carol",
                                               kAdminPassword, {}, policies));
    must(service->ca().create_root("root", "Root", KeyType::ec_p384, 3650, "test"));
    must(service->ca().create_issuing("issuing", "root", "Issuing", KeyType::ec_p256, 1825, 1, "test"));
    session = must(call(administrator, "login", {{"name", "carol"}, {"password", kAdminPassword}}))["token"];
  }

  Result<json> call(const Caller& caller, const std::string& op, const json& params) {
    return service->handle(caller, {++next_id_, op, params});
  }
  Result<json> try_admin(const std::string& op, json params, const std::string& as = "") {
    params["session"] = as.empty() ? session : as;
    return call(administrator, op, params);
  }
  json admin(const std::string& op, json params) { return must(try_admin(op, std::move(params))); }
  json enroll(const std::vector<std::string>& addresses, bool reissue = false) {
    return admin("enroll", {{"addresses", addresses}, {"reissue", reissue}});
  }
  Result<json> try_redeem(const std::string& from, const std::string& token, const std::string& password,
                          const std::optional<std::string>& csr = std::nullopt) {
    json params{{"from", from}, {"token", token}, {"password", password}};
    if (csr) params["csr"] = *csr;
    return call(gateway, "redeem-token", params);
  }
  bool redeem(const std::string& from, const std::string& token, const std::string& password,
              const std::optional<std::string>& csr = std::nullopt) {
    const json r = must(try_redeem(from, token, password, csr));
    CHECK(r.size() == 1);  // the caller learns "ok" and nothing else
    return r.at("ok").get<bool>();
  }

  // Every message sent so far, oldest first.
  [[nodiscard]] std::vector<Mail> mails() const {
    std::vector<std::filesystem::path> files;
    for (const auto& e : std::filesystem::directory_iterator(outbox())) {
      if (e.path().extension() == ".eml") files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    std::vector<Mail> out;
    for (auto& f : files) {
      out.push_back({test::read_file(std::filesystem::path(f).replace_extension(".args")), test::read_file(f)});
      while (!out.back().args.empty() && out.back().args.back() == '\n') out.back().args.pop_back();
    }
    return out;
  }
  [[nodiscard]] std::vector<Mail> mails_to(const std::string& address) const {
    std::vector<Mail> out;
    for (auto& m : mails()) {
      if (m.recipient() == address) out.push_back(std::move(m));
    }
    return out;
  }
  [[nodiscard]] Mail last_to(const std::string& address) const {
    const auto all = mails_to(address);
    REQUIRE_FALSE(all.empty());
    return all.back();
  }
  std::string enroll_and_read_token(const std::string& address, bool reissue = false) {
    const json r = enroll({address}, reissue);
    REQUIRE(r["results"][0]["status"] == "sent");
    return token_in(last_to(address));
  }

  [[nodiscard]] std::vector<AuditRecord> audit() const { return must(service->audit().read(0, 100'000)); }
  // The detail of the last refused redemption from `address`.
  [[nodiscard]] std::string refusal(const std::string& address) const {
    const auto records = audit();
    const auto it = std::find_if(records.rbegin(), records.rend(), [&](const AuditRecord& r) {
      return r.event.action == "redeem-token" && r.event.outcome == "refused" && r.event.subject == address;
    });
    REQUIRE(it != records.rend());
    return it->event.detail;
  }
  // Everything storage holds, as a database writer sees it.
  [[nodiscard]] std::string stored_bytes() const { return database.raw_contents(); }

  [[nodiscard]] std::filesystem::path outbox() const { return dir.path("outbox"); }

  test::TempDir dir;
  test::TestDatabase database{dir};
  test::ManualClock time;
  EnrollmentSettings settings;
  std::unique_ptr<KeystoreService> service;
  std::string session;
  Caller administrator{1000, 1000, 1};
  Caller gateway{0, 0, 2};  // root counts as a gateway

 private:
  std::uint64_t next_id_ = 0;
};

smime::Certificate current_encryption_certificate(Keystore& k, const std::string& address) {
  return must(k.service->users().encryption_certificate(address));
}

std::size_t private_keys_in(const test::TempDir& dir, const std::string& p12, const std::string& password) {
  const auto path = dir.path("count.p12");
  test::write_file(path, p12);
  test::write_file(dir.path("count.pw"), password + "\n");
  const auto dump = test::run("openssl pkcs12 -nodes -in " + path.string() + " -passin file:" + dir.path("count.pw").string());
  REQUIRE(dump.exit_code == 0);
  std::size_t n = 0;
  for (std::size_t at = 0; (at = dump.out.find("BEGIN PRIVATE KEY", at)) != std::string::npos; ++at) ++n;
  return n;
}

}  // namespace

TEST_CASE("tokens read MKMS- and 26 base32 characters, carry 130 random bits and survive re-wrapping",
          "[enrollment][tokens]") {
  const std::regex format("MKMS(-[A-Z2-7]{5}){5}-[A-Z2-7]");
  std::set<std::string> seen;
  std::set<char> last_characters;
  for (int i = 0; i < 2000; ++i) {
    const std::string token = new_token();
    REQUIRE(std::regex_match(token, format));
    seen.insert(token);
    last_characters.insert(token.back());
  }
  CHECK(seen.size() == 2000);
  // 26 × 5 = 130 bits: even the last character takes all 32 values.
  CHECK(last_characters.size() == 32);

  const std::string token = "MKMS-ABCDE-FGHIJ-KLMNO-PQRST-UVWXY-Z";
  CHECK(normalize_token(token) == "ABCDEFGHIJKLMNOPQRSTUVWXYZ");
  CHECK(normalize_token("mkms-abcde-fghij-klm\n  no-pqrst-uvwxy-z") == "ABCDEFGHIJKLMNOPQRSTUVWXYZ");
  CHECK(normalize_token("ABCDE FGHIJ KLMNO PQRST UVWXY Z") == "ABCDEFGHIJKLMNOPQRSTUVWXYZ");
  CHECK(normalize_token("MKMSA-BCDEF-GHIJK-LMNOP-QRSTU-V") == "MKMSABCDEFGHIJKLMNOPQRSTUV");  // its own MKMS stays
  CHECK_FALSE(normalize_token("MKMS-ABCDE-FGHIJ-KLMNO-PQRST-UVWXY"));    // short
  CHECK_FALSE(normalize_token("MKMS-ABCDE-FGHIJ-KLMNO-PQRST-UVWXY-ZZ"));  // long
  CHECK_FALSE(normalize_token("MKMS-ABCDE-FGHIJ-KLMNO-PQRST-UVWXY-1"));   // not base32
  CHECK(token_hash("ABCDEFGHIJKLMNOPQRSTUVWXYZ") ==
        test::run("printf ABCDEFGHIJKLMNOPQRSTUVWXYZ | sha256sum | cut -d' ' -f1").out.substr(0, 64));
}

TEST_CASE("mail templates: placeholders, notes, and the headers the keystore adds", "[enrollment][mail]") {
  const std::map<std::string, std::string> values{{"address", "alice@example.org"}, {"reason", ""}};
  const auto unknown = render_template("Subject: hi\n\nDear {{adress}}\n", values, "enrollment.txt");
  REQUIRE_FALSE(unknown);
  CHECK(unknown.error().message == "enrollment.txt, line 3: unknown placeholder {{adress}}");
  CHECK(must(render_template("# a note for {{nobody}}\nSubject: hi\n\nfor {{ address }}\n{{reason}}\nbye\n", values)) ==
        "Subject: hi\n\nfor alice@example.org\nbye\n");
  CHECK(must(render_template("Subject: hi\n\nfirst\n\n{{reason}}\n\nlast\n", values)) == "Subject: hi\n\nfirst\n\nlast\n");

  const std::string plain = must(compose_message("From: Keys <keys@example.org>\nSubject: Schlüssel\n\nHallo\n",
                                                 "alice@example.org", "mailkms@example.org"));
  CHECK(plain.find("From: Keys <keys@example.org>\n") != std::string::npos);
  CHECK(plain.find("mailkms@example.org") == std::string::npos);  // the template's From stands
  CHECK(plain.find("Subject: =?UTF-8?B?U2NobMO8c3NlbA==?=\n") != std::string::npos);
  CHECK(plain.find("\nTo: alice@example.org\n") != std::string::npos);
  CHECK(std::regex_search(plain, std::regex("\nDate: [A-Z][a-z]{2}, \\d{2} [A-Z][a-z]{2} \\d{4} \\d{2}:\\d{2}:\\d{2} \\+0000\n")));
  CHECK(std::regex_search(plain, std::regex("\nMessage-ID: <[0-9a-f]{32}@example.org>\n")));
  CHECK(plain.find("\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 7bit\n\nHallo\n") !=
        std::string::npos);
  CHECK(plain.find('\r') == std::string::npos);

  const std::string own = must(compose_message("Subject: x\nContent-Type: text/plain; charset=us-ascii\n\nbody\n",
                                               "a@example.org", "m@example.org"));
  CHECK(own.find("Content-Type: text/plain; charset=us-ascii\n") != std::string::npos);
  CHECK(own.find("charset=utf-8") == std::string::npos);
  CHECK(own.find("\nFrom: m@example.org\n") != std::string::npos);

  const std::vector<Attachment> files{{"a.p12", "application/pkcs12", std::string("\x30\x82\x01\x00", 4)}};
  const std::string mixed = must(compose_message("Subject: keys\nContent-Type: text/html\n\nhere\n", "a@example.org",
                                                 "m@example.org", files));
  CHECK(mixed.find("text/html") == std::string::npos);
  std::smatch boundary;
  REQUIRE(std::regex_search(mixed, boundary, std::regex("Content-Type: multipart/mixed; boundary=\"([^\"]+)\"\n")));
  CHECK(mixed.find("--" + boundary[1].str() + "\nContent-Type: text/plain; charset=utf-8\n") != std::string::npos);
  CHECK(mixed.find("Content-Type: application/pkcs12; name=\"a.p12\"\nContent-Disposition: attachment; filename=\"a.p12\"\n"
                   "Content-Transfer-Encoding: base64\n\nMIIBAA==\n") != std::string::npos);
  CHECK(mixed.ends_with("--" + boundary[1].str() + "--\n"));

  CHECK(compose_message("Subject: no body", "a@example.org", "m@example.org").error().code == Errc::invalid_argument);
  CHECK(compose_message("Dear user,\n\nhello\n", "a@example.org", "m@example.org").error().message.find("line 1") !=
        std::string::npos);
}

TEST_CASE("the mail command gets -f and the recipient, and failures are errors, not signals", "[enrollment][mail]") {
  test::TempDir dir;
  std::filesystem::create_directories(dir.path("out"));
  write_script(dir.path("capture"), kCaptureScript);
  const std::vector<std::string> capture{dir.path("capture").string(), dir.path("out").string()};
  must(send_mail(capture, "mailkms@example.org", "alice@example.org", "Subject: hi\n\nhello\n"));
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dir.path("out"))) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  REQUIRE(files.size() == 2);
  CHECK(test::read_file(files[0]) == "-f mailkms@example.org -- alice@example.org\n");
  CHECK(test::read_file(files[1]) == "Subject: hi\n\nhello\n");

  const auto bounced = send_mail(capture, "m@example.org", "bounce@example.org", "x\n");
  REQUIRE_FALSE(bounced);
  CHECK(bounced.error().code == Errc::unavailable);
  CHECK(bounced.error().message.find("exit status 75") != std::string::npos);

  // A command that never reads: EPIPE, not SIGPIPE killing the test.
  const auto unread = send_mail({"/bin/true"}, "m@example.org", "a@example.org", std::string(1 << 20, 'x'));
  REQUIRE_FALSE(unread);
  CHECK(unread.error().message.find("stopped reading") != std::string::npos);

  write_script(dir.path("slow"), "#!/bin/sh\nexec sleep 10\n");
  const auto start = std::chrono::steady_clock::now();
  const auto slow = send_mail({dir.path("slow").string()}, "m@example.org", "a@example.org", "x\n", 300ms);
  REQUIRE_FALSE(slow);
  CHECK(slow.error().message.find("did not finish in time") != std::string::npos);
  CHECK(std::chrono::steady_clock::now() - start < 5s);

  CHECK(send_mail({"sendmail"}, "m@example.org", "a@example.org", "x\n").error().message.find("absolute path") !=
        std::string::npos);
  CHECK_FALSE(send_mail({"/no/such/sendmail"}, "m@example.org", "a@example.org", "x\n"));
}

TEST_CASE("an enrolled user replies with the token and gets their key under their own password", "[enrollment]") {
  Keystore k;
  must(k.service->users().add("alice@example.org", "test"));
  must(k.service->users().renew("alice@example.org", "test"));  // enrollment hands out the current key alone
  const json r = k.enroll({"alice@example.org", "Dave@Example.org"});
  CHECK(r["sent"] == 2);
  CHECK(r["already_enrolled"] == 0);
  CHECK(r["failed"] == 0);
  CHECK(r["results"][1] == json{{"address", "dave@example.org"}, {"status", "sent"}, {"reason", ""}});
  CHECK(must(k.service->users().get("dave@example.org")).encryption_serials.size() == 1);  // added as user add would

  const Mail invitation = k.last_to("alice@example.org");
  CHECK(invitation.args == "-f mailkms@example.org -- alice@example.org");
  for (const std::string header : {"\nTo: alice@example.org\n", "\nReply-To: enroll@example.org\n",
                                   "From: Mail Security <mailkms@example.org>\n", "\nMIME-Version: 1.0\n",
                                   "\nContent-Type: text/plain; charset=utf-8\n", "\nMessage-ID: <", "\nDate: "}) {
    CHECK(invitation.has(header));
  }
  CHECK_FALSE(invitation.has("\n#"));  // administrators' notes stay out
  CHECK_FALSE(invitation.has("{{"));
  // What a reply must hold, and what happens to a second one.
  CHECK(invitation.has("Quoting this message in your reply is fine"));
  CHECK(invitation.has("a second reply gets no answer"));
  CHECK(invitation.has("at most 31 if you will\n   use GnuPG 2.2"));
  const std::string token = token_in(invitation);
  const std::string normalized = *normalize_token(token);

  // Only the token's hash is kept: nowhere in the database, nor the audit log.
  CHECK(must(k.service->storage().get("token/" + token_hash(normalized))).has_value());
  CHECK(k.stored_bytes().find(normalized) == std::string::npos);
  CHECK(k.stored_bytes().find(normalized.substr(0, 10)) == std::string::npos);
  CHECK(k.stored_bytes().find(token.substr(0, 16)) == std::string::npos);
  const auto records = k.audit();
  const auto sent = std::find_if(records.begin(), records.end(), [](const AuditRecord& a) {
    return a.event.action == "enroll" && a.event.subject == "alice@example.org";
  });
  REQUIRE(sent != records.end());
  CHECK(sent->event.outcome == "ok");
  CHECK(sent->event.detail.find("token sent") != std::string::npos);

  // A reply client that lower-cased and re-wrapped the token.
  std::string rewrapped = token;
  std::transform(rewrapped.begin(), rewrapped.end(), rewrapped.begin(), [](unsigned char c) { return std::tolower(c); });
  rewrapped.insert(17, "\n  ");
  const std::string password = "alice chose this";
  CHECK(k.redeem("Alice@Example.org", rewrapped, password));

  const Mail keys = k.last_to("alice@example.org");
  CHECK(keys.has("Subject: Your secure e-mail keys\n"));
  CHECK(keys.has("Content-Type: multipart/mixed; boundary="));
  CHECK(keys.has("Content-Type: application/pkcs12; name=\"alice.p12\""));
  CHECK(keys.has("Content-Type: application/pkix-cert; name=\"ca.crt\""));
  CHECK(keys.has("Thunderbird"));
  CHECK_FALSE(keys.has("-signing.crt"));  // no request, no signing certificate: its line is left out
  // What the mail says is attached is what is: the encryption key alone,
  // and the issuing CA's certificate, named.
  CHECK(keys.has("Content-Type: application/pkix-cert; name=\"ca-intermediate-1.crt\""));
  CHECK(keys.has("  ca-intermediate-1.crt: the authority under the root that issued yours."));
  CHECK(keys.has("Your signing key is not in the file"));
  CHECK_FALSE(keys.has("for signing and for encryption"));
  CHECK(keys.has("If the import fails"));
  const auto intermediate = must(k.service->ca().get("issuing")).certificate;
  CHECK(smime::Certificate::from_der(attachment(keys, "ca-intermediate-1.crt")).value() == *intermediate);
  const auto bundle = must(smime::read_pkcs12(*test::context(), attachment(keys, "alice.p12"), password));
  const auto current = current_encryption_certificate(k, "alice@example.org");
  CHECK(bundle.certificate == current);
  CHECK(bundle.key.matches(current));
  CHECK_FALSE(smime::read_pkcs12(*test::context(), attachment(keys, "alice.p12"), "not the password"));
  const auto root = must(k.service->ca().get("root")).certificate;
  CHECK(smime::Certificate::from_der(attachment(keys, "ca.crt")).value() == *root);
  CHECK(private_keys_in(k.dir, attachment(keys, "alice.p12"), password) == 1);
  CHECK(k.admin("user-show", {{"address", "alice@example.org"}})["enrolled"].get<std::time_t>() > 0);

  const auto all = k.audit();
  CHECK(std::any_of(all.begin(), all.end(), [](const AuditRecord& a) {
    return a.event.action == "redeem-token" && a.event.outcome == "ok" && a.event.subject == "alice@example.org" &&
           a.event.detail.find("enrollment token redeemed") != std::string::npos;
  }));
  CHECK(must(k.service->audit().verify()).intact);
  for (const std::string& secret : {normalized, password}) {
    for (const auto& a : all) CHECK(a.event.detail.find(secret) == std::string::npos);
    CHECK(k.stored_bytes().find(secret) == std::string::npos);
  }

  SECTION("a token works once") {
    const std::size_t before = k.mails_to("alice@example.org").size();
    CHECK_FALSE(k.redeem("alice@example.org", token, password));
    CHECK(k.refusal("alice@example.org").starts_with("token reused (redeemed 20"));
    CHECK(k.refusal("alice@example.org").ends_with("; not answered: no token pending for the address"));
    CHECK(k.mails_to("alice@example.org").size() == before);  // she awaits nothing from us
  }
  SECTION("an enrolled user is left alone unless a new token is asked for") {
    const std::size_t before = k.mails().size();
    const json again = k.enroll({"alice@example.org"});
    CHECK(again["results"][0]["status"] == "already-enrolled");
    CHECK(again["already_enrolled"] == 1);
    CHECK(k.mails().size() == before);
    const std::string fresh = k.enroll_and_read_token("alice@example.org", true);
    CHECK(fresh != token);
    CHECK(k.redeem("alice@example.org", fresh, "another password"));
  }
}

TEST_CASE("refusals: one answer for the gateway, a mail for the sender, the exact reason in the audit log",
          "[enrollment]") {
  Keystore k;
  const std::string bob = k.enroll_and_read_token("bob@example.org");
  const std::string alice = k.enroll_and_read_token("alice@example.org");

  SECTION("a wrong token") {
    CHECK_FALSE(k.redeem("bob@example.org", new_token(), "bob's password"));
    CHECK(k.refusal("bob@example.org").starts_with("wrong token, token sha256:"));
    const Mail refused = k.last_to("bob@example.org");
    CHECK(refused.has("could not complete the request"));
    CHECK_FALSE(refused.has("wrong"));
    CHECK_FALSE(refused.has("too short"));
    CHECK(k.redeem("bob@example.org", bob, "bob's password"));  // his own token still works
  }
  SECTION("another user's token") {
    CHECK_FALSE(k.redeem("alice@example.org", bob, "alice's password"));
    CHECK(k.refusal("alice@example.org").starts_with("token of another address (bob@example.org)"));
    CHECK(k.last_to("alice@example.org").has("could not complete the request"));
    CHECK(k.mails_to("bob@example.org").size() == 1);  // bob hears nothing of it
    CHECK(k.redeem("bob@example.org", bob, "bob's password"));
  }
  SECTION("an expired token") {
    EnrollmentSettings short_lived = k.settings;
    short_lived.token_lifetime = 1h;
    k.service->set_enrollment(short_lived);
    const std::string erin = k.enroll_and_read_token("erin@example.org");
    const std::string frank = k.enroll_and_read_token("frank@example.org");
    k.time.advance(1h - 1s);
    CHECK(k.redeem("frank@example.org", frank, "frank's password"));
    k.time.advance(1s);
    CHECK_FALSE(k.redeem("erin@example.org", erin, "erin's password"));
    CHECK(k.refusal("erin@example.org").starts_with("token expired"));
  }
  SECTION("a token replaced by a newer one") {
    const std::string newer = k.enroll_and_read_token("bob@example.org", true);
    CHECK_FALSE(k.redeem("bob@example.org", bob, "bob's password"));
    CHECK(k.refusal("bob@example.org").starts_with("token replaced by a newer one"));
    CHECK(k.redeem("bob@example.org", newer, "bob's password"));
  }
  SECTION("a password too short: the one refusal that says why") {
    CHECK_FALSE(k.redeem("bob@example.org", bob, "short"));
    CHECK(k.refusal("bob@example.org").starts_with("password too short"));
    const Mail refused = k.last_to("bob@example.org");
    CHECK(refused.has("The password you chose was too short: please choose one of at least 8 characters."));
    CHECK(k.redeem("bob@example.org", bob, "long enough now"));  // the token was not spent
  }
  SECTION("a bad certificate request spends nothing") {
    CHECK_FALSE(k.redeem("bob@example.org", bob, "bob's password", "-----BEGIN CERTIFICATE REQUEST-----\ngarbage"));
    CHECK(k.refusal("bob@example.org").starts_with("unusable certificate request"));
    CHECK(k.redeem("bob@example.org", bob, "bob's password"));
  }
  for (const auto& r : k.audit()) {
    CHECK(r.event.detail.find(*normalize_token(bob)) == std::string::npos);
    CHECK(r.event.detail.find("bob's password") == std::string::npos);
  }
}

TEST_CASE("failures past 5 an hour from one sender, or 10,000 from all, are only counted, and a real token still works",
          "[enrollment]") {
  Keystore k;
  const std::string henry = k.enroll_and_read_token("henry@example.org");
  const std::string ivan = k.enroll_and_read_token("ivan@example.org");
  const std::string jack = k.enroll_and_read_token("jack@example.org");
  const auto records = [&] { return k.audit().size(); };
  for (int i = 0; i < 5; ++i) {
    CHECK_FALSE(k.redeem("henry@example.org", new_token(), "henry's password"));
    CHECK(k.refusal("henry@example.org").starts_with("wrong token"));
  }
  // Forged in henry's name, the sixth and later cost neither a mail nor a record.
  const std::size_t mails_before = k.mails_to("henry@example.org").size();
  const std::size_t records_before = records();
  for (int i = 0; i < 50; ++i) CHECK_FALSE(k.redeem("henry@example.org", new_token(), "henry's password"));
  CHECK(k.mails_to("henry@example.org").size() == mails_before);
  CHECK(records() == records_before);
  // The limit is an hour's: then failures are answered and recorded again.
  k.time.advance(1h - 1s);
  CHECK_FALSE(k.redeem("henry@example.org", new_token(), "henry's password"));
  CHECK(records() == records_before);
  k.time.advance(1s);
  CHECK_FALSE(k.redeem("henry@example.org", new_token(), "henry's password"));
  CHECK(k.refusal("henry@example.org").starts_with("wrong token"));
  CHECK(records() > records_before);
  // henry's own token is his proof, whatever was sent in his name.
  CHECK(k.redeem("henry@example.org", henry, "henry's password"));

  // 20,000 forged replies from 4,000 senders: the first 10,000 recorded, the rest counted.
  for (int sender = 0; sender < 4000; ++sender) {
    const std::string from = "guess" + std::to_string(sender) + "@example.org";
    for (int i = 0; i < 5; ++i) {
      const auto r = k.try_redeem(from, new_token(), "a password");
      if (!r || r->value("ok", true)) FAIL("a guess was not refused");
    }
  }
  CHECK(k.mails_to("guess0@example.org").empty());  // not users: never answered
  CHECK(records() <= records_before + 10'000 + 10);  // henry's success writes a few
  // The real ones still work under the flood.
  CHECK(k.redeem("jack@example.org", jack, "jack's password"));
  CHECK(k.redeem("ivan@example.org", ivan, "ivan's password"));
}

TEST_CASE("a reply without a token is audited within limits: not answered, not counted", "[enrollment]") {
  Keystore k;
  const std::string lena = k.enroll_and_read_token("lena@example.org");
  const std::size_t mails_before = k.mails().size();
  for (int i = 0; i < 10; ++i) {
    CHECK_FALSE(k.redeem("lena@example.org", "", "a password"));
    CHECK_FALSE(k.redeem("lena@example.org", "hello, what is this?", "a password"));
    CHECK_FALSE(k.redeem("stranger" + std::to_string(i) + "@example.org", "", "a password"));
  }
  CHECK(k.mails().size() == mails_before);
  const auto records = k.audit();
  CHECK(std::count_if(records.begin(), records.end(), [](const AuditRecord& r) {
          return r.event.action == "redeem-token" && r.event.outcome == "ignored" && r.event.detail == "no token in the reply";
        }) == AuditLimiter::kPerWindow);  // anyone can send these: the other ten are counted
  // Twenty of them from lena held nothing back: her token still works.
  CHECK(k.redeem("lena@example.org", lena, "lena's password"));

  // A wrong token from an address that is not a user, or from a user with
  // nothing pending, is refused and counted, but not answered.
  CHECK_FALSE(k.redeem("stranger@example.org", new_token(), "a password"));
  CHECK(k.refusal("stranger@example.org").ends_with("; not answered: no token pending for the address"));
  CHECK_FALSE(k.redeem("lena@example.org", new_token(), "a password"));
  CHECK(k.refusal("lena@example.org").ends_with("; not answered: no token pending for the address"));
  CHECK(k.mails_to("stranger@example.org").empty());
  CHECK(k.mails_to("lena@example.org").size() == 2);  // the token, then her keys
}

TEST_CASE("recovery by mail: approved, mailed as a token, redeemed for every escrowed key", "[enrollment][recover]") {
  Keystore k;
  must(k.service->users().add("alice@example.org", "test"));
  must(k.service->users().renew("alice@example.org", "test"));

  k.admin("admin-add", {{"name", "erin"}, {"password", "erin's long password"}});
  k.admin("approvals-set", {{"task", "recover"}, {"count", 2}});
  const json pending = k.admin("recover", {{"address", "alice@example.org"}, {"by_mail", true}});
  CHECK(pending["status"] == "pending");
  CHECK(k.mails_to("alice@example.org").empty());
  const std::string erin = must(k.call(k.administrator, "login", {{"name", "erin"}, {"password", "erin's long password"}}))["token"];
  CHECK(must(k.try_admin("approve", {{"id", pending["request"]}}, erin))["status"] == "done");

  const Mail recovery = k.last_to("alice@example.org");
  CHECK(recovery.has("Subject: Recovering your secure e-mail keys"));
  CHECK(recovery.has("Reply-To: enroll@example.org"));
  const std::string token = token_in(recovery);
  CHECK(k.redeem("alice@example.org", token, "alice's new password"));

  const Mail keys = k.last_to("alice@example.org");
  CHECK(keys.has("Subject: Your recovered secure e-mail keys"));
  CHECK(keys.has("your encryption keys (2 in all"));
  const std::string p12 = attachment(keys, "alice.p12");
  CHECK(private_keys_in(k.dir, p12, "alice's new password") == 2);
  const auto bundle = must(smime::read_pkcs12(*test::context(), p12, "alice's new password"));
  std::vector<smime::Certificate> inside = bundle.chain;
  inside.push_back(bundle.certificate);
  for (const auto& serial : must(k.service->users().get("alice@example.org")).encryption_serials) {
    const auto escrowed = must(k.service->ca().certificate(serial)).certificate;
    CHECK(std::count(inside.begin(), inside.end(), escrowed) == 1);
  }
  const auto records = k.audit();
  CHECK(std::any_of(records.begin(), records.end(), [](const AuditRecord& a) {
    return a.event.action == "recover" && a.event.outcome == "ok" &&
           a.event.detail.find("recovery token sent") != std::string::npos;
  }));
  CHECK(must(k.service->users().get("alice@example.org")).enrolled == 0);  // recovery is not enrollment

  CHECK_FALSE(k.redeem("alice@example.org", token, "alice's new password"));  // once only

  EnrollmentSettings off = k.settings;
  off.enrollment_address.clear();
  k.service->set_enrollment(off);
  const json lower = k.admin("approvals-set", {{"task", "recover"}, {"count", 1}});  // as many as it lowers
  CHECK(must(k.try_admin("approve", {{"id", lower["request"]}}, erin))["status"] == "done");
  const auto refused = k.try_admin("recover", {{"address", "alice@example.org"}, {"by_mail", true}});
  REQUIRE_FALSE(refused);
  CHECK(refused.error().message.find("recovery by mail is off") != std::string::npos);
}

TEST_CASE("a user who sends a certificate request keeps their own signing key", "[enrollment]") {
  Keystore k;
  const std::string token = k.enroll_and_read_token("carol@example.org");
  const auto req = test::run("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout " +
                             k.dir.path("carol.key").string() + " -subj '/CN=carol'");
  REQUIRE(req.exit_code == 0);
  CHECK(k.redeem("carol@example.org", token, "carol's password", req.out));
  const UserRecord carol = must(k.service->users().get("carol@example.org"));
  CHECK_FALSE(carol.signing_key_held);
  CHECK(carol.enrolled > 0);
  const Mail keys = k.last_to("carol@example.org");
  CHECK(keys.has("carol-signing.crt: the signing certificate for the key you keep yourself"));
  const auto signing = must(smime::Certificate::from_der(attachment(keys, "carol-signing.crt")));
  CHECK(signing == must(k.service->users().signing_certificate("carol@example.org")));
  CHECK(must(smime::PrivateKey::from_pem(*test::context(), test::read_file(k.dir.path("carol.key")))).matches(signing));
}

TEST_CASE("a mail that cannot be sent fails its address alone and withdraws its token", "[enrollment]") {
  Keystore k;
  const json r = k.enroll({"kim@example.org", "bounce@example.org", "not an address", "lee@example.org"});
  CHECK(r["sent"] == 2);
  CHECK(r["failed"] == 2);
  CHECK(r["results"][1]["status"] == "failed");
  CHECK(r["results"][1]["reason"].get<std::string>().find("exit status 75") != std::string::npos);
  CHECK(r["results"][2]["reason"].get<std::string>().find("not a mail address") != std::string::npos);
  CHECK(r["results"][3]["status"] == "sent");
  const auto records = k.audit();
  CHECK(std::any_of(records.begin(), records.end(), [](const AuditRecord& a) {
    return a.event.action == "enroll" && a.event.subject == "bounce@example.org" && a.event.outcome == "failed" &&
           a.event.detail.find("token withdrawn") != std::string::npos;
  }));
  // kim, lee and the withdrawn one: only the two that were mailed remain.
  CHECK(must(k.service->storage().scan("token/")).size() == 2);

  SECTION("the keys' mail failing leaves the token usable, and the gateway gets an error to tempfail on") {
    const std::string kim = token_in(k.last_to("kim@example.org"));
    EnrollmentSettings broken = k.settings;
    broken.mail_command = {"/bin/false"};
    k.service->set_enrollment(broken);
    const auto failed = k.try_redeem("kim@example.org", kim, "kim's password");
    REQUIRE_FALSE(failed);
    CHECK(failed.error().code == Errc::unavailable);
    CHECK(must(k.service->users().get("kim@example.org")).enrolled == 0);
    k.service->set_enrollment(k.settings);
    CHECK(k.redeem("kim@example.org", kim, "kim's password"));
  }
  SECTION("a new token that cannot be mailed leaves the one before it redeemable") {
    const std::string kim = token_in(k.last_to("kim@example.org"));
    EnrollmentSettings broken = k.settings;
    broken.mail_command = {"/bin/false"};
    k.service->set_enrollment(broken);
    const json again = k.enroll({"kim@example.org"}, true);
    CHECK(again["failed"] == 1);
    k.service->set_enrollment(k.settings);
    CHECK(k.redeem("kim@example.org", kim, "kim's password"));
  }
  SECTION("with no enrollment address, enrollment by mail is off") {
    EnrollmentSettings off = k.settings;
    off.enrollment_address.clear();
    k.service->set_enrollment(off);
    const auto refused = k.try_admin("enroll", {{"addresses", {"mo@example.org"}}});
    REQUIRE_FALSE(refused);
    CHECK(refused.error().code == Errc::invalid_argument);
    CHECK(refused.error().message.find("enrollment by mail is off") != std::string::npos);
  }
  SECTION("a missing template names itself") {
    EnrollmentSettings elsewhere = k.settings;
    elsewhere.templates = k.dir.path("no-templates");
    k.service->set_enrollment(elsewhere);
    const json failed = k.enroll({"mo@example.org"});
    CHECK(failed["results"][0]["reason"].get<std::string>().find("no-templates/enrollment.txt") != std::string::npos);
  }
}

TEST_CASE("only gateways redeem tokens, and not while the keystore is sealed", "[enrollment]") {
  Keystore k;
  const std::string token = k.enroll_and_read_token("alice@example.org");
  const auto stranger = k.call({4242, 4242, 3}, "redeem-token",
                               {{"from", "alice@example.org"}, {"token", token}, {"password", "alice's password"}});
  REQUIRE_FALSE(stranger);
  CHECK(stranger.error().code == Errc::permission_denied);
  CHECK(k.try_redeem("alice@example.org", token, "").has_value());  // a short password is a refusal, not an error
  const auto missing = k.call(k.gateway, "redeem-token", {{"from", "alice@example.org"}, {"token", token}});
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code == Errc::invalid_argument);

  KeystoreService::Policies policies;
  auto sealed = must(KeystoreService::open(k.database.location(), test::context(), {}, policies));
  const auto refused = sealed->handle(k.gateway, {1, "redeem-token", {{"from", "alice@example.org"}, {"token", token},
                                                                      {"password", "alice's password"}}});
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == Errc::sealed);
  CHECK(k.redeem("alice@example.org", token, "alice's password"));
}

TEST_CASE("the [keystore] keys for mail", "[enrollment][config]") {
  test::TempDir dir;
  const auto path = dir.path("mailkms.conf");
  test::write_file(path, "[keystore]\n");
  const Config defaults = must(load_config(path));
  CHECK(defaults.enrollment.mail_command == std::vector<std::string>{"/usr/sbin/sendmail", "-i"});
  CHECK(defaults.enrollment.mail_from.empty());
  CHECK(defaults.enrollment.sender() == "mailkms@localhost");
  CHECK(defaults.enrollment.enrollment_address.empty());
  CHECK(defaults.enrollment.templates == "/etc/mailkms/templates");
  CHECK(defaults.enrollment.token_lifetime == 168h);
  CHECK(defaults.enrollment.pkcs12_profile == Pkcs12Profile::modern);

  test::write_file(path, "[keystore]\n"
                         "mail_command = [\"/usr/lib/sendmail\", \"-i\", \"-oi\"]\n"
                         "mail_from = \"keys@example.org\"\n"
                         "enrollment_address = \"enroll@example.org\"\n"
                         "templates = \"/srv/templates\"\n"
                         "token_lifetime_hours = 24\n"
                         "pkcs12_profile = \"legacy\"\n");
  const Config set = must(load_config(path));
  CHECK(set.enrollment.mail_command == std::vector<std::string>{"/usr/lib/sendmail", "-i", "-oi"});
  CHECK(set.enrollment.mail_from == "keys@example.org");
  CHECK(set.enrollment.enrollment_address == "enroll@example.org");
  CHECK(set.enrollment.templates == "/srv/templates");
  CHECK(set.enrollment.token_lifetime == 24h);
  CHECK(set.enrollment.pkcs12_profile == Pkcs12Profile::legacy);
  test::write_file(path, "[keystore]\nenrollment_address = \"enroll@example.org\"\n");
  CHECK(must(load_config(path)).enrollment.sender() == "enroll@example.org");  // mail comes from where users reply

  // The enrollment address is one for the site: [gateway]'s serves, and a
  // different one in each section is refused.
  test::write_file(path, "[gateway]\nenrollment_address = \"enroll@example.org\"\n");
  CHECK(must(load_config(path)).enrollment.enrollment_address == "enroll@example.org");
  test::write_file(path, "[keystore]\nenrollment_address = \"ENROLL@example.org\"\n[gateway]\nenrollment_address = \"enroll@example.org\"\n");
  CHECK(must(load_config(path)).enrollment.enrollment_address == "ENROLL@example.org");
  test::write_file(path, "[keystore]\nenrollment_address = \"keys@example.org\"\n[gateway]\nenrollment_address = \"enroll@example.org\"\n");
  const auto different = load_config(path);
  REQUIRE_FALSE(different);
  CHECK(different.error().message.find("keystore.enrollment_address \"keys@example.org\" differs from gateway.enrollment_address") !=
        std::string::npos);
  test::write_file(path, "[gateway]\nenrollment_address = \"not an address\"\n");
  REQUIRE_FALSE(load_config(path));

  for (const auto& [line, key] : std::vector<std::pair<std::string, std::string>>{
           {"mail_command = [\"sendmail\"]", "keystore.mail_command"},
           {"mail_command = []", "keystore.mail_command"},
           {"mail_from = \"keys\"", "keystore.mail_from"},
           {"enrollment_address = \"a b@example.org\"", "keystore.enrollment_address"},
           {"token_lifetime_hours = 0", "keystore.token_lifetime_hours"},
           {"pkcs12_profile = \"rc2\"", "keystore.pkcs12_profile"}}) {
    test::write_file(path, "[keystore]\n" + line + "\n");
    const auto refused = load_config(path);
    REQUIRE_FALSE(refused);
    CHECK(refused.error().message.find(key + " at line 2") != std::string::npos);
  }
}

TEST_CASE("the keystore's own mail carries a mark that only it confirms, for that recipient and Message-ID",
          "[enrollment][mark]") {
  Keystore k;
  k.enroll_and_read_token("mia@example.org");
  const Mail mail = k.last_to("mia@example.org");
  const auto field = [&](const std::string& name) {
    std::smatch m;
    REQUIRE(std::regex_search(mail.text, m, std::regex("\n" + name + ": ([^\n]+)\n")));
    return m[1].str();
  };
  const std::string mark = field("X-Mailkms-Keystore-Mark");
  const std::string id = field("Message-ID");
  const auto ours = [&](const std::string& m, const std::string& to, const std::string& message_id) {
    return must(k.call(k.gateway, "check-mail-mark", {{"mark", m}, {"recipient", to}, {"message_id", message_id}}))
        .at("ours")
        .get<bool>();
  };
  CHECK(ours(mark, "mia@example.org", id));
  CHECK(ours(mark, "Mia@Example.org", id));  // the envelope's spelling
  CHECK_FALSE(ours(mark, "eve@example.org", id));
  CHECK_FALSE(ours(mark, "mia@example.org", "<other@example.org>"));
  std::string changed = mark;
  changed.back() = changed.back() == '0' ? '1' : '0';
  CHECK_FALSE(ours(changed, "mia@example.org", id));
  // A mark made long ago, or in the future, is not honoured: the time is under the HMAC too.
  const std::string later = "1." + std::to_string(std::stoll(mark.substr(2)) - 3LL * 24 * 3600) + mark.substr(mark.rfind('.'));
  CHECK_FALSE(ours(later, "mia@example.org", id));
  CHECK_FALSE(ours("", "mia@example.org", id));
  CHECK_FALSE(ours("1.2.3", "mia@example.org", id));
  // Only gateways may ask, and a refusal is audited.
  CHECK(k.call(k.administrator, "check-mail-mark", {{"mark", mark}, {"recipient", "mia@example.org"}, {"message_id", id}})
            .error()
            .code == Errc::permission_denied);
  const auto records = k.audit();
  CHECK(std::any_of(records.begin(), records.end(), [](const AuditRecord& r) {
    return r.event.action == "check-mail-mark" && r.event.outcome == "refused" && r.event.subject == "eve@example.org";
  }));
}

TEST_CASE("health names the instance, the database, the audit head, requests, expiring certificates and CRLs",
          "[health]") {
  Keystore k;
  must(k.service->users().add("alice@example.org", "test"));
  must(k.service->users().add("bob@example.org", "test"));
  must(k.service->users().renew("bob@example.org", "test"));  // bob's first certificates are no longer in use
  k.admin("admin-add", {{"name", "erin"}, {"password", "erin's long password"}});
  k.admin("approvals-set", {{"task", "recover"}, {"count", 2}});
  CHECK(k.admin("recover", {{"address", "alice@example.org"}, {"password", "a recovery password"}})["status"] ==
        "pending");

  json h = k.admin("health", json::object());
  CHECK(h["instance"].get<std::string>().find(" pid ") != std::string::npos);
  CHECK_FALSE(h["database"].get<std::string>().empty());
  CHECK(h["audit_head"]["sequence"].get<std::uint64_t>() > 5);
  CHECK(h["audit_head"]["hash"].get<std::string>().size() == 64);
  CHECK(h["pending_requests"] == 1);
  CHECK(h["expiring"]["within_days"] == 30);
  CHECK(h["expiring"]["count"] == 0);
  CHECK(h["crls"] == json::array({{{"ca", "issuing"}, {"made", nullptr}, {"next_update", nullptr}}}));

  // 340 days on, the certificates in use expire within 30 days: alice's
  // two and bob's current two, not the two his renewal replaced.
  k.time.advance(std::chrono::hours(24 * 340));
  k.session = must(k.call(k.administrator, "login", {{"name", "carol"}, {"password", kAdminPassword}}))["token"];
  (void)k.admin("crl", {{"ca", "issuing"}});
  h = k.admin("health", json::object());
  CHECK(h["expiring"]["count"] == 4);
  std::multiset<std::string> addresses;
  for (const auto& c : h["expiring"]["first"]) addresses.insert(c["address"].get<std::string>());
  CHECK(addresses == std::multiset<std::string>{"alice@example.org", "alice@example.org", "bob@example.org", "bob@example.org"});
  const auto bob = must(k.service->users().get("bob@example.org"));
  for (const auto& c : h["expiring"]["first"]) {
    if (c["address"] == "bob@example.org") {
      CHECK((c["serial"] == bob.signing_serial || c["serial"] == bob.encryption_serials.back()));
    }
  }
  const auto& crl = h["crls"][0];
  CHECK(crl["ca"] == "issuing");
  CHECK(crl["next_update"].get<std::time_t>() > crl["made"].get<std::time_t>());
}

TEST_CASE("the keystore's mails are signed by its CA's certificate for their sender, and say how to check it",
          "[enrollment][signed]") {
  Keystore k;
  const std::string token = k.enroll_and_read_token("alice@example.org");
  const Mail invitation = k.last_to("alice@example.org");
  CHECK(invitation.text.find('\r') == std::string::npos);  // LF line ends, for sendmail
  CHECK(invitation.has("\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\""));

  // As a user's mail program sees it, with the root it will be given.
  const auto root = must(k.service->ca().chain("issuing")).back();
  test::write_file(k.dir.path("root.pem"), root.pem());
  const auto verified = [&](const Mail& mail, const std::string& name) {
    test::write_file(k.dir.path(name), mail.text);
    return test::run("openssl cms -verify -purpose smimesign -CAfile " + k.dir.path("root.pem").string() + " -in " +
                     k.dir.path(name).string() + " -signer " + k.dir.path(name + ".signer").string() +
                     " -out /dev/null 2>&1");
  };
  const auto token_mail = verified(invitation, "invitation.eml");
  CHECK(token_mail.exit_code == 0);
  INFO(token_mail.out);
  const auto signer = test::run("openssl x509 -noout -subject -ext subjectAltName,extendedKeyUsage -in " +
                                k.dir.path("invitation.eml.signer").string());
  CHECK(signer.out.find("email:mailkms@example.org") != std::string::npos);
  CHECK(signer.out.find("E-mail Protection") != std::string::npos);

  // The fingerprint the mail names is the root's, as OpenSSL prints it.
  const auto fingerprint = test::run("openssl x509 -noout -fingerprint -sha256 -in " + k.dir.path("root.pem").string());
  REQUIRE(fingerprint.out.find('=') != std::string::npos);
  const std::string expected = fingerprint.out.substr(fingerprint.out.find('=') + 1, 95);
  CHECK(invitation.has("\n  " + expected + "\n"));
  CHECK(invitation.has("How to tell this message is genuine: it is signed (S/MIME) by\nmailkms@example.org"));

  // The keys mail is signed by the same certificate, made once.
  REQUIRE(k.redeem("alice@example.org", token, "alice's password"));
  const auto keys_mail = verified(k.last_to("alice@example.org"), "keys.eml");
  CHECK(keys_mail.exit_code == 0);
  CHECK(test::read_file(k.dir.path("keys.eml.signer")) == test::read_file(k.dir.path("invitation.eml.signer")));
  CHECK(k.last_to("alice@example.org").has("SHA-256 fingerprint is " + expected + "."));

  // Another sender: another certificate, and the old one revoked as superseded.
  const auto first = smime::Certificate::from_pem(test::read_file(k.dir.path("invitation.eml.signer")));
  REQUIRE(first);
  EnrollmentSettings moved = k.settings;
  moved.mail_from = "keys@example.org";
  k.service->enrollment().set_settings(moved);
  k.enroll_and_read_token("bob@example.org");
  CHECK(verified(k.last_to("bob@example.org"), "bob.eml").exit_code == 0);
  CHECK(test::run("openssl x509 -noout -ext subjectAltName -in " + k.dir.path("bob.eml.signer").string())
            .out.find("email:keys@example.org") != std::string::npos);
  CHECK(must(k.service->ca().certificate(first->serial_hex())).revoked_at.has_value());

  // A restarted keystore signs with the certificate it has, making none.
  const auto second = smime::Certificate::from_pem(test::read_file(k.dir.path("bob.eml.signer")));
  REQUIRE(second);
  KeystoreService::Policies policies;
  policies.enrollment = moved;
  auto again = must(KeystoreService::open(k.database.location(), test::context(), {}, policies));
  must(again->handle(k.administrator, {1, "unseal", {{"passphrase", "a long enough passphrase"}}}));
  k.service = std::move(again);
  k.session = must(k.call(k.administrator, "login", {{"name", "carol"}, {"password", kAdminPassword}}))["token"];
  k.enroll_and_read_token("carol@example.org");
  CHECK(verified(k.last_to("carol@example.org"), "carol.eml").exit_code == 0);
  CHECK(test::read_file(k.dir.path("carol.eml.signer")) == test::read_file(k.dir.path("bob.eml.signer")));
}
