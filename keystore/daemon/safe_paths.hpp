// What mailkms-keystored checks before it opens anything (OpenDKIM's
// RequireSafeKeys): whoever can write the database, the key file or the
// directory of the socket can take the keystore over, so none of them may
// be writable by anyone but the daemon's user (or root, who can anyway).
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string_view>

#include "mailkms/keystore/config.hpp"
#include "mailkms/keystore/error.hpp"

namespace mailkms::keystored {

// The database (and its directory, where SQLite puts its journal), the
// unseal key file (readable by no one else either) and the socket's
// directory, each with every directory above it: an error naming the
// first that someone else could change, and the fix. `self` is who must
// own them (besides root): the daemon's user.
keystore::Status check_safe_paths(const keystore::Config& config, uid_t self);

// That the daemon runs as [keystore] user (or root): clients refuse a
// socket served by anyone else.
keystore::Status check_own_user(const keystore::Config& config);

}  // namespace mailkms::keystored
