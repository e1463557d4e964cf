#include "mailkms/keystore/mail_message.hpp"
#include "mailkms/keystore/protocol.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <vector>

#include "aead.hpp"

namespace mailkms::keystore {
namespace {

std::vector<std::string_view> lines_of(std::string_view text) {
  std::vector<std::string_view> out;
  while (!text.empty()) {
    const auto end = text.find('\n');
    out.push_back(text.substr(0, end));
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool ascii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 128; });
}

std::string base64_lines(std::string_view data) {
  std::string out;
  constexpr std::size_t kChunk = 57;  // 76 characters a line
  for (std::size_t at = 0; at < data.size(); at += kChunk) {
    const std::string_view part = data.substr(at, kChunk);
    unsigned char encoded[80];
    const int n = EVP_EncodeBlock(encoded, reinterpret_cast<const unsigned char*>(part.data()), static_cast<int>(part.size()));
    out.append(reinterpret_cast<const char*>(encoded), static_cast<std::size_t>(n));
    out += '\n';
  }
  return out;
}

// RFC 2047, for a Subject in something other than ASCII.
std::string encoded_word(std::string_view text) {
  if (ascii(text)) return std::string(text);
  std::string b64 = base64_lines(text);
  b64.erase(std::remove(b64.begin(), b64.end(), '\n'), b64.end());
  return "=?UTF-8?B?" + b64 + "?=";
}

std::string random_hex(std::size_t bytes) {
  const auto random = detail::random_secret(bytes);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < random.size(); ++i) {
    out += kHex[random.data()[i] >> 4];
    out += kHex[random.data()[i] & 15];
  }
  return out;
}

struct Header {
  std::string name;   // as written
  std::string value;  // continuation lines joined with their line breaks
};

struct ParsedTemplate {
  std::vector<Header> headers;
  std::string body;
};

Result<ParsedTemplate> parse(std::string_view rendered) {
  std::string text;
  for (const char c : rendered) {
    if (c != '\r') text += c;
  }
  std::vector<std::string_view> lines = lines_of(text);
  std::size_t i = 0;
  while (i < lines.size() && lines[i].starts_with('#')) ++i;
  ParsedTemplate parsed;
  for (; i < lines.size() && !lines[i].empty(); ++i) {
    const std::string_view line = lines[i];
    if ((line.front() == ' ' || line.front() == '\t') && !parsed.headers.empty()) {
      parsed.headers.back().value += "\n" + std::string(line);
      continue;
    }
    const auto colon = line.find(':');
    const std::string_view name = colon == std::string_view::npos ? std::string_view() : line.substr(0, colon);
    const bool valid_name = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
      return c > 32 && c < 127;
    });
    if (!valid_name) {
      return make_error(Errc::invalid_argument, "line " + std::to_string(i + 1) +
                                                    " is not a header: a template holds header lines, an empty "
                                                    "line, then the body");
    }
    parsed.headers.push_back({std::string(name), std::string(trim(line.substr(colon + 1)))});
  }
  if (i >= lines.size()) return make_error(Errc::invalid_argument, "no empty line after the headers, so no body");
  for (++i; i < lines.size(); ++i) {
    parsed.body += lines[i];
    parsed.body += '\n';
  }
  return parsed;
}

}  // namespace

Result<std::string> render_template(std::string_view text, const std::map<std::string, std::string>& values,
                                    std::string_view name) {
  std::string out;
  std::size_t number = 0;
  bool notes = true;
  bool after_left_out = false;  // a left-out line between blank ones leaves one blank, not two
  for (const std::string_view line : lines_of(text)) {
    ++number;
    notes = notes && line.starts_with('#');
    if (notes) continue;  // administrators' notes: never rendered, never sent
    if (after_left_out && trim(line).empty() && (out.empty() || out.ends_with("\n\n"))) continue;
    after_left_out = false;
    std::string rendered;
    bool empty_value = false;
    std::size_t at = 0;
    while (true) {
      const auto open = line.find("{{", at);
      if (open == std::string_view::npos) {
        rendered += line.substr(at);
        break;
      }
      const auto close = line.find("}}", open + 2);
      if (close == std::string_view::npos) {
        return make_error(Errc::invalid_argument,
                          std::string(name) + ", line " + std::to_string(number) + ": {{ without }}");
      }
      const std::string key(trim(line.substr(open + 2, close - open - 2)));
      const auto value = values.find(key);
      if (value == values.end()) {
        return make_error(Errc::invalid_argument, std::string(name) + ", line " + std::to_string(number) +
                                                      ": unknown placeholder {{" + key + "}}");
      }
      rendered += line.substr(at, open - at);
      rendered += value->second;
      empty_value = empty_value || value->second.empty();
      at = close + 2;
    }
    if (empty_value) {
      after_left_out = true;
      continue;
    }
    out += rendered;
    out += '\n';
  }
  return out;
}

Result<std::string> render_template_file(const std::filesystem::path& file,
                                         const std::map<std::string, std::string>& values) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return make_error(Errc::not_found, "cannot read the mail template " + file.string());
  std::ostringstream text;
  text << in.rdbuf();
  if (text.str().size() > std::size_t{64} * 1024) return make_error(Errc::invalid_argument, file.string() + " is larger than 64 KiB");
  return render_template(text.str(), values, file.string());
}

std::string rfc5322_date(std::time_t t) {
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  std::tm tm{};
  if (gmtime_r(&t, &tm) == nullptr) return "Thu, 01 Jan 1970 00:00:00 +0000";  // past the year 2^31
  char text[64];
  (void)std::snprintf(text, sizeof text, "%s, %02d %s %04d %02d:%02d:%02d +0000", kDays[tm.tm_wday], tm.tm_mday,
                kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return text;
}

std::string readable_time(std::time_t t) {
  std::tm tm{};
  char text[32];
  if (gmtime_r(&t, &tm) == nullptr || std::strftime(text, sizeof text, "%Y-%m-%d %H:%M UTC", &tm) == 0) {
    return std::to_string(t);
  }
  return text;
}

Result<std::string> compose_message(std::string_view rendered, const std::string& to, const std::string& from,
                                    std::span<const Attachment> attachments, const MarkMaker& mark) {
  MAILKMS_TRY(parsed, parse(rendered));
  const bool multipart = !attachments.empty();
  std::set<std::string> present;
  std::string out;
  std::string message_id;
  for (const auto& h : parsed.headers) {
    const std::string name = lower(h.name);
    // A multipart message's MIME headers, and the mark, are ours to write.
    if (multipart && (name == "content-type" || name == "content-transfer-encoding")) continue;
    if (name == lower(std::string(protocol::kMailMarkHeader))) continue;
    if (name == "message-id") message_id = h.value;
    present.insert(name);
    out += h.name + ": " + (name == "subject" ? encoded_word(h.value) : h.value) + "\n";
  }
  const auto add = [&](const std::string& name, const std::string& value) {
    if (present.count(lower(name)) == 0) out += name + ": " + value + "\n";
  };
  const auto at = from.rfind('@');
  add("From", from);
  add("To", to);
  add("Date", rfc5322_date(std::time(nullptr)));
  if (message_id.empty()) {
    message_id = "<" + random_hex(16) + "@" + (at == std::string::npos ? "localhost" : from.substr(at + 1)) + ">";
    add("Message-ID", message_id);
  }
  if (mark) {
    MAILKMS_TRY(value, mark(message_id));
    out += std::string(protocol::kMailMarkHeader) + ": " + value + "\n";
  }
  add("Auto-Submitted", "auto-generated");  // no vacation replies to the keystore
  add("MIME-Version", "1.0");
  const std::string encoding = ascii(parsed.body) ? "7bit" : "8bit";
  if (!multipart) {
    add("Content-Type", "text/plain; charset=utf-8");
    add("Content-Transfer-Encoding", encoding);
    return out + "\n" + parsed.body;
  }
  const std::string boundary = "=_mailkms_" + random_hex(12);
  out += "Content-Type: multipart/mixed; boundary=\"" + boundary + "\"\n\n";
  out += "This is a message in MIME format.\n";
  out += "\n--" + boundary + "\n";
  out += "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: " + encoding + "\n\n";
  out += parsed.body;
  for (const auto& a : attachments) {
    out += "\n--" + boundary + "\n";
    out += "Content-Type: " + a.content_type + "; name=\"" + a.filename + "\"\n";
    out += "Content-Disposition: attachment; filename=\"" + a.filename + "\"\n";
    out += "Content-Transfer-Encoding: base64\n\n";
    out += base64_lines(a.data);
  }
  out += "\n--" + boundary + "--\n";
  return out;
}

}  // namespace mailkms::keystore
