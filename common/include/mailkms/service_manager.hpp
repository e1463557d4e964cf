// What a daemon tells systemd (Type=notify, sd_notify(3)): ready once it
// serves, so that units ordered after it start against a socket that
// answers; reloading while it reads its configuration again; stopping once
// it accepts no more. Nothing is sent when no service manager listens
// (NOTIFY_SOCKET unset): by hand, and in most tests.
#pragma once

#include <systemd/sd-daemon.h>

#include <string>
#include <string_view>

namespace mailkms::service_manager {

// `status` is what `systemctl status` shows beside the unit.
inline void ready(std::string_view status) {
  const std::string message = "READY=1\nSTATUS=" + std::string(status);
  (void)sd_notify(0, message.c_str());
}

inline void reloading() { (void)sd_notify(0, "RELOADING=1"); }

inline void stopping() { (void)sd_notify(0, "STOPPING=1"); }

}  // namespace mailkms::service_manager
