#include "message_commands.hpp"

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "failure.hpp"
#include "io.hpp"
#include "mailkms/keystore/client.hpp"
#include "mailkms/keystore/config.hpp"
#include "mailkms/smime/algorithms.hpp"
#include "mailkms/smime/certificate.hpp"
#include "mailkms/smime/crypto_context.hpp"
#include "mailkms/smime/decrypt.hpp"
#include "mailkms/smime/encrypt.hpp"
#include "mailkms/smime/mime.hpp"
#include "mailkms/smime/open.hpp"
#include "mailkms/smime/sign.hpp"
#include "mailkms/smime/verify.hpp"

namespace mailkms::cli {
namespace {

using smime::Certificate;
using smime::CryptoContext;
using smime::CryptoContextPtr;
using smime::PrivateKey;

// ---- options shared by several commands

struct Streams {
  std::string in;
  std::string out;
};

void add_stream_options(CLI::App& command, Streams& streams) {
  command.add_option("--in", streams.in, "Read the message from FILE instead of stdin")->type_name("FILE");
  command.add_option("--out", streams.out, "Write the result to FILE instead of stdout")->type_name("FILE");
}

// The key that opens encrypted messages: PEM files, or a PKCS#12 file.
struct KeyArgs {
  std::string cert;
  std::string key;
  std::string key_password_file;
  std::string p12;
  std::string password_file;
  bool legacy = false;

  [[nodiscard]] bool given() const { return !cert.empty() || !p12.empty(); }
};

void add_key_options(CLI::App& command, KeyArgs& keys) {
  auto* cert = command.add_option("--cert", keys.cert, "Recipient certificate (PEM)")->type_name("CERT.pem");
  auto* key = command.add_option("--key", keys.key, "Its private key (PEM)")->type_name("KEY.pem");
  auto* key_password = command.add_option("--key-password-file", keys.key_password_file,
                                          "File whose first line is the passphrase of --key")->type_name("FILE");
  auto* p12 = command.add_option("--p12", keys.p12, "Certificate and key from a PKCS#12 file")->type_name("FILE");
  auto* password = command.add_option("--password-file", keys.password_file,
                                      "File whose first line is the password of --p12")->type_name("FILE");
  cert->needs(key);
  key->needs(cert);
  key_password->needs(key);
  p12->needs(password);
  password->needs(p12);
  p12->excludes(cert);
  p12->excludes(key);
  command.add_flag("--legacy", keys.legacy, "Also read legacy ciphers (DES, RC2) of archived mail");
}

// ---- algorithm names, checked while parsing so a typo is a usage error

std::string encryption_cipher_names() {
  std::string names;
  for (const smime::Cipher c : smime::all_ciphers()) {
    if (!smime::is_decrypt_only(c)) names += (names.empty() ? "" : ", ") + std::string(smime::name(c));
  }
  return names;
}

CLI::Validator encryption_cipher() {
  return {[](std::string& text) -> std::string {
            const auto cipher = smime::parse_cipher(text);
            if (!cipher) return "unknown cipher \"" + text + "\"; valid: " + encryption_cipher_names();
            if (smime::is_decrypt_only(*cipher)) {
              return std::string(smime::name(*cipher)) + " is only used to read old mail; valid: " +
                     encryption_cipher_names();
            }
            return {};
          },
          ""};
}

CLI::Validator signing_digest() {
  return {[](std::string& text) -> std::string {
            const auto digest = smime::parse_digest(text);
            if (digest && !smime::is_weak(*digest)) return {};
            return "not a digest to sign with: \"" + text + "\"; valid: sha256, sha384, sha512";
          },
          ""};
}

// ---- loading keys and certificates: a bad file is a usage error

CryptoContextPtr make_context(bool legacy_ciphers = false) {
  return or_fail(CryptoContext::create({.legacy_ciphers = legacy_ciphers}), "cannot set up OpenSSL");
}

Certificate load_certificate(const std::string& path) {
  return or_fail(Certificate::from_pem(read_file(path)), path, exit_usage);
}

std::vector<Certificate> load_certificates(const std::string& path) {
  return or_fail(Certificate::all_from_pem(read_file(path)), path, exit_usage);
}

PrivateKey load_private_key(const CryptoContext& ctx, const std::string& path, const std::string& password_file) {
  const Secret pem = read_secret_file(path);
  // An empty passphrase rather than none: given none, OpenSSL asks on the
  // terminal, and without a terminal it reads stdin, which is the message.
  const Secret password = password_file.empty() ? Secret() : read_password_file(password_file);
  auto key = PrivateKey::from_pem(ctx, pem.view(), password.view());
  if (!key && password_file.empty()) {
    throw Failure(exit_usage, path + ": " + key.error().describe() + " (if it is encrypted, give --key-password-file)");
  }
  return or_fail(std::move(key), path, exit_usage);
}

std::optional<smime::LocalKeyUnwrapper> load_unwrapper(const CryptoContextPtr& ctx, const KeyArgs& keys) {
  if (!keys.p12.empty()) {
    const Secret der = read_secret_file(keys.p12);
    const Secret password = read_password_file(keys.password_file);
    auto bundle = or_fail(smime::read_pkcs12(*ctx, der.view(), password.view()), keys.p12, exit_usage);
    return or_fail(smime::LocalKeyUnwrapper::create(ctx, std::move(bundle.certificate), std::move(bundle.key)),
                   keys.p12, exit_usage);
  }
  if (!keys.cert.empty()) {
    Certificate cert = load_certificate(keys.cert);
    PrivateKey key = load_private_key(*ctx, keys.key, keys.key_password_file);
    return or_fail(smime::LocalKeyUnwrapper::create(ctx, std::move(cert), std::move(key)), keys.key, exit_usage);
  }
  return std::nullopt;
}

smime::Message read_message(const std::string& path) {
  return or_fail(smime::parse_message(read_input(path)), "cannot read the message");
}

// ---- sign

// The keystore daemon named by mailkms.conf ($MAILKMS_CONFIG or the
// default path), for commands that use keys held there.
std::unique_ptr<keystore::KeystoreClient> keystore_client(const std::string& config) {
  auto loaded = keystore::load_config(config);
  if (!loaded) throw Failure(exit_usage, "cannot read " + config + ": " + loaded.error().message);
  return std::make_unique<keystore::KeystoreClient>(loaded->client_options(std::chrono::seconds(30), 1));
}

std::string default_config() {
  const char* env = std::getenv("MAILKMS_CONFIG");
  return env != nullptr ? env : "/etc/mailkms/mailkms.conf";
}

struct SignArgs {
  Streams streams;
  std::string as;
  std::string config = default_config();
  std::string cert;
  std::string key;
  std::string key_password_file;
  std::string chain;
  std::string digest = std::string(smime::name(smime::SignOptions{}.digest));
  bool pss = false;
  bool opaque = false;
};

int run_sign_in_keystore(const SignArgs& args) {
  const auto ctx = make_context();
  auto client = keystore_client(args.config);
  auto signer = keystore::RemoteSigner::create(*client, args.as);
  if (!signer) throw Failure(exit_failure, "cannot sign as " + args.as + ": " + signer.error().message);
  smime::SignOptions options;
  options.digest = *smime::parse_digest(args.digest);
  options.opaque = args.opaque;
  const std::string message = read_input(args.streams.in);
  write_output(args.streams.out, or_fail(smime::sign_message(*ctx, message, *signer, options), "cannot sign"));
  return 0;
}

int run_sign(const SignArgs& args) {
  if (!args.as.empty()) {
    if (!args.cert.empty() || !args.key.empty()) throw Failure(exit_usage, "--as signs with the keystore's key: no --cert or --key");
    return run_sign_in_keystore(args);
  }
  if (args.cert.empty() || args.key.empty()) throw Failure(exit_usage, "give --cert and --key, or --as ADDRESS");
  const auto ctx = make_context();
  Certificate cert = load_certificate(args.cert);
  PrivateKey key = load_private_key(*ctx, args.key, args.key_password_file);
  std::vector<Certificate> chain = args.chain.empty() ? std::vector<Certificate>() : load_certificates(args.chain);
  const auto scheme = args.pss ? std::optional(smime::SignatureScheme::rsa_pss) : std::nullopt;
  auto signer = or_fail(smime::LocalSigner::create(ctx, std::move(cert), std::move(key), std::move(chain), scheme),
                        args.key, exit_usage);

  smime::SignOptions options;
  options.digest = *smime::parse_digest(args.digest);  // checked by signing_digest()
  options.opaque = args.opaque;
  const std::string message = read_input(args.streams.in);
  write_output(args.streams.out, or_fail(smime::sign_message(*ctx, message, signer, options), "cannot sign"));
  return 0;
}

Command add_sign(CLI::App& group) {
  auto args = std::make_shared<SignArgs>();
  CLI::App* cmd = group.add_subcommand("sign", "Sign a message (multipart/signed unless --opaque)");
  add_stream_options(*cmd, args->streams);
  cmd->add_option("--as", args->as, "Sign with this user's key in mailkms-keystored")->type_name("ADDRESS");
  cmd->add_option("--config", args->config, "mailkms.conf, for --as (or $MAILKMS_CONFIG)");
  cmd->add_option("--cert", args->cert, "Signer certificate (PEM)")->type_name("CERT.pem");
  auto* key = cmd->add_option("--key", args->key, "Its private key (PEM)")->type_name("KEY.pem");
  cmd->add_option("--key-password-file", args->key_password_file, "File whose first line is the passphrase of --key")
      ->type_name("FILE")
      ->needs(key);
  cmd->add_option("--chain", args->chain, "Intermediate CA certificates to include (PEM bundle)")
      ->type_name("CHAIN.pem");
  cmd->add_option("--digest", args->digest, "sha256, sha384 or sha512")
      ->type_name("DIGEST")
      ->capture_default_str()
      ->check(signing_digest());
  cmd->add_flag("--pss", args->pss, "Sign with RSASSA-PSS instead of PKCS#1 v1.5 (RSA keys only)");
  cmd->add_flag("--opaque", args->opaque, "Produce application/pkcs7-mime signed-data");
  return {cmd, [args] { return run_sign(*args); }};
}

// ---- encrypt

struct EncryptArgs {
  Streams streams;
  std::vector<std::string> to;
  std::vector<std::string> to_users;
  std::string config = default_config();
  std::string cipher = std::string(smime::name(smime::EncryptOptions{}.cipher));
  bool oaep = false;
};

int run_encrypt(const EncryptArgs& args) {
  const auto ctx = make_context();
  const auto transport = args.oaep ? smime::KeyTransport::rsa_oaep_sha256 : smime::KeyTransport::rsa_pkcs1v15;
  std::vector<smime::Recipient> recipients;
  for (const auto& path : args.to) recipients.push_back({load_certificate(path), transport});
  if (!args.to_users.empty()) {
    auto client = keystore_client(args.config);
    auto found = keystore::lookup_certificates(*client, args.to_users);
    if (!found) throw Failure(exit_failure, "cannot look up recipients: " + found.error().message);
    if (!found->missing.empty()) {
      std::string names;
      for (const auto& m : found->missing) names += (names.empty() ? "" : ", ") + m;
      throw Failure(exit_failure, "no usable certificate for " + names);
    }
    for (auto& [address, entry] : found->found) recipients.push_back({std::move(entry.certificate), transport});
  }
  if (recipients.empty()) throw Failure(exit_usage, "give --to or --to-user");

  smime::EncryptOptions options;
  options.cipher = *smime::parse_cipher(args.cipher);  // checked by encryption_cipher()
  const std::string message = read_input(args.streams.in);
  write_output(args.streams.out,
               or_fail(smime::encrypt_message(*ctx, message, recipients, options), "cannot encrypt"));
  return 0;
}

Command add_encrypt(CLI::App& group) {
  auto args = std::make_shared<EncryptArgs>();
  CLI::App* cmd = group.add_subcommand("encrypt", "Encrypt a message to one or more recipients");
  add_stream_options(*cmd, args->streams);
  cmd->add_option("--to", args->to, "Recipient certificate (PEM); repeat for more recipients")
      ->type_name("CERT.pem")
      ->take_all();
  cmd->add_option("--to-user", args->to_users, "A user of mailkms-keystored; repeat for more")
      ->type_name("ADDRESS")
      ->take_all();
  cmd->add_option("--config", args->config, "mailkms.conf, for --to-user (or $MAILKMS_CONFIG)");
  cmd->add_option("--cipher", args->cipher, "Content-encryption cipher: " + encryption_cipher_names())
      ->type_name("CIPHER")
      ->capture_default_str()
      ->check(encryption_cipher());
  cmd->add_flag("--oaep", args->oaep, "RSA-OAEP with SHA-256 for RSA recipients (EC recipients always use ECDH)");
  return {cmd, [args] { return run_encrypt(*args); }};
}

// ---- verify

struct VerifyArgs {
  Streams streams;
  std::vector<std::string> trust;
  bool system_roots = false;
  std::string from;
};

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

int run_verify(const VerifyArgs& args) {
  if (args.trust.empty() && !args.system_roots) throw Failure(exit_usage, "verify needs --trust or --system-roots");
  const auto ctx = make_context();
  smime::TrustStore trust;
  for (const auto& path : args.trust) {
    for (const auto& anchor : load_certificates(path)) trust.add(anchor);
  }
  if (args.system_roots) or_fail(trust.add_system_roots(), "--system-roots", exit_usage);

  smime::VerifyOptions options;
  options.trust = &trust;
  if (!args.from.empty()) options.from = std::vector<std::string>{args.from};
  const smime::VerifyResult result = smime::verify_message(*ctx, read_input(args.streams.in), options);

  std::string report = "status: " + std::string(smime::to_string(result.status)) + "\n";
  for (const auto& signer : result.signers) {
    report += "signer: " + signer.certificate.subject() + "\n";
    if (!signer.addresses.empty()) report += "addresses: " + join(signer.addresses) + "\n";
  }
  if (!result.reason.empty()) report += "reason: " + result.reason + "\n";
  if (result.weak) report += "weak: yes\n";
  write_output(args.streams.out, report);
  return result.status == smime::SignatureStatus::pass ? 0 : exit_failure;
}

Command add_verify(CLI::App& group) {
  auto args = std::make_shared<VerifyArgs>();
  CLI::App* cmd = group.add_subcommand("verify", "Verify a signed message; exit status 0 only when it passes");
  add_stream_options(*cmd, args->streams);
  cmd->add_option("--trust", args->trust, "Trust anchors (PEM, may be a bundle); repeatable")
      ->type_name("CA.pem")
      ->take_all();
  cmd->add_flag("--system-roots", args->system_roots, "Also trust the operating system's roots");
  cmd->add_option("--from", args->from, "The sender's address (default: the message's From)")->type_name("ADDR");
  return {cmd, [args] { return run_verify(*args); }};
}

// ---- decrypt

struct DecryptArgs {
  Streams streams;
  KeyArgs keys;
};

// decrypt_entity on a message that is not encrypted can only say that its
// body is not CMS; tell the administrator what the message is instead.
void require_encrypted(const CryptoContext& ctx, const smime::Entity& entity) {
  const auto kind = or_fail(smime::classify(ctx, entity), "cannot read the message");
  if (!kind) throw Failure(exit_failure, "the message is not encrypted: it has no S/MIME layer");
  if (*kind != smime::LayerKind::enveloped && *kind != smime::LayerKind::auth_enveloped) {
    throw Failure(exit_failure,
                  "the message is not encrypted: its outer layer is " + std::string(smime::to_string(*kind)));
  }
}

int run_decrypt(const DecryptArgs& args) {
  if (!args.keys.given()) throw Failure(exit_usage, "decrypt needs --cert and --key, or --p12 and --password-file");
  const auto ctx = make_context(args.keys.legacy);
  auto unwrapper = load_unwrapper(ctx, args.keys);
  smime::Message message = read_message(args.streams.in);
  require_encrypted(*ctx, message.entity);
  smime::KeyUnwrapper* const keys[] = {&*unwrapper};
  auto result = smime::decrypt_entity(*ctx, message.entity, keys);
  if (!result && result.error().code == smime::Errc::legacy_cipher_disabled) {
    throw Failure(exit_failure, "cannot decrypt: " + result.error().describe() + " (here: --legacy)");
  }
  auto decrypted = or_fail(std::move(result), "cannot decrypt");
  write_output(args.streams.out, smime::Message{std::move(message.headers), std::move(decrypted.content)}.serialize());
  return 0;
}

Command add_decrypt(CLI::App& group) {
  auto args = std::make_shared<DecryptArgs>();
  CLI::App* cmd = group.add_subcommand("decrypt", "Decrypt a message, keeping its outer header fields");
  add_stream_options(*cmd, args->streams);
  add_key_options(*cmd, args->keys);
  return {cmd, [args] { return run_decrypt(*args); }};
}

// ---- inspect

struct InspectArgs {
  Streams streams;
  KeyArgs keys;
};

int run_inspect(const InspectArgs& args) {
  const auto ctx = make_context(args.keys.legacy);
  auto unwrapper = load_unwrapper(ctx, args.keys);
  std::vector<smime::KeyUnwrapper*> keys;
  if (unwrapper) keys.push_back(&*unwrapper);
  const smime::Message message = read_message(args.streams.in);
  const auto layers = or_fail(smime::inspect_entity(*ctx, message.entity, keys, smime::MimeLimits{}), "cannot inspect");

  std::string report;
  for (const auto& layer : layers) {
    report += layer.title + "\n";
    for (const auto& line : layer.lines) report += "  " + line + "\n";
  }
  write_output(args.streams.out, report);
  return 0;
}

Command add_inspect(CLI::App& group) {
  auto args = std::make_shared<InspectArgs>();
  CLI::App* cmd = group.add_subcommand(
      "inspect", "Describe a message's S/MIME layers; with a key, also those inside its encryption");
  add_stream_options(*cmd, args->streams);
  add_key_options(*cmd, args->keys);
  return {cmd, [args] { return run_inspect(*args); }};
}

}  // namespace

std::vector<Command> add_message_commands(CLI::App& parent) {
  CLI::App* group = parent.add_subcommand("message", "The S/MIME engine on one message, from stdin to stdout");
  group->require_subcommand(1);
  // Set before the subcommands are added: they copy it.
  group->footer(
      "Exit status: 0 success; 1 the message could not be processed, or did not pass verification; "
      "2 the command line or a file it names is wrong.\n");
  return {add_sign(*group), add_encrypt(*group), add_verify(*group), add_decrypt(*group), add_inspect(*group)};
}

}  // namespace mailkms::cli
