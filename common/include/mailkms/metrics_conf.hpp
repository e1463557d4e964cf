// The metrics_listen key, as the daemons' sections of mailkms.conf read it.
#pragma once

#include <optional>
#include <string_view>

#include "mailkms/conf_section.hpp"
#include "mailkms/metrics_server.hpp"

namespace mailkms::metrics {

// The metrics_listen key of a daemon's [section]: where it serves them.
template <class Settings>
conf::Key<Settings> listen_key(std::string_view section) {
  return {"metrics_listen", [section](const toml::node& n, Settings& s) -> std::optional<conf::Problem> {
            const auto* v = n.as_string();
            if (v == nullptr || !parse_endpoint(v->get())) {
              return conf::expected(section, "metrics_listen", n,
                                    "an IP address with a port like \"127.0.0.1:9470\" or \"[::1]:9470\"");
            }
            s.metrics_listen = v->get();
            return std::nullopt;
          }};
}

}  // namespace mailkms::metrics
