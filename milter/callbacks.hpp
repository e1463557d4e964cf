// libmilter's C callbacks over the gateway. A ConnectionContext lives from
// connect to close behind smfi_setpriv (owned by a unique_ptr, released
// only in close); its MessageContext is replaced at every MAIL FROM. No
// exception crosses into libmilter: each callback catches and logs; RCPT TO
// and the end of the message answer a temporary failure for it, the steps
// the MTA does not wait for keep it for them.
#pragma once

#include <libmilter/mfapi.h>

#include "mailkms/gateway/gateway.hpp"

namespace mailkms::milter {

enum class Transport { local, tcp };

// The gateway every callback uses, and the kind of socket the MTA comes
// over; set once before smfi_main.
void install(gateway::Gateway& gateway, Transport transport);

smfiDesc description();

}  // namespace mailkms::milter
