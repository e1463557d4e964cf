// The keystore's time. Expiry kept in rows (administrators' sessions,
// enrollment tokens) counts in wall-clock seconds, because it must survive
// a restart; back-offs held in memory (failed logins, wrong unseal secrets,
// failed enrollment replies) count on the steady clock, which no one can
// set back. The daemon reads the system's clocks; tests move a clock of
// their own, so that what expires is tested without waiting for it.
#pragma once

#include <chrono>
#include <ctime>
#include <functional>

namespace mailkms::keystore {

struct Clock {
  std::function<std::time_t()> wall = [] { return std::time(nullptr); };
  std::function<std::chrono::steady_clock::time_point()> steady = [] { return std::chrono::steady_clock::now(); };
};

}  // namespace mailkms::keystore
