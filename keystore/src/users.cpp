#include "mailkms/keystore/users.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

namespace mailkms::keystore {
namespace {

std::string user_key(std::string_view address) { return "users/" + std::string(address); }
std::string encryption_key_id(std::string_view serial) { return "enc-" + std::string(serial); }
std::string signing_key_id(std::string_view serial) { return "sign-" + std::string(serial); }

nlohmann::json to_json(const UserRecord& r) {
  return {{"address", r.address},
          {"enabled", r.enabled},
          {"created", r.created},
          {"encryption", r.encryption_serials},
          {"signing", r.signing_serial},
          {"signing_key_held", r.signing_key_held}};
}

Result<UserRecord> from_json(std::string_view text) {
  const auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return make_error(Errc::corrupt, "a user record does not parse");
  try {
    return UserRecord{j.at("address").get<std::string>(),
                      j.at("enabled").get<bool>(),
                      j.at("created").get<std::time_t>(),
                      j.at("encryption").get<std::vector<std::string>>(),
                      j.at("signing").get<std::string>(),
                      j.at("signing_key_held").get<bool>()};
  } catch (const nlohmann::json::exception&) {
    return make_error(Errc::corrupt, "a user record lacks a field");
  }
}

}  // namespace

std::string Users::normalize(std::string_view address) {
  std::string out(address);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool Users::plausible_address(std::string_view address) {
  const auto at = address.find('@');
  if (at == std::string_view::npos || at == 0 || at + 1 >= address.size() || address.size() > 254) return false;
  if (address.find('@', at + 1) != std::string_view::npos) return false;
  const std::string_view domain = address.substr(at + 1);
  if (domain.find('.') == std::string_view::npos || domain.front() == '.' || domain.back() == '.') return false;
  return std::all_of(address.begin(), address.end(), [](unsigned char c) {
    return c > 32 && c < 127 && c != '<' && c != '>' && c != '"' && c != ',' && c != ';' && c != '\\' && c != '(' && c != ')';
  });
}

Status Users::save(const UserRecord& record) { return storage_.put(user_key(record.address), to_json(record).dump()); }

Status Users::issue_pair(UserRecord& record, const std::string& actor) {
  MAILKMS_TRY(encryption_key, generate_key(*ctx_, policy_.encryption_key));
  MAILKMS_TRY(encryption, ca_.issue(encryption_key.native(), record.address, Profile::encryption, policy_.validity_days, actor));
  const std::string encryption_serial = encryption.certificate.serial_hex();
  MAILKMS_CHECK(store_private_key(barrier_, record.address, encryption_key_id(encryption_serial), encryption_key));
  record.encryption_serials.push_back(encryption_serial);

  MAILKMS_TRY(signing_key, generate_key(*ctx_, policy_.signing_key));
  MAILKMS_TRY(signing, ca_.issue(signing_key.native(), record.address, Profile::signing, policy_.validity_days, actor));
  record.signing_serial = signing.certificate.serial_hex();
  record.signing_key_held = true;
  return store_private_key(barrier_, record.address, signing_key_id(record.signing_serial), signing_key);
}

Result<UserRecord> Users::add(std::string_view raw_address, const std::string& actor) {
  const std::string address = normalize(raw_address);
  if (!plausible_address(address)) return make_error(Errc::invalid_argument, "not a mail address: " + std::string(raw_address));
  UserRecord record;
  MAILKMS_CHECK(storage_.transaction([&]() -> Status {
    MAILKMS_TRY(existing, storage_.get(user_key(address)));
    if (existing) return make_error(Errc::already_exists, address + " is already a user");
    record.address = address;
    record.created = std::time(nullptr);
    MAILKMS_CHECK(issue_pair(record, actor));
    MAILKMS_CHECK(save(record));
    return audit_.append({actor, "user-add", address, "ok", "encryption " + record.encryption_serials.back() +
                                                                ", signing " + record.signing_serial});
  }));
  return record;
}

BulkSummary Users::add_many(std::span<const std::string> addresses, const std::string& actor,
                            const std::function<void(std::size_t, std::size_t)>& progress) {
  BulkSummary summary;
  std::size_t done = 0;
  for (const auto& address : addresses) {
    auto added = add(address, actor);
    if (added) {
      ++summary.added;
    } else if (added.error().code == Errc::already_exists) {
      ++summary.already_present;
    } else {
      summary.failed.emplace_back(address, added.error().message);
    }
    if (progress) progress(++done, addresses.size());
  }
  return summary;
}

Result<UserRecord> Users::get(std::string_view address) {
  MAILKMS_TRY(stored, storage_.get(user_key(normalize(address))));
  if (!stored) return make_error(Errc::not_found, "no user " + std::string(address));
  return from_json(*stored);
}

Result<std::vector<UserRecord>> Users::list(std::string_view after, std::size_t limit) {
  MAILKMS_TRY(rows, storage_.scan("users/", after.empty() ? std::string() : user_key(normalize(after)), limit));
  std::vector<UserRecord> out;
  for (const auto& [key, value] : rows) {
    MAILKMS_TRY(record, from_json(value));
    out.push_back(std::move(record));
  }
  return out;
}

Status Users::set_enabled(std::string_view address, bool enabled, const std::string& actor) {
  return storage_.transaction([&]() -> Status {
    MAILKMS_TRY(record, get(address));
    record.enabled = enabled;
    MAILKMS_CHECK(save(record));
    return audit_.append({actor, enabled ? "user-enable" : "user-disable", record.address, "ok", ""});
  });
}

Result<UserRecord> Users::renew(std::string_view address, const std::string& actor) {
  UserRecord record;
  MAILKMS_CHECK(storage_.transaction([&]() -> Status {
    MAILKMS_TRY(found, get(address));
    record = std::move(found);
    const std::string old_signing = record.signing_serial;
    MAILKMS_CHECK(issue_pair(record, actor));
    MAILKMS_CHECK(save(record));
    if (!old_signing.empty()) {
      auto revoked = ca_.revoke(old_signing, RevocationReason::superseded, actor);
      if (!revoked && revoked.error().code != Errc::already_exists) return std::move(revoked).error();
    }
    return audit_.append({actor, "user-renew", record.address, "ok",
                          "encryption " + record.encryption_serials.back() + ", signing " + record.signing_serial});
  }));
  return record;
}

Result<std::size_t> Users::renew_expiring(std::time_t before, const std::string& actor) {
  std::size_t renewed = 0;
  std::string after;
  while (true) {
    MAILKMS_TRY(page, list(after, 500));
    if (page.empty()) return renewed;
    for (const auto& user : page) {
      after = user.address;
      if (!user.enabled || user.encryption_serials.empty()) continue;
      MAILKMS_TRY(encryption, ca_.summary(user.encryption_serials.back()));
      bool due = encryption.not_after < before;
      if (!due && user.signing_key_held && !user.signing_serial.empty()) {
        MAILKMS_TRY(signing, ca_.summary(user.signing_serial));
        due = signing.not_after < before;
      }
      if (!due) continue;
      MAILKMS_TRY(done, renew(user.address, actor));
      (void)done;
      ++renewed;
    }
  }
}

Result<smime::Certificate> Users::certify_signing_request(std::string_view address, std::string_view csr_pem,
                                                          const std::string& actor) {
  BIO* bio = BIO_new_mem_buf(csr_pem.data(), static_cast<int>(csr_pem.size()));
  X509_REQ* req = PEM_read_bio_X509_REQ(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (req == nullptr) {
    ERR_clear_error();
    return make_error(Errc::invalid_argument, "not a PEM certificate request");
  }
  EVP_PKEY* key = X509_REQ_get0_pubkey(req);
  const bool signed_by_key = key != nullptr && X509_REQ_verify(req, key) == 1;
  if (!signed_by_key) {
    X509_REQ_free(req);
    ERR_clear_error();
    return make_error(Errc::invalid_argument, "the request is not signed by its own key");
  }
  std::optional<smime::Certificate> issued_certificate;
  const Status done = storage_.transaction([&]() -> Status {
    MAILKMS_TRY(record, get(address));
    // The subject and extensions come from our profile, never the request.
    MAILKMS_TRY(issued, ca_.issue(key, record.address, Profile::signing, policy_.validity_days, actor));
    const std::string old = record.signing_serial;
    record.signing_serial = issued.certificate.serial_hex();
    record.signing_key_held = false;
    MAILKMS_CHECK(save(record));
    if (!old.empty()) {
      auto revoked = ca_.revoke(old, RevocationReason::superseded, actor);
      if (!revoked && revoked.error().code != Errc::already_exists) return std::move(revoked).error();
    }
    issued_certificate = issued.certificate;
    return audit_.append({actor, "user-signing-request", record.address, "ok", "signing " + record.signing_serial});
  });
  X509_REQ_free(req);
  if (!done) return done.error();
  return *issued_certificate;
}

Result<smime::Certificate> Users::encryption_certificate(std::string_view address) {
  MAILKMS_TRY(record, get(address));
  if (record.encryption_serials.empty()) return make_error(Errc::not_found, "no encryption certificate");
  MAILKMS_TRY(cert, ca_.certificate(record.encryption_serials.back()));
  return cert.certificate;
}

Result<smime::Certificate> Users::signing_certificate(std::string_view address) {
  MAILKMS_TRY(record, get(address));
  if (record.signing_serial.empty()) return make_error(Errc::not_found, "no signing certificate");
  MAILKMS_TRY(cert, ca_.certificate(record.signing_serial));
  return cert.certificate;
}

Result<smime::PrivateKey> Users::signing_key(std::string_view address) {
  MAILKMS_TRY(record, get(address));
  if (!record.signing_key_held) return make_error(Errc::not_found, record.address + " keeps their own signing key");
  return load_private_key(barrier_, *ctx_, record.address, signing_key_id(record.signing_serial));
}

Result<std::vector<Pkcs12Entry>> Users::escrowed_encryption_keys(std::string_view address) {
  MAILKMS_TRY(record, get(address));
  std::vector<Pkcs12Entry> out;
  for (std::size_t i = 0; i < record.encryption_serials.size(); ++i) {
    const std::string& serial = record.encryption_serials[i];
    MAILKMS_TRY(cert, ca_.certificate(serial));
    MAILKMS_TRY(key, load_private_key(barrier_, *ctx_, record.address, encryption_key_id(serial)));
    out.push_back({std::move(key), cert.certificate,
                   record.address + (i + 1 == record.encryption_serials.size() ? " (current)" : " (" + serial + ")")});
  }
  return out;
}

}  // namespace mailkms::keystore
