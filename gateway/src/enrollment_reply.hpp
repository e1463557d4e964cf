// Reading a user's reply to an enrollment or recovery message: the token
// (wherever it is in the text, however the mail client quoted or wrapped
// it), the password they chose for their certificate file, and a PKCS#10
// request if they attached one. Never logs or keeps what it reads.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "mailkms/smime/mime.hpp"

namespace mailkms::gateway {

struct EnrollmentReply {
  std::string token;     // "MKMS-…" as found, or empty
  std::string password;  // empty if none was written
  std::optional<std::string> csr_pem;
};

EnrollmentReply read_enrollment_reply(const std::vector<smime::DecodedPart>& parts);

// Text of an HTML body, with tags dropped, line breaks kept and the common
// entities decoded: enough to find a token and a password line.
std::string html_to_text(std::string_view html);

}  // namespace mailkms::gateway
