// health: what an administrator checks on one screen, `mailkmsctl status`
// after a login. Everything here is read from the database as it stands;
// nothing is cached, and nothing here is secret (no key, no password, no
// token), though it is for administrators: who is about to expire is a
// list of users.
#include <openssl/x509.h>
#include <unistd.h>

#include <climits>
#include <ctime>

#include "mailkms/keystore/service.hpp"
#include "mailkms/smime/mime.hpp"
#include "mailkms/smime/ossl.hpp"
#include "row.hpp"

namespace mailkms::keystore {
namespace {

namespace ossl = smime::ossl;

constexpr std::time_t kExpiringWithin = std::time_t{30} * 86400;
constexpr std::size_t kExpiringShown = 20;
constexpr std::size_t kPage = 1000;

// "mx1.example.org pid 4242": which keystored answered, of several.
std::string instance_name() {
  char host[HOST_NAME_MAX + 1] = {};
  if (::gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') return "localhost pid " + std::to_string(::getpid());
  return std::string(host) + " pid " + std::to_string(::getpid());
}

// A CRL's nextUpdate, or 0 when the DER does not say.
std::time_t next_update_of(std::string_view der) {
  if (der.size() > static_cast<std::size_t>(LONG_MAX)) return 0;
  const auto* bytes = reinterpret_cast<const unsigned char*>(der.data());
  const ossl::X509Crl crl(d2i_X509_CRL(nullptr, &bytes, static_cast<long>(der.size())));
  const ASN1_TIME* next = crl ? X509_CRL_get0_nextUpdate(crl.get()) : nullptr;
  std::tm when{};
  if (next == nullptr || ASN1_TIME_to_tm(next, &when) != 1) return 0;
  return timegm(&when);
}

}  // namespace

Result<nlohmann::json> KeystoreService::expiring_certificates(std::time_t within) {
  const std::time_t now = clock_.wall();
  std::size_t count = 0;
  nlohmann::json shown = nlohmann::json::array();
  std::string after;
  for (;;) {
    MAILKMS_TRY(page, guarded_.scan("certs/", after, kPage));
    for (const auto& [key, value] : page) {
      MAILKMS_TRY(row, detail::parse_row(key, value));
      const auto not_after = row.value("not_after", std::time_t{0});
      if (!row.value("revoked_at", nlohmann::json()).is_null() || not_after <= now || not_after > now + within) continue;
      // Only a certificate in use is a task: one renewed since is not.
      const std::string owner = row.value("owner", "");
      const std::string serial = row.value("serial", "");
      auto user = users_.get(owner);
      if (!user) continue;  // not a user's (or no longer): nothing to renew here
      const bool in_use = user->signing_serial == serial ||
                          (!user->encryption_serials.empty() && user->encryption_serials.back() == serial);
      if (!in_use) continue;
      ++count;
      if (shown.size() < kExpiringShown) {
        shown.push_back({{"address", owner}, {"serial", serial}, {"profile", row.value("profile", "")}, {"not_after", not_after}});
      }
    }
    if (page.size() < kPage) break;
    after = page.back().first;
  }
  return nlohmann::json{{"within_days", within / 86400}, {"count", count}, {"first", std::move(shown)}};
}

Result<nlohmann::json> KeystoreService::health() {
  MAILKMS_TRY(head, audit_.head());
  MAILKMS_TRY(requests, guarded_.scan("requests/", {}, 10'000));
  std::size_t pending = 0;
  for (const auto& [key, value] : requests) {
    MAILKMS_TRY(request, detail::parse_row(key, value));
    if (request.value("status", "") == "pending") ++pending;
  }
  MAILKMS_TRY(expiring, expiring_certificates(kExpiringWithin));
  // Each issuing CA's CRL as last made (gateways and `crl export` ask for
  // it; one older than a day is made again at the next ask).
  MAILKMS_TRY(cas, ca_.list());
  nlohmann::json crls = nlohmann::json::array();
  for (const auto& ca : cas) {
    if (ca.role != CaRole::issuing) continue;
    nlohmann::json entry{{"ca", ca.id}, {"made", nullptr}, {"next_update", nullptr}};
    MAILKMS_TRY(stored, guarded_.get("crl/" + ca.id));
    if (stored) {
      MAILKMS_TRY(row, detail::parse_row("crl/" + ca.id, *stored));
      entry["made"] = row.value("made", std::time_t{0});
      if (const auto der = smime::base64_decode(row.value("der", ""))) entry["next_update"] = next_update_of(*der);
    }
    crls.push_back(std::move(entry));
  }
  return nlohmann::json{{"instance", instance_name()},
                        {"database", database_},
                        {"audit_head", {{"sequence", head.sequence}, {"hash", head.hash}}},
                        {"pending_requests", pending},
                        {"expiring", std::move(expiring)},
                        {"crls", std::move(crls)}};
}

}  // namespace mailkms::keystore
