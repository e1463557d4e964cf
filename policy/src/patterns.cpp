// AddressPattern: the four shapes a rule's from and to may take.
#include <algorithm>

#include "ascii.hpp"
#include "mailkms/policy/policy.hpp"

namespace mailkms::policy {
namespace {

// Enough to catch typos; the MTA has already checked real addresses.
bool plausible_domain(std::string_view domain) {
  if (domain.empty() || domain.front() == '.' || domain.back() == '.') return false;
  if (domain.find("..") != std::string_view::npos) return false;
  return std::none_of(domain.begin(), domain.end(), [](char c) {
    return c == '*' || c == '@' || c == ' ' || c == '\t' || c == '<' || c == '>' || c == ',';
  });
}

bool plausible_local_part(std::string_view local) {
  return !local.empty() && std::none_of(local.begin(), local.end(), [](char c) {
    return c == '*' || c == '@' || c == ' ' || c == '\t' || c == '<' || c == '>' || c == ',';
  });
}

std::string_view domain_of(std::string_view address) {
  const auto at = address.rfind('@');
  return at == std::string_view::npos ? std::string_view() : address.substr(at + 1);
}

}  // namespace

std::optional<AddressPattern> AddressPattern::parse(std::string_view text) {
  AddressPattern pattern;
  pattern.text_ = std::string(text);
  if (text == "*") {
    pattern.kind_ = Kind::any;
    return pattern;
  }
  const auto at = text.find('@');
  if (at == std::string_view::npos) return std::nullopt;
  const std::string_view local = text.substr(0, at);
  const std::string_view domain = text.substr(at + 1);
  if (local == "*") {
    if (domain.starts_with("*.") && plausible_domain(domain.substr(2))) {
      pattern.kind_ = Kind::subdomains;
      pattern.value_ = ascii_lower(domain.substr(2));
      return pattern;
    }
    if (!plausible_domain(domain)) return std::nullopt;
    pattern.kind_ = Kind::domain;
    pattern.value_ = ascii_lower(domain);
    return pattern;
  }
  if (!plausible_local_part(local) || !plausible_domain(domain)) return std::nullopt;
  pattern.kind_ = Kind::address;
  pattern.value_ = ascii_lower(text);
  return pattern;
}

bool AddressPattern::matches(std::string_view address) const {
  const std::string_view bare = bare_address(address);
  switch (kind_) {
    case Kind::any:
      return true;
    case Kind::address:
      return iequals(bare, value_);
    case Kind::domain:
      return bare.find('@') != std::string_view::npos && iequals(domain_of(bare), value_);
    case Kind::subdomains: {
      const std::string_view domain = domain_of(bare);
      return domain.size() > value_.size() + 1 && domain[domain.size() - value_.size() - 1] == '.' &&
             iequals(domain.substr(domain.size() - value_.size()), value_);
    }
  }
  return false;
}

}  // namespace mailkms::policy
