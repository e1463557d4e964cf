// The spellings of the policy's enums in policy.toml, both ways, and how
// messages name a rule.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "mailkms/policy/policy.hpp"

namespace mailkms::policy {

std::optional<Direction> parse_direction(std::string_view text) noexcept;
std::optional<Mode> parse_mode(std::string_view text) noexcept;
std::optional<MissingCertificate> parse_missing_certificate(std::string_view text) noexcept;
std::optional<DecryptionPlace> parse_decryption_place(std::string_view text) noexcept;

// rule "partners", or rule 3 when it has no name of its own.
std::string rule_label(std::string_view name);

}  // namespace mailkms::policy
