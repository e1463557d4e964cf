#include "names.hpp"

#include <algorithm>
#include <array>
#include <utility>

namespace mailkms::policy {
namespace {

template <class Enum, std::size_t N>
using Names = std::array<std::pair<Enum, std::string_view>, N>;

constexpr Names<Direction, 2> kDirections{{{Direction::outbound, "outbound"}, {Direction::inbound, "inbound"}}};
constexpr Names<Mode, 3> kModes{{{Mode::never, "never"}, {Mode::if_possible, "if-possible"}, {Mode::always, "always"}}};
constexpr Names<MissingCertificate, 4> kMissing{{{MissingCertificate::send_plain, "send-plain"},
                                                 {MissingCertificate::reject, "reject"},
                                                 {MissingCertificate::tempfail, "tempfail"},
                                                 {MissingCertificate::quarantine, "quarantine"}}};
constexpr Names<DecryptionPlace, 2> kPlaces{
    {{DecryptionPlace::final_hop, "final-hop"}, {DecryptionPlace::anywhere, "anywhere"}}};

template <class Enum, std::size_t N>
std::string_view name_of(const Names<Enum, N>& names, Enum value) noexcept {
  for (const auto& [e, name] : names) {
    if (e == value) return name;
  }
  return "?";
}

// Exact spelling only: the file is the reference, so it reads one way.
template <class Enum, std::size_t N>
std::optional<Enum> value_of(const Names<Enum, N>& names, std::string_view text) noexcept {
  for (const auto& [e, name] : names) {
    if (name == text) return e;
  }
  return std::nullopt;
}

}  // namespace

std::string_view to_string(Direction direction) noexcept { return name_of(kDirections, direction); }
std::string_view to_string(Mode mode) noexcept { return name_of(kModes, mode); }
std::string_view to_string(MissingCertificate action) noexcept { return name_of(kMissing, action); }
std::string_view to_string(DecryptionPlace place) noexcept { return name_of(kPlaces, place); }

std::optional<Direction> parse_direction(std::string_view text) noexcept { return value_of(kDirections, text); }
std::optional<Mode> parse_mode(std::string_view text) noexcept { return value_of(kModes, text); }
std::optional<MissingCertificate> parse_missing_certificate(std::string_view text) noexcept {
  return value_of(kMissing, text);
}
std::optional<DecryptionPlace> parse_decryption_place(std::string_view text) noexcept {
  return value_of(kPlaces, text);
}

std::string rule_label(std::string_view name) {
  constexpr std::string_view unnamed = "rule ";
  const std::string_view number = name.starts_with(unnamed) ? name.substr(unnamed.size()) : std::string_view();
  const bool numbered = !number.empty() && std::all_of(number.begin(), number.end(), [](char c) {
    return c >= '0' && c <= '9';
  });
  return numbered ? std::string(name) : "rule \"" + std::string(name) + "\"";
}

}  // namespace mailkms::policy
