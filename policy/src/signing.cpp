// Who may sign as whom: the login map and the authorization of a signer.
// A signature with a user's key says the user wrote the message; the
// gateway must never sign for whoever merely writes that user in From.
#include <algorithm>

#include "ascii.hpp"
#include "mailkms/policy/policy.hpp"
#include "networks.hpp"

namespace mailkms::policy {
namespace {

constexpr std::string_view kBlank = " \t";
constexpr std::string_view kLoginSeparators = ", \t";

// "alice@example.org" or "@example.org": one "@", a domain after it, and
// nothing that would make the key match more than it says.
bool is_map_key(std::string_view key) {
  const auto at = key.find('@');
  return at != std::string_view::npos && key.find('@', at + 1) == std::string_view::npos && at + 1 < key.size() &&
         key.find_first_of("*<>,;\"\\()[]") == std::string_view::npos;
}

bool is_login(std::string_view login) {
  return std::all_of(login.begin(), login.end(), [](char c) { return c > ' ' && c != '\x7f'; });
}

std::string line_error(const std::filesystem::path& source, std::size_t line, std::string_view text) {
  return source.string() + ":" + std::to_string(line) + ": " + std::string(text);
}

// One logical line of the map: its text and the line it starts on.
struct Entry {
  std::string text;
  std::size_t line = 0;
};

// Physical lines joined as Postfix's map files join them: one that starts
// with white space continues the entry before it; "#" starts a comment line.
std::vector<Entry> entries_of(std::string_view text) {
  std::vector<Entry> entries;
  std::size_t number = 0;
  while (!text.empty()) {
    const auto end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
    ++number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const auto first = line.find_first_not_of(kBlank);
    if (first == std::string_view::npos || line[first] == '#') continue;
    if (first > 0 && !entries.empty()) {
      entries.back().text.append(" ").append(line.substr(first));
    } else {
      entries.push_back({std::string(line.substr(first)), number});
    }
  }
  return entries;
}

std::vector<std::string> split_logins(std::string_view text) {
  std::vector<std::string> logins;
  while (!text.empty()) {
    const auto start = text.find_first_not_of(kLoginSeparators);
    if (start == std::string_view::npos) break;
    text.remove_prefix(start);
    const auto end = text.find_first_of(kLoginSeparators);
    logins.emplace_back(text.substr(0, end));
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end);
  }
  return logins;
}

bool owns(const std::vector<std::string>& logins, std::string_view login) {
  return std::any_of(logins.begin(), logins.end(), [&](const std::string& l) { return iequals(l, login); });
}

std::string domain_of(std::string_view address) {
  const auto at = address.rfind('@');
  return at == std::string_view::npos ? std::string() : ascii_lower(address.substr(at + 1));
}

SignerAuthorization by_login(const Policy& policy, const Connection& connection, SignerAuthorization result) {
  const std::string& login = connection.login;
  if (login.empty()) {
    result.reason = "the client authenticated, but its login is not known";
    return result;
  }
  const std::string identity = ascii_lower(result.identity);
  if (login.find('@') != std::string::npos && iequals(login, identity)) {
    result.authorized = true;
    result.reason = "login " + login + " signs as itself";
    return result;
  }
  const auto& owners = policy.signing.owners;
  if (const auto it = owners.find(identity); it != owners.end() && owns(it->second, login)) {
    result.authorized = true;
    result.reason = policy.signing.login_map.string() + " gives it to login " + login;
    return result;
  }
  const std::string domain = "@" + domain_of(identity);
  if (const auto it = owners.find(domain); it != owners.end() && owns(it->second, login)) {
    result.authorized = true;
    result.reason = policy.signing.login_map.string() + " gives " + domain + " to login " + login;
    return result;
  }
  result.reason = "login " + login + " does not own it";
  return result;
}

// Unauthenticated: only the envelope sender, and only when it wrote the message.
SignerAuthorization as_envelope_sender(std::string_view sender, const std::optional<std::string>& author,
                                       SignerAuthorization result, const std::string& why_allowed) {
  const std::string_view bare = bare_address(sender);
  if (!author) {
    result.reason = "From names no single author";
  } else if (!iequals(*author, bare)) {
    result.reason = "From " + *author + " is not the envelope sender " + std::string(bare.empty() ? "<>" : bare);
  } else {
    result.authorized = true;
    result.reason = why_allowed + " and From is the envelope sender";
  }
  return result;
}

}  // namespace

Result<std::map<std::string, std::vector<std::string>, std::less<>>> parse_login_map(
    std::string_view text, const std::filesystem::path& source) {
  std::map<std::string, std::vector<std::string>, std::less<>> owners;
  std::map<std::string, std::size_t, std::less<>> first_line;
  for (const Entry& entry : entries_of(text)) {
    const std::string_view line = entry.text;
    const auto key_end = line.find_first_of(kBlank);
    const std::string_view key = line.substr(0, key_end);
    if (!is_map_key(key)) {
      return Error{line_error(source, entry.line, "\"" + std::string(key) +
                                                      "\" is not an address such as \"sales@example.org\" or a "
                                                      "domain such as \"@example.org\"")};
    }
    const auto logins = split_logins(key_end == std::string_view::npos ? std::string_view{} : line.substr(key_end));
    if (logins.empty()) {
      return Error{line_error(source, entry.line, std::string(key) + ": expected the logins that may sign as it")};
    }
    for (const auto& login : logins) {
      if (!is_login(login)) return Error{line_error(source, entry.line, std::string(key) + ": a login has control characters")};
    }
    const std::string lower = ascii_lower(key);
    if (const auto seen = first_line.find(lower); seen != first_line.end()) {
      return Error{line_error(source, entry.line,
                              std::string(key) + " is already listed at line " + std::to_string(seen->second))};
    }
    first_line.emplace(lower, entry.line);
    owners.emplace(lower, logins);
  }
  return owners;
}

SignerAuthorization authorize_signer(const Policy& policy, const Connection& connection, std::string_view sender,
                                     const std::optional<std::string>& author) {
  SignerAuthorization result;
  result.identity = author ? *author : std::string(bare_address(sender));
  // Its client is the MTA's own smtp client, on loopback as often as not,
  // which vouches for no submission; the entry signed what was to be signed.
  if (connection.final_hop) {
    result.reason = "the final hop signs nothing: its client is the MTA itself";
    return result;
  }
  if (connection.authenticated) return by_login(policy, connection, std::move(result));
  if (connection.local_submission) {
    if (!policy.signing.local_submission) {
      result.reason = "local submission signs only with [signing] local_submission = true";
      return result;
    }
    return as_envelope_sender(sender, author, std::move(result),
                              "submitted locally, [signing] local_submission = true,");
  }
  const auto client = parse_client_address(connection.client_address);
  if (!client) {
    result.reason = "the client's address is unknown and it did not authenticate";
    return result;
  }
  for (const auto& network : policy.signing.unauthenticated_networks) {
    if (contains(network, *client)) {
      return as_envelope_sender(sender, author, std::move(result),
                                "client " + connection.client_address + " is in " + to_string(network) +
                                    " of [signing] unauthenticated_networks");
    }
  }
  result.reason = "client " + connection.client_address + " is in none of [signing] unauthenticated_networks";
  return result;
}

std::vector<std::string> addresses_of_login(const Policy& policy, std::string_view login) {
  std::vector<std::string> addresses;
  if (login.find('@') != std::string_view::npos) addresses.push_back(ascii_lower(login));
  for (const auto& [address, logins] : policy.signing.owners) {
    if (owns(logins, login) && std::find(addresses.begin(), addresses.end(), address) == addresses.end()) {
      addresses.push_back(address);
    }
  }
  return addresses;
}

}  // namespace mailkms::policy
