#include "mailkms/smime/signed_attributes.hpp"

#include <ctime>
#include <optional>
#include <set>
#include <string>

#include "der.hpp"

namespace mailkms::smime {
namespace {

// The contents octets of the object identifiers read here.
constexpr std::string_view kContentType = "\x2a\x86\x48\x86\xf7\x0d\x01\x09\x03";    // 1.2.840.113549.1.9.3
constexpr std::string_view kMessageDigest = "\x2a\x86\x48\x86\xf7\x0d\x01\x09\x04";  // 1.2.840.113549.1.9.4
constexpr std::string_view kSigningTime = "\x2a\x86\x48\x86\xf7\x0d\x01\x09\x05";    // 1.2.840.113549.1.9.5
constexpr std::string_view kData = "\x2a\x86\x48\x86\xf7\x0d\x01\x07\x01";           // 1.2.840.113549.1.7.1

constexpr std::uint8_t kUtcTime = 0x17;
constexpr std::uint8_t kGeneralizedTime = 0x18;

Error refused(const std::string& why) {
  return make_error(Errc::invalid_argument, "not S/MIME signed attributes: " + why);
}

std::size_t digest_length(Digest digest) {
  switch (digest) {
    case Digest::sha1: return 20;
    case Digest::sha256: return 32;
    case Digest::sha384: return 48;
    case Digest::sha512: return 64;
  }
  return 0;
}

// UTCTime "YYMMDDHHMMSSZ" or GeneralizedTime "YYYYMMDDHHMMSSZ", as DER
// requires them (RFC 5652 §11.3: UTCTime through 2049).
std::optional<std::time_t> read_time(const der::Element& e) {
  const std::string_view v = e.value;
  const std::size_t year_digits = e.tag == kUtcTime ? 2 : 4;
  if ((e.tag != kUtcTime && e.tag != kGeneralizedTime) || v.size() != year_digits + 11 || v.back() != 'Z') {
    return std::nullopt;
  }
  for (std::size_t i = 0; i + 1 < v.size(); ++i) {
    if (v[i] < '0' || v[i] > '9') return std::nullopt;
  }
  const auto number = [&](std::size_t at, std::size_t n) {
    int out = 0;
    for (std::size_t i = 0; i < n; ++i) out = out * 10 + (v[at + i] - '0');
    return out;
  };
  std::tm tm{};
  int year = number(0, year_digits);
  if (e.tag == kUtcTime) year += year < 50 ? 2000 : 1900;
  tm.tm_year = year - 1900;
  tm.tm_mon = number(year_digits, 2) - 1;
  tm.tm_mday = number(year_digits + 2, 2);
  tm.tm_hour = number(year_digits + 4, 2);
  tm.tm_min = number(year_digits + 6, 2);
  tm.tm_sec = number(year_digits + 8, 2);
  if (tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 59) {
    return std::nullopt;
  }
  return ::timegm(&tm);
}

// The single value of an attribute's SET OF AttributeValue.
std::optional<der::Element> single_value(std::string_view values) {
  der::Reader r(values);
  auto value = r.next();
  if (!value || !r.empty()) return std::nullopt;
  return value;
}

}  // namespace

Status check_signed_attributes(std::string_view der, Digest digest, std::time_t now, std::chrono::seconds skew) {
  der::Reader outer(der);
  const auto set = outer.expect(der::tag::set);
  if (!set || !outer.empty()) return refused("not one SET OF Attribute");
  der::Reader attributes(set->value);
  std::set<std::string_view> seen;
  bool content_type = false;
  bool message_digest = false;
  bool signing_time = false;
  while (!attributes.empty()) {
    const auto attribute = attributes.expect(der::tag::sequence);
    if (!attribute) return refused("an element is not an Attribute");
    der::Reader fields(attribute->value);
    const auto type = fields.expect(der::tag::oid);
    const auto values = fields.expect(der::tag::set);
    if (!type || !values || !fields.empty()) return refused("an Attribute is not a type and a SET of values");
    if (!seen.insert(type->value).second) return refused("an attribute type appears twice");
    if (type->value != kContentType && type->value != kMessageDigest && type->value != kSigningTime) continue;
    const auto value = single_value(values->value);
    if (!value) return refused("contentType, messageDigest and signingTime have one value each");
    if (type->value == kContentType) {
      if (value->tag != der::tag::oid || value->value != kData) return refused("the contentType is not id-data");
      content_type = true;
    } else if (type->value == kMessageDigest) {
      if (value->tag != der::tag::octet_string || value->value.size() != digest_length(digest)) {
        return refused("the messageDigest is not a " + std::string(name(digest)) + " digest");
      }
      message_digest = true;
    } else {
      const auto when = read_time(*value);
      if (!when) return refused("the signingTime is not a UTCTime or GeneralizedTime");
      if (*when < now - skew.count() || *when > now + skew.count()) {
        return refused("the signingTime is " + std::to_string(*when - now) + " s from now, more than " +
                       std::to_string(skew.count()) + " s");
      }
      signing_time = true;
    }
  }
  if (!content_type || !message_digest || !signing_time) {
    return refused("contentType, messageDigest and signingTime are required");
  }
  return Ok{};
}

}  // namespace mailkms::smime
