#include "message_text.hpp"

#include <algorithm>
#include <cctype>

namespace mailkms::gateway {
bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

std::string sole_author_or(const std::vector<smime::HeaderField>& headers, const std::string& fallback) {
  for (const auto& f : headers) {
    if (!iequals(f.name, "From")) continue;
    const auto authors = smime::mailbox_addresses(f.unfolded());
    return authors.size() == 1 ? authors.front() : fallback;
  }
  return fallback;
}

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

bool is_content_field(std::string_view name) {
  return iequals(name, "MIME-Version") || (name.size() > 8 && iequals(name.substr(0, 8), "Content-"));
}

smime::Result<HeaderSection> read_header_section(const smime::Spool& message, std::size_t limit) {
  // Read until the empty line: "\r\n\r\n", or the message starting with one.
  std::string head;
  std::size_t end = std::string::npos;
  constexpr std::size_t step = 16 * 1024;
  while (end == std::string::npos && head.size() < message.size()) {
    if (head.size() > limit) return smime::make_error(smime::Errc::limit_exceeded, "header section too large");
    std::string chunk(std::min(step, message.size() - head.size()), '\0');
    MAILKMS_TRY(got, message.read(head.size(), chunk.data(), chunk.size()));
    chunk.resize(got);
    if (got == 0) break;
    const std::size_t from = head.size() >= 3 ? head.size() - 3 : 0;
    head += chunk;
    if (head.starts_with("\r\n")) {
      end = 0;
    } else if (const auto at = head.find("\r\n\r\n", from); at != std::string::npos) {
      end = at + 2;
    }
  }
  HeaderSection out;
  const std::size_t header_bytes = end == std::string::npos ? head.size() : end;
  // The loop stops reading past the limit, but its last read may overshoot.
  if (header_bytes > limit) return smime::make_error(smime::Errc::limit_exceeded, "header section too large");
  out.body_offset = end == std::string::npos ? message.size() : end + 2;
  std::string_view text(head.data(), header_bytes);
  while (!text.empty()) {
    std::size_t line_end = text.find("\r\n");
    if (line_end == std::string_view::npos) line_end = text.size();
    // Continuation lines belong to the field above.
    std::size_t field_end = line_end;
    while (field_end + 2 < text.size() && (text[field_end + 2] == ' ' || text[field_end + 2] == '\t')) {
      const auto next = text.find("\r\n", field_end + 2);
      field_end = next == std::string_view::npos ? text.size() : next;
    }
    const std::string_view line = text.substr(0, field_end);
    const auto colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      return smime::make_error(smime::Errc::malformed_mime, "a header line without a field name");
    }
    std::string_view name = line.substr(0, colon);
    while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.remove_suffix(1);
    out.fields.push_back({std::string(name), std::string(line.substr(colon + 1))});
    text.remove_prefix(std::min(text.size(), field_end + 2));
  }
  return out;
}

SmimeKind smime_kind(const std::vector<smime::HeaderField>& headers) {
  smime::Entity head;
  head.headers = headers;
  const auto type = smime::content_type(head);
  if (!type) return SmimeKind::none;
  if (type->is("multipart", "signed")) return SmimeKind::signed_multipart;
  if (type->type == "application" && (type->subtype == "pkcs7-mime" || type->subtype == "x-pkcs7-mime")) {
    const auto kind = lower(type->parameter("smime-type").value_or(""));
    if (kind == "signed-data") return SmimeKind::signed_opaque;
    if (kind == "certs-only") return SmimeKind::none;
    return SmimeKind::encrypted;  // enveloped-data, authEnveloped-data, or unstated
  }
  return SmimeKind::none;
}

bool has_calendar(const smime::Spool& message) {
  // A line "Content-Type: text/calendar…" in any part, however spaced or
  // cased, or a bare "Content-Type:" whose value comes on the folded line
  // after it. Only line starts are looked at, and only those beginning with
  // 'c' (or white space, after a bare "Content-Type:"): this runs over
  // every outbound message.
  static constexpr std::string_view field = "content-type:";
  static constexpr std::string_view wanted = "content-type:text/calendar";
  std::string start;  // the start of the current line, up to 64 bytes
  bool in_candidate = true;  // the message's first line is a line start
  bool bare_field = false;   // the last line was "Content-Type:" alone
  bool found = false;
  const auto squeezed = [&] {
    std::string out;
    for (const char c : start) {
      if (c != ' ' && c != '\t' && c != '\r') out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    return out;
  };
  (void)message.for_each_chunk(0, message.size(), [&](std::string_view chunk) -> smime::Status {
    std::size_t at = 0;
    while (at < chunk.size()) {
      if (in_candidate) {
        // Collect this line's start until its end, or 64 bytes.
        const std::size_t newline = chunk.find('\n', at);
        const std::size_t end = newline == std::string_view::npos ? chunk.size() : newline;
        if (start.empty() && at < end) {
          const char first = chunk[at];
          if (bare_field && (first == ' ' || first == '\t')) {
            start = field;  // the value, folded onto this line
          } else if (first != 'c' && first != 'C') {
            in_candidate = false;
          }
        }
        bare_field = false;
        if (in_candidate) {
          start.append(chunk.substr(at, std::min(end - at, 64 - std::min<std::size_t>(start.size(), 64))));
          if (newline == std::string_view::npos) return smime::Ok{};  // continues in the next chunk
          const std::string line = squeezed();
          if (line.starts_with(wanted)) {
            found = true;
            return smime::make_error(smime::Errc::internal, "found");  // stops the walk
          }
          bare_field = line == field;
        }
        if (newline == std::string_view::npos) return smime::Ok{};
        start.clear();
        at = newline + 1;
        in_candidate = true;
        continue;
      }
      const std::size_t newline = chunk.find('\n', at);
      if (newline == std::string_view::npos) return smime::Ok{};
      at = newline + 1;
      in_candidate = true;
      start.clear();
    }
    return smime::Ok{};
  });
  return found || (in_candidate && squeezed().starts_with(wanted));
}

namespace {

smime::Result<smime::Spool> rewrite_header(const smime::Spool& message, std::size_t body_offset, const std::string& header,
                                           const smime::SpoolOptions& options) {
  smime::Spool out(options);
  MAILKMS_CHECK(out.append(header));
  MAILKMS_CHECK(message.for_each_chunk(body_offset, message.size() - body_offset,
                                       [&](std::string_view chunk) { return out.append(chunk); }));
  return out;
}

std::string serialize(const std::vector<smime::HeaderField>& fields) {
  std::string out;
  for (const auto& f : fields) out.append(f.name).append(":").append(f.value).append("\r\n");
  out.append("\r\n");
  return out;
}

}  // namespace

smime::Result<smime::Spool> with_subject(const smime::Spool& message, const HeaderSection& header,
                                         const std::string& subject, const smime::SpoolOptions& options) {
  auto fields = header.fields;
  for (auto& f : fields) {
    if (iequals(f.name, "Subject")) {
      f.value = " " + subject;
      break;
    }
  }
  return rewrite_header(message, header.body_offset, serialize(fields), options);
}

smime::Result<smime::Spool> with_field_on_top(const smime::Spool& message, const smime::HeaderField& field,
                                              const smime::SpoolOptions& options) {
  smime::Spool out(options);
  MAILKMS_CHECK(out.append(field.name + ":" + field.value + "\r\n"));
  MAILKMS_CHECK(message.for_each_chunk(0, message.size(), [&](std::string_view chunk) { return out.append(chunk); }));
  return out;
}

}  // namespace mailkms::gateway
