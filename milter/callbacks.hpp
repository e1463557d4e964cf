// libmilter's C callbacks over the gateway. A ConnectionContext lives from
// connect to close behind smfi_setpriv (owned by a unique_ptr, released
// only in close); its MessageContext is replaced at every MAIL FROM. No
// exception crosses into libmilter: each callback catches, logs and
// answers a temporary failure.
#pragma once

#include <libmilter/mfapi.h>

#include "mailkms/gateway/gateway.hpp"

namespace mailkms::milter {

// The gateway every callback uses; set once before smfi_main.
void install(gateway::Gateway& gateway);

smfiDesc description();

}  // namespace mailkms::milter
