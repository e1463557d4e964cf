// Administrators and their sessions. Passwords are kept only as scrypt
// hashes; a login gives a random session token that expires, stored only
// as its hash. There is no default account and no default password: the
// first administrator is made by mailkmsctl init.
#pragma once

#include <chrono>
#include <ctime>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "mailkms/keystore/audit.hpp"
#include "mailkms/keystore/clock.hpp"
#include "mailkms/keystore/error.hpp"
#include "mailkms/keystore/kdf.hpp"
#include "mailkms/keystore/storage.hpp"

namespace mailkms::keystore {

struct AdminPolicy {
  ScryptParameters password_kdf{std::uint64_t{1} << 15, 8, 1};  // 32 MiB, about 0.1 s a login
  std::chrono::seconds session_lifetime{15 * 60};
};

struct AdminRecord {
  std::string name;
  std::time_t created = 0;
};

struct Session {
  std::string token;  // shown once, to the one who logged in
  std::time_t expires = 0;
};

class Admins {
 public:
  Admins(Storage& storage, AuditLog& audit, AdminPolicy policy = {}, Clock clock = {})
      : storage_(storage), audit_(audit), policy_(policy), clock_(std::move(clock)) {}

  Status add(const std::string& name, std::string_view password, const std::string& actor);
  Status set_password(const std::string& name, std::string_view password, const std::string& actor);
  // The last administrator cannot be removed.
  Status remove(const std::string& name, const std::string& actor);
  Result<std::vector<AdminRecord>> list();

  // Wrong name or password: the same answer for both, audited, and the
  // name must wait (doubling, to 60 s) before its next try.
  Result<Session> login(const std::string& name, std::string_view password, const std::string& from);
  // The administrator a live session belongs to.
  Result<std::string> authenticate(std::string_view token);
  Status logout(std::string_view token);

  static bool valid_name(std::string_view name);

 private:
  Result<std::string> hash_record(std::string_view password);

  Storage& storage_;
  AuditLog& audit_;
  AdminPolicy policy_;
  Clock clock_;
  static constexpr std::size_t kMaxThrottled = 10'000;  // names with recent failed logins kept
  std::mutex throttle_mutex_;
  std::map<std::string, std::pair<int, std::chrono::steady_clock::time_point>> throttle_;
};

}  // namespace mailkms::keystore
