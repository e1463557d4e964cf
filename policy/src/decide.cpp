// decide: the first rule that matches a recipient, and why.
#include <algorithm>

#include "ascii.hpp"
#include "mailkms/policy/policy.hpp"
#include "names.hpp"

namespace mailkms::policy {
namespace {

const AddressPattern* first_match(const std::vector<AddressPattern>& patterns, std::string_view address) {
  const auto it = std::find_if(patterns.begin(), patterns.end(),
                               [&](const AddressPattern& p) { return p.matches(address); });
  return it != patterns.end() ? &*it : nullptr;
}

bool header_matches(const HeaderCondition& condition, const Headers& headers) {
  return std::any_of(headers.fields.begin(), headers.fields.end(), [&](const auto& field) {
    return iequals(field.first, condition.name) && icontains(field.second, condition.contains);
  });
}

bool subject_matches(const std::string& tag, const Headers& headers) {
  const auto subject = headers.find("Subject");
  return subject && icontains(*subject, tag);
}

// What a rule's envelope conditions matched, or nothing if they did not.
std::optional<std::vector<std::string>> envelope_match(const Rule& rule, Direction direction, std::string_view sender,
                                                       std::string_view recipient) {
  std::vector<std::string> why;
  if (rule.direction) {
    if (*rule.direction != direction) return std::nullopt;
    why.emplace_back(to_string(direction));
  }
  if (!rule.from.empty()) {
    const AddressPattern* from = first_match(rule.from, sender);
    if (from == nullptr) return std::nullopt;
    why.push_back("from matches " + from->text());
  }
  if (!rule.to.empty()) {
    const AddressPattern* to = first_match(rule.to, recipient);
    if (to == nullptr) return std::nullopt;
    why.push_back("to matches " + to->text());
  }
  return why;
}

std::string join(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& part : parts) out += (out.empty() ? "" : ", ") + part;
  return out;
}

}  // namespace

std::optional<std::string_view> Headers::find(std::string_view name) const {
  const auto it = std::find_if(fields.begin(), fields.end(), [&](const auto& f) { return iequals(f.first, name); });
  if (it == fields.end()) return std::nullopt;
  return std::string_view(it->second);
}

RecipientDecision decide(const Policy& policy, Direction direction, std::string_view sender,
                         std::string_view recipient, const Headers* headers, bool* uncertain) {
  RecipientDecision decision;
  decision.recipient = std::string(recipient);
  for (const Rule& rule : policy.rules) {
    auto why = envelope_match(rule, direction, sender, recipient);
    if (!why) continue;
    if (rule.needs_headers()) {
      if (headers == nullptr) {
        // It might match once the headers are known, and it comes first.
        if (uncertain != nullptr) *uncertain = true;
        continue;
      }
      if (rule.subject_tag) {
        if (!subject_matches(*rule.subject_tag, *headers)) continue;
        why->push_back("subject has " + *rule.subject_tag);
      }
      if (rule.header) {
        if (!header_matches(*rule.header, *headers)) continue;
        const HeaderCondition& h = *rule.header;
        why->push_back(h.contains.empty() ? h.name + " is present" : h.name + " contains \"" + h.contains + "\"");
      }
    }
    decision.rule = &rule;
    decision.settings = &rule.settings;
    decision.matched_subject_tag = rule.subject_tag.has_value();
    decision.reason = rule_label(rule.name) + " (line " + std::to_string(rule.line) +
                      "): " + (why->empty() ? std::string("it has no conditions") : join(*why));
    return decision;
  }
  decision.settings = &policy.defaults;
  decision.reason = "no rule matched; defaults apply";
  return decision;
}

}  // namespace mailkms::policy
