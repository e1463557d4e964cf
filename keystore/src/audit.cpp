#include "mailkms/keystore/audit.hpp"

#include <charconv>
#include <cinttypes>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "aead.hpp"
#include "mailkms/keystore/mail_message.hpp"

namespace mailkms::keystore {
namespace {

constexpr std::string_view kPrefix = "audit/";
constexpr std::string_view kHead = "core/audit-head";

std::string key_for(std::uint64_t sequence) {
  char key[32];
  (void)std::snprintf(key, sizeof key, "audit/%020" PRIu64, sequence);  // 26 octets: it fits  // zero-padded: key order is sequence order
  return key;
}

using detail::hex_sha256;

nlohmann::json body_of(const AuditRecord& r) {
  return {{"sequence", r.sequence}, {"time", r.time},           {"actor", r.event.actor},
          {"action", r.event.action}, {"subject", r.event.subject}, {"outcome", r.event.outcome},
          {"detail", r.event.detail}, {"previous", r.previous_hash}};
}

std::string hash_of(const AuditRecord& r) { return hex_sha256(body_of(r).dump()); }

Result<AuditRecord> parse(std::string_view text) {
  const auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return make_error(Errc::corrupt, "an audit record does not parse");
  try {
    AuditRecord r;
    r.sequence = j.at("sequence").get<std::uint64_t>();
    r.time = j.at("time").get<std::time_t>();
    r.event = {j.at("actor").get<std::string>(), j.at("action").get<std::string>(),
               j.at("subject").get<std::string>(), j.at("outcome").get<std::string>(),
               j.at("detail").get<std::string>()};
    r.previous_hash = j.at("previous").get<std::string>();
    r.hash = j.at("hash").get<std::string>();
    return r;
  } catch (const nlohmann::json::exception&) {
    return make_error(Errc::corrupt, "an audit record lacks a field");
  }
}

Result<AuditHead> read_head(Barrier& barrier) {
  MAILKMS_TRY(stored, barrier.get(kHead));
  if (!stored) return AuditHead{};
  const std::string text(reinterpret_cast<const char*>(stored->data()), stored->size());
  const auto colon = text.find(':');
  if (colon == std::string::npos) return make_error(Errc::corrupt, "the audit head does not parse");
  AuditHead head{0, text.substr(colon + 1)};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + colon, head.sequence);
  if (ec != std::errc() || end != text.data() + colon) return make_error(Errc::corrupt, "the audit head does not parse");
  return head;
}

}  // namespace

Result<AuditHead> AuditLog::head() { return read_head(barrier_); }

std::string AuditLog::fingerprint(std::string_view secret) { return "sha256:" + hex_sha256(secret).substr(0, 16); }

Status AuditLog::append(const AuditEvent& event) { return append_all({event}); }

Status AuditLog::append_all(const std::vector<AuditEvent>& events) {
  if (events.empty()) return Ok{};
  return storage_.transaction([&]() -> Status {
    MAILKMS_TRY(head, read_head(barrier_));
    // An older copy of the head put back would fork the chain: refused.
    MAILKMS_TRY(successor, storage_.get(key_for(head.sequence + 1)));
    if (successor) {
      std::string problem = "the audit head says record " + std::to_string(head.sequence) +
                            " is the last, but later ones exist: an older head was put back";
      storage_.report_tamper(kHead, problem);
      return make_error(Errc::corrupt, "integrity check failed: " + problem);
    }
    const std::time_t now = std::time(nullptr);
    for (const AuditEvent& event : events) {
      AuditRecord r;
      r.sequence = head.sequence + 1;
      r.time = now;
      r.event = event;
      r.previous_hash = head.hash;
      r.hash = hash_of(r);
      nlohmann::json j = body_of(r);
      j["hash"] = r.hash;
      MAILKMS_CHECK(storage_.put(key_for(r.sequence), j.dump()));
      head = {r.sequence, r.hash};
    }
    return barrier_.put(kHead, std::to_string(head.sequence) + ":" + head.hash);
  });
}

AuditBatcher::AuditBatcher(AuditLog& log) : log_(log), thread_([this] { run(); }) {}

AuditBatcher::~AuditBatcher() {
  {
    const std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

Status AuditBatcher::queue(AuditEvent event) {
  const std::lock_guard lock(mutex_);
  if (failure_ || queued_.size() >= kMaxQueued) {
    return make_error(Errc::storage_failed,
                      "the audit log cannot be written" + (failure_ ? ": " + failure_->message : std::string()));
  }
  queued_.push_back(std::move(event));
  return Ok{};
}

Status AuditBatcher::flush() {
  std::unique_lock lock(mutex_);
  wake_.wait(lock, [&] { return !writing_; });  // what the writer holds is in the log after this
  return write_queued(lock);
}

// Called with the lock held; writes without it, so queue() never waits
// for the database.
Status AuditBatcher::write_queued(std::unique_lock<std::mutex>& lock) {
  if (queued_.empty()) return failure_ ? Status(*failure_) : Status(Ok{});
  std::vector<AuditEvent> batch;
  batch.swap(queued_);
  writing_ = true;
  lock.unlock();
  Status written = log_.append_all(batch);
  lock.lock();
  writing_ = false;
  if (written) {
    failure_.reset();
  } else {
    failure_ = written.error();
    batch.insert(batch.end(), std::make_move_iterator(queued_.begin()), std::make_move_iterator(queued_.end()));
    queued_ = std::move(batch);  // kept, in order, for the next try
  }
  wake_.notify_all();
  return written;
}

void AuditBatcher::run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    wake_.wait_for(lock, kFlushInterval, [&] { return stopping_; });
    if (!writing_) (void)write_queued(lock);
  }
  if (!writing_) (void)write_queued(lock);
}

Result<std::vector<AuditRecord>> AuditLog::read(std::uint64_t after_sequence, std::size_t limit) {
  MAILKMS_TRY(rows, storage_.scan(kPrefix, after_sequence == 0 ? std::string() : key_for(after_sequence), limit));
  std::vector<AuditRecord> out;
  for (const auto& [key, value] : rows) {
    MAILKMS_TRY(record, parse(value));
    out.push_back(std::move(record));
  }
  return out;
}

Result<AuditVerification> AuditLog::verify() {
  AuditVerification v;
  std::string previous;
  std::string after;
  while (true) {
    MAILKMS_TRY(rows, storage_.scan(kPrefix, after, 1000));
    if (rows.empty()) break;
    for (const auto& [key, value] : rows) {
      auto record = parse(value);
      const std::uint64_t expected = v.records + 1;
      if (!record) {
        v.problem = key + ": " + record.error().message;
        return v;
      }
      if (record->sequence != expected || key != key_for(expected)) {
        v.problem = "record " + std::to_string(expected) + " is missing or out of place (found " + key + ")";
        return v;
      }
      if (record->previous_hash != previous) {
        v.problem = "record " + std::to_string(expected) + " does not follow its predecessor";
        return v;
      }
      if (hash_of(*record) != record->hash) {
        v.problem = "record " + std::to_string(expected) + " was changed";
        return v;
      }
      previous = record->hash;
      v.records = expected;
    }
    after = rows.back().first;
  }
  MAILKMS_TRY(head, read_head(barrier_));
  if (head.sequence < v.records) {
    v.problem = "the log goes on to record " + std::to_string(v.records) + " but its head says " +
                std::to_string(head.sequence) + ": an older head was put back";
    return v;
  }
  if (head.sequence != v.records || head.hash != previous) {
    v.problem = "the log ends at record " + std::to_string(v.records) + " but its head says " +
                std::to_string(head.sequence) + ": records were removed from the end";
    return v;
  }
  v.intact = true;
  return v;
}

}  // namespace mailkms::keystore

namespace mailkms::keystore {

Status AuditLimiter::record(const AuditEvent& event) {
  const auto now = std::chrono::steady_clock::now();
  {
    const std::lock_guard lock(mutex_);
    Kind& k = kinds_[event.action + " " + event.outcome];
    if (k.recorded + k.counted == 0 || now - k.start >= kWindow) {
      if (k.counted > 0) MAILKMS_CHECK(log_.append(count_of(event.action + " " + event.outcome, k)));
      k = Kind{now, std::time(nullptr), 0, 0, {}, false, {}};
    }
    if (k.recorded >= kPerWindow) {
      ++k.counted;
      ++counted_total_;
      k.actor = event.actor;
      if (k.subjects.size() < kSubjectsKept) {
        k.subjects.insert(event.subject);
      } else if (!k.subjects.contains(event.subject)) {
        k.more_subjects = true;
      }
      return Ok{};
    }
    ++k.recorded;
  }
  return log_.append(event);
}

Status AuditLimiter::write_counts(bool every_window) {
  const auto now = std::chrono::steady_clock::now();
  const std::lock_guard lock(mutex_);
  for (auto it = kinds_.begin(); it != kinds_.end();) {
    Kind& k = it->second;
    const bool ended = now - k.start >= kWindow;
    if (k.counted > 0 && (every_window || ended)) {
      MAILKMS_CHECK(log_.append(count_of(it->first, k)));
      k.counted = 0;
      k.subjects.clear();
      k.more_subjects = false;
    }
    it = ended && k.counted == 0 ? kinds_.erase(it) : std::next(it);
  }
  return Ok{};
}

std::uint64_t AuditLimiter::counted() const {
  const std::lock_guard lock(mutex_);
  return counted_total_;
}

AuditEvent AuditLimiter::count_of(const std::string& kind, const Kind& k) {
  const auto space = kind.find(' ');
  const std::string since = readable_time(k.started);
  const std::string subjects = std::to_string(k.subjects.size()) + (k.more_subjects ? " or more" : "");
  return {k.actor, kind.substr(0, space), subjects + " subject(s)", kind.substr(space + 1),
          std::to_string(k.counted) + " more like this in the window from " + since + " (past " +
              std::to_string(kPerWindow) + " a window, counted, not recorded one by one)"};
}

}  // namespace mailkms::keystore
