// Storage as the keystore's services see it, so that a database writer
// without the master key can neither grant nor change anything. Rows that
// decide who may do what (administrators, sessions, approval counts,
// requests, trust anchors, CAs, revocations, CRLs, tokens) and rows that
// say who holds which certificate (users, certificates) carry an
// HMAC-SHA256 under a key derived from the master key, over their storage
// key and value. Rows of the first kind also carry a version, which an
// authenticated manifest must name: one inserted beside the keystore is
// ignored, one deleted or put back as an older copy of itself is refused.
// Everything else (the audit log, which is hash-chained; the seal; keys
// behind the barrier) passes through unchanged. Locked (sealed), it
// refuses the rows it guards.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "mailkms/keystore/error.hpp"
#include "mailkms/keystore/storage.hpp"
#include "mailkms/smime/decrypt.hpp"

namespace mailkms::keystore {

// A row that failed its check: which, and what was wrong.
struct TamperReport {
  std::string key;
  std::string problem;
};

class AuthenticatedStorage final : public Storage {
 public:
  explicit AuthenticatedStorage(Storage& inner) : inner_(inner) {}

  // Derives the row key from the master key (HKDF-SHA256, its own label).
  Status unlock(const smime::SecretBytes& master_key);
  void lock();

  // Whether the manifest exists: every database that authenticates its
  // rows has one from its first unseal on.
  Result<bool> has_manifest();
  // Authenticates the rows of a database written before rows were
  // authenticated, and creates the manifest; returns how many it adopted.
  // Refused when any row already carries an authentication tag: the
  // manifest of such a database was removed, not never made.
  Result<std::size_t> adopt_unauthenticated_rows();

  // For a rotation of the master key, inside the caller's transaction and
  // with no one else using the storage meanwhile: every row the current key
  // authenticates (and, for a tracked row, that its manifest names at that
  // version) is tagged again under the key derived from `new_master_key`,
  // keeping its version, so the manifest still holds and an older copy is
  // still seen; `reseal` may first replace each value (a tagged row's
  // payload) and returns nullopt to keep it. A row the current key does not
  // authenticate is left as it was: refused still, never made valid by the
  // rotation. The key in use changes only through unlock().
  struct Rekeyed {
    std::size_t tagged = 0;    // rows tagged again
    std::size_t resealed = 0;  // values `reseal` replaced
    std::size_t left = 0;      // rows left as they were
  };
  using Resealer = std::function<Result<std::optional<std::string>>(std::string_view key, std::string_view value)>;
  Result<Rekeyed> rekey_rows(const smime::SecretBytes& new_master_key, const Resealer& reseal);

  // Rows found forged, deleted or replayed since the last call (at most a
  // hundred are kept), for the service to audit and log.
  std::vector<TamperReport> take_tamper_reports();

  Result<std::optional<std::string>> get(std::string_view key) override;
  Status put(std::string_view key, std::string_view value) override;
  Status remove(std::string_view key) override;
  Result<std::vector<std::pair<std::string, std::string>>> scan(
      std::string_view prefix, std::string_view after = {},
      std::size_t limit = std::numeric_limits<std::size_t>::max()) override;
  // Every transaction first checks that the manifest is tagged under the
  // key this instance holds: after a rotation through another keystored
  // instance on the same database (the manifest fails its check and the
  // seal is not the one of unlock()), nothing is written under the old key
  // (it would open and authenticate nowhere). Then it fails as sealed, and
  // key_superseded() says so until the next unlock() or lock().
  Status transaction(const std::function<Status()>& work) override;
  Status read_transaction(const std::function<Status()>& work) override { return inner_.read_transaction(work); }
  void set_events(Events events) override { inner_.set_events(std::move(events)); }
  void report_tamper(std::string_view key, std::string problem) override;
  [[nodiscard]] bool key_superseded() const { return key_superseded_.load(); }
  // Errc::sealed, and key_superseded() true, when the key held was
  // rotated away (see transaction()).
  Status check_key_current();

 private:
  // The manifest: a counter every change of a tracked row moves on, and
  // for each collection (admins, sessions, …) the version of its list of
  // rows and their versions.
  struct Root {
    std::uint64_t counter = 0;
    std::map<std::string, std::uint64_t, std::less<>> collections;
  };
  using Versions = std::map<std::string, std::uint64_t, std::less<>>;

  Result<std::string> tag(std::string_view key, std::uint64_t version, std::string_view payload) const;
  Result<std::string> encode(std::string_view key, std::uint64_t version, std::string_view payload) const;
  // Whether a tracked row of this version is the one its collection's list
  // (in `lists`, by collection) names.
  static bool named_by_manifest(std::string_view key, std::uint64_t version,
                                const std::map<std::string, Versions, std::less<>>& lists);
  // The payload of a row whose tag is right; the version it claims in `version`.
  Result<std::string> decode(std::string_view key, std::string_view row, std::uint64_t& version) const;
  Error tampered(std::string_view key, const std::string& problem);
  // A guarded row as read, checked: against its tag, and for a tracked row
  // against the version its collection's list (`versions`) names.
  Result<std::optional<std::string>> row_checked(std::string_view key, const std::optional<Versions>& versions,
                                                 std::optional<std::string> row);
  // scan of guarded rows, inside a transaction; `protection` is the row
  // class (kept out of this header).
  Result<std::vector<std::pair<std::string, std::string>>> scan_checked(std::string_view prefix,
                                                                       std::string_view after, std::size_t limit,
                                                                       int protection);

  Result<std::optional<Root>> read_root();
  Result<std::optional<Root>> root_from(const std::optional<std::string>& row);
  Result<Root> require_root();
  Result<Versions> read_collection(const Root& root, std::string_view collection);
  Result<Versions> collection_from(const Root& root, std::string_view collection, const std::optional<std::string>& row);
  Status write_manifest(Root& root, std::string_view collection, const Versions& versions);

  Storage& inner_;
  mutable std::shared_mutex key_mutex_;
  std::optional<smime::SecretBytes> row_key_;
  std::string seal_at_unlock_;  // the seal row when the key was given: a rotation rewrites it
  std::atomic<bool> key_superseded_{false};
  std::size_t transaction_depth_ = 0;  // guarded by the inner storage's transaction lock
  std::mutex reports_mutex_;
  std::vector<TamperReport> reports_;
};

}  // namespace mailkms::keystore
