#include "message_text.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <cctype>

namespace mailkms::gateway {
bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

std::optional<std::string> sole_author(const std::vector<smime::HeaderField>& headers) {
  for (const auto& f : headers) {
    if (!iequals(f.name, "From")) continue;
    const auto authors = smime::mailbox_addresses(f.unfolded());
    if (authors.size() != 1) return std::nullopt;
    return authors.front();
  }
  return std::nullopt;
}

std::string sole_author_or(const std::vector<smime::HeaderField>& headers, const std::string& fallback) {
  return sole_author(headers).value_or(fallback);
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
  constexpr std::size_t step = std::size_t{16} * 1024;
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

namespace {

// Follows a message's MIME structure line by line, reading the header
// section of the message and of every part that starts after a boundary
// line of a multipart seen so far; everything else is skipped unread.
class InvitationFinder {
 public:
  // One line, without its line end. True once an invitation was found.
  bool line(std::string_view text) {
    if (in_header_) return header_line(text);
    if (text.size() >= 2 && text[0] == '-' && text[1] == '-') boundary_line(text.substr(2));
    return false;
  }

  // The message ended; a header section still open ends with it.
  bool end() { return in_header_ && header_done(); }

  // How much of the next line matters: a header line whole (folded fields
  // are bounded anyway), of a body line only what a boundary could fill
  // (RFC 2046 §5.1.1: at most 70 characters, "--" either side).
  [[nodiscard]] std::size_t wanted() const { return in_header_ ? kMaxField : 80; }
  // Nothing more can be found: past a header section, and inside no
  // multipart (a single-part message, or the epilogue of the outermost).
  [[nodiscard]] bool done() const { return !in_header_ && boundaries_.empty(); }
  // Whether a line starting with `first` can matter: every header line, of
  // the body only what may be a boundary.
  [[nodiscard]] bool wants_line_starting(char first) const { return in_header_ || first == '-'; }

 private:
  static constexpr std::size_t kMaxField = std::size_t{8} * 1024;    // of one unfolded field
  static constexpr std::size_t kMaxFields = 256;        // per header section
  static constexpr std::size_t kMaxBoundaries = 16;     // nesting kept track of

  bool header_line(std::string_view text) {
    if (text.empty()) return header_done();
    if (text[0] == ' ' || text[0] == '\t') {
      if (!fields_.empty() && fields_.back().value.size() + text.size() < kMaxField) {
        fields_.back().value.append("\r\n").append(text);
      }
      return false;
    }
    const auto colon = text.find(':');
    if (colon == std::string_view::npos || colon == 0 || fields_.size() >= kMaxFields) return false;
    std::string_view name = text.substr(0, colon);
    while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.remove_suffix(1);
    // Only Content-Type matters here; the others are kept as names alone.
    const bool wanted = iequals(name, "Content-Type");
    fields_.push_back({std::string(name), wanted ? std::string(text.substr(colon + 1, kMaxField)) : std::string()});
    return false;
  }

  bool header_done() {
    in_header_ = false;
    smime::Entity part;
    part.headers = std::move(fields_);
    fields_.clear();
    const auto type = smime::content_type(part);
    if (!type) return false;
    // RFC 6047 §2.4: an iMIP message's text/calendar part names its method.
    if (type->is("text", "calendar") && type->parameter("method")) return true;
    if (type->type == "multipart" && boundaries_.size() < kMaxBoundaries) {
      const auto boundary = type->parameter("boundary");
      if (boundary && !boundary->empty()) boundaries_.push_back(*boundary);
    }
    return false;
  }

  // After "--": the boundary of an enclosing multipart starts a part, or
  // closes that multipart (and any inside it).
  void boundary_line(std::string_view rest) {
    for (std::size_t i = boundaries_.size(); i-- > 0;) {
      const std::string& b = boundaries_[i];
      if (!rest.starts_with(b)) continue;
      std::string_view after = rest.substr(b.size());
      const bool closing = after.starts_with("--");
      if (closing) after.remove_prefix(2);
      if (after.find_first_not_of(" \t\r") != std::string_view::npos) continue;  // a longer boundary
      if (closing) {
        boundaries_.resize(i);
      } else {
        boundaries_.resize(i + 1);
        in_header_ = true;
      }
      return;
    }
  }

  bool in_header_ = true;  // the message's own header comes first
  std::vector<smime::HeaderField> fields_;
  std::vector<std::string> boundaries_;
};

}  // namespace

namespace {

// The content type a CMS ContentInfo starts with (RFC 5652 §3): a SEQUENCE
// whose first element is the OID. Only that much of the DER is needed.
SmimeKind cms_kind(std::string_view der) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(der[i]); };
  if (der.size() < 2 || byte(0) != 0x30) return SmimeKind::none;
  std::size_t at = 2;
  if ((byte(1) & 0x80) != 0) at += static_cast<std::size_t>(byte(1) & 0x7fU);  // long form; 0x80 is indefinite
  if (der.size() < at + 2 || byte(at) != 0x06) return SmimeKind::none;
  const std::string_view oid = der.substr(at + 2, byte(at + 1));
  using namespace std::string_view_literals;
  constexpr auto pkcs7 = "\x2a\x86\x48\x86\xf7\x0d\x01\x07"sv;                // 1.2.840.113549.1.7
  constexpr auto smime_content = "\x2a\x86\x48\x86\xf7\x0d\x01\x09\x10\x01"sv;  // 1.2.840.113549.1.9.16.1
  if (oid.size() == pkcs7.size() + 1 && oid.starts_with(pkcs7)) {
    if (oid.back() == 0x02) return SmimeKind::signed_opaque;  // signedData
    if (oid.back() == 0x03) return SmimeKind::encrypted;      // envelopedData
  }
  if (oid.size() == smime_content.size() + 1 && oid.starts_with(smime_content) && oid.back() == 0x17) {
    return SmimeKind::encrypted;  // authEnvelopedData (RFC 5083)
  }
  return SmimeKind::none;  // compressedData, or anything else
}

}  // namespace

SmimeKind smime_kind(const std::vector<smime::HeaderField>& headers, const smime::Spool& message) {
  const SmimeKind labelled = smime_kind(headers);
  if (labelled != SmimeKind::encrypted && labelled != SmimeKind::signed_opaque) return labelled;
  // application/pkcs7-mime: what the body holds decides, not its label.
  auto section = read_header_section(message);
  if (!section) return SmimeKind::none;
  std::string head(std::min<std::size_t>(256, message.size() - std::min(message.size(), section->body_offset)), '\0');
  auto got = message.read(section->body_offset, head.data(), head.size());
  if (!got) return SmimeKind::none;
  head.resize(*got);
  bool base64 = false;
  for (const auto& f : headers) {
    if (iequals(f.name, "Content-Transfer-Encoding")) base64 = lower(f.unfolded()).find("base64") != std::string::npos;
  }
  if (!base64) return cms_kind(head);
  std::string encoded;
  for (const char c : head) {
    if (std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '+' || c == '/') encoded += c;
    if (encoded.size() == 64) break;
  }
  encoded.resize(encoded.size() / 4 * 4);
  std::string der(encoded.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(der.data()),
                                reinterpret_cast<const unsigned char*>(encoded.data()), static_cast<int>(encoded.size()));
  if (n < 0) return SmimeKind::none;
  return cms_kind(der);
}

bool has_calendar(const smime::Spool& message) {
  InvitationFinder finder;
  std::string line;      // as much of the current line as the finder wants
  bool skipping = false;  // a body line that cannot be a boundary: not copied
  bool found = false;
  const auto feed = [&] {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    found = finder.line(line);
    line.clear();
  };
  (void)message.for_each_chunk(0, message.size(), [&](std::string_view chunk) -> smime::Status {
    while (!chunk.empty()) {
      const std::size_t newline = chunk.find('\n');
      const std::string_view piece = chunk.substr(0, newline);
      if (!skipping && line.empty() && !piece.empty() && !finder.wants_line_starting(piece.front())) skipping = true;
      if (!skipping) {
        const std::size_t keep = finder.wanted();
        if (line.size() < keep) line.append(piece.substr(0, keep - line.size()));
      }
      if (newline == std::string_view::npos) break;  // continues in the next chunk
      if (skipping) {
        skipping = false;
      } else {
        feed();
        if (found || finder.done()) return smime::make_error(smime::Errc::internal, "done");  // stops the walk
      }
      chunk.remove_prefix(newline + 1);
    }
    return smime::Ok{};
  });
  if (!found && !skipping && !line.empty()) feed();  // the last line, without its newline
  return found || finder.end();
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

smime::Result<smime::Spool> copy_of(const smime::Spool& message, const smime::SpoolOptions& options) {
  smime::Spool out(options);
  MAILKMS_CHECK(message.for_each_chunk(0, message.size(), [&](std::string_view chunk) { return out.append(chunk); }));
  return out;
}

smime::Result<smime::Spool> with_field_on_top(const smime::Spool& message, const smime::HeaderField& field,
                                              const smime::SpoolOptions& options) {
  smime::Spool out(options);
  MAILKMS_CHECK(out.append(field.name + ":" + field.value + "\r\n"));
  MAILKMS_CHECK(message.for_each_chunk(0, message.size(), [&](std::string_view chunk) { return out.append(chunk); }));
  return out;
}

}  // namespace mailkms::gateway
