// Checkpoints anchor the audit chain outside the database. The chain's
// head lives in the database it describes: whoever can write that file can
// put back an older copy, records and head together, and the chain still
// verifies. So the keystore signs, now and then, the sequence and hash of
// its newest record with an Ed25519 key kept behind the barrier, and writes
// the signed checkpoint where the database is not: one JSON line appended
// to a file the administrators ship elsewhere, and one line in the daemon's
// log (the journal, syslog). A database that no longer holds a record a
// checkpoint names, or holds another one in its place, was rolled back;
// `mailkmsctl audit verify` says so, from the keystore's own file or from a
// copy kept elsewhere (--checkpoint FILE). A database writer without the
// master key cannot sign a checkpoint of their own.
#pragma once

#include <chrono>
#include <cstdint>
#include <ctime>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mailkms/keystore/audit.hpp"
#include "mailkms/keystore/barrier.hpp"
#include "mailkms/keystore/error.hpp"
#include "mailkms/keystore/storage.hpp"
#include "mailkms/smime/certificate.hpp"
#include "mailkms/smime/crypto_context.hpp"

namespace mailkms::keystore {

struct AuditCheckpoint {
  std::uint64_t sequence = 0;  // the newest record's
  std::string hash;            // its hash, hex
  std::time_t time = 0;        // when the checkpoint was made
  std::string key;             // "sha256:" and the hex SHA-256 of the audit key's SubjectPublicKeyInfo
  std::string signature;       // base64 Ed25519 signature of signed_text()

  // What is signed: "mailkms-audit-checkpoint-v1 SEQUENCE HASH TIME", so
  // that `openssl pkeyutl -verify -rawin` can check a line by hand.
  [[nodiscard]] std::string signed_text() const;
  [[nodiscard]] std::string to_line() const;  // one JSON object, no newline
  static Result<AuditCheckpoint> from_line(std::string_view line);
};

// The last `limit` checkpoints in a checkpoint file's text; lines that are
// not checkpoints are an error naming the line.
Result<std::vector<AuditCheckpoint>> parse_checkpoints(std::string_view text, std::size_t limit);

class AuditCheckpoints {
 public:
  // How many checkpoints of a file are checked at most: the newest ones.
  static constexpr std::size_t kMaxChecked = 100;

  AuditCheckpoints(Storage& storage, Barrier& barrier, AuditLog& log, smime::CryptoContextPtr ctx)
      : storage_(storage), barrier_(barrier), log_(log), ctx_(std::move(ctx)) {}

  // Where checkpoints go: the file (appended to, never rewritten; none:
  // the log only) and the daemon's log.
  void set_output(std::filesystem::path file, std::function<void(const std::string&)> log_line);
  [[nodiscard]] std::filesystem::path file() const;

  // Signs the chain's head and writes it out, if it moved since the last
  // checkpoint this process made, or `always`. Nothing when the log is
  // empty. The checkpoint is returned even if the file cannot be written
  // (the error is logged): it is in the daemon's log.
  Result<std::optional<AuditCheckpoint>> checkpoint(bool always);
  // Whether the last checkpoint made here is older than `interval`.
  [[nodiscard]] bool due(std::chrono::seconds interval) const;
  // The audit key's public half, PEM: to check checkpoints elsewhere.
  Result<std::string> public_key_pem();
  // What is wrong with the database's chain in the light of these
  // checkpoints ("" when nothing): a checkpoint the audit key did not sign,
  // a record a checkpoint names that is gone or not the same. Call after
  // AuditLog::verify() found the chain itself intact, with its length.
  Result<std::string> check(const std::vector<AuditCheckpoint>& checkpoints, std::uint64_t records);
  // The newest checkpoints in this keystore's own file (none if it has none).
  Result<std::vector<AuditCheckpoint>> read_own();
  // Forgets the key (the keystore was sealed).
  void forget();

 private:
  // The audit key, made and put behind the barrier at first use.
  Result<smime::PrivateKey> key();
  Result<std::string> key_id();
  Status write_out(const AuditCheckpoint& checkpoint);

  Storage& storage_;
  Barrier& barrier_;
  AuditLog& log_;
  smime::CryptoContextPtr ctx_;
  mutable std::mutex mutex_;
  std::optional<smime::PrivateKey> key_;
  std::string key_id_;
  std::filesystem::path file_;
  std::function<void(const std::string&)> log_line_;
  std::uint64_t last_sequence_ = 0;  // of the last checkpoint made here
  std::chrono::steady_clock::time_point last_made_{};
};

}  // namespace mailkms::keystore
