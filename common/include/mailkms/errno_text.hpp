// What an errno value means, for a message. strerror may hand back a buffer
// that another thread's call is rewriting; the standard library's category
// formats it into a string of the caller's own.
#pragma once

#include <string>
#include <system_error>

namespace mailkms {

inline std::string errno_text(int error) { return std::generic_category().message(error); }

}  // namespace mailkms
