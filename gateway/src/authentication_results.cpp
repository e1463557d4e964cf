#include <algorithm>
#include <cctype>

#include "pipeline.hpp"

namespace mailkms::gateway {
namespace {

// A value as an RFC 2045 token or, if it needs it, a quoted-string.
std::string token_or_quoted(std::string_view value) {
  static constexpr std::string_view specials = "()<>@,;:\\\"/[]?= \t";
  bool plain = !value.empty();
  for (const char c : value) {
    if (specials.find(c) != std::string_view::npos || static_cast<unsigned char>(c) < 33 || static_cast<unsigned char>(c) > 126) {
      plain = false;
    }
  }
  if (plain) return std::string(value);
  std::string out = "\"";
  for (const char c : value) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\r' || c == '\n') continue;
    out += c;
  }
  return out + "\"";
}

// An address as RFC 8601's pvalue: bare when it is a plain
// local-part@domain, else a quoted-string.
std::string address_pvalue(std::string_view address) {
  static constexpr std::string_view atext = "!#$%&'*+-/=?^_`{|}~.";
  const auto at = address.rfind('@');
  bool plain = at != std::string_view::npos && at > 0 && at + 1 < address.size();
  for (const char c : address) {
    const auto u = static_cast<unsigned char>(c);
    if (!(std::isalnum(u) || atext.find(c) != std::string_view::npos || c == '@') || u > 126) plain = false;
  }
  return plain ? std::string(address) : token_or_quoted(address);
}

}  // namespace

bool unreadable(const smime::VerifyResult& v) {
  return v.error && (v.error->code == smime::Errc::io_error || v.error->code == smime::Errc::internal);
}

SmimeResult smime_result(const smime::VerifyResult& v, const std::vector<std::string>& authors) {
  SmimeResult r;
  using S = smime::SignatureStatus;
  switch (v.status) {
    case S::pass: r.result = "pass"; break;
    case S::fail:
    case S::untrusted:
    case S::expired:
    case S::revoked: r.result = "fail"; break;
    case S::signer_mismatch: r.result = "policy"; break;
    case S::no_signature: r.result = "none"; break;
    case S::malformed: r.result = unreadable(v) ? "temperror" : "permerror"; break;
  }
  if (v.status != S::pass) {
    r.reason = std::string(smime::to_string(v.status));
    if (!v.reason.empty()) r.reason += ": " + v.reason;
  } else if (v.weak) {
    r.reason = "weak algorithm (SHA-1 or a short key)";
  }
  // The signer the verdict is about: one good signature makes the message
  // good, so a pass names the first signer that passed — and a signer passes
  // only as an author — never another signer that merely came first.
  // Otherwise the first signer's verdict is the message's (verify.cpp).
  const smime::SignerReport* named = nullptr;
  if (v.status == S::pass) {
    const auto passed = std::find_if(v.signers.begin(), v.signers.end(),
                                     [](const smime::SignerReport& s) { return s.status == S::pass; });
    if (passed != v.signers.end()) named = &*passed;
  } else if (!v.signers.empty()) {
    named = &v.signers.front();
  }
  if (named == nullptr || named->addresses.empty()) return r;
  r.identifier = named->addresses.front();
  for (const auto& author : authors) {
    const auto matched = std::find_if(named->addresses.begin(), named->addresses.end(),
                                      [&](const std::string& a) { return smime::same_address(a, author); });
    if (matched != named->addresses.end()) {
      r.identifier = *matched;
      break;
    }
  }
  return r;
}

std::string authentication_results(const std::string& authserv_id, const std::vector<SmimeResult>& results) {
  std::string out = authserv_id;
  // RFC 8601: a header with no results says so.
  if (results.empty()) return out + "; none";
  for (const auto& r : results) {
    out += ";\r\n\tsmime=" + r.result;
    if (!r.reason.empty()) out += " reason=" + token_or_quoted(r.reason);
    if (!r.identifier.empty()) out += "\r\n\tbody.smime-identifier=" + address_pvalue(r.identifier);
  }
  return out;
}

std::string authserv_id_of(std::string_view value) {
  // Leading CFWS (RFC 5322 §3.2.2): any white space and comments, which
  // nest and may hold quoted-pairs. A forger may use any spelling.
  std::size_t at = 0;
  int depth = 0;
  for (; at < value.size(); ++at) {
    const char c = value[at];
    if (depth > 0 && c == '\\') {
      ++at;
    } else if (c == '(') {
      ++depth;
    } else if (c == ')' && depth > 0) {
      --depth;
    } else if (depth == 0 && c != ' ' && c != '\t' && c != '\r' && c != '\n') {
      break;
    }
  }
  const auto lower = [](char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); };
  std::string id;
  if (at < value.size() && value[at] == '"') {
    // authserv-id is a token or a quoted-string, meaning the same.
    for (++at; at < value.size() && value[at] != '"'; ++at) {
      if (value[at] == '\\' && at + 1 < value.size()) ++at;
      if (value[at] != '\r' && value[at] != '\n') id += lower(value[at]);
    }
    return id;
  }
  while (at < value.size() && value[at] != ';' && value[at] != ' ' && value[at] != '\t' && value[at] != '\r' &&
         value[at] != '\n' && value[at] != '(') {
    id += lower(value[at++]);
  }
  return id;
}

std::string join(const std::vector<std::string>& items, std::string_view separator) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += separator;
    out += item;
  }
  return out;
}

std::string describe(const Treatment& t) {
  if (t.decrypt) return "decrypt";
  std::string out;
  if (t.sign) out = "sign " + std::string(smime::name(t.digest));
  if (t.encrypt) out += std::string(out.empty() ? "" : " + ") + "encrypt " + std::string(smime::name(t.cipher));
  return out.empty() ? "plain" : out;
}

policy::Headers policy_headers(const std::vector<smime::HeaderField>& fields) {
  policy::Headers out;
  // Matched as a person reads them: "=?UTF-8?B?W3NlY3VyZV0=?=" is "[secure]".
  for (const auto& f : fields) out.fields.emplace_back(f.name, smime::decode_header_text(f.unfolded()));
  return out;
}

std::vector<HeaderEdit> forged_results(const std::vector<smime::HeaderField>& headers, const std::string& authserv_id) {
  std::string ours = authserv_id;
  for (auto& c : ours) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  int results = 0;
  int decrypted = 0;
  std::vector<HeaderEdit> removals;
  for (const auto& f : headers) {
    if (iequals(f.name, "Authentication-Results")) {
      ++results;
      if (authserv_id_of(f.value) == ours) removals.push_back({HeaderEdit::Kind::remove, f.name, {}, results});
    } else if (iequals(f.name, decrypted_header)) {
      removals.push_back({HeaderEdit::Kind::remove, f.name, {}, ++decrypted});
    }
  }
  std::sort(removals.begin(), removals.end(), [](const HeaderEdit& a, const HeaderEdit& b) { return a.index > b.index; });
  return removals;
}

void add_removals(std::vector<HeaderEdit>& edits, const std::vector<HeaderEdit>& removals) {
  for (const auto& r : removals) {
    // A field the edits already change or remove is theirs to decide.
    if (std::none_of(edits.begin(), edits.end(), [&](const HeaderEdit& e) {
          return (e.kind == HeaderEdit::Kind::remove || e.kind == HeaderEdit::Kind::change) && e.index == r.index &&
                 iequals(e.name, r.name);
        })) {
      edits.insert(edits.begin(), r);
    }
  }
}

}  // namespace mailkms::gateway
