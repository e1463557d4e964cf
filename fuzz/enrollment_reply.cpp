// A user's reply to an enrollment or recovery message, from anyone who can
// send mail to the enrollment address: the MIME walk down to the text, the
// token, the password line and an attached PKCS#10 request.
#include "enrollment_reply.hpp"
#include "fuzz_support.hpp"
#include "mailkms/smime/mime.hpp"

using namespace mailkms;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > std::size_t{64} * 1024) return 0;
  const std::string_view text = fuzz::as_text(data, size);
  (void)gateway::html_to_text(text);
  auto parts = smime::decoded_parts(text);
  if (!parts) return 0;
  const gateway::EnrollmentReply reply = gateway::read_enrollment_reply(*parts);
  if (!reply.token.empty() && (reply.token.size() != 31 || !reply.token.starts_with("MKMS-"))) {
    fuzz::violated("a token of the wrong shape: " + reply.token);
  }
  if (reply.password.find_first_of("\r\n") != std::string::npos) fuzz::violated("a password spanning lines");
  return 0;
}
