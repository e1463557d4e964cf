#include "mailkms/smime/mime.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>

#include "gmime.hpp"
#include "scan.hpp"
#include "stream.hpp"
#include "text.hpp"
#include "mailkms/smime/certificate.hpp"

namespace mailkms::smime {
namespace {

bool istarts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && detail::iequals(s.substr(0, prefix.size()), prefix);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

struct Parsed {
  std::vector<HeaderField> fields;
  std::string_view body;
};

// Parses the header section of CRLF text. A field's raw value runs from
// after its colon to before the CRLF that is not followed by folding space.
Result<Parsed> parse_header_section(std::string_view text, const MimeLimits& limits) {
  Parsed out;
  std::size_t pos = 0;
  while (true) {
    if (pos > limits.max_header_bytes) {
      return make_error(Errc::limit_exceeded, "header section larger than " +
                                                  std::to_string(limits.max_header_bytes) + " bytes");
    }
    if (pos >= text.size()) {  // headers only, no body
      out.body = {};
      return out;
    }
    if (text.compare(pos, 2, "\r\n") == 0) {
      out.body = text.substr(pos + 2);
      return out;
    }
    // Look for the end of this field only within the limit, so a 10 MB
    // header line costs no more than the limit to refuse.
    const std::size_t window = std::min(text.size(), limits.max_header_bytes + 2);
    std::size_t end = pos;
    while (true) {
      end = text.find("\r\n", end);
      if (end == std::string_view::npos || end >= window) {
        if (text.size() > window) {
          return make_error(Errc::limit_exceeded, "header section larger than " +
                                                      std::to_string(limits.max_header_bytes) + " bytes");
        }
        end = text.size();
        break;
      }
      if (end + 2 < text.size() && (text[end + 2] == ' ' || text[end + 2] == '\t')) {
        end += 2;
        continue;
      }
      break;
    }
    const std::string_view line = text.substr(pos, end - pos);
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0 || line[0] == ' ' || line[0] == '\t') {
      return make_error(Errc::malformed_mime, "header line without a field name: \"" +
                                                  std::string(line.substr(0, 60)) + "\"");
    }
    const std::string_view name = trim(line.substr(0, colon));
    if (name.empty() || std::any_of(name.begin(), name.end(), [](unsigned char c) { return c <= 32 || c >= 127; })) {
      return make_error(Errc::malformed_mime, "invalid header field name");
    }
    if (out.fields.size() >= limits.max_header_fields) {
      return make_error(Errc::limit_exceeded, "more than " + std::to_string(limits.max_header_fields) + " header fields");
    }
    out.fields.push_back(HeaderField{std::string(name), std::string(line.substr(colon + 1))});
    pos = end + 2;
  }
}

// Each octet's value in base64, or -1 for one that is not base64.
constexpr std::array<int, 256> make_decode_table() {
  std::array<int, 256> t{};
  for (auto& v : t) v = -1;
  constexpr std::string_view alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (std::size_t i = 0; i < alphabet.size(); ++i) t[static_cast<unsigned char>(alphabet[i])] = static_cast<int>(i);
  return t;
}
constexpr auto kDecode = make_decode_table();

bool needs_transfer_encoding(std::string_view body) {
  detail::BodyScan scan;
  scan.feed(body);
  return scan.needs_encoding();
}

// Re-encodes every 8bit/binary or over-long leaf as QP or base64; returns
// false if the tree is deeper than allowed.
bool reencode(GMimeObject* object, std::size_t depth, std::size_t max_depth) {
  if (depth > max_depth) return false;
  if (GMIME_IS_MULTIPART(object)) {
    auto* multipart = GMIME_MULTIPART(object);
    for (int i = 0; i < g_mime_multipart_get_count(multipart); ++i) {
      if (!reencode(g_mime_multipart_get_part(multipart, i), depth + 1, max_depth)) return false;
    }
    return true;
  }
  if (GMIME_IS_MESSAGE_PART(object)) {
    GMimeMessage* inner = g_mime_message_part_get_message(GMIME_MESSAGE_PART(object));
    if (inner == nullptr || g_mime_message_get_mime_part(inner) == nullptr) return true;
    return reencode(g_mime_message_get_mime_part(inner), depth + 1, max_depth);
  }
  if (GMIME_IS_PART(object)) {
    auto* part = GMIME_PART(object);
    const GMimeContentEncoding current = g_mime_part_get_content_encoding(part);
    if (current == GMIME_CONTENT_ENCODING_DEFAULT || current == GMIME_CONTENT_ENCODING_7BIT ||
        current == GMIME_CONTENT_ENCODING_8BIT || current == GMIME_CONTENT_ENCODING_BINARY) {
      const GMimeContentEncoding best = g_mime_part_get_best_content_encoding(part, GMIME_ENCODING_CONSTRAINT_7BIT);
      if (best == GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE || best == GMIME_CONTENT_ENCODING_BASE64) {
        g_mime_part_set_content_encoding(part, best);
      }
    }
  }
  return true;
}

}  // namespace

std::string HeaderField::unfolded() const {
  std::string out;
  out.reserve(value.size());
  for (std::size_t i = 0; i < value.size(); ++i) {
    if (value[i] == '\r' && i + 1 < value.size() && value[i + 1] == '\n') {
      ++i;
      continue;
    }
    out.push_back(value[i]);
  }
  return std::string(trim(out));
}

const HeaderField* Entity::find(std::string_view name) const { return detail::find_field(headers, name); }

std::string Entity::serialize() const {
  std::string out;
  std::size_t size = body.size() + 2;
  for (const auto& f : headers) size += f.name.size() + f.value.size() + 3;
  out.reserve(size);
  detail::append_fields(out, headers);
  out += "\r\n";
  out += body;
  return out;
}

const HeaderField* Message::find(std::string_view name) const { return detail::find_field(headers, name); }

std::string Message::serialize() const {
  std::string out = detail::header_section(headers, entity.headers);
  out += entity.body;
  return out;
}

std::optional<std::string> ContentType::parameter(std::string_view name) const {
  const auto it = parameters.find(std::string(name));
  if (it == parameters.end()) return std::nullopt;
  return it->second;
}

std::string to_crlf(std::string_view text) {
  std::size_t bare = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\n' && (i == 0 || text[i - 1] != '\r')) ++bare;
  }
  if (bare == 0) return std::string(text);
  std::string out;
  out.reserve(text.size() + bare);
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\n' && (i == 0 || text[i - 1] != '\r')) out.push_back('\r');
    out.push_back(text[i]);
  }
  return out;
}

Result<Message> parse_message(std::string_view raw, const MimeLimits& limits) {
  const std::string text = to_crlf(raw);
  MAILKMS_TRY(parsed, parse_header_section(text, limits));
  Message message;
  for (auto& field : parsed.fields) {
    if (istarts_with(field.name, "Content-")) {
      message.entity.headers.push_back(std::move(field));
    } else {
      message.headers.push_back(std::move(field));
    }
  }
  message.entity.body = std::string(parsed.body);
  return message;
}

Result<Entity> parse_entity(std::string_view raw, const MimeLimits& limits) {
  // Only the header lines are made CRLF: the body is kept byte for byte,
  // since inside CMS it may be binary.
  const auto split = detail::find_header_end(raw, limits.max_header_bytes);
  if (!split) {
    return make_error(Errc::limit_exceeded, "header section larger than " + std::to_string(limits.max_header_bytes) + " bytes");
  }
  const std::string headers = to_crlf(raw.substr(0, split->headers_end)) + "\r\n";
  auto parsed = parse_header_section(headers, limits);
  if (!parsed) {
    // Some signers wrap bare text without any MIME header (openssl cms
    // without -text does): read it as a body of the default type.
    const std::string_view first_line = raw.substr(0, raw.find('\n'));
    if (parsed.error().code == Errc::malformed_mime && first_line.find(':') == std::string_view::npos) {
      return Entity{{}, std::string(raw)};
    }
    return std::move(parsed).error();
  }
  return Entity{std::move(parsed->fields), std::string(raw.substr(split->body_start))};
}

Result<ContentType> content_type(const Entity& entity) {
  const HeaderField* field = entity.find("Content-Type");
  if (field == nullptr) return ContentType{"text", "plain", {{"charset", "us-ascii"}}};
  gmime::ensure_initialized();
  const std::string value = field->unfolded();
  GMimeContentType* parsed = g_mime_content_type_parse(nullptr, value.c_str());
  if (parsed == nullptr) return make_error(Errc::malformed_mime, "unparsable Content-Type: " + value.substr(0, 80));
  gmime::Ptr<GMimeContentType> owner(parsed);
  ContentType out;
  out.type = normalize_address(g_mime_content_type_get_media_type(parsed));
  out.subtype = normalize_address(g_mime_content_type_get_media_subtype(parsed));
  GMimeParamList* params = g_mime_content_type_get_parameters(parsed);
  for (int i = 0; i < g_mime_param_list_length(params); ++i) {
    GMimeParam* p = g_mime_param_list_get_parameter_at(params, i);
    const char* v = g_mime_param_get_value(p);
    out.parameters.emplace(normalize_address(g_mime_param_get_name(p)), v != nullptr ? v : "");
  }
  return out;
}

Result<Entity> canonicalize_for_signing(const Entity& entity, const MimeLimits& limits) {
  if (!needs_transfer_encoding(entity.body)) return entity;

  gmime::ensure_initialized();
  const std::string serialized = entity.serialize();
  gmime::Ptr<GMimeStream> in(g_mime_stream_mem_new_with_buffer(serialized.data(), serialized.size()));
  gmime::Ptr<GMimeParser> parser(g_mime_parser_new_with_stream(in.get()));
  gmime::Ptr<GMimeObject> root(g_mime_parser_construct_part(parser.get(), nullptr));
  if (!root) return make_error(Errc::malformed_mime, "the entity to sign does not parse as MIME");
  if (!reencode(root.get(), 0, limits.max_depth)) {
    return make_error(Errc::limit_exceeded, "MIME nested deeper than " + std::to_string(limits.max_depth) + " levels");
  }
  gmime::Ptr<GMimeStream> out(g_mime_stream_mem_new());
  GMimeFormatOptions* format = g_mime_format_options_new();
  g_mime_format_options_set_newline_format(format, GMIME_NEWLINE_FORMAT_DOS);
  const ssize_t written = g_mime_object_write_to_stream(root.get(), format, out.get());
  g_mime_format_options_free(format);
  if (written < 0) return make_error(Errc::internal, "GMime could not write the re-encoded entity");
  GByteArray* bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(out.get()));
  return parse_entity(std::string_view(reinterpret_cast<const char*>(bytes->data), bytes->len), limits);
}

namespace {

bool collect_parts(GMimeObject* object, std::size_t depth, std::size_t max_depth, std::vector<DecodedPart>& out) {
  if (depth > max_depth) return false;
  if (GMIME_IS_MULTIPART(object)) {
    auto* multipart = GMIME_MULTIPART(object);
    const int count = g_mime_multipart_get_count(multipart);
    for (int i = 0; i < count; ++i) {
      if (!collect_parts(g_mime_multipart_get_part(multipart, i), depth + 1, max_depth, out)) return false;
    }
    return true;
  }
  if (GMIME_IS_MESSAGE_PART(object)) {
    GMimeMessage* inner = g_mime_message_part_get_message(GMIME_MESSAGE_PART(object));
    return inner == nullptr || collect_parts(g_mime_message_get_mime_part(inner), depth + 1, max_depth, out);
  }
  if (!GMIME_IS_PART(object)) return true;
  auto* part = GMIME_PART(object);
  DecodedPart decoded;
  GMimeContentType* type = g_mime_object_get_content_type(object);
  decoded.type = normalize_address(std::string(g_mime_content_type_get_media_type(type)) + "/" +
                                   g_mime_content_type_get_media_subtype(type));
  if (const char* name = g_mime_part_get_filename(part); name != nullptr) decoded.filename = name;
  GMimeDataWrapper* wrapper = g_mime_part_get_content(part);
  if (wrapper != nullptr) {
    gmime::Ptr<GMimeStream> bytes(g_mime_stream_mem_new());
    GMimeStream* target = bytes.get();
    gmime::Ptr<GMimeStream> filtered;
    const char* charset = g_mime_content_type_get_parameter(type, "charset");
    if (decoded.type.starts_with("text/") && charset != nullptr && g_ascii_strcasecmp(charset, "utf-8") != 0 &&
        g_ascii_strcasecmp(charset, "us-ascii") != 0) {
      filtered.reset(g_mime_stream_filter_new(bytes.get()));
      gmime::Ptr<GMimeFilter> convert(g_mime_filter_charset_new(charset, "utf-8"));
      if (convert) g_mime_stream_filter_add(GMIME_STREAM_FILTER(filtered.get()), convert.get());
      target = filtered.get();
    }
    g_mime_data_wrapper_write_to_stream(wrapper, target);
    g_mime_stream_flush(target);
    GByteArray* array = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(bytes.get()));
    decoded.content.assign(reinterpret_cast<const char*>(array->data), array->len);
  }
  out.push_back(std::move(decoded));
  return true;
}

}  // namespace

Result<std::vector<DecodedPart>> decoded_parts(std::string_view message, const MimeLimits& limits) {
  gmime::ensure_initialized();
  const std::string text = to_crlf(message);
  gmime::Ptr<GMimeStream> in(g_mime_stream_mem_new_with_buffer(text.data(), text.size()));
  gmime::Ptr<GMimeParser> parser(g_mime_parser_new_with_stream(in.get()));
  gmime::Ptr<GMimeMessage> parsed(g_mime_parser_construct_message(parser.get(), nullptr));
  if (!parsed || g_mime_message_get_mime_part(parsed.get()) == nullptr) {
    return make_error(Errc::malformed_mime, "the message does not parse as MIME");
  }
  std::vector<DecodedPart> parts;
  if (!collect_parts(g_mime_message_get_mime_part(parsed.get()), 0, limits.max_depth, parts)) {
    return make_error(Errc::limit_exceeded, "MIME nested deeper than " + std::to_string(limits.max_depth) + " levels");
  }
  return parts;
}

std::string fold_header_value(std::string_view value) {
  // Break at "; " boundaries so no line exceeds 76 columns where avoidable.
  std::string out;
  std::size_t column = 0;
  std::size_t start = 0;
  while (start < value.size()) {
    std::size_t end = value.find("; ", start);
    std::string_view piece = value.substr(start, end == std::string_view::npos ? std::string_view::npos : end + 1 - start);
    if (column > 0 && column + piece.size() + 1 > 76) {
      out += "\r\n\t";
      column = 8;
    } else if (column > 0) {
      out += ' ';
      ++column;
    }
    out += piece;
    column += piece.size();
    if (end == std::string_view::npos) break;
    start = end + 2;
  }
  return out;
}

std::string base64_encode_mime(std::string_view data) {
  std::string out;
  detail::append_base64_lines(out, data);
  return out;
}

Result<std::string> base64_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size() / 4 * 3);
  unsigned buffer = 0;
  int bits = 0;
  int padding = 0;
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
    if (c == '=') {
      ++padding;
      continue;
    }
    const int v = kDecode[c];
    if (v < 0 || padding > 0) return make_error(Errc::invalid_base64, "invalid character in base64 data");
    buffer = (buffer << 6) | static_cast<unsigned>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xff));
    }
  }
  // Leftover bits must be the padding's zero bits: 2 sextets + "==" or 3 + "=".
  if (padding > 2 || (bits == 6) || (padding > 0 && bits / 2 != padding)) {
    return make_error(Errc::invalid_base64, "base64 data truncated or wrongly padded");
  }
  return out;
}

namespace {

void collect_mailboxes(InternetAddressList* list, std::vector<std::string>& out) {
  for (int i = 0; i < internet_address_list_length(list); ++i) {
    InternetAddress* address = internet_address_list_get_address(list, i);
    if (INTERNET_ADDRESS_IS_MAILBOX(address)) {
      const char* addr = internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(address));
      if (addr != nullptr && *addr != '\0') out.emplace_back(addr);
    } else if (INTERNET_ADDRESS_IS_GROUP(address)) {
      collect_mailboxes(internet_address_group_get_members(INTERNET_ADDRESS_GROUP(address)), out);
    }
  }
}

}  // namespace

namespace {

std::string take_gstring(char* owned) {
  if (owned == nullptr) return {};
  std::string out(owned);
  g_free(owned);
  return out;
}

}  // namespace

std::string decode_header_text(std::string_view value) {
  if (value.find("=?") == std::string_view::npos) return std::string(value);
  gmime::ensure_initialized();
  const std::string text(value);
  return take_gstring(g_mime_utils_header_decode_text(nullptr, text.c_str()));
}

std::string encode_header_text(std::string_view text) {
  // Control characters become spaces, tab aside: decoded encoded-words may
  // hold CR LF, and written back as they are they would end the field and
  // start another (header injection). NUL would cut the text short below.
  std::string clean(text);
  std::replace_if(
      clean.begin(), clean.end(),
      [](char c) { return (static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == '\x7f'; }, ' ');
  const bool ascii = std::all_of(clean.begin(), clean.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  if (ascii) return clean;
  gmime::ensure_initialized();
  // Bytes that are not UTF-8 (a raw 8-bit header) become U+FFFD first:
  // encoded-words must say what they hold.
  const std::string valid = take_gstring(g_utf8_make_valid(clean.data(), static_cast<gssize>(clean.size())));
  return take_gstring(g_mime_utils_header_encode_text(nullptr, valid.c_str(), "utf-8"));
}

std::vector<std::string> mailbox_addresses(std::string_view header_value) {
  gmime::ensure_initialized();
  const std::string value(header_value);
  std::vector<std::string> out;
  InternetAddressList* list = internet_address_list_parse(nullptr, value.c_str());
  if (list == nullptr) return out;
  gmime::Ptr<InternetAddressList> owner(list);
  collect_mailboxes(list, out);
  return out;
}

std::vector<std::string> author_addresses(const Message& message) {
  const HeaderField* from = nullptr;
  for (const auto& field : message.headers) {
    if (!detail::iequals(field.name, "From")) continue;
    if (from != nullptr) return {};  // two From fields: whose signature would it be?
    from = &field;
  }
  if (from == nullptr) return {};
  return mailbox_addresses(from->unfolded());
}

}  // namespace mailkms::smime
