// The time the gateway's caches count their TTLs in: the steady clock in
// the daemons; in tests, a clock the test moves, so that what expires is
// tested without waiting for it; and what they tell of their hits.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>

namespace mailkms::gateway {

using Clock = std::function<std::chrono::steady_clock::time_point()>;

inline Clock steady_clock() {
  return [] { return std::chrono::steady_clock::now(); };
}

// Told how many lookups in a cache were hits and how many misses.
using CacheCounter = std::function<void(std::size_t hits, std::size_t misses)>;

}  // namespace mailkms::gateway
