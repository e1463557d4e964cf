#include "networks.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>

#include "ascii.hpp"

namespace mailkms::policy {
namespace {

constexpr int kMappedPrefix = 96;  // the ::ffff:0:0/96 block that holds IPv4

bool is_mapped(const Address& address) noexcept {
  return std::all_of(address.begin(), address.begin() + 10, [](std::uint8_t b) { return b == 0; }) &&
         address[10] == 0xff && address[11] == 0xff;
}

// inet_pton needs a terminated string.
std::optional<Address> parse_address(std::string_view text, bool& ipv4) {
  const std::string terminated(text);
  Address address{};
  std::array<std::uint8_t, 4> v4{};
  if (::inet_pton(AF_INET, terminated.c_str(), v4.data()) == 1) {
    address[10] = 0xff;
    address[11] = 0xff;
    std::copy(v4.begin(), v4.end(), address.begin() + 12);
    ipv4 = true;
    return address;
  }
  if (::inet_pton(AF_INET6, terminated.c_str(), address.data()) == 1) {
    ipv4 = false;
    return address;
  }
  return std::nullopt;
}

void clear_host_bits(Address& address, int prefix) noexcept {
  for (int bit = prefix; bit < 128; ++bit) {
    address[static_cast<std::size_t>(bit / 8)] &= static_cast<std::uint8_t>(~(0x80U >> (bit % 8)));
  }
}

}  // namespace

BasicResult<Locality::Network, std::string> parse_network(std::string_view text) {
  const auto slash = text.find('/');
  bool ipv4 = false;
  const auto address = parse_address(text.substr(0, slash), ipv4);
  if (!address) return std::string("not an IPv4 or IPv6 address");
  const int width = ipv4 ? 32 : 128;
  int prefix = width;
  if (slash != std::string_view::npos) {
    const std::string_view digits = text.substr(slash + 1);
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
    if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() || prefix < 0 || prefix > width) {
      return "the prefix length must be 0 to " + std::to_string(width);
    }
  }
  Locality::Network network{*address, ipv4 ? prefix + kMappedPrefix : prefix};
  Address masked = network.address;
  clear_host_bits(masked, network.prefix);
  if (masked != network.address) {
    network.address = masked;
    return "host bits are set; did you mean " + to_string(network) + "?";
  }
  return network;
}

std::optional<Address> parse_client_address(std::string_view text) {
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']') text = text.substr(1, text.size() - 2);
  if (text.size() > 5 && iequals(text.substr(0, 5), "ipv6:")) text.remove_prefix(5);
  bool ipv4 = false;
  return parse_address(text, ipv4);
}

bool contains(const Locality::Network& network, const Address& address) noexcept {
  Address masked = address;
  clear_host_bits(masked, network.prefix);
  return masked == network.address;
}

std::string to_string(const Locality::Network& network) {
  std::array<char, INET6_ADDRSTRLEN> text{};
  if (is_mapped(network.address) && network.prefix >= kMappedPrefix) {
    ::inet_ntop(AF_INET, network.address.data() + 12, text.data(), text.size());
    return std::string(text.data()) + "/" + std::to_string(network.prefix - kMappedPrefix);
  }
  ::inet_ntop(AF_INET6, network.address.data(), text.data(), text.size());
  return std::string(text.data()) + "/" + std::to_string(network.prefix);
}

}  // namespace mailkms::policy
