// The keys of [defaults], which a [[rule]] may also set: each declared once
// with its reader, so the two sections cannot drift apart.
#pragma once

#include <span>
#include <string_view>

#include "place.hpp"

namespace mailkms::policy {

struct SettingKey {
  std::string_view name;
  Status (*apply)(const Place& place, const toml::node& node, Settings& settings);
};

std::span<const SettingKey> setting_keys();

// The key named `name`, or nullptr.
const SettingKey* find_setting_key(std::string_view name);

}  // namespace mailkms::policy
