#include "mailkms/keystore/users.hpp"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

#include "aead.hpp"
#include "row.hpp"
#include "mailkms/keystore/protocol.hpp"
#include "mailkms/keystore/signing_request.hpp"

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
          {"signing_key_held", r.signing_key_held},
          {"enrolled", r.enrolled}};
}

Result<UserRecord> from_json(std::string_view key, std::string_view text) {
  MAILKMS_TRY(j, detail::parse_row(key, text));
  try {
    return UserRecord{j.at("address").get<std::string>(),
                      j.at("enabled").get<bool>(),
                      j.at("created").get<std::time_t>(),
                      j.at("encryption").get<std::vector<std::string>>(),
                      j.at("signing").get<std::string>(),
                      j.at("signing_key_held").get<bool>(),
                      j.value("enrolled", std::time_t{0})};  // records from before enrollment by mail lack it
  } catch (const nlohmann::json::exception&) {
    return detail::corrupt_row(key, "lacks a field or has one of the wrong type");
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

Status Users::save(const UserRecord& record) {
  {
    const std::lock_guard lock(domains_mutex_);
    if (domains_) domains_->insert(record.address.substr(record.address.rfind('@') + 1));
  }
  return storage_.put(user_key(record.address), to_json(record).dump());
}

Result<bool> Users::has_domain(std::string_view domain) {
  const std::lock_guard lock(domains_mutex_);
  if (!domains_) {
    std::set<std::string, std::less<>> found;
    std::string after;
    for (;;) {
      MAILKMS_TRY(rows, storage_.scan("users/", after, 1000));
      for (const auto& [key, value] : rows) found.insert(key.substr(key.rfind('@') + 1));
      if (rows.size() < 1000) break;
      after = rows.back().first;
    }
    domains_ = std::move(found);
  }
  return domains_->contains(domain);
}

Status Users::issue_encryption(UserRecord& record, const std::string& actor) {
  MAILKMS_TRY(encryption_key, generate_key(*ctx_, policy_.encryption_key));
  MAILKMS_TRY(encryption, ca_.issue(encryption_key.native(), record.address, Profile::encryption, policy_.validity_days, actor));
  const std::string encryption_serial = encryption.certificate.serial_hex();
  MAILKMS_CHECK(store_private_key(barrier_, record.address, encryption_key_id(encryption_serial), encryption_key));
  record.encryption_serials.push_back(encryption_serial);
  return Ok{};
}

Status Users::issue_signing(UserRecord& record, const std::string& actor) {
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
    MAILKMS_CHECK(issue_encryption(record, actor));
    MAILKMS_CHECK(issue_signing(record, actor));
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
  const std::string key = user_key(normalize(address));
  MAILKMS_TRY(stored, storage_.get(key));
  if (!stored) return make_error(Errc::not_found, "no user " + std::string(address));
  return from_json(key, *stored);
}

Result<std::vector<UserRecord>> Users::list(std::string_view after, std::size_t limit) {
  MAILKMS_TRY(rows, storage_.scan("users/", after.empty() ? std::string() : user_key(normalize(after)), limit));
  std::vector<UserRecord> out;
  for (const auto& [key, value] : rows) {
    MAILKMS_TRY(record, from_json(key, value));
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

Status Users::set_enrolled(std::string_view address, std::time_t when) {
  return storage_.transaction([&]() -> Status {
    MAILKMS_TRY(record, get(address));
    record.enrolled = when;
    return save(record);
  });
}

Result<UserRecord> Users::renew(std::string_view address, const std::string& actor) {
  UserRecord record;
  MAILKMS_CHECK(storage_.transaction([&]() -> Status {
    MAILKMS_TRY(found, get(address));
    record = std::move(found);
    // A signing key the user keeps is theirs: renewal neither replaces it
    // nor revokes its certificate. They send a new request for a new one.
    const bool own_signing_key = !record.signing_key_held && !record.signing_serial.empty();
    const std::string old_signing = record.signing_serial;
    MAILKMS_CHECK(issue_encryption(record, actor));
    if (!own_signing_key) MAILKMS_CHECK(issue_signing(record, actor));
    MAILKMS_CHECK(save(record));
    if (!own_signing_key && !old_signing.empty()) {
      auto revoked = ca_.revoke(old_signing, RevocationReason::superseded, actor);
      if (!revoked && revoked.error().code != Errc::already_exists) return std::move(revoked).error();
    }
    return audit_.append({actor, "user-renew", record.address, "ok",
                          "encryption " + record.encryption_serials.back() +
                              (own_signing_key ? ", signing " + record.signing_serial +
                                                     " kept: the user holds its key and renews it with a new request"
                                               : ", signing " + record.signing_serial)});
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
  MAILKMS_TRY(key, read_signing_request(csr_pem));
  std::optional<smime::Certificate> issued_certificate;
  const Status done = storage_.transaction([&]() -> Status {
    MAILKMS_TRY(record, get(address));
    // The subject and extensions come from our profile, never the request.
    MAILKMS_TRY(issued, ca_.issue(key.get(), record.address, Profile::signing, policy_.validity_days, actor));
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

namespace {

constexpr std::string_view kBundleAad = "mailkms/user-bundle/v1";

std::string der_of(const smime::PrivateKey& key) {
  unsigned char* der = nullptr;
  const int n = i2d_PrivateKey(key.native(), &der);
  if (n <= 0) return {};
  std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(n));
  OPENSSL_clear_free(der, static_cast<std::size_t>(n));
  return out;
}

}  // namespace

Result<std::string> Users::export_bundle(std::span<const std::string> addresses, std::string_view password,
                                         const ScryptParameters& kdf, const std::string& actor) {
  if (password.size() < 12) return make_error(Errc::invalid_argument, "a bundle password needs at least 12 characters");
  nlohmann::json users = nlohmann::json::array();
  for (const auto& address : addresses) {
    MAILKMS_TRY(record, get(address));
    nlohmann::json encryption = nlohmann::json::array();
    for (const auto& serial : record.encryption_serials) {
      MAILKMS_TRY(cert, ca_.summary(serial));
      MAILKMS_TRY(key, load_private_key(barrier_, *ctx_, record.address, encryption_key_id(serial)));
      encryption.push_back({{"certificate", cert.pem}, {"key", protocol::base64(der_of(key))}});
    }
    nlohmann::json signing = nullptr;
    if (!record.signing_serial.empty()) {
      MAILKMS_TRY(cert, ca_.summary(record.signing_serial));
      signing = {{"certificate", cert.pem}};
      if (record.signing_key_held) {
        MAILKMS_TRY(key, signing_key(record.address));
        signing["key"] = protocol::base64(der_of(key));
      }
    }
    users.push_back({{"address", record.address}, {"enabled", record.enabled}, {"encryption", encryption}, {"signing", signing}});
  }
  std::string payload = nlohmann::json{{"users", users}, {"exported", std::time(nullptr)}}.dump();
  const std::string salt = [] {
    const auto s = detail::random_secret(16);
    return std::string(reinterpret_cast<const char*>(s.data()), s.size());
  }();
  MAILKMS_TRY(key, scrypt(password, salt, kdf));
  auto sealed = detail::seal_record(key, payload, kBundleAad);
  OPENSSL_cleanse(payload.data(), payload.size());
  if (!sealed) return std::move(sealed).error();
  MAILKMS_CHECK(audit_.append({actor, "users-export", std::to_string(addresses.size()) + " user(s)", "ok", ""}));
  return nlohmann::json{{"format", "mailkms-user-bundle"},
                        {"version", 1},
                        {"kdf", {{"algorithm", "scrypt"}, {"n", kdf.n}, {"r", kdf.r}, {"p", kdf.p}, {"salt", protocol::base64(salt)}}},
                        {"payload", protocol::base64(*sealed)}}
      .dump();
}

Result<Users::ImportSummary> Users::import_bundle(std::string_view bundle, std::string_view password,
                                                  const std::string& actor) {
  const Error bad = make_error(Errc::invalid_argument, "not a mailkms user bundle");
  const auto outer = nlohmann::json::parse(bundle, nullptr, false);
  if (!outer.is_object() || outer.value("format", "") != "mailkms-user-bundle" || outer.value("version", 0) != 1) return bad;
  const auto& kdf = outer.value("kdf", nlohmann::json::object());
  const ScryptParameters params{kdf.value("n", std::uint64_t{0}), kdf.value("r", std::uint32_t{0}), kdf.value("p", std::uint32_t{0})};
  auto salt = protocol::unbase64(kdf.value("salt", nlohmann::json()));
  auto sealed = protocol::unbase64(outer.value("payload", nlohmann::json()));
  if (!salt || !sealed || params.n == 0 || params.n > (std::uint64_t{1} << 20)) return bad;
  MAILKMS_TRY(key, scrypt(password, *salt, params));
  auto opened = detail::open_record(key, *sealed, kBundleAad);
  if (!opened) return make_error(Errc::wrong_secret, "the bundle does not open: wrong password, or it was changed");
  const auto payload = nlohmann::json::parse(
      std::string_view(reinterpret_cast<const char*>(opened->data()), opened->size()), nullptr, false);
  if (!payload.is_object()) return bad;

  ImportSummary summary;
  const Status imported = storage_.transaction([&]() -> Status {
    for (const auto& u : payload.value("users", nlohmann::json::array())) {
      const std::string address = normalize(u.value("address", ""));
      if (!plausible_address(address)) return make_error(Errc::invalid_argument, "a bundled user has no valid address");
      MAILKMS_TRY(existing, storage_.get(user_key(address)));
      if (existing) {
        summary.skipped.push_back(address);
        continue;
      }
      UserRecord record{address, u.value("enabled", true), std::time(nullptr), {}, {}, false, 0};
      const auto store = [&](const nlohmann::json& entry, Profile profile) -> Result<std::string> {
        auto cert = smime::Certificate::from_pem(entry.value("certificate", ""));
        if (!cert || !cert->has_email(address)) return make_error(Errc::invalid_argument, "a bundled certificate is not " + address + "'s");
        const std::string serial = cert->serial_hex();
        // A serial names one certificate: a bundle must not replace the
        // record of one we already hold (another user's, or a revoked one).
        MAILKMS_TRY(taken, storage_.get("certs/" + serial));
        if (taken) {
          return make_error(Errc::already_exists, "the certificate with serial " + serial + " bundled for " + address +
                                                      " is already stored here; nothing was imported");
        }
        if (entry.contains("key")) {
          MAILKMS_TRY(der, protocol::unbase64(entry["key"]));
          const auto* p = reinterpret_cast<const unsigned char*>(der.data());
          EVP_PKEY* raw = d2i_AutoPrivateKey_ex(nullptr, &p, static_cast<long>(der.size()), ctx_->libctx(), nullptr);
          OPENSSL_cleanse(der.data(), der.size());
          if (raw == nullptr) return make_error(Errc::invalid_argument, "a bundled key does not decode");
          const smime::PrivateKey private_key = smime::PrivateKey::adopt(raw);
          if (!private_key.matches(*cert)) return make_error(Errc::invalid_argument, "a bundled key does not match its certificate");
          MAILKMS_CHECK(store_private_key(barrier_, address,
                                          (profile == Profile::encryption ? encryption_key_id(serial) : signing_key_id(serial)),
                                          private_key));
        }
        // Certificates from elsewhere are kept as such; their CA is not ours.
        const nlohmann::json certificate_record{{"serial", serial}, {"ca", "imported"}, {"owner", address},
                                                {"profile", std::string(to_string(profile))}, {"certificate", cert->pem()},
                                                {"not_after", cert->not_after()}, {"revoked_at", nullptr}, {"reason", 0}};
        MAILKMS_CHECK(storage_.put("certs/" + serial, certificate_record.dump()));
        return serial;
      };
      for (const auto& entry : u.value("encryption", nlohmann::json::array())) {
        MAILKMS_TRY(serial, store(entry, Profile::encryption));
        record.encryption_serials.push_back(serial);
      }
      if (const auto& signing = u.value("signing", nlohmann::json()); signing.is_object()) {
        MAILKMS_TRY(serial, store(signing, Profile::signing));
        record.signing_serial = serial;
        record.signing_key_held = signing.contains("key");
      }
      MAILKMS_CHECK(save(record));
      MAILKMS_CHECK(audit_.append({actor, "user-import", address, "ok",
                                   std::to_string(record.encryption_serials.size()) + " encryption key(s)"}));
      ++summary.imported;
    }
    return Ok{};
  });
  if (!imported) {
    if (imported.error().code == Errc::already_exists) {
      (void)audit_.append({actor, "users-import", "bundle", "refused", imported.error().message});
    }
    return imported.error();
  }
  return summary;
}

}  // namespace mailkms::keystore
