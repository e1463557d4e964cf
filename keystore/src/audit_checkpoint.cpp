#include "mailkms/keystore/audit_checkpoint.hpp"
#include "mailkms/errno_text.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "aead.hpp"
#include "mailkms/keystore/ca.hpp"
#include "mailkms/keystore/mail_message.hpp"
#include "mailkms/smime/mime.hpp"
#include "mailkms/smime/ossl.hpp"

namespace mailkms::keystore {
namespace {

// Behind the barrier, beside the CAs' and users' keys.
constexpr std::string_view kKeyOwner = "audit";
constexpr std::string_view kKeyId = "checkpoints";
constexpr std::string_view kSignedPrefix = "mailkms-audit-checkpoint-v1";
// The tail of a checkpoint file read for its newest lines: a line is
// about 250 bytes, so this holds far more than kMaxChecked.
constexpr std::streamoff kTailBytes = std::streamoff{256} * 1024;

using smime::ossl::MdCtx;

Error crypto_failure(std::string_view what) { return make_error(Errc::crypto_failed, std::string(what)); }

std::string base64_line(std::string_view data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(data.data()), static_cast<int>(data.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

Result<std::string> public_key_der(EVP_PKEY* key) {
  unsigned char* der = nullptr;
  const int n = i2d_PUBKEY(key, &der);
  if (n <= 0) return crypto_failure("cannot encode the audit key");
  std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(n));
  OPENSSL_free(der);
  return out;
}

Result<std::string> sign_text(EVP_PKEY* key, const smime::CryptoContext& ctx, std::string_view text) {
  MdCtx md(EVP_MD_CTX_new());
  std::size_t length = 0;
  if (!md || EVP_DigestSignInit_ex(md.get(), nullptr, nullptr, ctx.libctx(), nullptr, key, nullptr) != 1 ||
      EVP_DigestSign(md.get(), nullptr, &length, reinterpret_cast<const unsigned char*>(text.data()), text.size()) != 1) {
    return crypto_failure("cannot sign an audit checkpoint");
  }
  std::string signature(length, '\0');
  if (EVP_DigestSign(md.get(), reinterpret_cast<unsigned char*>(signature.data()), &length,
                     reinterpret_cast<const unsigned char*>(text.data()), text.size()) != 1) {
    return crypto_failure("cannot sign an audit checkpoint");
  }
  signature.resize(length);
  return signature;
}

bool signature_holds(EVP_PKEY* key, const smime::CryptoContext& ctx, std::string_view text, std::string_view signature) {
  MdCtx md(EVP_MD_CTX_new());
  return md && EVP_DigestVerifyInit_ex(md.get(), nullptr, nullptr, ctx.libctx(), nullptr, key, nullptr) == 1 &&
         EVP_DigestVerify(md.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                          reinterpret_cast<const unsigned char*>(text.data()), text.size()) == 1;
}

}  // namespace

std::string AuditCheckpoint::signed_text() const {
  return std::string(kSignedPrefix) + " " + std::to_string(sequence) + " " + hash + " " + std::to_string(time);
}

std::string AuditCheckpoint::to_line() const {
  return nlohmann::json{{"audit_checkpoint", 1}, {"sequence", sequence}, {"hash", hash},
                        {"time", time},          {"key", key},           {"signature", signature}}
      .dump();
}

Result<AuditCheckpoint> AuditCheckpoint::from_line(std::string_view line) {
  const auto j = nlohmann::json::parse(line, nullptr, false);
  const Error bad = make_error(Errc::invalid_argument, "not an audit checkpoint");
  if (j.is_discarded() || !j.is_object() || j.value("audit_checkpoint", 0) != 1) return bad;
  const auto sequence = j.find("sequence");
  const auto time = j.find("time");
  if (sequence == j.end() || !sequence->is_number_unsigned() || time == j.end() || !time->is_number_integer()) return bad;
  AuditCheckpoint c;
  c.sequence = sequence->get<std::uint64_t>();
  c.time = time->get<std::time_t>();
  c.hash = j.value("hash", "");
  c.key = j.value("key", "");
  c.signature = j.value("signature", "");
  if (c.sequence == 0 || c.hash.size() != 64 || c.key.empty() || c.signature.empty()) return bad;
  return c;
}

Result<std::vector<AuditCheckpoint>> parse_checkpoints(std::string_view text, std::size_t limit) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    const auto end = text.find('\n');
    const std::string_view line = text.substr(0, end);
    if (!line.empty()) lines.push_back(line);
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
  }
  const std::size_t first = lines.size() > limit ? lines.size() - limit : 0;
  std::vector<AuditCheckpoint> out;
  for (std::size_t i = first; i < lines.size(); ++i) {
    auto checkpoint = AuditCheckpoint::from_line(lines[i]);
    if (!checkpoint) {
      return make_error(Errc::invalid_argument,
                        "line " + std::to_string(i + 1) + " of the checkpoints is not an audit checkpoint");
    }
    out.push_back(std::move(*checkpoint));
  }
  return out;
}

void AuditCheckpoints::set_output(std::filesystem::path file, std::function<void(const std::string&)> log_line) {
  const std::lock_guard lock(mutex_);
  file_ = std::move(file);
  log_line_ = std::move(log_line);
}

std::filesystem::path AuditCheckpoints::file() const {
  const std::lock_guard lock(mutex_);
  return file_;
}

void AuditCheckpoints::forget() {
  const std::lock_guard lock(mutex_);
  key_.reset();
  key_id_.clear();
}

Result<smime::PrivateKey> AuditCheckpoints::key() {
  if (key_) return *key_;
  auto stored = load_private_key(barrier_, *ctx_, kKeyOwner, kKeyId);
  if (!stored && stored.error().code == Errc::not_found) {
    // First use: made in a transaction, so two processes on one database
    // cannot each keep a key of their own.
    MAILKMS_CHECK(storage_.transaction([&]() -> Status {
      auto again = load_private_key(barrier_, *ctx_, kKeyOwner, kKeyId);
      if (again || again.error().code != Errc::not_found) {
        stored = std::move(again);
        return Ok{};
      }
      EVP_PKEY* made = EVP_PKEY_Q_keygen(ctx_->libctx(), nullptr, "ED25519");
      if (made == nullptr) return crypto_failure("cannot make the audit key");
      smime::PrivateKey fresh = smime::PrivateKey::adopt(made);
      MAILKMS_CHECK(store_private_key(barrier_, kKeyOwner, kKeyId, fresh));
      stored = std::move(fresh);
      return Ok{};
    }));
  }
  if (!stored) return std::move(stored).error();
  MAILKMS_TRY(der, public_key_der(stored->native()));
  key_ = *stored;
  key_id_ = "sha256:" + detail::hex_sha256(der);
  return *key_;
}

Result<std::string> AuditCheckpoints::key_id() {
  MAILKMS_TRY(k, key());
  (void)k;
  return key_id_;
}

bool AuditCheckpoints::due(std::chrono::seconds interval) const {
  const std::lock_guard lock(mutex_);
  return std::chrono::steady_clock::now() - last_made_ >= interval;
}

Result<std::string> AuditCheckpoints::public_key_pem() {
  const std::lock_guard lock(mutex_);
  MAILKMS_TRY(k, key());
  const smime::ossl::Bio bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), k.native()) != 1) return crypto_failure("cannot encode the audit key");
  return smime::ossl::bio_contents(bio.get());
}

Result<std::optional<AuditCheckpoint>> AuditCheckpoints::checkpoint(bool always) {
  const std::lock_guard lock(mutex_);
  MAILKMS_TRY(head, log_.head());
  if (head.sequence == 0 || (!always && head.sequence == last_sequence_)) return std::optional<AuditCheckpoint>();
  MAILKMS_TRY(k, key());
  AuditCheckpoint c{head.sequence, head.hash, std::time(nullptr), key_id_, {}};
  MAILKMS_TRY(signature, sign_text(k.native(), *ctx_, c.signed_text()));
  c.signature = base64_line(signature);
  last_sequence_ = head.sequence;
  last_made_ = std::chrono::steady_clock::now();
  if (log_line_) log_line_("audit checkpoint " + c.to_line());
  if (const Status written = write_out(c); !written && log_line_) {
    log_line_("audit checkpoint not written to " + file_.string() + ": " + written.error().message);
  }
  return std::optional<AuditCheckpoint>(std::move(c));
}

// Appended with O_APPEND, never through a symbolic link, and on disk
// before we go on: a checkpoint the log names is in the file too.
Status AuditCheckpoints::write_out(const AuditCheckpoint& checkpoint) {
  if (file_.empty()) return Ok{};
  const int fd = ::open(file_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0640);
  if (fd < 0) return make_error(Errc::storage_failed, mailkms::errno_text(errno));
  const std::string line = checkpoint.to_line() + "\n";
  std::size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(fd, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  const bool synced = done == line.size() && ::fsync(fd) == 0;
  const int error = errno;
  ::close(fd);
  if (!synced) return make_error(Errc::storage_failed, mailkms::errno_text(error));
  return Ok{};
}

Result<std::vector<AuditCheckpoint>> AuditCheckpoints::read_own() {
  const std::filesystem::path path = file();
  if (path.empty()) return std::vector<AuditCheckpoint>();
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (!std::filesystem::exists(path)) return std::vector<AuditCheckpoint>();
    return make_error(Errc::storage_failed, "cannot read " + path.string());
  }
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const std::streamoff start = size > kTailBytes ? size - kTailBytes : 0;
  in.seekg(start);
  std::string text(static_cast<std::size_t>(size - start), '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (start > 0) text.erase(0, text.find('\n') + 1);  // the first line is cut
  auto parsed = parse_checkpoints(text, kMaxChecked);
  if (!parsed) return make_error(Errc::corrupt, path.string() + ": " + parsed.error().message);
  return parsed;
}

Result<std::string> AuditCheckpoints::check(const std::vector<AuditCheckpoint>& checkpoints, std::uint64_t records) {
  const std::lock_guard lock(mutex_);
  MAILKMS_TRY(k, key());
  for (const AuditCheckpoint& c : checkpoints) {
    const std::string which = "the checkpoint of record " + std::to_string(c.sequence) + " made " + readable_time(c.time);
    auto signature = smime::base64_decode(c.signature);
    if (c.key != key_id_ || !signature || !signature_holds(k.native(), *ctx_, c.signed_text(), *signature)) {
      return which + " is not signed by this keystore's audit key";
    }
    if (c.sequence > records) {
      return "the log ends at record " + std::to_string(records) + ", but " + which +
             " names a later one: records were removed, or an older copy of the database was put back";
    }
    MAILKMS_TRY(found, log_.read(c.sequence - 1, 1));
    if (found.empty() || found.front().sequence != c.sequence || found.front().hash != c.hash) {
      return "record " + std::to_string(c.sequence) + " is not the one " + which +
             " names: the log was rolled back and written again";
    }
  }
  return std::string();
}

}  // namespace mailkms::keystore
