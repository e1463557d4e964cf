// Administration over the protocol: sessions, the operations, and the
// approvals some of them need (the original's "multiple password policy").
#include <openssl/crypto.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <map>

#include "aead.hpp"
#include "row.hpp"
#include "mailkms/keystore/service.hpp"

namespace mailkms::keystore {
namespace {

// The approval task each operation belongs to; "" for those that need none.
const std::map<std::string, std::string, std::less<>>& tasks() {
  static const std::map<std::string, std::string, std::less<>> table{
      {"admin-add", "admin-change"},        {"admin-remove", "admin-change"},  {"approvals-set", "admin-change"},
      {"admin-passwd", "admin-change"},
      {"ca-create-root", "ca-change"},      {"ca-create-issuing", "ca-change"}, {"ca-request-external", "ca-change"},
      {"ca-import-external", "ca-change"},  {"ca-enable", "ca-change"},        {"ca-disable", "ca-change"},
      {"trust-add", "ca-change"},           {"trust-remove", "ca-change"},     {"trust-system", "ca-change"},
      {"revoke", "revoke"},                 {"recover", "recover"},            {"users-export", "recover"},
      // Importing plants users whose keys the importer holds: as much a
      // matter for several administrators as taking keys out.
      {"users-import", "recover"},
      // A gateway's certificate lets its host use every user's keys.
      {"gateway-add", "ca-change"},         {"gateway-revoke", "revoke"},
  };
  return table;
}

const std::vector<std::string>& approval_tasks() {
  static const std::vector<std::string> all{"admin-change", "ca-change", "revoke", "recover"};
  return all;
}

// Operations that run at once for any administrator.
bool plain_operation(std::string_view op) {
  static const std::vector<std::string_view> ops{"logout",      "admin-list",  "approvals-show",
                                                 "ca-list",     "user-add",    "user-list",    "user-show",
                                                 "user-enable", "user-disable", "user-renew",  "crl", "ca-export",
                                                 "audit-show",  "audit-verify", "audit-checkpoint", "audit-key", "approve",     "requests-list", "trust-list",
                                                 "enroll",
                                                 "request-fetch", "harvested-list", "harvested-remove",
                                                 "gateway-list", "service-ca", "health",
                                                 // Discloses and grants nothing, and needs the unseal secret.
                                                 "rekey"};
  return std::find(ops.begin(), ops.end(), op) != ops.end();
}

Result<std::string> text_param(const nlohmann::json& params, const char* name) {
  const auto it = params.find(name);
  if (it == params.end() || !it->is_string()) {
    return make_error(Errc::invalid_argument, std::string("missing string parameter \"") + name + "\"");
  }
  return it->get<std::string>();
}

// An optional string: its fallback when absent; refused when not a string.
Result<std::string> text_param_or(const nlohmann::json& params, const char* name, std::string fallback) {
  const auto it = params.find(name);
  if (it == params.end() || it->is_null()) return fallback;
  if (!it->is_string()) return make_error(Errc::invalid_argument, std::string("parameter \"") + name + "\" must be a string");
  return it->get<std::string>();
}

// The first of these parameters that is a string, or "": what a request
// is about, as its approvers are shown it.
std::string subject_of(const nlohmann::json& params) {
  for (const char* name : {"address", "name", "id"}) {
    if (const auto it = params.find(name); it != params.end() && it->is_string()) return it->get<std::string>();
  }
  return {};
}

// An optional list of strings; refused when anything in it is not one.
Result<std::vector<std::string>> texts_param(const nlohmann::json& params, const char* name) {
  std::vector<std::string> out;
  const auto it = params.find(name);
  if (it == params.end() || it->is_null()) return out;
  const Error bad = make_error(Errc::invalid_argument, std::string("parameter \"") + name + "\" must be a list of strings");
  if (!it->is_array()) return bad;
  for (const auto& item : *it) {
    if (!item.is_string()) return bad;
    out.push_back(item.get<std::string>());
  }
  return out;
}

int int_param(const nlohmann::json& params, const char* name, int fallback) {
  const auto it = params.find(name);
  return it != params.end() && it->is_number_integer() ? it->get<int>() : fallback;
}

// trust-add's "domains": what the anchor may vouch for, lower-cased;
// "partner.example" that domain, ".partner.example" those below it.
Result<std::vector<std::string>> scope_param(const nlohmann::json& params) {
  std::vector<std::string> domains;
  const auto it = params.find("domains");
  if (it == params.end() || it->is_null()) return domains;
  if (!it->is_array() || it->size() > 100) return make_error(Errc::invalid_argument, "\"domains\" is a list of at most 100 domains");
  for (const auto& d : *it) {
    const std::string domain = d.is_string() ? smime::normalize_address(d.get<std::string>()) : std::string();
    const std::string_view bare = std::string_view(domain).substr(domain.starts_with('.') ? 1 : 0);
    if (!smime::plausible_domain(bare)) {
      return make_error(Errc::invalid_argument, "not a domain for a trust anchor's scope: \"" + domain +
                                                    "\" (partner.example, or .partner.example for those below it)");
    }
    if (std::find(domains.begin(), domains.end(), domain) == domains.end()) domains.push_back(domain);
  }
  return domains;
}

bool flag_param(const nlohmann::json& params, const char* name) {
  const auto it = params.find(name);
  return it != params.end() && it->is_boolean() && it->get<bool>();
}

Result<KeyType> key_type_param(const nlohmann::json& params, KeyType fallback) {
  const auto it = params.find("key_type");
  if (it == params.end()) return fallback;
  const auto parsed = it->is_string() ? parse_key_type(it->get<std::string>()) : std::nullopt;
  if (!parsed) return make_error(Errc::invalid_argument, "key_type is rsa-2048, rsa-3072, rsa-4096, ec-p256 or ec-p384");
  return *parsed;
}

nlohmann::json describe_ca(const CaInfo& ca) {
  return {{"id", ca.id},
          {"role", std::string(to_string(ca.role))},
          {"parent", ca.parent},
          {"priority", ca.priority},
          {"enabled", ca.enabled},
          {"subject", ca.certificate ? ca.certificate->subject() : std::string()},
          {"not_after", ca.certificate ? ca.certificate->not_after() : 0},
          {"certificate", ca.certificate ? ca.certificate->pem() : std::string()}};
}

nlohmann::json describe_user(const UserRecord& u) {
  return {{"address", u.address},
          {"enabled", u.enabled},
          {"created", u.created},
          {"encryption_serials", u.encryption_serials},
          {"signing_serial", u.signing_serial},
          {"signing_key_held", u.signing_key_held},
          {"enrolled", u.enrolled}};
}

nlohmann::json describe_record(const AuditRecord& r) {
  return {{"sequence", r.sequence}, {"time", r.time},       {"actor", r.event.actor},     {"action", r.event.action},
          {"subject", r.event.subject}, {"outcome", r.event.outcome}, {"detail", r.event.detail}};
}

nlohmann::json describe_harvested(const HarvestedCertificate& h) {
  return {{"address", h.address},
          {"subject", h.certificate.subject()},
          {"issuer", h.certificate.issuer()},
          {"not_after", h.certificate.not_after()},
          {"stored_at", h.stored_at},
          {"signing_time", h.signing_time ? nlohmann::json(*h.signing_time) : nlohmann::json()},
          {"capabilities", h.capabilities ? protocol::capabilities_to_json(*h.capabilities) : nlohmann::json()}};
}

std::string view(const smime::SecretBytes& s) { return std::string(reinterpret_cast<const char*>(s.data()), s.size()); }

}  // namespace

Result<int> KeystoreService::approvals_required(std::string_view task) {
  MAILKMS_TRY(stored, guarded_.get("config/approvals"));
  if (!stored) return 1;
  MAILKMS_TRY(j, detail::parse_row("config/approvals", *stored));
  return std::max(1, j.value(std::string(task), 1));
}

Result<int> KeystoreService::approvals_for(std::string_view op) {
  const auto task = tasks().find(op);
  if (task == tasks().end()) return 1;
  if (task->second != "admin-change") return approvals_required(task->second);
  // Who administers, and how many must agree, decide every other task's
  // approvals: changing them takes as many as the strictest task, or one
  // administrator could add a second self, or lower the count, and then
  // approve their own recovery.
  int strictest = 1;
  for (const auto& t : approval_tasks()) {
    MAILKMS_TRY(n, approvals_required(t));
    strictest = std::max(strictest, n);
  }
  return strictest;
}

Result<nlohmann::json> KeystoreService::administer(const Caller& caller, const protocol::Request& request) {
  const auto task = tasks().find(request.op);
  if (task == tasks().end() && !plain_operation(request.op)) {
    return make_error(Errc::invalid_argument, "unknown operation \"" + request.op + "\"");
  }
  MAILKMS_TRY(admin, session_administrator(caller, request));
  nlohmann::json params = request.params;
  params.erase("session");
  if (request.op == "logout") {
    MAILKMS_CHECK(admins_.logout(request.params.at("session").get<std::string>()));
    return nlohmann::json::object();
  }
  if (request.op == "approve") {
    MAILKMS_TRY(id, text_param(params, "id"));
    return approve(id, admin);
  }
  if (request.op == "request-fetch") {
    MAILKMS_TRY(id, text_param(params, "id"));
    return fetch_request(id, admin);
  }
  if (request.op == "rekey") return rekey(caller, params, "admin:" + admin);
  // Changing one's own password is no one else's business.
  const bool own_password = request.op == "admin-passwd" && params.contains("name") && params["name"] == admin;
  if (task != tasks().end() && !own_password) {
    MAILKMS_TRY(required, approvals_for(request.op));
    if (required > 1) return open_request(request.op, params, admin, required);
  }
  return execute(request.op, params, "admin:" + admin, admin);
}

Result<nlohmann::json> KeystoreService::open_request(const std::string& op, const nlohmann::json& params,
                                                     const std::string& admin, int required) {
  // 12 characters of base32, 60 random bits: an administrator types or
  // pastes it as an argument, so it never starts with "-" (which base64 and
  // its URL form can) and never needs quoting.
  constexpr std::string_view alphabet = "abcdefghijklmnopqrstuvwxyz234567";
  std::string safe_id;
  const auto random = detail::random_secret(12);
  for (std::size_t i = 0; i < random.size(); ++i) safe_id.push_back(alphabet[random.data()[i] % 32]);
  const std::string task = tasks().find(op)->second;
  // What approvers are shown: every parameter but passwords, which stay
  // behind the barrier with the rest.
  nlohmann::json shown = params;
  shown.erase("password");
  if (const auto bundle = shown.find("bundle"); bundle != shown.end() && bundle->is_string()) {
    *bundle = std::to_string(bundle->get_ref<const std::string&>().size()) + " bytes";  // sealed by its password
  }
  const nlohmann::json record{{"id", safe_id},          {"op", op},
                              {"task", task},           {"requested_by", admin},
                              {"approvals", {admin}},   {"required", required},
                              {"status", "pending"},    {"created", std::time(nullptr)},
                              {"subject", subject_of(params)},
                              {"parameters", shown}};
  MAILKMS_CHECK(guarded_.transaction([&]() -> Status {
    // Parameters may hold secrets (a PKCS#12 password): behind the barrier.
    MAILKMS_CHECK(barrier_.put("request-params/" + safe_id, params.dump()));
    MAILKMS_CHECK(guarded_.put("requests/" + safe_id, record.dump()));
    return audit_.append({"admin:" + admin, "request", safe_id, "ok",
                          op + " needs " + std::to_string(required) + " approvals"});
  }));
  return nlohmann::json{{"request", safe_id}, {"status", "pending"}, {"approvals", 1}, {"required", required}};
}

Result<nlohmann::json> KeystoreService::approve(const std::string& id, const std::string& admin) {
  // Checked and recorded in one transaction: of two approvals at once, the
  // second sees the first, and only the last one needed runs the request,
  // which is marked running before it does.
  nlohmann::json record;
  std::vector<std::string> approvals;
  int required = 1;
  MAILKMS_CHECK(guarded_.transaction([&]() -> Status {
    MAILKMS_TRY(stored, guarded_.get("requests/" + id));
    if (!stored) return make_error(Errc::not_found, "no request " + id);
    MAILKMS_TRY(parsed, detail::parse_row("requests/" + id, *stored));
    record = std::move(parsed);
    if (record.value("status", "") != "pending") return make_error(Errc::invalid_argument, "request " + id + " is not pending");
    approvals = record.value("approvals", std::vector<std::string>{});
    if (std::find(approvals.begin(), approvals.end(), admin) != approvals.end()) {
      return make_error(Errc::invalid_argument, admin + " has already approved " + id + ": another administrator must");
    }
    approvals.push_back(admin);
    record["approvals"] = approvals;
    required = record.value("required", 1);
    if (static_cast<int>(approvals.size()) >= required) record["status"] = "running";
    MAILKMS_CHECK(guarded_.put("requests/" + id, record.dump()));
    return audit_.append({"admin:" + admin, "approve", id, "ok",
                          std::to_string(approvals.size()) + " of " + std::to_string(required)});
  }));
  if (static_cast<int>(approvals.size()) < required) {
    return nlohmann::json{{"request", id}, {"status", "pending"}, {"approvals", approvals.size()}, {"required", required}};
  }
  Result<nlohmann::json> result = make_error(Errc::corrupt, "request " + id + " lost its parameters");
  MAILKMS_TRY(secret_params, barrier_.get("request-params/" + id));
  if (secret_params) {
    MAILKMS_TRY(params, detail::parse_row("request-params/" + id, view(*secret_params)));
    std::string actor = "admin:" + record.value("requested_by", "") + " (approved by";
    for (std::size_t i = 1; i < approvals.size(); ++i) actor += (i > 1 ? ", " : " ") + approvals[i];
    actor += ")";
    result = execute(record.value("op", ""), params, actor, record.value("requested_by", ""));
  }
  record["status"] = result ? "done" : "failed";
  record["message"] = result ? std::string() : result.error().message;
  MAILKMS_CHECK(guarded_.transaction([&]() -> Status {
    MAILKMS_CHECK(guarded_.remove("request-params/" + id));
    if (result) MAILKMS_CHECK(barrier_.put("request-results/" + id, result->dump()));
    return guarded_.put("requests/" + id, record.dump());
  }));
  if (!result) return std::move(result).error();
  return nlohmann::json{{"request", id}, {"status", "done"}, {"approvals", approvals.size()}, {"required", required}};
}

Result<nlohmann::json> KeystoreService::fetch_request(const std::string& id, const std::string& admin) {
  // Read and removed in one transaction: a result is fetched once only.
  std::optional<smime::SecretBytes> result;
  MAILKMS_CHECK(guarded_.transaction([&]() -> Status {
    MAILKMS_TRY(stored, guarded_.get("requests/" + id));
    if (!stored) return make_error(Errc::not_found, "no request " + id);
    MAILKMS_TRY(record, detail::parse_row("requests/" + id, *stored));
    if (record.value("requested_by", "") != admin) {
      return make_error(Errc::permission_denied, "only " + record.value("requested_by", "") + " may fetch " + id);
    }
    if (record.value("status", "") != "done") {
      return make_error(Errc::invalid_argument, "request " + id + " is " + record.value("status", "unknown"));
    }
    MAILKMS_TRY(found, barrier_.get("request-results/" + id));
    if (!found) return make_error(Errc::not_found, "the result of " + id + " was already fetched");
    MAILKMS_CHECK(guarded_.remove("request-results/" + id));
    result = std::move(found);
    return Ok{};
  }));
  return detail::parse_row("request-results/" + id, view(*result));
}

Result<nlohmann::json> KeystoreService::execute_service_peers(const std::string& op, const nlohmann::json& params,
                                                              const std::string& actor) {
  const auto describe_peer = [](const ServicePeer& p) {
    return nlohmann::json{{"name", p.name},
                          {"role", std::string(to_string(p.role))},
                          {"serial", p.serial},
                          {"fingerprint", p.fingerprint},
                          {"not_after", p.certificate.not_after()},
                          {"issued", p.issued},
                          {"issued_by", p.issued_by},
                          {"revoked_at", p.revoked_at ? nlohmann::json(*p.revoked_at) : nlohmann::json()}};
  };
  if (op == "service-ca") {
    MAILKMS_TRY(ca, service_ca_.certificate(actor));
    return nlohmann::json{{"certificate", ca.pem()}};
  }
  if (op == "gateway-add") {
    MAILKMS_TRY(name, text_param(params, "name"));
    MAILKMS_TRY(role_name, text_param_or(params, "role", "gateway"));
    MAILKMS_TRY(csr, text_param(params, "csr"));
    const auto role = parse_peer_role(role_name);
    if (!role) return make_error(Errc::invalid_argument, "a role is gateway, admin or keystore");
    MAILKMS_TRY(peer, service_ca_.issue(name, *role, csr, static_cast<int>(int_param(params, "days", 397)), actor));
    MAILKMS_TRY(ca, service_ca_.certificate(actor));
    nlohmann::json out = describe_peer(peer);
    out["certificate"] = peer.certificate.pem();
    out["ca"] = ca.pem();
    return out;
  }
  if (op == "gateway-list") {
    MAILKMS_TRY(all, service_ca_.list());
    nlohmann::json out = nlohmann::json::array();
    for (const auto& p : all) out.push_back(describe_peer(p));
    return out;
  }
  if (op == "gateway-revoke") {
    MAILKMS_TRY(name, text_param(params, "name"));
    MAILKMS_TRY(revoked, service_ca_.revoke(name, actor));
    {
      const std::lock_guard lock(peer_cache_mutex_);
      peer_cache_.clear();  // refused here at once; on other instances within kPeerRecheck
    }
    return nlohmann::json{{"revoked", revoked}};
  }
  return make_error(Errc::invalid_argument, "unknown operation \"" + op + "\"");
}

Result<nlohmann::json> KeystoreService::execute(const std::string& op, const nlohmann::json& params,
                                                const std::string& actor, const std::string& /*admin*/) {
  const nlohmann::json done = nlohmann::json::object();
  if (op.starts_with("gateway-") || op == "service-ca") return execute_service_peers(op, params, actor);
  if (op == "admin-list") {
    MAILKMS_TRY(all, admins_.list());
    nlohmann::json out = nlohmann::json::array();
    for (const auto& a : all) out.push_back({{"name", a.name}, {"created", a.created}});
    return out;
  }
  if (op == "admin-add" || op == "admin-passwd") {
    MAILKMS_TRY(name, text_param(params, "name"));
    MAILKMS_TRY(password, text_param(params, "password"));
    const Status s = op == "admin-add" ? admins_.add(name, password, actor) : admins_.set_password(name, password, actor);
    OPENSSL_cleanse(password.data(), password.size());
    MAILKMS_CHECK(s);
    return done;
  }
  if (op == "admin-remove") {
    MAILKMS_TRY(name, text_param(params, "name"));
    MAILKMS_CHECK(admins_.remove(name, actor));
    return done;
  }
  if (op == "approvals-set") {
    MAILKMS_TRY(task, text_param(params, "task"));
    const int count = int_param(params, "count", 0);
    const auto& all = approval_tasks();
    if (std::find(all.begin(), all.end(), task) == all.end() || count < 1 || count > 16) {
      return make_error(Errc::invalid_argument, "task is admin-change, ca-change, revoke or recover; count 1 to 16");
    }
    MAILKMS_TRY(admins, admins_.list());
    if (static_cast<std::size_t>(count) > admins.size()) {
      // One administrator asks and the others approve: a count above the
      // number of administrators could never be met.
      const std::string have = std::to_string(admins.size()) + (admins.size() == 1 ? " administrator" : " administrators");
      return make_error(Errc::invalid_argument,
                        task + " cannot need " + std::to_string(count) + " approvals with " + have +
                            ": add administrators first (mailkmsctl admin add NAME), then set the count; once "
                            "admin-change needs more than one, adding an administrator needs that many too");
    }
    MAILKMS_CHECK(guarded_.transaction([&]() -> Status {
      MAILKMS_TRY(stored, guarded_.get("config/approvals"));
      MAILKMS_TRY(policy, stored ? detail::parse_row("config/approvals", *stored) : nlohmann::json::object());
      policy[task] = count;
      MAILKMS_CHECK(guarded_.put("config/approvals", policy.dump()));
      return audit_.append({actor, "approvals-set", task, "ok", std::to_string(count)});
    }));
    return done;
  }
  if (op == "health") return health();
  if (op == "approvals-show") {
    nlohmann::json out = nlohmann::json::object();
    for (const auto& task : approval_tasks()) {
      MAILKMS_TRY(n, approvals_required(task));
      out[task] = n;
    }
    return out;
  }
  if (op == "ca-create-root") {
    MAILKMS_TRY(id, text_param(params, "id"));
    MAILKMS_TRY(type, key_type_param(params, KeyType::ec_p384));
    MAILKMS_TRY(name, text_param_or(params, "name", id));
    MAILKMS_TRY(ca, ca_.create_root(id, name, type, int_param(params, "validity_days", 3650), actor));
    return describe_ca(ca);
  }
  if (op == "ca-create-issuing") {
    MAILKMS_TRY(id, text_param(params, "id"));
    MAILKMS_TRY(parent, text_param(params, "parent"));
    MAILKMS_TRY(type, key_type_param(params, KeyType::ec_p256));
    MAILKMS_TRY(name, text_param_or(params, "name", id));
    MAILKMS_TRY(ca, ca_.create_issuing(id, parent, name, type,
                                       int_param(params, "validity_days", 1825), int_param(params, "priority", 100), actor));
    return describe_ca(ca);
  }
  if (op == "ca-request-external") {
    MAILKMS_TRY(id, text_param(params, "id"));
    MAILKMS_TRY(type, key_type_param(params, KeyType::ec_p256));
    MAILKMS_TRY(name, text_param_or(params, "name", id));
    MAILKMS_TRY(csr, ca_.request_external(id, name, type, int_param(params, "priority", 100), actor));
    return nlohmann::json{{"csr", csr}};
  }
  if (op == "ca-import-external") {
    MAILKMS_TRY(id, text_param(params, "id"));
    MAILKMS_TRY(pem, text_param(params, "pem"));
    MAILKMS_CHECK(ca_.import_external(id, pem, actor));
    return done;
  }
  if (op == "ca-enable" || op == "ca-disable") {
    MAILKMS_TRY(id, text_param(params, "id"));
    MAILKMS_CHECK(ca_.set_enabled(id, op == "ca-enable", actor));
    return done;
  }
  if (op == "ca-list") {
    MAILKMS_TRY(all, ca_.list());
    nlohmann::json out = nlohmann::json::array();
    for (const auto& ca : all) out.push_back(describe_ca(ca));
    return out;
  }
  if (op == "ca-export") {
    MAILKMS_TRY(id, text_param(params, "id"));
    MAILKMS_TRY(chain, ca_.chain_pem(id));
    return nlohmann::json{{"id", id}, {"chain", chain}};
  }
  if (op == "crl") {
    MAILKMS_TRY(id, text_param(params, "ca"));
    MAILKMS_TRY(crl, ca_.crl(id));
    return nlohmann::json{{"crl", protocol::base64(crl)}};
  }
  if (op == "user-add") {
    const auto list = params.find("addresses");
    if (list == params.end() || !list->is_array()) return make_error(Errc::invalid_argument, "\"addresses\" must be a list");
    std::vector<std::string> addresses;
    for (const auto& a : *list) {
      if (a.is_string()) addresses.push_back(a.get<std::string>());
    }
    const BulkSummary summary = users_.add_many(addresses, actor);
    nlohmann::json failed = nlohmann::json::array();
    for (const auto& [address, why] : summary.failed) failed.push_back({{"address", address}, {"reason", why}});
    return nlohmann::json{{"added", summary.added}, {"already_present", summary.already_present}, {"failed", failed}};
  }
  if (op == "enroll") {
    const auto list = params.find("addresses");
    if (list == params.end() || !list->is_array() || list->size() > 1000) {
      return make_error(Errc::invalid_argument, "\"addresses\" must be a list of at most 1000 addresses");
    }
    std::vector<std::string> addresses;
    for (const auto& a : *list) {
      if (a.is_string()) addresses.push_back(a.get<std::string>());
    }
    MAILKMS_TRY(outcomes, enrollment_.enroll(addresses, flag_param(params, "reissue"), actor));
    nlohmann::json results = nlohmann::json::array();
    std::map<EnrollStatus, std::size_t> counts;
    for (const auto& o : outcomes) {
      ++counts[o.status];
      results.push_back({{"address", o.address}, {"status", std::string(to_string(o.status))}, {"reason", o.reason}});
    }
    return nlohmann::json{{"results", results},
                          {"sent", counts[EnrollStatus::sent]},
                          {"already_enrolled", counts[EnrollStatus::already_enrolled]},
                          {"failed", counts[EnrollStatus::failed]}};
  }
  if (op == "user-list") {
    MAILKMS_TRY(after, text_param_or(params, "after", ""));
    MAILKMS_TRY(all, users_.list(after, static_cast<std::size_t>(int_param(params, "limit", 1000))));
    nlohmann::json out = nlohmann::json::array();
    for (const auto& u : all) out.push_back(describe_user(u));
    return out;
  }
  if (op == "user-show") {
    MAILKMS_TRY(address, text_param(params, "address"));
    MAILKMS_TRY(user, users_.get(address));
    nlohmann::json out = describe_user(user);
    nlohmann::json certificates = nlohmann::json::array();
    std::vector<std::string> serials = user.encryption_serials;
    if (!user.signing_serial.empty()) serials.push_back(user.signing_serial);
    for (const auto& serial : serials) {
      MAILKMS_TRY(record, ca_.certificate(serial));
      certificates.push_back({{"serial", serial},
                              {"profile", std::string(to_string(record.profile))},
                              {"ca", record.ca_id},
                              {"not_after", record.certificate.not_after()},
                              {"revoked", record.revoked_at.has_value()},
                              {"certificate", record.certificate.pem()}});
    }
    out["certificates"] = certificates;
    return out;
  }
  if (op == "user-enable" || op == "user-disable") {
    MAILKMS_TRY(address, text_param(params, "address"));
    MAILKMS_CHECK(users_.set_enabled(address, op == "user-enable", actor));
    return done;
  }
  if (op == "user-renew") {
    MAILKMS_TRY(address, text_param(params, "address"));
    MAILKMS_TRY(user, users_.renew(address, actor));
    return describe_user(user);
  }
  if (op == "revoke") {
    MAILKMS_TRY(reason_name, text_param_or(params, "reason", "unspecified"));
    const auto reason = parse_revocation_reason(reason_name);
    if (!reason) return make_error(Errc::invalid_argument, "unknown revocation reason");
    std::vector<std::string> serials;
    if (params.contains("serial")) {
      MAILKMS_TRY(serial, text_param(params, "serial"));
      serials.push_back(serial);
    } else {
      MAILKMS_TRY(address, text_param(params, "address"));
      MAILKMS_TRY(user, users_.get(address));
      if (!user.encryption_serials.empty()) serials.push_back(user.encryption_serials.back());
      if (!user.signing_serial.empty()) serials.push_back(user.signing_serial);
    }
    nlohmann::json revoked = nlohmann::json::array();
    for (const auto& serial : serials) {
      auto r = ca_.revoke(serial, *reason, actor);
      if (!r && r.error().code != Errc::already_exists) return std::move(r).error();
      revoked.push_back(serial);
    }
    return nlohmann::json{{"revoked", revoked}};
  }
  if (op == "recover") {
    MAILKMS_TRY(address, text_param(params, "address"));
    if (flag_param(params, "by_mail")) {
      // The user gets a token and picks the PKCS#12's password themselves.
      MAILKMS_TRY(expires, enrollment_.mail_recovery_token(address, actor));
      return nlohmann::json{{"mailed", Users::normalize(address)}, {"expires", expires}};
    }
    MAILKMS_TRY(password, text_param(params, "password"));
    Pkcs12Options options = pkcs12_;
    MAILKMS_TRY(profile, text_param_or(params, "profile", "modern"));
    if (profile == "legacy") options.profile = Pkcs12Profile::legacy;
    MAILKMS_TRY(entries, users_.escrowed_encryption_keys(address));
    MAILKMS_TRY(user, users_.get(address));
    MAILKMS_TRY(current, ca_.certificate(user.encryption_serials.back()));
    MAILKMS_TRY(chain, ca_.chain(current.ca_id));
    auto p12 = make_pkcs12(*ctx_, entries, chain, password, options);
    OPENSSL_cleanse(password.data(), password.size());
    if (!p12) return std::move(p12).error();
    MAILKMS_CHECK(audit_.append({actor, "recover", user.address, "ok",
                                 std::to_string(entries.size()) + " escrowed encryption key(s) exported"}));
    return nlohmann::json{{"pkcs12", protocol::base64(*p12)}, {"keys", entries.size()}};
  }
  if (op == "users-export") {
    MAILKMS_TRY(addresses, texts_param(params, "addresses"));
    MAILKMS_TRY(password, text_param(params, "password"));
    auto bundle = users_.export_bundle(addresses, password, {std::uint64_t{1} << 15, 8, 1}, actor);
    OPENSSL_cleanse(password.data(), password.size());  // exported or not
    if (!bundle) return std::move(bundle).error();
    return nlohmann::json{{"bundle", *bundle}};
  }
  if (op == "users-import") {
    MAILKMS_TRY(bundle, text_param(params, "bundle"));
    MAILKMS_TRY(password, text_param(params, "password"));
    MAILKMS_TRY(summary, users_.import_bundle(bundle, password, actor));
    OPENSSL_cleanse(password.data(), password.size());
    return nlohmann::json{{"imported", summary.imported}, {"skipped", summary.skipped}};
  }
  if (op == "trust-add") {
    MAILKMS_TRY(pem, text_param(params, "pem"));
    auto anchors = smime::Certificate::all_from_pem(pem);
    if (!anchors) return make_error(Errc::invalid_argument, anchors.error().message);
    MAILKMS_TRY(domains, scope_param(params));
    std::string scope;
    for (const auto& d : domains) scope += (scope.empty() ? "" : ", ") + d;
    nlohmann::json added = nlohmann::json::array();
    MAILKMS_CHECK(guarded_.transaction([&]() -> Status {
      for (const auto& anchor : *anchors) {
        if (X509_check_ca(anchor.native()) == 0) {
          return make_error(Errc::invalid_argument, anchor.subject() + " is not a CA certificate");
        }
        const std::string fingerprint = detail::hex_sha256(anchor.der());
        // The scope is inside the authenticated row (parse_trust_row).
        const std::string row =
            domains.empty() ? anchor.pem() : nlohmann::json{{"certificate", anchor.pem()}, {"domains", domains}}.dump();
        MAILKMS_CHECK(guarded_.put("trust/" + fingerprint, row));
        MAILKMS_CHECK(audit_.append({actor, "trust-add", anchor.subject(), "ok",
                                     "sha256 " + fingerprint + (scope.empty() ? "" : ", for " + scope)}));
        added.push_back(fingerprint);
      }
      return Ok{};
    }));
    return nlohmann::json{{"added", added}, {"domains", domains}};
  }
  if (op == "trust-remove") {
    MAILKMS_TRY(fingerprint, text_param(params, "fingerprint"));
    MAILKMS_TRY(existing, guarded_.get("trust/" + fingerprint));
    if (!existing) return make_error(Errc::not_found, "no added anchor " + fingerprint + " (our own roots cannot be removed)");
    MAILKMS_CHECK(guarded_.transaction([&]() -> Status {
      MAILKMS_CHECK(guarded_.remove("trust/" + fingerprint));
      return audit_.append({actor, "trust-remove", fingerprint, "ok", ""});
    }));
    return done;
  }
  if (op == "trust-system") {
    const auto enabled = params.find("enabled");
    if (enabled == params.end() || !enabled->is_boolean()) return make_error(Errc::invalid_argument, "\"enabled\" is true or false");
    MAILKMS_CHECK(guarded_.transaction([&]() -> Status {
      MAILKMS_CHECK(guarded_.put("config/trust-system-roots", enabled->get<bool>() ? "1" : "0"));
      return audit_.append({actor, "trust-system", "system roots", "ok", enabled->get<bool>() ? "trusted" : "not trusted"});
    }));
    return done;
  }
  if (op == "trust-list") return trust_anchors();
  if (op == "harvested-list") {
    MAILKMS_TRY(after, text_param_or(params, "after", ""));
    MAILKMS_TRY(all, harvested_.list(after, static_cast<std::size_t>(int_param(params, "limit", 1000))));
    nlohmann::json out = nlohmann::json::array();
    for (const auto& h : all) out.push_back(describe_harvested(h));
    return out;
  }
  if (op == "harvested-remove") {
    MAILKMS_TRY(address, text_param(params, "address"));
    MAILKMS_CHECK(harvested_.remove(address, actor));
    return done;
  }
  if (op == "audit-show" || op == "audit-verify" || op == "audit-checkpoint") {
    // Gateways' records are written in batches, outsiders' events counted:
    // what happened up to now is shown.
    (void)gateway_audit_.flush();
    (void)audit_limiter_.write_counts(true);
  }
  if (op == "audit-show") {
    MAILKMS_TRY(records, audit_.read(static_cast<std::uint64_t>(std::max(0, int_param(params, "after", 0))),
                                     static_cast<std::size_t>(int_param(params, "limit", 100))));
    nlohmann::json out = nlohmann::json::array();
    for (const auto& r : records) out.push_back(describe_record(r));
    return out;
  }
  if (op == "audit-verify") return verify_audit(params);
  if (op == "audit-checkpoint") {
    MAILKMS_TRY(made, checkpoints_.checkpoint(true));
    if (!made) return make_error(Errc::not_found, "the audit log is empty: nothing to checkpoint");
    return nlohmann::json::parse(made->to_line());
  }
  if (op == "audit-key") {
    MAILKMS_TRY(pem, checkpoints_.public_key_pem());
    return nlohmann::json{{"public_key", pem}};
  }
  if (op == "requests-list") {
    MAILKMS_TRY(rows, guarded_.scan("requests/", {}, 1000));
    nlohmann::json out = nlohmann::json::array();
    for (const auto& [key, value] : rows) {
      MAILKMS_TRY(request, detail::parse_row(key, value));
      out.push_back(std::move(request));
    }
    return out;
  }
  return make_error(Errc::invalid_argument, "unknown operation \"" + op + "\"");
}

}  // namespace mailkms::keystore
