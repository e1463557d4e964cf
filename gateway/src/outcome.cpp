#include "mailkms/gateway/outcome.hpp"

#include <algorithm>
#include <cctype>
#include <map>

namespace mailkms::gateway {
namespace {

std::string lower(std::string_view text) {
  std::string out;
  for (const char c : text) out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string key(const smime::HeaderField& field) {
  std::string out;
  for (const char c : field.name) out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out + ":" + field.unfolded();
}

}  // namespace

std::vector<HeaderEdit> diff_headers(const std::vector<smime::HeaderField>& before,
                                     const std::vector<smime::HeaderField>& after) {
  // How many of each field `after` still has; the rest of `before` goes.
  std::map<std::string, int> kept;
  for (const auto& f : after) ++kept[key(f)];
  std::map<std::string, int> available = kept;

  std::vector<HeaderEdit> removals;
  std::map<std::string, int> occurrence;  // per lower-cased name, 1-based
  for (const auto& f : before) {
    std::string name;
    for (const char c : f.name) name += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const int index = ++occurrence[name];
    auto& left = available[key(f)];
    if (left > 0) {
      --left;
    } else {
      removals.push_back({HeaderEdit::Kind::remove, f.name, {}, index});
    }
  }
  // Highest index first, so that removing one does not renumber the next.
  std::stable_sort(removals.begin(), removals.end(), [](const HeaderEdit& a, const HeaderEdit& b) { return a.index > b.index; });

  std::map<std::string, int> present;
  for (const auto& f : before) ++present[key(f)];
  std::vector<HeaderEdit> appends;
  for (const auto& f : after) {
    auto& have = present[key(f)];
    if (have > 0) {
      --have;
      continue;
    }
    std::string value = f.value;
    if (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.erase(0, 1);
    appends.push_back({HeaderEdit::Kind::append, f.name, std::move(value), 0});
  }
  // A removal and an append of the same name are one change, taking the
  // lowest-numbered removed field (removals are sorted highest first).
  std::vector<HeaderEdit> edits;
  std::vector<HeaderEdit> rest;
  for (auto& append : appends) {
    const auto same = std::find_if(removals.rbegin(), removals.rend(), [&](const HeaderEdit& r) {
      return r.kind == HeaderEdit::Kind::remove && lower(r.name) == lower(append.name);
    });
    if (same == removals.rend()) {
      rest.push_back(std::move(append));
      continue;
    }
    edits.push_back({HeaderEdit::Kind::change, same->name, std::move(append.value), same->index});
    same->kind = HeaderEdit::Kind::append;  // spent; dropped below
    same->index = -1;
  }
  for (auto& r : removals) {
    if (r.index >= 0) edits.push_back(std::move(r));
  }
  for (auto& a : rest) edits.push_back(std::move(a));
  return edits;
}

}  // namespace mailkms::gateway
