// Small readers over a spooled message for the pipeline: where its header
// section ends, its fields, and what its top-level Content-Type says —
// without loading the body.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "mailkms/smime/mime.hpp"
#include "mailkms/smime/spool.hpp"

namespace mailkms::gateway {

struct HeaderSection {
  std::vector<smime::HeaderField> fields;
  std::size_t body_offset = 0;  // where the body starts (after the empty line)
};

// Fails if the header section is larger than `limit`.
smime::Result<HeaderSection> read_header_section(const smime::Spool& message, std::size_t limit = 1 << 20);

// What the message's top-level Content-Type says it is: signed with the
// content beside the signature (multipart/signed) or inside it
// (signed-data), or encrypted.
enum class SmimeKind { none, signed_multipart, signed_opaque, encrypted };
constexpr bool is_signed(SmimeKind kind) { return kind == SmimeKind::signed_multipart || kind == SmimeKind::signed_opaque; }
SmimeKind smime_kind(const std::vector<smime::HeaderField>& headers);
// The same, but for application/pkcs7-mime the CMS content type at the start
// of the body decides, whatever smime-type says (or does not): only
// enveloped or authEnveloped data is encrypted; compressed data, or a body
// that is no CMS at all, is none.
SmimeKind smime_kind(const std::vector<smime::HeaderField>& headers, const smime::Spool& message);

// Whether the message is a calendar invitation (iMIP, RFC 6047): a
// text/calendar part that names its method, at the top or in its multipart
// structure. Text that merely looks like such a part's header (in a body,
// an attached message or an epilogue) does not count, nor does an attached
// .ics file without a method.
bool has_calendar(const smime::Spool& message);

// `message` with Subject replaced by `subject` (the first Subject field).
smime::Result<smime::Spool> with_subject(const smime::Spool& message, const HeaderSection& header,
                                         const std::string& subject, const smime::SpoolOptions& options);

// A copy of `message`.
smime::Result<smime::Spool> copy_of(const smime::Spool& message, const smime::SpoolOptions& options);

// A copy of `message` with `field` added at the top.
smime::Result<smime::Spool> with_field_on_top(const smime::Spool& message, const smime::HeaderField& field,
                                              const smime::SpoolOptions& options);

bool is_content_field(std::string_view name);  // Content-*, MIME-Version

// Header field names compare without regard to case.
bool iequals(std::string_view a, std::string_view b);

// The author in From when there is exactly one (the first From field
// decides): whose keys a message is signed with, if the submission is
// authorized for it (policy::authorize_signer).
std::optional<std::string> sole_author(const std::vector<smime::HeaderField>& headers);
// The same, else `fallback` (the envelope sender): whose enrollment reply
// a message is.
std::string sole_author_or(const std::vector<smime::HeaderField>& headers, const std::string& fallback);

}  // namespace mailkms::gateway
