#include "safe_paths.hpp"
#include "mailkms/errno_text.hpp"
#include "mailkms/system_accounts.hpp"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>

#include "mailkms/keystore/client.hpp"

namespace mailkms::keystored {
namespace {

using keystore::Errc;
using keystore::make_error;

std::string owner_name(uid_t uid) {
  auto name = accounts::user_name(uid);
  return name ? std::move(*name) : "uid " + std::to_string(uid);
}

// One file or directory: owned by us or root, and written by no one else.
// `what` names it in the message ("the database"). Directories above the
// one that holds our files may be shared if sticky (/tmp): then no one
// else can rename what is ours inside them.
keystore::Status check_one(const std::filesystem::path& path, std::string_view what, bool ancestor,
                           bool private_to_us, uid_t self) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    return make_error(Errc::storage_failed, std::string(what) + " " + path.string() + ": " + mailkms::errno_text(errno));
  }
  const std::string named = std::string(what) + " " + path.string();
  if (S_ISLNK(st.st_mode)) {
    return make_error(Errc::permission_denied, named + " is a symbolic link: name the real path in mailkms.conf");
  }
  if (st.st_uid != self && st.st_uid != 0) {
    return make_error(Errc::permission_denied, named + " belongs to " + owner_name(st.st_uid) +
                                                   ": it must belong to " + owner_name(self) +
                                                   ", who runs mailkms-keystored, or to root");
  }
  const bool shared_but_sticky = ancestor && (st.st_mode & S_ISVTX) != 0;
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && !shared_but_sticky) {
    const char* who = (st.st_mode & S_IWOTH) != 0 ? "everyone" : "its group";
    return make_error(Errc::permission_denied, named + " is writable by " + who +
                                                   ": only mailkms-keystored's user may write it (chmod go-w " +
                                                   path.string() + ")");
  }
  if (private_to_us && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    return make_error(Errc::permission_denied, named + " is open to its group or others: chmod 600 " + path.string());
  }
  return keystore::Ok{};
}

// `directory` and every directory above it.
keystore::Status check_directories(const std::filesystem::path& directory, std::string_view what, uid_t self) {
  std::filesystem::path at = std::filesystem::absolute(directory).lexically_normal();
  if (at.has_filename() == false && at != at.root_path()) at = at.parent_path();
  MAILKMS_CHECK(check_one(at, what, false, false, self));
  while (at != at.root_path()) {
    at = at.parent_path();
    MAILKMS_CHECK(check_one(at, "the directory", true, false, self));
  }
  return keystore::Ok{};
}

}  // namespace

keystore::Status check_safe_paths(const keystore::Config& config, uid_t self) {
  // A database server guards its own files; an SQLite file is ours to check.
  if (config.database.is_file()) {
    const auto database = std::filesystem::absolute(config.database.file);
    std::error_code ignored;
    if (!std::filesystem::exists(database, ignored) && !std::filesystem::is_symlink(database, ignored)) {
      return make_error(Errc::storage_failed, "the database " + database.string() +
                                                  " does not exist: make it with `mailkmsctl init` as the "
                                                  "keystore's user");
    }
    MAILKMS_CHECK(check_one(database, "the database", false, true, self));
    MAILKMS_CHECK(check_directories(database.parent_path(), "the database's directory", self));
  }
  if (!config.unseal_key_file.empty()) {
    const auto key_file = std::filesystem::absolute(config.unseal_key_file);
    MAILKMS_CHECK(check_one(key_file, "the key file", false, true, self));
    MAILKMS_CHECK(check_directories(key_file.parent_path(), "the key file's directory", self));
  }
  if (!config.tls_listen.empty()) {
    // The TLS key is this instance's identity to every client; the service
    // CA says who may connect (each peer is then checked against its row).
    const auto key = std::filesystem::absolute(config.tls_key);
    MAILKMS_CHECK(check_one(key, "the TLS key", false, true, self));
    MAILKMS_CHECK(check_directories(key.parent_path(), "the TLS key's directory", self));
    MAILKMS_CHECK(check_one(std::filesystem::absolute(config.service_ca), "the service CA", false, false, self));
  }
  return check_directories(std::filesystem::absolute(config.socket).parent_path(), "the socket's directory", self);
}

keystore::Status check_own_user(const keystore::Config& config) {
  const uid_t self = ::geteuid();
  if (self == 0) return keystore::Ok{};
  const auto uid = keystore::resolve_user(config.user);
  if (uid && *uid == self) return keystore::Ok{};
  return make_error(Errc::permission_denied, "running as " + owner_name(self) + ", but keystore.user is " + config.user +
                                                 (uid ? "" : " (no such user)") +
                                                 ": clients would refuse the socket; set user to the daemon's user");
}

}  // namespace mailkms::keystored
