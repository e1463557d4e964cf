// remove_subject_tag: users type a tag such as "[secure]" to ask for
// encryption; recipients should not see it.
#include <algorithm>

#include "ascii.hpp"
#include "mailkms/policy/policy.hpp"

namespace mailkms::policy {

std::string remove_subject_tag(std::string_view subject, std::string_view tag) {
  const std::size_t at = tag.empty() ? std::string_view::npos : ifind(subject, tag);
  if (at == std::string_view::npos) return std::string(subject);
  std::string out(subject.substr(0, at));
  std::string_view rest = subject.substr(at + tag.size());
  // "Re: [secure] Plans" leaves "Re: " + " Plans": keep one space.
  if (!out.empty() && out.back() == ' ') {
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
  }
  out += rest;
  const auto space = [](char c) { return c == ' ' || c == '\t'; };
  const auto first = std::find_if_not(out.begin(), out.end(), space);
  const auto last = std::find_if_not(out.rbegin(), out.rend(), space).base();
  return first < last ? std::string(first, last) : std::string();
}

}  // namespace mailkms::policy
