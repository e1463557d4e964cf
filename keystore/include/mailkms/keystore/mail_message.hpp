// The mails the keystore sends users, from templates administrators edit:
// a template is a whole message — header lines, an empty line, the body —
// with {{placeholders}}. Lines at the top that begin with '#' are notes
// for administrators and are left out. The keystore adds what a
// template leaves out (To, From, Date, Message-ID, MIME headers) and
// builds multipart/mixed messages for attachments. Never logs what it
// renders: the messages hold tokens.
#pragma once

#include <ctime>
#include <filesystem>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>

#include "mailkms/keystore/error.hpp"

namespace mailkms::keystore {

// `text` with each {{name}} replaced by values.at(name). A placeholder
// with no value is an error that names it and its line. A line holding a
// placeholder whose value is empty is left out, so optional text (the
// reason for a refusal) sits on a line of its own.
Result<std::string> render_template(std::string_view text, const std::map<std::string, std::string>& values,
                                    std::string_view name = "template");
// The same, read from `file` at each use.
Result<std::string> render_template_file(const std::filesystem::path& file,
                                         const std::map<std::string, std::string>& values);

struct Attachment {
  std::string filename;
  std::string content_type;  // "application/pkcs12"
  std::string data;          // sent base64
};

// The value of the keystore's mark (mail_mark.hpp) for a message with this Message-ID.
using MarkMaker = std::function<Result<std::string>(const std::string& message_id)>;

// A message ready for sendmail (LF line ends) from a rendered template,
// with the keystore's mark when `mark` is given (a template's own mark
// field is dropped).
Result<std::string> compose_message(std::string_view rendered, const std::string& to, const std::string& from,
                                    std::span<const Attachment> attachments = {}, const MarkMaker& mark = {});

// "Tue, 07 Jan 2025 09:30:00 +0000" (RFC 5322) and "2025-01-07 09:30 UTC".
std::string rfc5322_date(std::time_t t);
std::string readable_time(std::time_t t);

}  // namespace mailkms::keystore
