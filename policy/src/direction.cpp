// decide_direction: outbound is mail from our own domains that came from
// somewhere we trust to speak for them. decryption_here: plain text only
// where the MTA sends mail nowhere but to the recipients the milter sees.
#include <algorithm>

#include "ascii.hpp"
#include "mailkms/policy/policy.hpp"
#include "networks.hpp"

namespace mailkms::policy {

namespace {

std::string final_hop_said() { return "{daemon_name} " + std::string(final_hop_daemon_name); }

}  // namespace

DirectionDecision decide_direction(const Policy& policy, std::string_view sender, const Connection& connection) {
  const std::string_view bare = bare_address(sender);
  const auto at = bare.rfind('@');
  if (at == std::string_view::npos || at + 1 == bare.size()) {
    const std::string shown = bare.empty() ? "<>" : std::string(bare);
    return {Direction::inbound, "sender " + shown + " has no domain, so it is not local"};
  }
  const std::string domain = ascii_lower(bare.substr(at + 1));
  const auto& local = policy.locality.domains;
  if (std::find(local.begin(), local.end(), domain) == local.end()) {
    return {Direction::inbound, "sender domain " + domain + " is not local"};
  }
  const std::string is_local = "sender domain " + domain + " is local";
  if (connection.authenticated) return {Direction::outbound, is_local + " and client authenticated"};
  if (connection.local_submission) return {Direction::outbound, is_local + " and the message was submitted locally"};
  if (connection.client_address.empty()) {
    return {Direction::inbound,
            is_local + " but the client address is unknown, and the client neither internal nor authenticated"};
  }
  if (const auto network = internal_network_of(policy, connection.client_address)) {
    return {Direction::outbound, is_local + " and client " + connection.client_address + " is in " + *network};
  }
  return {Direction::inbound,
          is_local + " but client " + connection.client_address + " is neither internal nor authenticated"};
}

std::optional<std::string> network_of(const std::vector<Locality::Network>& networks, std::string_view client_address) {
  const auto client = parse_client_address(client_address);
  if (!client) return std::nullopt;
  for (const auto& network : networks) {
    if (contains(network, *client)) return to_string(network);
  }
  return std::nullopt;
}

std::optional<std::string> internal_network_of(const Policy& policy, std::string_view client_address) {
  return network_of(policy.locality.networks, client_address);
}

DecryptionHere decryption_here(const Policy& policy, const Connection& connection) {
  if (connection.final_hop) return {true, "this is the final hop (" + final_hop_said() + ")"};
  if (policy.decryption == DecryptionPlace::anywhere) return {true, "[decryption] at = \"anywhere\""};
  return {false, "decryption happens at the final hop (" + final_hop_said() +
                     "), after the MTA has expanded aliases and forwarding; this connection is not it"};
}

}  // namespace mailkms::policy
