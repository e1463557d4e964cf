// Users and groups of the system, with the reentrant getpwnam_r and its
// kin: getpwnam's static buffer may be rewritten by another thread (a
// daemon reading its settings again while it serves).
#pragma once

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace mailkms::accounts {

struct Account {
  uid_t uid;
  gid_t gid;  // the user's primary group
};

namespace detail {
// `lookup(entry, buffer, size, result)` is getpwnam_r or a kin with its key
// bound; `take` copies out what is needed while the buffer the entry's
// strings point into still lives.
template <class Entry, class Lookup, class Take>
auto find(Lookup lookup, Take take) -> std::optional<decltype(take(std::declval<const Entry&>()))> {
  const long hint = ::sysconf(_SC_GETPW_R_SIZE_MAX);
  std::vector<char> buffer(hint > 0 ? static_cast<std::size_t>(hint) : 4096);
  for (;;) {
    Entry entry{};
    Entry* found = nullptr;
    const int error = lookup(&entry, buffer.data(), buffer.size(), &found);
    if (error == ERANGE && buffer.size() < (std::size_t{1} << 20)) {
      buffer.resize(buffer.size() * 2);
      continue;
    }
    if (error != 0 || found == nullptr) return std::nullopt;
    return take(*found);
  }
}
}  // namespace detail

inline std::optional<Account> find_user(const std::string& name) {
  return detail::find<passwd>(
      [&](passwd* entry, char* buffer, std::size_t size, passwd** found) {
        return ::getpwnam_r(name.c_str(), entry, buffer, size, found);
      },
      [](const passwd& p) { return Account{p.pw_uid, p.pw_gid}; });
}

// A group's id: no Account, whose uid would have to be made up.
inline std::optional<gid_t> find_group(const std::string& name) {
  return detail::find<group>(
      [&](group* entry, char* buffer, std::size_t size, group** found) {
        return ::getgrnam_r(name.c_str(), entry, buffer, size, found);
      },
      [](const group& g) { return g.gr_gid; });
}

// The name of the user with this uid, if there is one.
inline std::optional<std::string> user_name(uid_t uid) {
  return detail::find<passwd>(
      [&](passwd* entry, char* buffer, std::size_t size, passwd** found) {
        return ::getpwuid_r(uid, entry, buffer, size, found);
      },
      [](const passwd& p) { return std::string(p.pw_name); });
}

}  // namespace mailkms::accounts
