#include "spooled_message.hpp"

#include <algorithm>

#include "scan.hpp"
#include "text.hpp"

namespace mailkms::smime::detail {

Result<SpooledMessage> parse_spooled_message(const Spool& spool, const MimeLimits& limits) {
  // The header section must end within the limit; read that much.
  std::string head(std::min(spool.size(), limits.max_header_bytes + 4), '\0');
  MAILKMS_TRY(got, spool.read(0, head.data(), head.size()));
  head.resize(got);
  std::size_t end = std::string::npos;  // offset of the body
  std::size_t headers_end = 0;
  for (std::size_t pos = 0; pos < head.size();) {
    const std::size_t nl = head.find('\n', pos);
    if (nl == std::string::npos) break;
    const std::size_t length = nl - pos;
    if (length == 0 || (length == 1 && head[pos] == '\r')) {
      headers_end = pos;
      end = nl + 1;
      break;
    }
    pos = nl + 1;
  }
  if (end == std::string::npos) {
    if (spool.size() > limits.max_header_bytes) {
      return make_error(Errc::limit_exceeded,
                        "header section larger than " + std::to_string(limits.max_header_bytes) + " bytes");
    }
    headers_end = head.size();
    end = head.size();
  }
  MAILKMS_TRY(parsed, parse_message(std::string_view(head).substr(0, headers_end), limits));

  SpooledMessage message;
  message.outer = std::move(parsed.headers);
  message.content_headers = std::move(parsed.entity.headers);
  message.spool = &spool;
  message.body_offset = end;
  message.body_length = spool.size() - end;
  BodyScan scan;
  MAILKMS_CHECK(spool.for_each_chunk(end, message.body_length, [&scan](std::string_view chunk) -> Status {
    scan.feed(chunk);
    return Ok{};
  }));
  scan.finish();
  message.bare_line_ends = scan.bare_line_ends();
  message.needs_encoding = scan.needs_encoding();
  return message;
}

Result<Pieces> canonical_entity(const SpooledMessage& message, Spool& scratch) {
  Pieces pieces;
  std::string headers;
  append_fields(headers, message.content_headers);
  pieces.add(headers + "\r\n");
  if (!message.bare_line_ends) {
    pieces.add(*message.spool, message.body_offset, message.body_length);
    return pieces;
  }
  const std::size_t start = scratch.size();
  bool previous_cr = false;
  std::string converted;
  MAILKMS_CHECK(message.spool->for_each_chunk(
      message.body_offset, message.body_length, [&](std::string_view chunk) -> Status {
        converted.clear();
        for (const char c : chunk) {
          if (c == '\n') {
            if (!previous_cr) converted += '\r';
            converted += '\n';
          } else {
            if (previous_cr) converted += '\n';
            if (c != '\r') converted += c;
            else converted += '\r';
          }
          previous_cr = c == '\r';
        }
        return scratch.append(converted);
      }));
  if (previous_cr) MAILKMS_CHECK(scratch.append("\n"));
  pieces.add(scratch, start, scratch.size() - start);
  return pieces;
}

Result<Entity> load_entity(const SpooledMessage& message, const MimeLimits& limits) {
  (void)limits;
  std::string body;
  body.reserve(message.body_length);
  MAILKMS_CHECK(message.spool->for_each_chunk(message.body_offset, message.body_length,
                                              [&body](std::string_view chunk) -> Status {
                                                body.append(chunk);
                                                return Ok{};
                                              }));
  return Entity{message.content_headers, to_crlf(body)};
}

}  // namespace mailkms::smime::detail
