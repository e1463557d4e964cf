// `rekey`: rotating the master key of a running keystore. The request holds
// the service to itself (handle() takes the rotation lock exclusively).
#include <openssl/crypto.h>

#include "mailkms/keystore/rotation.hpp"
#include "mailkms/keystore/service.hpp"

namespace mailkms::keystore {

Result<smime::SecretBytes> KeystoreService::seal_key_for(const SealRecord& record, const nlohmann::json& params) {
  switch (record.method) {
    case SealMethod::key_file:
      // Only this process may read it; the administrator gives nothing.
      if (unseal_key_file_.empty()) {
        return make_error(Errc::invalid_argument,
                          "this keystore is sealed with a key file, and keystored was not unsealed with one "
                          "(unseal_key_file)");
      }
      return seal_key_from_key_file(record, unseal_key_file_);
    case SealMethod::passphrase: {
      const auto passphrase = params.find("passphrase");
      if (passphrase == params.end() || !passphrase->is_string()) {
        return make_error(Errc::invalid_argument, "this keystore is sealed with a passphrase: give it");
      }
      std::string secret = passphrase->get<std::string>();
      auto key = seal_key_from_passphrase(record, secret);
      OPENSSL_cleanse(secret.data(), secret.size());
      return key;
    }
    case SealMethod::shares: {
      const auto shares = params.find("shares");
      if (shares == params.end() || !shares->is_array()) {
        return make_error(Errc::invalid_argument, "this keystore is sealed with shares: give enough of them");
      }
      std::vector<std::string> texts;
      for (const auto& share : *shares) {
        if (!share.is_string()) return make_error(Errc::invalid_argument, "shares are strings");
        texts.push_back(share.get<std::string>());
      }
      return seal_key_from_shares(record, texts);
    }
  }
  return make_error(Errc::internal, "unknown seal method");
}

Result<nlohmann::json> KeystoreService::rekey(const Caller& caller, const nlohmann::json& params,
                                              const std::string& actor) {
  MAILKMS_CHECK(check_unseal_throttle(caller));
  MAILKMS_TRY(record, seal_record());
  auto seal_key = seal_key_for(record, params);
  if (!seal_key) {
    if (seal_key.error().code == Errc::wrong_secret) {
      // An administrator's session must not become a way to guess the
      // unseal secret faster than unseal allows.
      {
        const std::lock_guard lock(unseal_mutex_);
        count_wrong_secret(caller.principal());
      }
      MAILKMS_CHECK(audit_.append({actor, "rekey", "master key", "refused", seal_key.error().message}));
    }
    return std::move(seal_key).error();
  }
  const smime::SecretBytes new_master = new_master_key();
  MAILKMS_TRY(new_seal, reseal(record, *seal_key, new_master));
  // Gateways' records queued under the old key are written first; no new
  // ones come while this request holds the service.
  MAILKMS_CHECK(gateway_audit_.flush());
  MAILKMS_TRY(outcome, rotate_master_key(guarded_, barrier_, audit_, new_seal, new_master, actor));
  return nlohmann::json{{"generation", outcome.generation.number},
                        {"rotated", outcome.generation.rotated},
                        {"resealed", outcome.resealed},
                        {"tagged", outcome.tagged},
                        {"left", outcome.left}};
}

}  // namespace mailkms::keystore
