#include "gmime.hpp"

#include <mutex>

namespace mailkms::smime::gmime {

void ensure_initialized() {
  static std::once_flag once;
  std::call_once(once, [] { g_mime_init(); });
}

}  // namespace mailkms::smime::gmime
