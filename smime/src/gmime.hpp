// GMime glue: one-time library initialisation and RAII for GObjects.
#pragma once

#include <gmime/gmime.h>

#include <memory>

namespace mailkms::smime::gmime {

// Initialises GMime once per process; GMime has no per-context state to
// hold, and its initialisation is idempotent and thread-safe behind this.
void ensure_initialized();

struct Unref {
  void operator()(gpointer p) const noexcept {
    if (p != nullptr) g_object_unref(p);
  }
};

template <class T>
using Ptr = std::unique_ptr<T, Unref>;

}  // namespace mailkms::smime::gmime
