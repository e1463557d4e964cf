// Small text helpers the MIME, streaming and CMS-wrapping units share.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "mailkms/smime/mime.hpp"

namespace mailkms::smime::detail {

// ASCII case-insensitive equality, as header field names compare.
bool iequals(std::string_view a, std::string_view b);

const HeaderField* find_field(const std::vector<HeaderField>& fields, std::string_view name);

// A header field we write: value folded, after one space.
HeaderField make_field(std::string_view name, std::string_view value);

// "Name:value\r\n" for each field.
void append_fields(std::string& out, const std::vector<HeaderField>& fields);

// Appends `data` as base64, 76 characters and CRLF a line (RFC 2045 §6.8).
void append_base64_lines(std::string& out, std::string_view data);

}  // namespace mailkms::smime::detail
