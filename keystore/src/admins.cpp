#include "mailkms/keystore/admins.hpp"

#include <openssl/crypto.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "aead.hpp"
#include "row.hpp"
#include "mailkms/keystore/protocol.hpp"

namespace mailkms::keystore {
namespace {

std::string admin_key(std::string_view name) { return "admins/" + std::string(name); }

std::string session_key(std::string_view token) { return "sessions/" + detail::hex_sha256(token); }

Status check_password(std::string_view password) {
  if (password.size() < 12) return make_error(Errc::invalid_argument, "a password needs at least 12 characters");
  return Ok{};
}

std::string text(const smime::SecretBytes& s) { return std::string(reinterpret_cast<const char*>(s.data()), s.size()); }

}  // namespace

bool Admins::valid_name(std::string_view name) {
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
         });
}

Result<std::string> Admins::hash_record(std::string_view password) {
  const std::string salt = text(detail::random_secret(16));
  MAILKMS_TRY(hash, scrypt(password, salt, policy_.password_kdf));
  return nlohmann::json{{"kdf",
                         {{"algorithm", "scrypt"},
                          {"n", policy_.password_kdf.n},
                          {"r", policy_.password_kdf.r},
                          {"p", policy_.password_kdf.p},
                          {"salt", protocol::base64(salt)}}},
                        {"hash", protocol::base64(text(hash))}}
      .dump();
}

Status Admins::add(const std::string& name, std::string_view password, const std::string& actor) {
  if (!valid_name(name)) return make_error(Errc::invalid_argument, "an administrator's name is 1-64 of a-z, 0-9, . _ -");
  MAILKMS_CHECK(check_password(password));
  MAILKMS_TRY(record, hash_record(password));
  return storage_.transaction([&]() -> Status {
    MAILKMS_TRY(existing, storage_.get(admin_key(name)));
    if (existing) return make_error(Errc::already_exists, "an administrator " + name + " exists");
    auto j = nlohmann::json::parse(record);  // made just above
    j["name"] = name;
    j["created"] = clock_.wall();
    MAILKMS_CHECK(storage_.put(admin_key(name), j.dump()));
    return audit_.append({actor, "admin-add", name, "ok", ""});
  });
}

Status Admins::set_password(const std::string& name, std::string_view password, const std::string& actor) {
  MAILKMS_CHECK(check_password(password));
  MAILKMS_TRY(record, hash_record(password));
  return storage_.transaction([&]() -> Status {
    MAILKMS_TRY(existing, storage_.get(admin_key(name)));
    if (!existing) return make_error(Errc::not_found, "no administrator " + name);
    MAILKMS_TRY(j, detail::parse_row(admin_key(name), *existing));
    const auto fresh = nlohmann::json::parse(record);  // made just above
    j["kdf"] = fresh["kdf"];
    j["hash"] = fresh["hash"];
    MAILKMS_CHECK(storage_.put(admin_key(name), j.dump()));
    return audit_.append({actor, "admin-passwd", name, "ok", ""});
  });
}

Status Admins::remove(const std::string& name, const std::string& actor) {
  return storage_.transaction([&]() -> Status {
    MAILKMS_TRY(all, list());
    if (std::none_of(all.begin(), all.end(), [&](const AdminRecord& a) { return a.name == name; })) {
      return make_error(Errc::not_found, "no administrator " + name);
    }
    if (all.size() == 1) return make_error(Errc::invalid_argument, "the last administrator cannot be removed");
    MAILKMS_CHECK(storage_.remove(admin_key(name)));
    return audit_.append({actor, "admin-remove", name, "ok", ""});
  });
}

Result<std::vector<AdminRecord>> Admins::list() {
  MAILKMS_TRY(rows, storage_.scan("admins/", {}, 10'000));
  std::vector<AdminRecord> out;
  for (const auto& [key, value] : rows) {
    MAILKMS_TRY(j, detail::parse_row(key, value));
    out.push_back({j.value("name", ""), j.value("created", std::time_t{0})});
  }
  return out;
}

Result<Session> Admins::login(const std::string& name, std::string_view password, const std::string& from) {
  // No administrator has such a name: refused before it costs a hash, an
  // audit record or a place in the table of failures.
  if (!valid_name(name)) return make_error(Errc::permission_denied, "wrong name or password");
  {
    const std::lock_guard lock(throttle_mutex_);
    if (const auto it = throttle_.find(name); it != throttle_.end() && clock_.steady() < it->second.second) {
      return make_error(Errc::permission_denied, "too many failed logins for " + name + "; wait and try again");
    }
  }
  const Error refused = make_error(Errc::permission_denied, "wrong name or password");
  MAILKMS_TRY(stored, storage_.get(admin_key(name)));
  bool match = false;
  if (stored) {
    MAILKMS_TRY(j, detail::parse_row(admin_key(name), *stored));
    const auto& kdf = j.value("kdf", nlohmann::json::object());
    const ScryptParameters params{kdf.value("n", std::uint64_t{0}), kdf.value("r", std::uint32_t{0}),
                                  kdf.value("p", std::uint32_t{0})};
    auto salt = protocol::unbase64(kdf.value("salt", nlohmann::json()));
    auto expected = protocol::unbase64(j.value("hash", nlohmann::json()));
    if (!salt || !expected || params.n == 0) return detail::corrupt_row(admin_key(name), "lacks its password hash");
    MAILKMS_TRY(hash, scrypt(password, *salt, params));
    match = hash.size() == expected->size() && CRYPTO_memcmp(hash.data(), expected->data(), hash.size()) == 0;
  } else {
    (void)scrypt(password, "no such administrator", policy_.password_kdf);  // the same time either way
  }
  if (!match) {
    {
      const std::lock_guard lock(throttle_mutex_);
      // Bounded: names that waited out their delay are forgotten first.
      if (throttle_.size() >= kMaxThrottled) {
        const auto now = clock_.steady();
        std::erase_if(throttle_, [&](const auto& entry) { return entry.second.second <= now; });
        if (throttle_.size() >= kMaxThrottled) throttle_.clear();
      }
      auto& [failures, until] = throttle_[name];
      ++failures;
      until = clock_.steady() + std::chrono::seconds(std::min(60, 1 << std::min(failures, 6)));
    }
    MAILKMS_CHECK(audit_.append({from, "login", name, "failed", "wrong name or password"}));
    return refused;
  }
  {
    const std::lock_guard lock(throttle_mutex_);
    throttle_.erase(name);
  }
  const auto random = detail::random_secret(32);
  Session session{protocol::base64(text(random)), clock_.wall() + policy_.session_lifetime.count()};
  MAILKMS_CHECK(storage_.transaction([&]() -> Status {
    MAILKMS_CHECK(storage_.put(session_key(session.token),
                               nlohmann::json{{"admin", name}, {"expires", session.expires}}.dump()));
    return audit_.append({from, "login", name, "ok", "session " + AuditLog::fingerprint(session.token)});
  }));
  return session;
}

Result<std::string> Admins::authenticate(std::string_view token) {
  const Error refused = make_error(Errc::permission_denied, "no valid session: log in with mailkmsctl login");
  if (token.empty()) return refused;
  MAILKMS_TRY(stored, storage_.get(session_key(token)));
  if (!stored) return refused;
  const auto j = nlohmann::json::parse(*stored, nullptr, false);
  if (!j.is_object() || j.value("expires", std::time_t{0}) <= clock_.wall()) {
    (void)storage_.remove(session_key(token));
    return make_error(Errc::permission_denied, "the session has expired: log in again");
  }
  const std::string admin = j.value("admin", "");
  // A removed administrator's sessions die with them.
  MAILKMS_TRY(still, storage_.get(admin_key(admin)));
  if (!still) return refused;
  return admin;
}

Status Admins::logout(std::string_view token) { return storage_.remove(session_key(token)); }

}  // namespace mailkms::keystore
