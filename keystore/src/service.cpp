#include "mailkms/keystore/service.hpp"

#include <openssl/crypto.h>

#include <algorithm>

#include "mailkms/keystore/rotation.hpp"

#include "mailkms/smime/sign.hpp"
#include "mailkms/smime/signed_attributes.hpp"

namespace mailkms::keystore {
namespace {

constexpr std::string_view kSealKey = "core/seal";

Result<std::string> string_param(const nlohmann::json& params, const char* name) {
  const auto it = params.find(name);
  if (it == params.end() || !it->is_string()) {
    return make_error(Errc::invalid_argument, std::string("missing string parameter \"") + name + "\"");
  }
  return it->get<std::string>();
}

// How far a signingTime a gateway sends may be from our clock.
constexpr std::chrono::seconds kSigningTimeSkew{300};

// A certificate's chain is what a signature may carry: a handful, not hundreds.
constexpr std::size_t kMaxChain = 8;

// What a gateway offers with "remember-certificate", read but not yet judged.
Result<HarvestedCertificate> harvest_from_params(const nlohmann::json& params, std::time_t now) {
  MAILKMS_TRY(given_address, string_param(params, "address"));
  std::string address = Users::normalize(given_address);
  if (!Users::plausible_address(address)) return make_error(Errc::invalid_argument, "not a mail address: " + given_address);
  MAILKMS_TRY(pem, string_param(params, "certificate"));
  auto certificate = smime::Certificate::from_pem(pem);
  if (!certificate) return make_error(Errc::invalid_argument, "the certificate does not parse: " + certificate.error().message);
  HarvestedCertificate record{std::move(address), std::move(*certificate), {}, {}, {}, now};
  if (const auto chain = params.find("chain"); chain != params.end() && !chain->is_null()) {
    if (!chain->is_array() || chain->size() > kMaxChain) {
      return make_error(Errc::invalid_argument,
                        "\"chain\" must be an array of at most " + std::to_string(kMaxChain) + " PEM certificates");
    }
    for (const auto& c : *chain) {
      if (!c.is_string()) return make_error(Errc::invalid_argument, "chain certificates are PEM strings");
      auto parsed = smime::Certificate::from_pem(c.get<std::string>());
      if (!parsed) return make_error(Errc::invalid_argument, "a chain certificate does not parse: " + parsed.error().message);
      record.chain.push_back(std::move(*parsed));
    }
  }
  if (const auto caps = params.find("capabilities"); caps != params.end() && !caps->is_null()) {
    MAILKMS_TRY(capabilities, protocol::capabilities_from_json(*caps));
    record.capabilities = std::move(capabilities);
  }
  if (const auto t = params.find("signing_time"); t != params.end() && !t->is_null()) {
    if (!t->is_number_integer()) return make_error(Errc::invalid_argument, "\"signing_time\" is a Unix time");
    // A time far ahead would keep every later message's certificate out.
    if (t->get<std::int64_t>() > now + 86400) {
      return make_error(Errc::invalid_argument, "\"signing_time\" is more than a day in the future");
    }
    // The sender writes it: a time ahead of now would keep this certificate
    // against later messages' until then. It counts as now.
    record.signing_time = std::min(t->get<std::time_t>(), now);
  }
  return record;
}

}  // namespace

// An added anchor's row: its PEM, or (scoped to domains) a JSON object
// with the PEM and the domains. The row is authenticated as a whole, so a
// scope cannot be widened in the database.
Result<KeystoreService::TrustAnchor> KeystoreService::parse_trust_row(const std::string& key, const std::string& value) {
  const Error bad = make_error(Errc::corrupt, key + " does not parse");
  std::vector<std::string> domains;
  std::string pem = value;
  if (value.starts_with('{')) {
    const auto j = nlohmann::json::parse(value, nullptr, false);
    if (!j.is_object() || !j.contains("certificate") || !j["certificate"].is_string() || !j.contains("domains") ||
        !j["domains"].is_array() || j["domains"].empty()) {
      return bad;
    }
    pem = j["certificate"].get<std::string>();
    for (const auto& d : j["domains"]) {
      if (!d.is_string()) return bad;
      domains.push_back(d.get<std::string>());
    }
  }
  auto certificate = smime::Certificate::from_pem(pem);
  if (!certificate) return bad;
  return TrustAnchor{"added", key.substr(std::string_view("trust/").size()), std::move(*certificate), std::move(domains)};
}

namespace {

// The CRLs a gateway fetched for the certificate it offers (base64 DER).
Result<std::vector<std::string>> crls_from_params(const nlohmann::json& params) {
  std::vector<std::string> crls;
  const auto given = params.find("crls");
  if (given == params.end() || given->is_null()) return crls;
  if (!given->is_array() || given->size() > 4) return make_error(Errc::invalid_argument, "\"crls\" is a list of at most 4 CRLs");
  for (const auto& c : *given) {
    MAILKMS_TRY(der, protocol::unbase64(c));
    crls.push_back(std::move(der));
  }
  return crls;
}

std::vector<std::string> chain_pems(const std::vector<smime::Certificate>& chain) {
  std::vector<std::string> out;
  out.reserve(chain.size());
  for (const auto& c : chain) out.push_back(c.pem());
  return out;
}

}  // namespace

std::string describe(const Caller& caller) {
  if (caller.tls) {
    return "tls " + caller.tls->name + " (" + caller.tls->role + ", serial " + caller.tls->serial + ", from " +
           caller.tls->address + ")";
  }
  return "uid " + std::to_string(caller.uid) + " (pid " + std::to_string(caller.pid) + ")";
}

KeystoreService::KeystoreService(std::unique_ptr<Storage> storage, smime::CryptoContextPtr ctx,
                                 // cppcheck-suppress passedByValue ; its parts are moved into the members
                                 AccessPolicy access, Policies policies)
    : storage_(std::move(storage)),
      guarded_(*storage_),
      ctx_(std::move(ctx)),
      access_(std::move(access)),
      local_domains_(std::move(policies.local_domains)),
      barrier_(guarded_),
      audit_(guarded_, barrier_),
      audit_limiter_(audit_),
      checkpoints_(guarded_, barrier_, audit_, ctx_),
      ca_(guarded_, barrier_, audit_, ctx_),
      service_ca_(guarded_, barrier_, audit_, ctx_),
      users_(guarded_, barrier_, audit_, ca_, ctx_, policies.users),
      admins_(guarded_, audit_, policies.admins, policies.clock),
      harvested_(guarded_, barrier_, audit_),
      pkcs12_(policies.pkcs12),
      enrollment_(guarded_, barrier_, audit_, audit_limiter_, ca_, users_, ctx_, policies.pkcs12,
                  std::move(policies.enrollment), policies.clock),
      gateway_audit_(audit_),
      clock_(std::move(policies.clock)) {}

Result<std::unique_ptr<KeystoreService>> KeystoreService::open(const DatabaseLocation& database,
                                                               smime::CryptoContextPtr ctx, AccessPolicy access,
                                                               Policies policies) {
  MAILKMS_TRY(storage, open_storage(database, OpenMode::existing));
  std::unique_ptr<KeystoreService> service(
      new KeystoreService(std::move(storage), std::move(ctx), std::move(access), std::move(policies)));
  MAILKMS_TRY(seal, service->seal_record());
  (void)seal;
  service->database_ = database.describe();
  return service;
}

Result<std::unique_ptr<KeystoreService>> KeystoreService::initialize(const DatabaseLocation& database,
                                                                     smime::CryptoContextPtr ctx,
                                                                     const SealRecord& seal,
                                                                     smime::SecretBytes master_key,
                                                                     const std::string& first_admin,
                                                                     std::string_view admin_password,
                                                                     AccessPolicy access, Policies policies) {
  if (database.is_file() && std::filesystem::exists(database.file)) {
    return make_error(Errc::already_exists, database.describe() + " exists: a keystore is never initialized twice");
  }
  if (!Admins::valid_name(first_admin)) return make_error(Errc::invalid_argument, "not a valid administrator name");
  MAILKMS_TRY(storage, open_storage(database, OpenMode::create));
  MAILKMS_TRY(existing, storage->scan("", {}, 1));
  if (!existing.empty()) {
    return make_error(Errc::already_exists,
                      database.describe() + " already holds records: a keystore is never initialized twice");
  }
  std::unique_ptr<KeystoreService> service(
      new KeystoreService(std::move(storage), std::move(ctx), std::move(access), std::move(policies)));
  MAILKMS_CHECK(service->storage_->put(kSealKey, seal.to_json()));
  MAILKMS_CHECK(service->open_barrier(std::move(master_key)));
  MAILKMS_CHECK(service->audit_.append({"mailkmsctl init", "init", "keystore", "ok",
                                        "sealed with " + std::string(to_string(seal.method))}));
  MAILKMS_CHECK(service->adopt_unauthenticated_rows("mailkmsctl init"));
  MAILKMS_CHECK(service->admins_.add(first_admin, admin_password, "mailkmsctl init"));
  service->database_ = database.describe();
  return service;
}

Result<SealRecord> KeystoreService::seal_record() {
  MAILKMS_TRY(stored, storage_->get(kSealKey));
  if (!stored) return make_error(Errc::not_found, "the database is not an initialized keystore (no seal)");
  return SealRecord::from_json(*stored);
}

void KeystoreService::set_access(AccessPolicy access) {
  const std::unique_lock lock(access_mutex_);
  access_ = std::move(access);
}

void KeystoreService::set_local_domains(std::vector<std::string> domains) {
  const std::unique_lock lock(access_mutex_);
  local_domains_ = std::move(domains);
}

Result<std::optional<std::string>> KeystoreService::served_domain(std::string_view address) {
  const std::string domain = Users::normalize(address.substr(address.rfind('@') + 1));
  {
    const std::shared_lock lock(access_mutex_);
    for (const auto& local : local_domains_) {
      if (smime::address_in_domain(address, local) || smime::address_in_domain(address, "." + local)) {
        return std::optional<std::string>(local);
      }
    }
  }
  // The address's domain and each one above it, so that a user at
  // example.org keeps hr.example.org ours too.
  for (std::string_view candidate = domain; candidate.find('.') != std::string_view::npos;
       candidate.remove_prefix(candidate.find('.') + 1)) {
    MAILKMS_TRY(ours, users_.has_domain(candidate));
    if (ours) return std::optional<std::string>(candidate);
  }
  return std::optional<std::string>();
}

bool KeystoreService::is_gateway(const Caller& caller) const {
  // Admitted already (check_remote): a gateway's certificate, in force.
  if (caller.tls) return caller.tls->role == to_string(PeerRole::gateway);
  const std::shared_lock lock(access_mutex_);
  return caller.uid == 0 ||
         std::find(access_.gateway_uids.begin(), access_.gateway_uids.end(), caller.uid) != access_.gateway_uids.end() ||
         std::find(access_.gateway_gids.begin(), access_.gateway_gids.end(), caller.gid) != access_.gateway_gids.end();
}

// How long a TLS peer's admission is taken as read: a certificate revoked
// through another instance is refused here within this.
constexpr auto kPeerRecheck = std::chrono::seconds(1);

Status KeystoreService::check_remote(const Caller& caller, const std::string& op, bool gateway_op) {
  const TlsPeer& peer = *caller.tls;
  if (op == protocol::op::status) return Ok{};
  const PeerRole wanted = gateway_op ? PeerRole::gateway : PeerRole::admin;
  const auto refuse = [&](const std::string& why) -> Status {
    (void)audit_limiter_.record({describe(caller), op, "", "denied", why});
    return make_error(Errc::permission_denied, op + " refused to " + describe(caller) + ": " + why);
  };
  if (peer.role != to_string(wanted)) {
    return refuse("its certificate is for the " + peer.role + " role, and " + op + " is for the " +
                  std::string(to_string(wanted)) + " role");
  }
  // Sealed, no row can be read: an administrator's host may unseal (with
  // the secret, as anyone on the Unix socket may); nothing else passes.
  if (barrier_.sealed()) {
    if (op == protocol::op::unseal) return Ok{};
    return make_error(Errc::sealed, "the keystore is sealed");
  }
  if (auto admitted = admit_peer(peer, wanted); !admitted) {
    if (admitted.error().code != Errc::permission_denied) return admitted;
    return refuse(admitted.error().message);
  }
  return Ok{};
}

Status KeystoreService::admit_peer(const TlsPeer& peer, PeerRole role) {
  const auto now = clock_.steady();
  {
    const std::lock_guard lock(peer_cache_mutex_);
    const auto seen = peer_cache_.find(peer.fingerprint);
    if (seen != peer_cache_.end() && now - seen->second.checked < kPeerRecheck) {
      if (seen->second.refusal) return *seen->second.refusal;
      if (seen->second.role == role) return Ok{};
    }
  }
  PeerVerdict verdict{now, std::nullopt, role};
  auto admitted = service_ca_.admit(peer.serial, peer.fingerprint);
  if (!admitted) {
    if (admitted.error().code != Errc::permission_denied) return std::move(admitted).error();  // not remembered
    verdict.refusal = std::move(admitted).error();
  } else if (admitted->role != role) {
    verdict.refusal = make_error(Errc::permission_denied, "its certificate was issued for the " +
                                                              std::string(to_string(admitted->role)) + " role");
  }
  const std::lock_guard lock(peer_cache_mutex_);
  if (peer_cache_.size() >= 4096) peer_cache_.clear();
  peer_cache_[peer.fingerprint] = verdict;
  if (verdict.refusal) return *verdict.refusal;
  return Ok{};
}

Result<nlohmann::json> KeystoreService::handle(const Caller& caller, const protocol::Request& request) {
  if (request.op == "rekey") {
    // A rotation of the master key has the storage and the keys to itself:
    // nothing sealed or tagged under the old key lands after it. Only an
    // administrator's waits for every other request, or anyone on the
    // socket could stall the keystore at will.
    {
      const std::shared_lock shared(rotation_mutex_);
      const auto admitted = session_administrator(caller, request);
      if (!admitted) {
        report_integrity(request.op, &admitted.error());
        return admitted.error();
      }
    }
    // Held while the rotation waits for the requests in progress, so that
    // new ones queue behind it rather than keep it waiting for ever.
    std::unique_lock gate(rotation_gate_);
    const std::unique_lock exclusive(rotation_mutex_);
    gate.unlock();
    return handle_locked(caller, request);
  }
  auto result = [&] {
    { const std::lock_guard gate(rotation_gate_); }
    const std::shared_lock shared(rotation_mutex_);
    return handle_locked(caller, request);
  }();
  if (guarded_.key_superseded()) reopen_after_rotation_elsewhere();
  return result;
}

void KeystoreService::reopen_after_rotation_elsewhere() {
  // As a rotation here does: with every other request out of the way.
  std::unique_lock gate(rotation_gate_);
  const std::unique_lock exclusive(rotation_mutex_);
  gate.unlock();
  if (!guarded_.key_superseded()) return;  // another request's thread did it
  close_barrier();
  std::string note =
      "sealed: the master key this instance held is no longer the database's (rotated through another instance)";
  if (unseal_key_file_.empty()) {
    note += "; unseal it again";
  } else if (const Status unsealed = unseal_with_key_file(unseal_key_file_); !unsealed) {
    note += "; cannot unseal again with " + unseal_key_file_.string() + ": " + unsealed.error().message;
  } else {
    note += "; unsealed again with " + unseal_key_file_.string() + ", under the new key";
  }
  if (report_integrity_) report_integrity_(note);
}

Result<std::string> KeystoreService::session_administrator(const Caller& caller, const protocol::Request& request) {
  if (barrier_.sealed()) return make_error(Errc::sealed, "the keystore is sealed");
  const auto session = request.params.find("session");
  auto admin = admins_.authenticate(session != request.params.end() && session->is_string() ? session->get<std::string>() : "");
  if (!admin) (void)audit_limiter_.record({describe(caller), request.op, "", "denied", admin.error().message});
  return admin;
}

Result<nlohmann::json> KeystoreService::handle_locked(const Caller& caller, const protocol::Request& request) {
  auto result = dispatch_contained(caller, request);
  report_integrity(request.op, result ? nullptr : &result.error());
  return result;
}

// A field of the wrong type in a row that parsed (read with json::value or
// get<>) throws from deep in an operation; the storage transaction it was
// read in has rolled back on the way out. The request fails as a corrupt
// row; the keystore serves the next one.
Result<nlohmann::json> KeystoreService::dispatch_contained(const Caller& caller, const protocol::Request& request) {
  try {
    return dispatch(caller, request);
  } catch (const nlohmann::json::exception& e) {
    return make_error(Errc::corrupt, "a stored row read by " + request.op + " has a field of the wrong type: " + e.what());
  }
}

Result<nlohmann::json> KeystoreService::dispatch(const Caller& caller, const protocol::Request& request) {
  namespace op = protocol::op;
  const bool gateway_op = request.op == op::lookup_certificates || request.op == op::signing_identity ||
                          request.op == op::sign || request.op == op::unwrap || request.op == "trust-anchors" ||
                          request.op == "crls" || request.op == op::remember_certificate ||
                          request.op == op::redeem_token || request.op == op::check_mail_mark;
  if (caller.tls) MAILKMS_CHECK(check_remote(caller, request.op, gateway_op));
  if (request.op == op::status) return status();
  if (request.op == op::unseal) return unseal(caller, request.params);
  if (request.op == "login") {
    if (barrier_.sealed()) return make_error(Errc::sealed, "the keystore is sealed");
    MAILKMS_TRY(name, string_param(request.params, "name"));
    MAILKMS_TRY(password, string_param(request.params, "password"));
    auto session = admins_.login(name, password, describe(caller));
    OPENSSL_cleanse(password.data(), password.size());  // refused or not
    if (!session) return std::move(session).error();
    return nlohmann::json{{"token", session->token}, {"expires", session->expires}};
  }
  if (!gateway_op) return administer(caller, request);
  if (!is_gateway(caller)) {
    (void)audit_limiter_.record({describe(caller), request.op, "", "denied", "not a gateway"});
    return make_error(Errc::permission_denied, request.op + " is for gateways; " + describe(caller) + " is not one");
  }
  if (barrier_.sealed()) return make_error(Errc::sealed, "the keystore is sealed");
  if (request.op == op::lookup_certificates) return lookup_certificates(request.params);
  if (request.op == "trust-anchors") return trust_anchors();
  if (request.op == "crls") return crls();
  // Harvesting and redemption audit themselves, each outcome with its reason.
  if (request.op == op::remember_certificate) return remember_certificate(caller, request.params);
  if (request.op == op::redeem_token) return redeem_token(caller, request.params);
  if (request.op == op::signing_identity) return audited(caller, request, signing_identity(request.params));
  if (request.op == op::check_mail_mark) return check_mail_mark(caller, request.params);
  MAILKMS_CHECK(take_key_use(caller));
  if (request.op == op::sign) return audited(caller, request, sign(request.params));
  return audited(caller, request, unwrap(request.params));
}

Status KeystoreService::take_key_use(const Caller& caller) {
  unsigned rate = 0;
  {
    const std::shared_lock lock(access_mutex_);
    rate = access_.key_uses_per_second;
  }
  const auto now = clock_.steady();
  const std::lock_guard lock(gateway_use_mutex_);
  GatewayUse& use = gateway_use_[caller.principal()];
  if (rate == 0) return Ok{};
  // A token bucket a second deep: bursts up to the rate, then the rate.
  const double elapsed = std::chrono::duration<double>(now - use.refilled).count();
  use.tokens = use.tokens < 0 ? rate : std::min<double>(rate, use.tokens + elapsed * rate);
  use.refilled = now;
  if (use.tokens < 1) {
    ++use.rate_limited;  // counted, not audited one by one: a flood must not fill the log
    return make_error(Errc::permission_denied, "rate limit: " + describe(caller) + " used users' keys more than " +
                                                   std::to_string(rate) +
                                                   " times a second (keystore.gateway_rate_limit); try again shortly");
  }
  use.tokens -= 1;
  return Ok{};
}

Result<nlohmann::json> KeystoreService::audited(const Caller& caller, const protocol::Request& request,
                                                Result<nlohmann::json> result) {
  const auto& p = request.params;
  const auto text = [&](const char* name) {
    const auto it = p.find(name);
    return it != p.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  AuditEvent event{"gateway:" + describe(caller), request.op, text("address"), result ? "ok" : "refused", ""};
  if (!result) {
    event.detail = result.error().message;
  } else if (request.op == protocol::op::sign) {
    event.detail = text("digest");
  } else if (request.op == protocol::op::unwrap) {
    event.detail = "key " + text("serial");
  } else if (request.op == protocol::op::remember_certificate) {
    const bool stored = result->value("stored", false);
    event.outcome = stored ? "ok" : "not stored";
    event.detail = stored ? "harvested" : result->value("reason", "");
  }
  MAILKMS_CHECK(gateway_audit_.queue(std::move(event)));
  if (result && (request.op == protocol::op::sign || request.op == protocol::op::unwrap)) {
    const std::lock_guard lock(gateway_use_mutex_);
    auto& use = gateway_use_[caller.principal()];
    ++(request.op == protocol::op::sign ? use.signed_count : use.unwrapped);
  }
  return result;
}

Result<nlohmann::json> KeystoreService::check_mail_mark(const Caller& caller, const nlohmann::json& params) {
  MAILKMS_TRY(mark, string_param(params, "mark"));
  MAILKMS_TRY(recipient, string_param(params, "recipient"));
  MAILKMS_TRY(message_id, string_param(params, "message_id"));
  MAILKMS_TRY(ours, enrollment_.mail_mark().check(mark, recipient, message_id, clock_.wall()));
  if (!ours) {
    // Someone on a gateway's host sent mail in the keystore's name.
    MAILKMS_CHECK(audit_limiter_.record({describe(caller), std::string(protocol::op::check_mail_mark), Users::normalize(recipient), "refused",
                                 "mail from the enrollment address without the keystore's mark, Message-ID " +
                                     message_id.substr(0, 200)}));
  }
  return nlohmann::json{{"ours", ours}};
}

Result<nlohmann::json> KeystoreService::status() {
  nlohmann::json gateways = nlohmann::json::array();
  {
    const std::lock_guard lock(gateway_use_mutex_);
    for (const auto& [principal, use] : gateway_use_) {
      gateways.push_back({{"gateway", principal},
                          {"signed", use.signed_count},
                          {"unwrapped", use.unwrapped},
                          {"rate_limited", use.rate_limited}});
    }
  }
  nlohmann::json out{{"sealed", barrier_.sealed()},
                     {"gateways", std::move(gateways)},
                     {"audit_counted", audit_limiter_.counted()}};
  // What a rotation asks for, and which key is in use: a problem reading
  // either is shown, not a reason to hide the rest.
  if (const auto seal = seal_record()) out["seal"] = std::string(to_string(seal->method));
  if (!barrier_.sealed()) {
    if (const auto generation = key_generation(guarded_)) {
      out["key_generation"] = generation->number;
      out["key_rotated"] = generation->rotated;
    } else {
      out["key_generation_problem"] = generation.error().message;
    }
  }
  return out;
}

Status KeystoreService::finish_unseal(Result<smime::SecretBytes> master, const std::string& actor, const std::string& how,
                                     std::optional<std::string> peer) {
  const std::lock_guard lock(unseal_mutex_);
  if (!master) {
    if (peer) count_wrong_secret(*peer);
    return std::move(master).error();
  }
  MAILKMS_CHECK(open_barrier(std::move(*master)));
  int failures = 0;
  for (const auto& [uid, throttle] : unseal_throttles_) failures += throttle.failures;
  unseal_throttles_.clear();
  Status audited = audit_.append({actor, "unseal", "keystore", "ok",
                                  how + (failures > 0 ? ", after " + std::to_string(failures) + " wrong attempt(s)" : "")});
  if (audited) audited = adopt_unauthenticated_rows(actor);
  if (!audited) {
    report_integrity("unseal", &audited.error());
    close_barrier();  // an unseal that cannot be audited, or finds its rows tampered with, does not happen
    return audited;
  }
  check_and_checkpoint_audit();
  return audited;
}

Status KeystoreService::open_barrier(smime::SecretBytes master_key) {
  MAILKMS_CHECK(guarded_.unlock(master_key));
  Status unsealed = barrier_.unseal(std::move(master_key));
  if (!unsealed) guarded_.lock();
  return unsealed;
}

void KeystoreService::close_barrier() {
  checkpoints_.forget();
  barrier_.seal();
  guarded_.lock();
}

Status KeystoreService::adopt_unauthenticated_rows(const std::string& actor) {
  MAILKMS_TRY(has_manifest, guarded_.has_manifest());
  if (has_manifest) return Ok{};
  // A keystore whose rows were authenticated once never goes back: the
  // audit log (hash-chained, and anchored outside the database) says so.
  std::uint64_t after = 0;
  while (true) {
    MAILKMS_TRY(records, audit_.read(after, 1000));
    if (records.empty()) break;
    for (const auto& r : records) {
      if (r.event.action == "integrity-init") {
        return make_error(Errc::corrupt, "integrity check failed: the manifest of authenticated rows is missing, "
                                         "though audit record " + std::to_string(r.sequence) + " says it was made");
      }
    }
    after = records.back().sequence;
  }
  return guarded_.transaction([&]() -> Status {
    MAILKMS_TRY(adopted, guarded_.adopt_unauthenticated_rows());
    return audit_.append({actor, "integrity-init", "keystore", "ok",
                          std::to_string(adopted) + " existing row(s) authenticated; rows are authenticated from here on"});
  });
}

void KeystoreService::report_integrity(const std::string& op, const Error* error) {
  auto reports = guarded_.take_tamper_reports();
  for (const auto& r : reports) {
    if (report_integrity_) report_integrity_("integrity check failed in " + op + ": " + r.key + ": " + r.problem);
    if (!barrier_.sealed()) (void)audit_.append({"keystore", "integrity", r.key, "failed", r.problem});
  }
  // Failures found elsewhere (an audit head older than its log) are logged.
  if (reports.empty() && error != nullptr && error->code == Errc::corrupt && report_integrity_) {
    report_integrity_("integrity check failed in " + op + ": " + error->message);
  }
}

void KeystoreService::count_wrong_secret(const std::string& peer) {
  // Each wrong secret doubles the wait before that peer's next attempt
  // (to 60 s). Per peer: anyone who can reach the socket could otherwise
  // keep the administrators from unsealing by guessing all the time.
  if (unseal_throttles_.size() >= 4096 && !unseal_throttles_.contains(peer)) unseal_throttles_.clear();
  UnsealThrottle& throttle = unseal_throttles_[peer];
  ++throttle.failures;
  throttle.next = clock_.steady() + std::chrono::seconds(std::min(60, 1 << std::min(throttle.failures, 6)));
}

Status KeystoreService::check_unseal_throttle(const Caller& caller) {
  const std::lock_guard lock(unseal_mutex_);
  const auto now = clock_.steady();
  const auto throttle = unseal_throttles_.find(caller.principal());
  if (throttle != unseal_throttles_.end() && now < throttle->second.next) {
    const auto wait = std::chrono::duration_cast<std::chrono::seconds>(throttle->second.next - now).count() + 1;
    return make_error(Errc::permission_denied, "too many wrong attempts from " + describe(caller) + ": try again in " +
                                                   std::to_string(wait) + " s");
  }
  return Ok{};
}

Result<nlohmann::json> KeystoreService::unseal(const Caller& caller, const nlohmann::json& params) {
  if (!barrier_.sealed()) return nlohmann::json{{"sealed", false}};
  MAILKMS_CHECK(check_unseal_throttle(caller));
  MAILKMS_TRY(record, seal_record());
  Result<smime::SecretBytes> master = make_error(Errc::invalid_argument, "give a passphrase or shares");
  std::string how;
  if (const auto passphrase = params.find("passphrase"); passphrase != params.end() && passphrase->is_string()) {
    std::string secret = passphrase->get<std::string>();
    master = unseal_with_passphrase(record, secret);
    OPENSSL_cleanse(secret.data(), secret.size());
    how = "passphrase";
  } else if (const auto shares = params.find("shares"); shares != params.end() && shares->is_array()) {
    std::vector<std::string> texts;
    for (const auto& s : *shares) {
      if (!s.is_string()) return make_error(Errc::invalid_argument, "shares are strings");
      texts.push_back(s.get<std::string>());
    }
    master = unseal_with_shares(record, texts);
    how = std::to_string(texts.size()) + " shares";
  }
  if (!master && master.error().code == Errc::invalid_argument) return std::move(master).error();
  MAILKMS_CHECK(finish_unseal(std::move(master), describe(caller), how, caller.principal()));
  return nlohmann::json{{"sealed", false}};
}

Status KeystoreService::unseal_with_key_file(const std::filesystem::path& path) {
  unseal_key_file_ = path;  // read again, and only, for a rotation
  MAILKMS_TRY(record, seal_record());
  return finish_unseal(keystore::unseal_with_key_file(record, path), "mailkms-keystored", "key file " + path.string(),
                       std::nullopt);
}

Result<nlohmann::json> KeystoreService::lookup_certificates(const nlohmann::json& params) {
  const auto addresses = params.find("addresses");
  if (addresses == params.end() || !addresses->is_array() || addresses->size() > protocol::kMaxLookupAddresses) {
    return make_error(Errc::invalid_argument, "\"addresses\" must be an array of at most " +
                                                  std::to_string(protocol::kMaxLookupAddresses) + " addresses");
  }
  nlohmann::json found = nlohmann::json::object();
  nlohmann::json missing = nlohmann::json::array();
  const std::time_t now = std::time(nullptr);
  std::shared_ptr<const smime::TrustStore> trust;
  for (const auto& a : *addresses) {
    if (!a.is_string()) return make_error(Errc::invalid_argument, "addresses are strings");
    const std::string address = Users::normalize(a.get<std::string>());
    // The user's row, then their certificate and its revocation: three
    // reads, each one round trip on PostgreSQL, and no snapshot around them
    // (it would add two). Read after the user's row, the revocation is as
    // new as it gets; certificates do not change once written.
    std::optional<UserRecord> user;
    std::optional<CertificateAuthority::Summary> current;
    if (auto record = users_.get(address); record) {
      user = std::move(*record);
    } else if (record.error().code != Errc::not_found) {
      return std::move(record).error();
    }
    if (user && user->enabled && !user->encryption_serials.empty()) {
      MAILKMS_TRY(summary, ca_.summary(user->encryption_serials.back()));
      current = std::move(summary);
    }
    if (!user) {
      MAILKMS_TRY(harvested, usable_harvested(address, trust));
      if (!harvested) {
        missing.push_back(address);
        continue;
      }
      std::vector<std::string> chain = chain_pems(harvested->chain);
      nlohmann::json entry{{"certificate", harvested->certificate.pem()}, {"chain", std::move(chain)}, {"source", "harvested"}};
      if (harvested->capabilities) entry["capabilities"] = protocol::capabilities_to_json(*harvested->capabilities);
      found[address] = std::move(entry);
      continue;
    }
    // Our users' certificates come from our CA alone, even when one is
    // disabled; a revoked or expired one is never handed out to encrypt to.
    if (!current || current->revoked || current->not_after <= now) {
      missing.push_back(address);
      continue;
    }
    MAILKMS_TRY(chain, ca_.chain_pem(current->ca_id));
    found[address] = {{"certificate", std::move(current->pem)}, {"chain", std::move(chain)}, {"source", "keystore"}};
  }
  return nlohmann::json{{"certificates", found}, {"missing", missing}};
}

Result<std::optional<HarvestedCertificate>> KeystoreService::usable_harvested(const std::string& address,
                                                                              std::shared_ptr<const smime::TrustStore>& trust) {
  auto harvested = harvested_.get(address);
  // A record that fails authentication is never used; the others still are.
  if (!harvested && harvested.error().code == Errc::corrupt) return std::optional<HarvestedCertificate>();
  if (!harvested || !*harvested) return harvested;
  const std::time_t now = std::time(nullptr);
  const HarvestedCertificate& record = **harvested;
  if (!check_encryption_certificate(record.certificate, address, now)) return std::optional<HarvestedCertificate>();
  // Kept before its domain became ours (a first user there, local_domains).
  MAILKMS_TRY(served, served_domain(address));
  if (served) return std::optional<HarvestedCertificate>();
  if (!trust) {
    MAILKMS_TRY(store, trust_store());
    trust = std::move(store);
  }
  // Anchors change: one an administrator removed must stop the certificates under it.
  if (!verify_chain(*ctx_, *trust, record.certificate, record.chain, address, now)) {
    return std::optional<HarvestedCertificate>();
  }
  return harvested;
}

Result<nlohmann::json> KeystoreService::remember_certificate(const Caller& caller, const nlohmann::json& params) {
  MAILKMS_TRY(record, harvest_from_params(params, std::time(nullptr)));
  const std::string& address = record.address;
  // Our own users' certificates come from our CA, never from mail: even a
  // trusted one is not kept. Asked first, because most signed mail the
  // gateways see is our own users'.
  const auto local_user = [&]() -> Result<bool> {
    auto user = users_.get(address);
    if (user) return true;
    if (user.error().code != Errc::not_found) return std::move(user).error();
    return false;
  };
  const auto not_stored = [&](const std::string& reason) { return nlohmann::json{{"stored", false}, {"reason", reason}}; };
  MAILKMS_TRY(local, local_user());
  if (local) return not_stored(address + " is a local user");
  // Nor anyone's in a domain we serve: a gateway misconfigured, or in an
  // attacker's hands, must not plant a certificate that mail to ceo@ our
  // domain would be encrypted to, however trusted its CA.
  MAILKMS_TRY(served, served_domain(address));
  if (served) {
    Error refused = make_error(Errc::permission_denied, address + " is in " + *served +
                                                            ", a domain this keystore serves: its certificates come "
                                                            "from our CA, never from mail");
    MAILKMS_CHECK(gateway_audit_.queue({"gateway:" + describe(caller), std::string(protocol::op::remember_certificate),
                                        address, "refused", refused.message}));
    return refused;
  }
  MAILKMS_CHECK(check_encryption_certificate(record.certificate, address, record.stored_at));
  MAILKMS_TRY(crls, crls_from_params(params));
  MAILKMS_TRY(trust, trust_store());
  // Revocation is checked here, on CRLs the gateway fetched (this process
  // opens no connection to a URL from a certificate): one that names a
  // distribution point is kept only under a current CRL of its issuer.
  if (auto chained = verify_chain(*ctx_, *trust, record.certificate, record.chain, address, record.stored_at, &crls);
      !chained) {
    MAILKMS_CHECK(gateway_audit_.queue({"gateway:" + describe(caller), std::string(protocol::op::remember_certificate),
                                        address, "refused", chained.error().message}));
    return std::move(chained).error();
  }
  std::optional<std::string> refused;
  MAILKMS_CHECK(guarded_.transaction([&]() -> Status {
    MAILKMS_TRY(added_since, local_user());  // the user may have been added while we checked
    if (added_since) {
      refused = address + " is a local user";
      return Ok{};
    }
    MAILKMS_TRY(before, harvested_.get(address));
    MAILKMS_TRY(kept_instead, harvested_.remember(record));
    refused = std::move(kept_instead);
    // A new certificate is one mail to this address will be encrypted to
    // from now on; the same one again (most signed mail) changes nothing
    // worth a record.
    if (refused || (before && before->certificate == record.certificate)) return Ok{};
    return audit_.append({"gateway:" + describe(caller), std::string(protocol::op::remember_certificate), address, "ok",
                          record.certificate.subject() + ", issuer " + record.certificate.issuer()});
  }));
  if (refused) return not_stored(*refused);
  return nlohmann::json{{"stored", true}};
}

Result<nlohmann::json> KeystoreService::redeem_token(const Caller& caller, const nlohmann::json& params) {
  MAILKMS_TRY(from, string_param(params, "from"));
  MAILKMS_TRY(token, string_param(params, "token"));
  MAILKMS_TRY(password, string_param(params, "password"));
  RedeemRequest request{std::move(from), std::move(token), smime::SecretBytes(password), std::nullopt};
  OPENSSL_cleanse(password.data(), password.size());
  if (const auto csr = params.find("csr"); csr != params.end() && !csr->is_null()) {
    if (!csr->is_string() || csr->get_ref<const std::string&>().size() > std::size_t{64} * 1024) {
      return make_error(Errc::invalid_argument, "\"csr\" is a PEM certificate request of at most 64 KiB");
    }
    request.csr = csr->get<std::string>();
  }
  MAILKMS_TRY(delivered, enrollment_.redeem(request, "gateway:" + describe(caller)));
  return nlohmann::json{{"ok", delivered}};
}

Result<nlohmann::json> KeystoreService::signing_identity(const nlohmann::json& params) {
  MAILKMS_TRY(address, string_param(params, "address"));
  MAILKMS_TRY(user, users_.get(address));
  if (!user.enabled) return make_error(Errc::permission_denied, user.address + " is disabled");
  if (!user.signing_key_held) return make_error(Errc::not_found, user.address + " keeps their own signing key");
  MAILKMS_TRY(record, ca_.certificate(user.signing_serial));
  if (record.revoked_at) return make_error(Errc::not_found, user.address + "'s signing certificate is revoked");
  if (record.certificate.not_after() < std::time(nullptr)) {
    return make_error(Errc::not_found, user.address + "'s signing certificate has expired");
  }
  MAILKMS_TRY(chain, ca_.chain(record.ca_id));
  if (!chain.empty()) chain.pop_back();  // the root is the recipient's to trust, not ours to send
  return nlohmann::json{{"certificate", record.certificate.pem()},
                        {"chain", chain_pems(chain)},
                        {"scheme", record.certificate.is_ec() ? "ecdsa" : "rsa-pkcs1"}};
}

Result<nlohmann::json> KeystoreService::sign(const nlohmann::json& params) {
  MAILKMS_TRY(address, string_param(params, "address"));
  MAILKMS_TRY(digest_name, string_param(params, "digest"));
  const auto data_param = params.find("data");
  if (data_param == params.end()) return make_error(Errc::invalid_argument, "missing \"data\"");
  MAILKMS_TRY(data, protocol::unbase64(*data_param));
  if (data.size() > std::size_t{64} * 1024) return make_error(Errc::invalid_argument, "signed attributes larger than 64 KiB");
  const auto digest = smime::parse_digest(digest_name);
  if (!digest || smime::is_weak(*digest)) return make_error(Errc::invalid_argument, "unsupported digest " + digest_name);
  // Users' keys sign mail, nothing else: not a certificate request, not a
  // TLS handshake, not whatever a gateway (perhaps compromised) hands us.
  if (auto attributes = smime::check_signed_attributes(data, *digest, std::time(nullptr), kSigningTimeSkew); !attributes) {
    return make_error(Errc::invalid_argument, attributes.error().message);
  }
  MAILKMS_TRY(user, users_.get(address));
  if (!user.enabled) return make_error(Errc::permission_denied, user.address + " is disabled");
  MAILKMS_TRY(current, ca_.summary(user.signing_serial));
  if (current.revoked) return make_error(Errc::permission_denied, user.address + "'s signing certificate is revoked");
  if (current.not_after < std::time(nullptr)) {
    return make_error(Errc::permission_denied, user.address + "'s signing certificate has expired");
  }
  const auto scheme = params.find("scheme");
  MAILKMS_TRY(signer, signer_for(user, scheme != params.end() && *scheme == "rsa-pss"));
  auto signature = signer->sign(*digest, data);
  if (!signature) return make_error(Errc::crypto_failed, signature.error().message);
  return nlohmann::json{{"signature", protocol::base64(*signature)}};
}

Result<KeystoreService::TrustList> KeystoreService::trust_list() {
  TrustList list;
  MAILKMS_TRY(cas, ca_.list());
  for (const auto& ca : cas) {
    if (ca.role == CaRole::root && ca.certificate) list.anchors.push_back({"ours", "", *ca.certificate, {}});
    if (!ca.external_chain.empty()) list.anchors.push_back({"external", "", ca.external_chain.back(), {}});
  }
  MAILKMS_TRY(added, guarded_.scan("trust/", {}, 10'000));
  for (const auto& [key, value] : added) {
    MAILKMS_TRY(anchor, parse_trust_row(key, value));
    list.anchors.push_back(std::move(anchor));
  }
  MAILKMS_TRY(system, guarded_.get("config/trust-system-roots"));
  list.system_roots = system.value_or("0") == "1";
  return list;
}

Result<nlohmann::json> KeystoreService::trust_anchors() {
  MAILKMS_TRY(list, trust_list());
  nlohmann::json anchors = nlohmann::json::array();
  for (const auto& a : list.anchors) {
    nlohmann::json anchor{{"source", a.source}, {"subject", a.certificate.subject()}, {"certificate", a.certificate.pem()}};
    if (!a.fingerprint.empty()) anchor["fingerprint"] = a.fingerprint;
    if (!a.domains.empty()) anchor["domains"] = a.domains;
    anchors.push_back(std::move(anchor));
  }
  return nlohmann::json{{"anchors", anchors}, {"system_roots", list.system_roots}};
}

Result<std::shared_ptr<const smime::TrustStore>> KeystoreService::trust_store() {
  MAILKMS_TRY(list, trust_list());
  std::string key = list.system_roots ? "system" : "";
  for (const auto& a : list.anchors) {
    key += a.certificate.der();
    for (const auto& d : a.domains) key += "\n" + d;  // a changed scope is another store
    key += "\n";
  }
  {
    const std::lock_guard lock(trust_cache_mutex_);
    if (trust_cache_ && trust_cache_key_ == key) return trust_cache_;
  }
  auto store = std::make_shared<smime::TrustStore>();
  for (const auto& a : list.anchors) store->add(a.certificate, a.domains);
  if (list.system_roots) {
    const auto loaded = store->add_system_roots();
    if (!loaded) return make_error(Errc::internal, loaded.error().message);
  }
  const std::lock_guard lock(trust_cache_mutex_);
  trust_cache_key_ = std::move(key);
  trust_cache_ = store;
  return std::shared_ptr<const smime::TrustStore>(std::move(store));
}

Result<nlohmann::json> KeystoreService::crls() {
  nlohmann::json out = nlohmann::json::object();
  MAILKMS_TRY(cas, ca_.list());
  for (const auto& ca : cas) {
    if (ca.role != CaRole::issuing) continue;
    MAILKMS_TRY(der, ca_.crl(ca.id));
    out[ca.id] = protocol::base64(der);
  }
  return nlohmann::json{{"crls", out}};
}

Result<std::shared_ptr<smime::LocalSigner>> KeystoreService::signer_for(const UserRecord& user, bool pss) {
  {
    const std::lock_guard lock(signer_cache_mutex_);
    const auto it = signer_cache_.find(user.address);
    if (it != signer_cache_.end() && it->second.serial == user.signing_serial && it->second.pss == pss) {
      return it->second.signer;
    }
  }
  MAILKMS_TRY(certificate, users_.signing_certificate(user.address));
  MAILKMS_TRY(key, users_.signing_key(user.address));
  const auto scheme = pss ? std::optional(smime::SignatureScheme::rsa_pss) : std::nullopt;
  auto made = smime::LocalSigner::create(ctx_, certificate, std::move(key), {}, scheme);
  if (!made) return make_error(Errc::crypto_failed, made.error().message);
  auto signer = std::make_shared<smime::LocalSigner>(std::move(*made));
  const std::lock_guard lock(signer_cache_mutex_);
  if (signer_cache_.size() >= 4096) signer_cache_.clear();  // bounded; refilled on demand
  signer_cache_[user.address] = {user.signing_serial, pss, signer};
  return signer;
}

Result<nlohmann::json> KeystoreService::unwrap(const nlohmann::json& params) {
  MAILKMS_TRY(address, string_param(params, "address"));
  MAILKMS_TRY(serial, string_param(params, "serial"));
  const auto wrapped_param = params.find("wrapped");
  if (wrapped_param == params.end()) return make_error(Errc::invalid_argument, "missing \"wrapped\"");
  MAILKMS_TRY(wrapped, protocol::wrapped_key_from_json(*wrapped_param));
  MAILKMS_TRY(user, users_.get(address));
  // Only the user's own escrowed keys, whichever generation the mail used.
  if (std::find(user.encryption_serials.begin(), user.encryption_serials.end(), serial) == user.encryption_serials.end()) {
    return make_error(Errc::not_found, "no encryption key " + serial + " for " + user.address);
  }
  MAILKMS_TRY(key, load_private_key(barrier_, *ctx_, user.address, "enc-" + serial));
  auto cek = smime::unwrap_content_key(*ctx_, key.native(), wrapped);
  if (!cek) return make_error(Errc::crypto_failed, cek.error().message);
  return nlohmann::json{
      {"key", protocol::base64(std::string_view(reinterpret_cast<const char*>(cek->data()), cek->size()))}};
}

}  // namespace mailkms::keystore

namespace mailkms::keystore {

void KeystoreService::set_audit_checkpoints(std::filesystem::path file, std::chrono::seconds interval,
                                            std::function<void(const std::string&)> log) {
  checkpoint_interval_ = interval;
  checkpoints_.set_output(std::move(file), std::move(log));
}

Result<std::size_t> KeystoreService::renew_expiring(std::time_t before) {
  { const std::lock_guard gate(rotation_gate_); }
  const std::shared_lock shared(rotation_mutex_);  // as a request: never in a rotation's middle
  if (barrier_.sealed()) return std::size_t{0};
  return users_.renew_expiring(before, "mailkms-keystored (renewal)");
}

void KeystoreService::audit_upkeep(bool final) {
  { const std::lock_guard gate(rotation_gate_); }
  const std::shared_lock shared(rotation_mutex_);  // as a request: never in a rotation's middle
  if (barrier_.sealed()) return;
  const auto failed = [&](const char* what, const Error& error) {
    if (report_integrity_) report_integrity_(std::string("audit ") + what + " failed: " + error.message);
  };
  if (final) (void)gateway_audit_.flush();  // the batcher writes on its own otherwise
  if (const Status counts = audit_limiter_.write_counts(final); !counts) failed("counts", counts.error());
  if (!final && !checkpoints_.due(checkpoint_interval_)) return;
  if (auto made = checkpoints_.checkpoint(false); !made) failed("checkpoint", made.error());
}

void KeystoreService::check_and_checkpoint_audit() {
  const auto say = [&](const std::string& message) {
    if (report_integrity_) report_integrity_(message);
  };
  auto own = checkpoints_.read_own();
  auto chain = own ? audit_.verify() : Result<AuditVerification>(own.error());
  auto problem = chain && chain->intact ? checkpoints_.check(*own, chain->records)
                                        : Result<std::string>(chain ? chain->problem : chain.error().message);
  if (!problem) {
    say("audit checkpoints could not be checked: " + problem.error().message);
  } else if (!problem->empty()) {
    say("integrity check failed: the audit log and " + checkpoints_.file().string() + " disagree: " + *problem);
    (void)audit_.append({"keystore", "audit-checkpoint", "keystore", "failed", *problem});
  }
  if (auto made = checkpoints_.checkpoint(true); !made) say("audit checkpoint failed: " + made.error().message);
}

Result<nlohmann::json> KeystoreService::verify_audit(const nlohmann::json& params) {
  MAILKMS_TRY(v, audit_.verify());
  nlohmann::json out{{"intact", v.intact}, {"records", v.records}, {"problem", v.problem}};
  std::vector<AuditCheckpoint> checkpoints;
  const auto given = params.find("checkpoints");
  if (given != params.end()) {
    if (!given->is_string()) return make_error(Errc::invalid_argument, "\"checkpoints\" is a checkpoint file's text");
    MAILKMS_TRY(parsed, parse_checkpoints(given->get<std::string>(), AuditCheckpoints::kMaxChecked));
    checkpoints = std::move(parsed);
    out["checkpoint_source"] = "given";
  } else {
    MAILKMS_TRY(own, checkpoints_.read_own());
    checkpoints = std::move(own);
    out["checkpoint_source"] = checkpoints_.file().string();
  }
  out["checkpoints"] = checkpoints.size();
  if (checkpoints.empty() || !v.intact) return out;
  out["checkpoint"] = checkpoints.back().sequence;
  MAILKMS_TRY(problem, checkpoints_.check(checkpoints, v.records));
  if (!problem.empty()) {
    out["intact"] = false;
    out["problem"] = problem;
  }
  return out;
}

}  // namespace mailkms::keystore
