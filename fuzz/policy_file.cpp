// policy.toml as an administrator (or whoever can write it) gives it, and
// the login map beside it; a policy that loads is then asked for decisions.
#include "fuzz_support.hpp"
#include "mailkms/policy/policy.hpp"

using namespace mailkms;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > std::size_t{16} * 1024) return 0;
  const std::string_view text = fuzz::as_text(data, size);
  (void)policy::parse_login_map(text, "logins");
  auto loaded = policy::parse_policy(text, "policy.toml");
  if (!loaded) return 0;
  const policy::Policy& p = **loaded;
  const policy::Headers headers{{{"Subject", "[secure] figures"}, {"X-Class", "confidential"}}};
  for (const auto direction : {policy::Direction::outbound, policy::Direction::inbound}) {
    (void)policy::decide(p, direction, "alice@example.org", "bob@example.net", &headers);
    (void)policy::decide(p, direction, "alice@example.org", "carol@partner.example", nullptr);
  }
  const policy::Connection client{"10.1.2.3", true, "alice@example.org", false, false};
  (void)policy::decide_direction(p, "alice@example.org", client);
  (void)policy::decryption_here(p, client);
  (void)policy::authorize_signer(p, client, "alice@example.org", std::string("alice@example.org"));
  return 0;
}
