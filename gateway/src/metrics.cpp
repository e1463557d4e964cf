#include "mailkms/gateway/metrics.hpp"

#include <string>

#include "mailkms/smime/spool.hpp"

namespace mailkms::gateway {

std::string_view name(Action action) noexcept {
  switch (action) {
    case Action::passed: return "passed";
    case Action::signed_: return "signed";
    case Action::encrypted: return "encrypted";
    case Action::signed_encrypted: return "signed_encrypted";
    case Action::split: return "split";
    case Action::verified: return "verified";
    case Action::decrypted: return "decrypted";
    case Action::enrollment: return "enrollment";
    case Action::keystore_mail: return "keystore_mail";
    case Action::own_copy: return "own_copy";
  }
  return "passed";
}

std::string_view name(FailureClass failure) noexcept {
  switch (failure) {
    case FailureClass::none: return "none";
    case FailureClass::keystore: return "keystore";
    case FailureClass::malformed: return "malformed";
    case FailureClass::bad_signature: return "bad_signature";
    case FailureClass::internal: return "internal";
    case FailureClass::spool: return "spool";
    case FailureClass::too_big: return "too_big";
    case FailureClass::reinjection: return "reinjection";
    case FailureClass::next_hop: return "next_hop";
  }
  return "internal";
}

std::string_view name(Operation operation) noexcept {
  switch (operation) {
    case Operation::sign: return "sign";
    case Operation::encrypt: return "encrypt";
    case Operation::verify: return "verify";
    case Operation::decrypt: return "decrypt";
  }
  return "sign";
}

std::string_view name(Cache cache) noexcept {
  switch (cache) {
    case Cache::certificate: return "certificate";
    case Cache::signer: return "signer";
    case Cache::trust: return "trust";
  }
  return "certificate";
}

std::string_view action_label(const Disposition& disposition) noexcept {
  using Verdict = Disposition::Verdict;
  switch (disposition.verdict) {
    case Verdict::reject: return "rejected";
    case Verdict::tempfail: return "deferred";
    case Verdict::discard:
      return disposition.action == Action::enrollment ? name(Action::enrollment) : std::string_view("discarded");
    case Verdict::deliver: break;
  }
  return disposition.quarantine ? std::string_view("quarantined") : name(disposition.action);
}

GatewayMetrics::GatewayMetrics(metrics::Registry& registry)
    : messages_(&registry.counter("mailkms_messages_total",
                                  "Messages answered at the end of DATA, by direction and what became of them.",
                                  {"direction", "action"})),
      failures_(&registry.counter("mailkms_failures_total",
                                  "Messages not treated as policy asked, by the class of what failed.", {"class"})),
      operations_(&registry.counter("mailkms_smime_operations_total",
                                    "S/MIME signatures, encryptions, verifications and decryptions, by result.",
                                    {"operation", "result"})),
      caches_(&registry.counter("mailkms_cache_lookups_total",
                                "Lookups in the gateway's caches of keystore answers, by cache and hit or miss.",
                                {"cache", "result"})),
      requests_(&registry.counter("mailkms_gateway_keystore_requests_total",
                                  "Requests this gateway made of the keystore, by operation and result (ok, or the error's code).",
                                  {"operation", "result"})),
      durations_(&registry.histogram("mailkms_gateway_keystore_request_duration_seconds",
                                     "Time from asking the keystore to its answer, by operation.", {"operation"},
                                     metrics::latency_buckets())) {
  registry.gauge("mailkms_spool_memory_bytes", "Bytes of messages held in memory now.",
                 [] { return static_cast<double>(smime::Spool::usage().memory_bytes); });
  registry.gauge("mailkms_spool_file_bytes", "Bytes of messages held in spool files now.",
                 [] { return static_cast<double>(smime::Spool::usage().file_bytes); });
}

void GatewayMetrics::message(policy::Direction direction, const Disposition& disposition) {
  if (messages_ == nullptr) return;
  messages_->add({std::string(policy::to_string(direction)), std::string(action_label(disposition))});
  if (disposition.failure != FailureClass::none) failures_->add({std::string(name(disposition.failure))});
}

void GatewayMetrics::operation(Operation operation, std::string_view result) {
  if (operations_ != nullptr) operations_->add({std::string(name(operation)), std::string(result)});
}

void GatewayMetrics::cache(Cache cache, std::size_t hits, std::size_t misses) {
  if (caches_ == nullptr) return;
  if (hits != 0) caches_->add({std::string(name(cache)), "hit"}, hits);
  if (misses != 0) caches_->add({std::string(name(cache)), "miss"}, misses);
}

keystore::ClientOptions GatewayMetrics::observed(keystore::ClientOptions client,
                                                std::shared_ptr<GatewayMetrics> metrics) {
  client.observer = [metrics = std::move(metrics)](std::string_view op, const keystore::Error* error,
                                                   std::chrono::steady_clock::duration took) {
    metrics->keystore_request(op, error, took);
  };
  return client;
}

void GatewayMetrics::keystore_request(std::string_view op, const keystore::Error* error,
                                      std::chrono::steady_clock::duration took) {
  if (requests_ == nullptr) return;
  requests_->add({std::string(op), error == nullptr ? "ok" : std::string(keystore::to_string(error->code))});
  durations_->observe({std::string(op)}, std::chrono::duration<double>(took).count());
}

}  // namespace mailkms::gateway
