#include "mailkms/keystore/rotation.hpp"

#include <nlohmann/json.hpp>
#include <optional>

namespace mailkms::keystore {
namespace {

constexpr std::string_view kSealKey = "core/seal";
constexpr std::string_view kGenerationKey = "config/master-key";

smime::SecretBytes copy_of(const smime::SecretBytes& key) {
  return smime::SecretBytes(std::string(reinterpret_cast<const char*>(key.data()), key.size()));
}

std::string describe(const RotationOutcome& o) {
  std::string detail = "generation " + std::to_string(o.generation.number) + "; " + std::to_string(o.resealed) +
                       " barrier record(s) sealed again, " + std::to_string(o.tagged) + " row(s) tagged again";
  if (o.left > 0) detail += ", " + std::to_string(o.left) + " row(s) that had failed their check left as they were";
  return detail;
}

}  // namespace

Result<KeyGeneration> key_generation(Storage& rows) {
  MAILKMS_TRY(stored, rows.get(kGenerationKey));
  if (!stored) return KeyGeneration{};
  const auto j = nlohmann::json::parse(*stored, nullptr, false);
  if (!j.is_object() || !j.contains("generation") || !j["generation"].is_number_unsigned()) {
    return make_error(Errc::corrupt, "the master key's generation does not parse");
  }
  return KeyGeneration{j["generation"].get<std::uint64_t>(), j.value("rotated", std::time_t{0})};
}

Result<RotationOutcome> rotate_master_key(AuthenticatedStorage& rows, Barrier& barrier, AuditLog& audit,
                                          const SealRecord& new_seal, const smime::SecretBytes& new_master_key,
                                          const std::string& actor) {
  RotationOutcome outcome;
  std::optional<smime::SecretBytes> old_key;  // kept until the transaction is known to have landed
  const Status rotated = rows.transaction([&]() -> Status {
    MAILKMS_TRY(current, key_generation(rows));
    outcome.generation = {current.number + 1, std::time(nullptr)};
    MAILKMS_TRY(counts, rows.rekey_rows(new_master_key, [&](std::string_view key, std::string_view value) {
      return barrier.reseal(key, value, new_master_key);
    }));
    outcome.resealed = counts.resealed;
    outcome.tagged = counts.tagged;
    outcome.left = counts.left;
    MAILKMS_CHECK(rows.put(kSealKey, new_seal.to_json()));
    // From here on this transaction reads and writes under the new key.
    MAILKMS_TRY(replaced, barrier.replace_master_key(copy_of(new_master_key)));
    old_key = std::move(replaced);
    MAILKMS_CHECK(rows.unlock(new_master_key));
    const nlohmann::json generation{{"generation", outcome.generation.number}, {"rotated", outcome.generation.rotated}};
    MAILKMS_CHECK(rows.put(kGenerationKey, generation.dump()));
    return audit.append({actor, "rekey", "master key", "ok", describe(outcome)});
  });
  if (!rotated) {
    // Nothing landed: the old key is the one the database is under.
    if (old_key) {
      if (!rows.unlock(*old_key)) rows.lock();
      if (!barrier.replace_master_key(std::move(*old_key))) barrier.seal();
    }
    return rotated.error();
  }
  return outcome;
}

}  // namespace mailkms::keystore
