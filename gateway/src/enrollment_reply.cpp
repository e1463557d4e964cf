#include "enrollment_reply.hpp"

#include <algorithm>
#include <cctype>

#include "mailkms/smime/mime.hpp"

namespace mailkms::gateway {
namespace {

constexpr std::string_view token_prefix = "MKMS";
constexpr std::size_t token_characters = 26;  // base32: 130 bits

bool is_base32(char c) { return (c >= 'A' && c <= 'Z') || (c >= '2' && c <= '7'); }

// The first "MKMS" followed by 26 base32 characters, with dashes, spaces,
// line breaks and quote marks in between ignored: mail clients wrap and
// quote long lines.
std::string find_token(std::string_view text) {
  std::string squeezed;
  squeezed.reserve(text.size());
  for (const char c : text) {
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '>' || c == '-') continue;
    squeezed += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  for (std::size_t at = squeezed.find(token_prefix); at != std::string::npos; at = squeezed.find(token_prefix, at + 1)) {
    const std::string_view rest = std::string_view(squeezed).substr(at + token_prefix.size());
    if (rest.size() >= token_characters && std::all_of(rest.begin(), rest.begin() + token_characters, is_base32)) {
      return std::string(token_prefix) + "-" + std::string(rest.substr(0, token_characters));
    }
  }
  return {};
}

std::string trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return std::string(s);
}

// The first "Password: …" line the user wrote: quoted lines (the message
// they reply to) do not count, nor does an empty value. A lone CR ends a
// line too: a reader sees a line break there.
std::string find_password(std::string_view text) {
  std::size_t at = 0;
  while (at <= text.size()) {
    const std::size_t end = std::min(text.find_first_of("\r\n", at), text.size());
    std::string line = trim(text.substr(at, end - at));
    at = end + 1;
    if (line.empty() || line.front() == '>') continue;
    if (line.size() < 9) continue;
    std::string head = line.substr(0, 8);
    std::transform(head.begin(), head.end(), head.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (head != "password") continue;
    std::string_view rest = std::string_view(line).substr(8);
    while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
    if (rest.empty() || rest.front() != ':') continue;
    std::string value = trim(rest.substr(1));
    if (!value.empty()) return value;
  }
  return {};
}

std::optional<std::string> find_csr(const std::vector<smime::DecodedPart>& parts) {
  static constexpr std::string_view begin = "-----BEGIN CERTIFICATE REQUEST-----";
  static constexpr std::string_view end = "-----END CERTIFICATE REQUEST-----";
  for (const auto& part : parts) {
    if (const auto b = part.content.find(begin); b != std::string::npos) {
      const auto e = part.content.find(end, b);
      if (e != std::string::npos) {
        std::string pem = part.content.substr(b, e + end.size() - b) + "\n";
        pem.erase(std::remove(pem.begin(), pem.end(), '\r'), pem.end());
        return pem;
      }
    }
    const bool named = part.filename.ends_with(".p10") || part.filename.ends_with(".csr") || part.filename.ends_with(".req");
    if (part.type == "application/pkcs10" || part.type == "application/x-pkcs10" || named) {
      // DER: wrap it as PEM for the keystore.
      std::string pem = std::string(begin) + "\n";
      std::string encoded = smime::base64_encode_mime(part.content);
      encoded.erase(std::remove(encoded.begin(), encoded.end(), '\r'), encoded.end());
      pem += encoded;
      if (!pem.ends_with('\n')) pem += '\n';
      return pem + std::string(end) + "\n";
    }
  }
  return std::nullopt;
}

}  // namespace

std::string html_to_text(std::string_view html) {
  std::string out;
  out.reserve(html.size());
  for (std::size_t i = 0; i < html.size();) {
    if (html[i] == '<') {
      const auto close = html.find('>', i);
      std::string tag(html.substr(i + 1, (close == std::string_view::npos ? html.size() : close) - i - 1));
      std::transform(tag.begin(), tag.end(), tag.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      if (tag.starts_with("br") || tag.starts_with("/p") || tag.starts_with("/div") || tag.starts_with("p") ||
          tag.starts_with("div") || tag.starts_with("/tr") || tag.starts_with("/li")) {
        out += '\n';
      }
      // A quoted reply in HTML is a blockquote: mark its lines as quoted.
      if (tag.starts_with("blockquote")) out += "\n> ";
      i = close == std::string_view::npos ? html.size() : close + 1;
      continue;
    }
    if (html[i] == '&') {
      static constexpr std::pair<std::string_view, char> entities[] = {
          {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&#39;", '\''}, {"&apos;", '\''}, {"&nbsp;", ' '}};
      bool done = false;
      for (const auto& [name, c] : entities) {
        if (html.substr(i, name.size()) == name) {
          out += c;
          i += name.size();
          done = true;
          break;
        }
      }
      if (done) continue;
    }
    out += html[i++];
  }
  return out;
}

EnrollmentReply read_enrollment_reply(const std::vector<smime::DecodedPart>& parts) {
  std::string text;
  for (const auto& part : parts) {
    if (part.type == "text/plain" && part.filename.empty()) text += part.content + "\n";
  }
  if (text.empty()) {
    for (const auto& part : parts) {
      if (part.type == "text/html" && part.filename.empty()) text += html_to_text(part.content) + "\n";
    }
  }
  EnrollmentReply reply;
  reply.token = find_token(text);
  reply.password = find_password(text);
  reply.csr_pem = find_csr(parts);
  std::fill(text.begin(), text.end(), '\0');
  return reply;
}

}  // namespace mailkms::gateway
