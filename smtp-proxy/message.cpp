#include "message.hpp"

#include <algorithm>

namespace mailkms::proxy {
namespace {

// As in smime's parser: the whole header section, and how many fields.
constexpr std::size_t max_header_bytes = 1 << 20;
constexpr std::size_t max_header_fields = 10'000;

bool field_name(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](unsigned char c) { return c > 32 && c < 127 && c != ':'; });
}

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool same_name(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return lower(x) == lower(y); });
}

// The index-th (1-based) field named `name`, or end.
std::vector<smime::HeaderField>::iterator nth_named(std::vector<smime::HeaderField>& fields, std::string_view name, int index) {
  int seen = 0;
  return std::find_if(fields.begin(), fields.end(), [&](const smime::HeaderField& f) {
    return same_name(f.name, name) && ++seen == index;
  });
}

}  // namespace

bool MessageIntake::header_line(std::string_view line) {
  if (line.empty()) return false;
  if ((line.front() == ' ' || line.front() == '\t') && !headers_.empty()) {
    headers_.back().value.append("\r\n").append(line);  // folded: the value keeps its folding
    return true;
  }
  const auto colon = line.find(':');
  if (colon == std::string_view::npos || !field_name(line.substr(0, colon))) return false;
  headers_.push_back({std::string(line.substr(0, colon)), std::string(line.substr(colon + 1))});
  return true;
}

void MessageIntake::end_of_header() {
  in_header_ = false;
  spool_.emplace(options_);
  limit_ = size_limit_(headers_);
  std::string section;
  for (const auto& f : headers_) section.append(f.name).append(":").append(f.value).append("\r\n");
  section.append("\r\n");
  body_offset_ = section.size();
  keep(section);
}

void MessageIntake::keep(std::string_view bytes) {
  if (trouble_ != Trouble::none) return;
  if (limit_ != 0 && spool_->size() + bytes.size() > limit_) {
    trouble_ = Trouble::too_big;  // nothing more is kept
    spool_.reset();
    return;
  }
  if (!spool_->append(bytes)) trouble_ = Trouble::spool;
}

void MessageIntake::add(std::string_view bytes) {
  if (trouble_ != Trouble::none) return;
  if (!in_header_) return keep(bytes);
  pending_.append(bytes);
  std::size_t at = 0;
  for (std::size_t crlf; in_header_ && (crlf = pending_.find("\r\n", at)) != std::string::npos; at = crlf + 2) {
    const std::string_view line(pending_.data() + at, crlf - at);
    if (header_line(line)) continue;
    end_of_header();
    // An empty line ends the header (the section written has its own);
    // any other line that is no field is the body's first.
    keep(std::string_view(pending_).substr(line.empty() ? crlf + 2 : at));
    pending_.clear();
    return;
  }
  pending_.erase(0, at);
  if (pending_.size() > max_header_bytes || headers_.size() > max_header_fields) {
    trouble_ = Trouble::too_big;
    pending_.clear();
  }
}

void MessageIntake::finish() {
  if (trouble_ != Trouble::none || !in_header_) return;
  // DATA ends with CRLF: nothing is left pending but an unterminated line, which cannot be.
  end_of_header();
  if (!pending_.empty()) keep(pending_);
  pending_.clear();
}

smime::Result<smime::Spool> outgoing_message(const std::vector<smime::HeaderField>& headers,
                                             const gateway::Outcome& outcome, const smime::Spool& received,
                                             std::size_t body_offset, const smime::SpoolOptions& options) {
  using Kind = gateway::HeaderEdit::Kind;
  // The order the milter applies them in: changes (by original index),
  // removals highest index first, then new fields.
  std::vector<std::optional<smime::HeaderField>> fields(headers.begin(), headers.end());
  std::vector<smime::HeaderField> plain(headers);
  for (const auto& e : outcome.header_edits) {
    if (e.kind != Kind::change) continue;
    const auto it = nth_named(plain, e.name, e.index);
    if (it != plain.end()) fields[static_cast<std::size_t>(it - plain.begin())] = smime::HeaderField{it->name, " " + e.value};
  }
  for (const auto& e : outcome.header_edits) {
    if (e.kind != Kind::remove) continue;
    const auto it = nth_named(plain, e.name, e.index);
    if (it != plain.end()) fields[static_cast<std::size_t>(it - plain.begin())].reset();
  }
  std::vector<smime::HeaderField> top;
  std::vector<smime::HeaderField> bottom;
  for (const auto& e : outcome.header_edits) {
    if (e.kind == Kind::prepend) top.insert(top.begin(), {e.name, " " + e.value});
    if (e.kind == Kind::append) bottom.push_back({e.name, " " + e.value});
  }
  std::string section;
  const auto write = [&](const smime::HeaderField& f) { section.append(f.name).append(":").append(f.value).append("\r\n"); };
  std::for_each(top.begin(), top.end(), write);
  for (const auto& f : fields) {
    if (f) write(*f);
  }
  std::for_each(bottom.begin(), bottom.end(), write);
  section.append("\r\n");

  smime::Spool out(options);
  if (auto ok = out.append(section); !ok) return ok.error();
  const smime::Spool& body = outcome.message ? *outcome.message : received;
  const std::size_t from = outcome.message ? outcome.body_offset : body_offset;
  if (from < body.size()) {
    auto copied = body.for_each_chunk(from, body.size() - from, [&](std::string_view chunk) { return out.append(chunk); });
    if (!copied) return copied.error();
  }
  return out;
}

}  // namespace mailkms::proxy
