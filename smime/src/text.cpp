#include "text.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <cctype>

namespace mailkms::smime::detail {

std::optional<HeaderEnd> find_header_end(std::string_view text, std::size_t limit) {
  const std::size_t window = std::min(text.size(), limit + 2);
  for (std::size_t pos = 0; pos < window;) {
    const std::size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos || nl >= window) break;
    if (nl == pos || (nl == pos + 1 && text[pos] == '\r')) return HeaderEnd{pos, nl + 1};
    pos = nl + 1;
  }
  if (text.size() > limit) return std::nullopt;
  return HeaderEnd{text.size(), text.size()};
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

const HeaderField* find_field(const std::vector<HeaderField>& fields, std::string_view name) {
  for (const auto& f : fields) {
    if (iequals(f.name, name)) return &f;
  }
  return nullptr;
}

HeaderField make_field(std::string_view name, std::string_view value) {
  HeaderField field{std::string(name), " "};
  field.value += fold_header_value(value);
  return field;
}

void append_fields(std::string& out, const std::vector<HeaderField>& fields) {
  for (const auto& f : fields) {
    out += f.name;
    out += ':';
    out += f.value;
    out += "\r\n";
  }
}

void append_base64_lines(std::string& out, std::string_view data) {
  constexpr std::size_t kLineInput = 57;  // octets per 76-character line
  const std::size_t start = out.size();
  out.resize(start + (data.size() + kLineInput - 1) / kLineInput * 78);
  auto* dst = reinterpret_cast<unsigned char*>(out.data() + start);
  const auto* src = reinterpret_cast<const unsigned char*>(data.data());
  std::size_t written = 0;
  for (std::size_t offset = 0; offset < data.size(); offset += kLineInput) {
    const std::size_t take = std::min(kLineInput, data.size() - offset);
    written += static_cast<std::size_t>(EVP_EncodeBlock(dst + written, src + offset, static_cast<int>(take)));
    dst[written++] = '\r';
    dst[written++] = '\n';
  }
  out.resize(start + written);
}

}  // namespace mailkms::smime::detail
