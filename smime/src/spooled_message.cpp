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
  const auto split = find_header_end(head, limits.max_header_bytes);
  if (!split) {
    return make_error(Errc::limit_exceeded,
                      "header section larger than " + std::to_string(limits.max_header_bytes) + " bytes");
  }
  const std::size_t headers_end = split->headers_end;
  const std::size_t end = split->body_start;
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
  message.bare_line_feeds = scan.bare_line_feeds();
  message.needs_encoding = scan.needs_encoding();
  return message;
}

Result<Pieces> canonical_entity(const SpooledMessage& message, Spool& scratch) {
  Pieces pieces;
  std::string headers;
  append_fields(headers, message.content_headers);
  pieces.add(headers + "\r\n");
  if (!message.bare_line_feeds) {
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
          if (c == '\n' && !previous_cr) converted += '\r';
          converted += c;
          previous_cr = c == '\r';
        }
        return scratch.append(converted);
      }));
  pieces.add(scratch, start, scratch.size() - start);
  return pieces;
}

Result<Entity> load_entity(const SpooledMessage& message) {
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
