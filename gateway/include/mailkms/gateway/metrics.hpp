// What a gateway counts for Prometheus, in whichever front end runs it:
// messages by direction and what became of them, S/MIME operations by
// result, the keystore requests it made (by operation and result, timed),
// its caches' hits and misses, failures by class, and the bytes its spools
// hold. Every label value is one of a fixed set named here or in the
// keystore protocol: nothing a sender writes becomes a label.
//
// A GatewayMetrics made without a registry counts nothing, for a front end
// that serves no metrics and for tests.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string_view>

#include "mailkms/gateway/outcome.hpp"
#include "mailkms/keystore/client.hpp"
#include "mailkms/keystore/error.hpp"
#include "mailkms/metrics.hpp"
#include "mailkms/policy/policy.hpp"

namespace mailkms::gateway {

enum class Operation { sign, encrypt, verify, decrypt };
enum class Cache { certificate, signer, trust };

// The label values, as the metrics and mailkms-milter(8) name them.
std::string_view name(Action action) noexcept;
std::string_view name(FailureClass failure) noexcept;
std::string_view name(Operation operation) noexcept;
std::string_view name(Cache cache) noexcept;
// The action label of a message answered so: its verdict when it did not
// go on as it came in ("rejected", "deferred", "quarantined", "discarded"),
// else what was done to it.
std::string_view action_label(const Disposition& disposition) noexcept;

class GatewayMetrics {
 public:
  GatewayMetrics() = default;
  // The families, made in `registry`, which must outlive this.
  explicit GatewayMetrics(metrics::Registry& registry);

  // A message answered: mailkms_messages_total, and its failure if any.
  void message(policy::Direction direction, const Disposition& disposition);
  // mailkms_smime_operations_total; `result` is "ok", "failed", or for
  // verify an RFC 8601 result ("pass", "fail", "temperror"…).
  void operation(Operation operation, std::string_view result);
  void cache(Cache cache, std::size_t hits, std::size_t misses);
  // A keystore request over: the shape of keystore::ClientOptions::observer.
  void keystore_request(std::string_view op, const keystore::Error* error, std::chrono::steady_clock::duration took);
  // `client` with its requests counted into `metrics`, which it keeps.
  static keystore::ClientOptions observed(keystore::ClientOptions client, std::shared_ptr<GatewayMetrics> metrics);

 private:
  metrics::Registry::Counter* messages_ = nullptr;
  metrics::Registry::Counter* failures_ = nullptr;
  metrics::Registry::Counter* operations_ = nullptr;
  metrics::Registry::Counter* caches_ = nullptr;
  metrics::Registry::Counter* requests_ = nullptr;
  metrics::Registry::Histogram* durations_ = nullptr;
};

}  // namespace mailkms::gateway
