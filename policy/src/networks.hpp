// Internal client networks: CIDR blocks of IPv4 and IPv6 in one form (IPv4
// as ::ffff:a.b.c.d), so an IPv4-mapped client address matches IPv4 blocks.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "mailkms/policy/policy.hpp"

namespace mailkms::policy {

using Address = std::array<std::uint8_t, 16>;

// A client address as an MTA reports it: "192.0.2.1", "2001:db8::1",
// "::ffff:192.0.2.1", also "[…]" and "IPv6:…" as Postfix writes them.
std::optional<Address> parse_client_address(std::string_view text);

bool contains(const Locality::Network& network, const Address& address) noexcept;

// "10.0.0.0/8", "2001:db8::/32": IPv4 blocks as they are written.
std::string to_string(const Locality::Network& network);

}  // namespace mailkms::policy
