// The time the gateway's caches count their TTLs in: the steady clock in
// the daemons; in tests, a clock the test moves, so that what expires is
// tested without waiting for it.
#pragma once

#include <chrono>
#include <functional>

namespace mailkms::gateway {

using Clock = std::function<std::chrono::steady_clock::time_point()>;

inline Clock steady_clock() {
  return [] { return std::chrono::steady_clock::now(); };
}

}  // namespace mailkms::gateway
