// Small text helpers the MIME, streaming and CMS-wrapping units share.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mailkms/smime/mime.hpp"

namespace mailkms::smime::detail {

// Where a header section ends: the first empty line ("\n" or "\r\n").
struct HeaderEnd {
  std::size_t headers_end;  // the header lines, without the empty line
  std::size_t body_start;   // after the empty line
};
// Looks no further than `limit` bytes; nullopt if the header section is
// longer. Text without an empty line is all header.
std::optional<HeaderEnd> find_header_end(std::string_view text, std::size_t limit);

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
