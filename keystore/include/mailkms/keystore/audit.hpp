// The audit log: every issuance, revocation, recovery, approval, login,
// unseal, token redemption and configuration change, as hash-chained
// records. Each record carries the SHA-256 of its predecessor, and the
// chain's head is kept behind the barrier, so an edited, inserted, deleted
// or truncated record is found by verify(). Appended in the same storage
// transaction as the operation it records: an operation that cannot be
// audited does not happen. Never holds secrets: tokens are hashed first.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <ctime>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "mailkms/keystore/barrier.hpp"
#include "mailkms/keystore/error.hpp"
#include "mailkms/keystore/storage.hpp"

namespace mailkms::keystore {

struct AuditEvent {
  std::string actor;    // "admin:carol", "gateway:uid 107", "mailkmsctl init"
  std::string action;   // "issue", "revoke", "login", "unseal", …
  std::string subject;  // what it was done to: an address, a serial, a request id
  std::string outcome;  // "ok", "denied", "failed"
  std::string detail;   // more, for humans; never a secret
};

struct AuditRecord {
  std::uint64_t sequence = 0;
  std::time_t time = 0;
  AuditEvent event;
  std::string previous_hash;  // hex; empty for the first record
  std::string hash;           // hex SHA-256 of the previous hash and this record
};

// The chain's newest record, as the head behind the barrier names it.
struct AuditHead {
  std::uint64_t sequence = 0;  // 0: no record yet
  std::string hash;
};

struct AuditVerification {
  bool intact = false;
  std::uint64_t records = 0;
  std::string problem;  // where the chain breaks, when it does
};

class AuditLog {
 public:
  AuditLog(Storage& storage, Barrier& barrier) : storage_(storage), barrier_(barrier) {}

  // Appends atomically; fails (and so must the caller's transaction) if
  // the record cannot be written or the keystore is sealed.
  Status append(const AuditEvent& event);
  // Appends them all in one transaction, in order.
  Status append_all(const std::vector<AuditEvent>& events);
  Result<std::vector<AuditRecord>> read(std::uint64_t after_sequence, std::size_t limit);
  Result<AuditVerification> verify();
  Result<AuditHead> head();

  // A token or password-like value, as it may appear in a record.
  static std::string fingerprint(std::string_view secret);

 private:
  Storage& storage_;
  Barrier& barrier_;
};

// Gateway operations (sign, unwrap, …) come by the hundred a second, one
// or more per message: each gets its record, but appended in batches, one
// transaction (one fsync) per batch, so that auditing them costs the mail
// path a few percent. A record is in the database within kFlushInterval,
// or at once on flush() (before the log is shown or verified). Records
// that cannot be written stay queued, and queue() refuses new ones until
// they are: gateway operations stop rather than go unaudited.
class AuditBatcher {
 public:
  static constexpr std::chrono::milliseconds kFlushInterval{50};
  static constexpr std::size_t kMaxQueued = 4096;

  explicit AuditBatcher(AuditLog& log);
  ~AuditBatcher();  // writes what is queued
  AuditBatcher(const AuditBatcher&) = delete;
  AuditBatcher& operator=(const AuditBatcher&) = delete;

  Status queue(AuditEvent event);
  Status flush();

 private:
  void run();
  Status write_queued(std::unique_lock<std::mutex>& lock);

  AuditLog& log_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<AuditEvent> queued_;
  std::optional<Error> failure_;  // the last write's, until one succeeds
  bool writing_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

// Events anyone can cause come as fast as an outsider sends them: mail to
// the enrollment address without a token, a socket peer that is no gateway
// or has no session, a wrong password. Written one by one they would fill
// the log (and bury what matters in it). Each kind (action and outcome)
// gets kPerWindow records a window; past that they are counted, and when
// the window ends one record says how many there were and from how many
// subjects. The counts are also in `mailkmsctl status`.
class AuditLimiter {
 public:
  static constexpr std::size_t kPerWindow = 20;
  static constexpr std::chrono::seconds kWindow{60};
  static constexpr std::size_t kSubjectsKept = 1000;  // distinct subjects counted exactly, per kind

  explicit AuditLimiter(AuditLog& log) : log_(log) {}

  // Written now if its kind has records left in this window, else counted.
  Status record(const AuditEvent& event);
  // One record for each kind with events counted in a window that has
  // ended (or every window: before the log is shown, and at exit).
  Status write_counts(bool every_window);
  // Events counted and not recorded one by one, since the start.
  [[nodiscard]] std::uint64_t counted() const;

 private:
  struct Kind {
    std::chrono::steady_clock::time_point start;
    std::time_t started = 0;  // the same, for the record
    std::size_t recorded = 0;
    std::size_t counted = 0;
    std::set<std::string> subjects;  // of those counted, up to kSubjectsKept
    bool more_subjects = false;
    std::string actor;  // the last counted one's
  };
  static AuditEvent count_of(const std::string& kind, const Kind& k);

  AuditLog& log_;
  mutable std::mutex mutex_;
  std::map<std::string, Kind> kinds_;  // by "action outcome"
  std::uint64_t counted_total_ = 0;
};

}  // namespace mailkms::keystore
