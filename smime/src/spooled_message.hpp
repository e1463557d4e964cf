// A message in a Spool, read without loading its body: the header fields
// split as S/MIME needs them, and what the body needs before signing.
#pragma once

#include <vector>

#include "mailkms/smime/mime.hpp"
#include "mailkms/smime/spool.hpp"
#include "stream.hpp"

namespace mailkms::smime::detail {

struct SpooledMessage {
  std::vector<HeaderField> outer;            // stay outside every layer
  std::vector<HeaderField> content_headers;  // Content-*: move inside
  const Spool* spool = nullptr;
  std::size_t body_offset = 0;
  std::size_t body_length = 0;
  bool bare_line_feeds = false;  // an LF without CR before it
  bool needs_encoding = false;  // 8bit, NUL, or a line longer than 998 octets
};

Result<SpooledMessage> parse_spooled_message(const Spool& spool, const MimeLimits& limits);

// The MIME entity (content headers, empty line, body) with CRLF line ends,
// as pieces over the spool; a body with bare line feeds is converted into
// `scratch` first.
Result<Pieces> canonical_entity(const SpooledMessage& message, Spool& scratch);

// The same entity loaded into memory, for the rare bodies that must be
// re-encoded before signing.
Result<Entity> load_entity(const SpooledMessage& message);

}  // namespace mailkms::smime::detail
