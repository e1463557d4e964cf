// Just enough MIME to wrap and unwrap S/MIME layers without disturbing the
// bytes that signatures cover: a byte-exact header parser, the split of a
// message into outer header fields and the MIME entity that S/MIME protects,
// the canonical form for signing (RFC 8551 §3.1), and base64.
// Never interprets more of a message than the layer it works on.
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mailkms/smime/result.hpp"

namespace mailkms::smime {

struct MimeLimits {
  std::size_t max_header_bytes = 1 << 20;  // one header section, all fields together
  std::size_t max_header_fields = 10'000;
  std::size_t max_depth = 64;              // nested multiparts and S/MIME layers
};

struct HeaderField {
  std::string name;   // as written: "Content-Type"
  std::string value;  // raw, after the colon: folding and leading space kept

  // The value unfolded and trimmed, for reading (never for re-writing).
  [[nodiscard]] std::string unfolded() const;
};

// A MIME entity: its content header fields and its body, CRLF line endings.
struct Entity {
  std::vector<HeaderField> headers;
  std::string body;

  [[nodiscard]] const HeaderField* find(std::string_view name) const;
  // Header section, empty line, body: the bytes a signature covers.
  [[nodiscard]] std::string serialize() const;
};

// An RFC 5322 message as S/MIME sees it: the outer fields stay outside every
// layer (From, To, Subject, Date, Message-ID, Received, MIME-Version …), the
// entity (Content-* fields and body) is what gets signed or encrypted.
struct Message {
  std::vector<HeaderField> headers;
  Entity entity;

  [[nodiscard]] const HeaderField* find(std::string_view name) const;
  // Outer fields, MIME-Version exactly once, the entity.
  [[nodiscard]] std::string serialize() const;
};

struct ContentType {
  std::string type;     // lower-case: "multipart"
  std::string subtype;  // lower-case: "signed"
  std::map<std::string, std::string> parameters;  // names lower-case

  [[nodiscard]] bool is(std::string_view t, std::string_view s) const { return type == t && subtype == s; }
  [[nodiscard]] std::optional<std::string> parameter(std::string_view name) const;
};

// Bare LF line endings become CRLF. A lone CR is left alone: it is no line
// end, and turning it into one would change a message's structure.
std::string to_crlf(std::string_view text);

Result<Message> parse_message(std::string_view raw, const MimeLimits& limits = {});
// An entity whose every header field is kept (the inside of an S/MIME
// layer); its body is kept byte for byte.
Result<Entity> parse_entity(std::string_view raw, const MimeLimits& limits = {});

// The entity's Content-Type; text/plain when absent (RFC 2045 §5.2).
Result<ContentType> content_type(const Entity& entity);

// RFC 8551 §3.1: the form an entity must have before it is signed, so that
// no transport can change it. Parts in 8bit or binary, or with lines longer
// than 998 octets, are re-encoded as quoted-printable (text) or base64. An
// entity that is already 7-bit clean is returned byte for byte.
Result<Entity> canonicalize_for_signing(const Entity& entity, const MimeLimits& limits = {});

// A header value with the given parameters, folded at 76 columns.
std::string fold_header_value(std::string_view value);

// Base64 with CRLF every 76 characters (RFC 2045 §6.8).
std::string base64_encode_mime(std::string_view data);
// Ignores whitespace; any other character outside the alphabet, or bad
// padding, is an error.
Result<std::string> base64_decode(std::string_view text);

// The leaf parts of a message (never a multipart), with their transfer
// encoding undone and text converted to UTF-8: for reading what a person
// wrote, such as an enrollment reply. Stops at `limits.max_depth`.
struct DecodedPart {
  std::string type;      // lower-case "text/plain"
  std::string filename;  // from Content-Disposition or the name parameter
  std::string content;
};
Result<std::vector<DecodedPart>> decoded_parts(std::string_view message, const MimeLimits& limits = {});

// The text of an unstructured header value such as a Subject, with its
// RFC 2047 encoded-words decoded to UTF-8 (what a person reads, and what a
// policy must match); what cannot be decoded stays as it was written.
std::string decode_header_text(std::string_view value);
// The reverse, for text written back into a header: control characters
// (CR, LF, NUL …, not tab) become spaces, so the result never ends the
// field; ASCII stays as it is, anything else becomes UTF-8 encoded-words
// of legal length (bytes that are not UTF-8 as U+FFFD).
std::string encode_header_text(std::string_view text);

// The bare address of every mailbox in a From/To-style value (group
// members included); empty if none can be read.
std::vector<std::string> mailbox_addresses(std::string_view header_value);

// The authors of a message (RFC 5322 From), which a signature must vouch
// for: empty unless there is exactly one From field with at least one
// readable address.
std::vector<std::string> author_addresses(const Message& message);

}  // namespace mailkms::smime
