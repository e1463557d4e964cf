// Addresses and header text from outside: RFC 2047 encoded-words, mailbox
// lists, address normalization and domain scopes, the author the gateway
// signs as, Authentication-Results fields, and subject tags.
#include "fuzz_support.hpp"
#include "mailkms/policy/policy.hpp"
#include "mailkms/smime/mime.hpp"
#include "message_text.hpp"
#include "pipeline.hpp"

using namespace mailkms;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > std::size_t{16} * 1024) return 0;
  const std::string_view text = fuzz::as_text(data, size);
  const std::string decoded = smime::decode_header_text(text);
  // What the gateway writes back into a header (a subject without its tag)
  // never ends the header line, whatever the encoded-words decoded to.
  for (const std::string& written : {smime::encode_header_text(decoded), smime::encode_header_text(text)}) {
    if (written.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos) {
      fuzz::violated("text for a header holds a line break or NUL: " + written);
    }
  }
  for (const auto& address : smime::mailbox_addresses(text)) {
    const std::string normal = smime::normalize_address(address);
    if (smime::normalize_address(normal) != normal) fuzz::violated("normalize_address is not idempotent: " + address);
    (void)smime::address_in_domain(normal, "example.org");
  }
  const auto split = text.find('\n');
  const std::string_view first = text.substr(0, split);
  const std::string_view rest = split == std::string_view::npos ? std::string_view() : text.substr(split + 1);
  (void)smime::address_in_domain(first, rest);
  const std::vector<smime::HeaderField> headers{{"From", std::string(first)}, {"Authentication-Results", std::string(rest)}};
  (void)gateway::sole_author(headers);
  (void)gateway::authserv_id_of(text);
  (void)gateway::forged_results(headers, "mx.example.org");
  (void)policy::remove_subject_tag(first, rest);
  return 0;
}
