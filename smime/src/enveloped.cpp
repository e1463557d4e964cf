#include "enveloped.hpp"

#include <openssl/objects.h>

#include <cstring>

#include "der.hpp"
#include "mailkms/smime/ossl.hpp"

namespace mailkms::smime::detail {
namespace {

Error malformed(std::string_view what) { return make_error(Errc::malformed_cms, std::string(what)); }

std::string hex(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (const char b : bytes) {
    out.push_back(kHex[static_cast<unsigned char>(b) >> 4]);
    out.push_back(kHex[static_cast<unsigned char>(b) & 15]);
  }
  return out;
}

// IssuerAndSerialNumber ::= SEQUENCE { issuer Name, serialNumber INTEGER }
bool read_issuer_serial(std::string_view contents, RecipientId& id) {
  der::Reader r(contents);
  const auto issuer = r.expect(der::tag::sequence);
  const auto serial = r.expect(der::tag::integer);
  if (!issuer || !serial) return false;
  id.issuer = std::string(issuer->whole);
  id.serial = std::string(serial->whole);
  return true;
}

// RecipientIdentifier (RFC 5652 §6.2.1) or KeyAgreeRecipientIdentifier
// (§6.2.2): IssuerAndSerialNumber, [0] SubjectKeyIdentifier, or
// [0] RecipientKeyIdentifier whose first field is the key identifier.
bool read_recipient_id(const der::Element& rid, RecipientId& id) {
  if (rid.tag == der::tag::sequence) return read_issuer_serial(rid.value, id);
  if (rid.tag == der::tag::context(0, false)) {
    id.subject_key_id = std::string(rid.value);
    return true;
  }
  if (rid.tag == der::tag::context(0, true)) {
    der::Reader r(rid.value);
    const auto ski = r.expect(der::tag::octet_string);
    if (!ski) return false;
    id.subject_key_id = std::string(ski->value);
    return true;
  }
  return false;
}

Result<RecipientEntry> read_key_transport(std::string_view contents) {
  der::Reader r(contents);
  RecipientEntry entry;
  entry.kind = RecipientEntry::Kind::key_transport;
  if (!r.expect(der::tag::integer)) return malformed("KeyTransRecipientInfo without version");
  const auto rid = r.next();
  if (!rid || !read_recipient_id(*rid, entry.id)) return malformed("bad recipient identifier");
  const auto algorithm = r.expect(der::tag::sequence);
  const auto key = r.expect(der::tag::octet_string);
  if (!algorithm || !key) return malformed("KeyTransRecipientInfo without algorithm or key");
  entry.key_encryption_algorithm = std::string(algorithm->whole);
  entry.encrypted_key = std::string(key->value);
  return entry;
}

Status read_key_agreement(std::string_view contents, std::vector<RecipientEntry>& out) {
  der::Reader r(contents);
  if (!r.expect(der::tag::integer)) return malformed("KeyAgreeRecipientInfo without version");
  const auto originator = r.expect(der::tag::context(0, true));
  if (!originator) return malformed("KeyAgreeRecipientInfo without originator");
  RecipientEntry base;
  base.kind = RecipientEntry::Kind::key_agreement;
  {
    der::Reader o(originator->value);
    const auto key = o.expect(der::tag::context(1, true));  // originatorKey
    if (!key) {
      // Static-static ECDH: not for us to read, but no reason to refuse
      // the entries that follow.
      RecipientEntry other;
      other.kind_name = "kari with a static originator key";
      out.push_back(std::move(other));
      return Ok{};
    }
    der::Reader k(key->value);
    const auto algorithm = k.expect(der::tag::sequence);
    const auto point = k.expect(der::tag::bit_string);
    if (!algorithm || !point || point->value.empty() || point->value[0] != 0) {
      return malformed("bad originator public key");
    }
    base.originator_point = std::string(point->value.substr(1));
  }
  if (const auto ukm = r.next_if(der::tag::context(1, true))) {
    der::Reader u(ukm->value);
    const auto octets = u.expect(der::tag::octet_string);
    if (!octets) return malformed("bad user keying material");
    base.ukm = std::string(octets->value);
  }
  const auto algorithm = r.expect(der::tag::sequence);
  const auto keys = r.expect(der::tag::sequence);
  if (!algorithm || !keys) return malformed("KeyAgreeRecipientInfo without algorithm or keys");
  base.key_encryption_algorithm = std::string(algorithm->whole);
  der::Reader each(keys->value);
  while (!each.empty()) {
    const auto rek = each.expect(der::tag::sequence);
    if (!rek) return malformed("bad RecipientEncryptedKey");
    der::Reader f(rek->value);
    RecipientEntry entry = base;
    const auto rid = f.next();
    if (!rid || !read_recipient_id(*rid, entry.id)) return malformed("bad key agreement recipient identifier");
    const auto key = f.expect(der::tag::octet_string);
    if (!key) return malformed("RecipientEncryptedKey without key");
    entry.encrypted_key = std::string(key->value);
    out.push_back(std::move(entry));
  }
  return Ok{};
}

}  // namespace

bool RecipientId::matches(const Certificate& cert) const {
  if (!subject_key_id.empty()) {
    const ASN1_OCTET_STRING* ski = X509_get0_subject_key_id(cert.native());
    return ski != nullptr && static_cast<std::size_t>(ASN1_STRING_length(ski)) == subject_key_id.size() &&
           std::memcmp(ASN1_STRING_get0_data(ski), subject_key_id.data(), subject_key_id.size()) == 0;
  }
  return issuer == ossl::to_der<X509_NAME>(X509_get_issuer_name(cert.native()), i2d_X509_NAME) &&
         serial == ossl::to_der<ASN1_INTEGER>(X509_get0_serialNumber(cert.native()), i2d_ASN1_INTEGER);
}

std::string RecipientId::describe() const {
  if (!subject_key_id.empty()) return "key id " + hex(subject_key_id);
  std::string text = "issuer ";
  const auto* p = reinterpret_cast<const unsigned char*>(issuer.data());
  if (X509_NAME* name = d2i_X509_NAME(nullptr, &p, static_cast<long>(issuer.size()))) {
    ossl::Bio out(BIO_new(BIO_s_mem()));
    X509_NAME_print_ex(out.get(), name, 0, XN_FLAG_RFC2253);
    text += ossl::bio_contents(out.get());
    X509_NAME_free(name);
  }
  der::Reader r(serial);
  if (const auto s = r.next()) text += ", serial " + hex(s->value);
  return text;
}

int nid_of_oid(std::string_view oid_der) {
  const auto* p = reinterpret_cast<const unsigned char*>(oid_der.data());
  ASN1_OBJECT* obj = d2i_ASN1_OBJECT(nullptr, &p, static_cast<long>(oid_der.size()));
  if (obj == nullptr) {
    ERR_clear_error();
    return NID_undef;
  }
  const int nid = OBJ_obj2nid(obj);
  ASN1_OBJECT_free(obj);
  return nid;
}

Result<Algorithm> parse_algorithm(std::string_view algorithm_der) {
  der::Reader outer(algorithm_der);
  const auto seq = outer.expect(der::tag::sequence);
  if (!seq) return malformed("bad AlgorithmIdentifier");
  der::Reader r(seq->value);
  const auto oid = r.expect(der::tag::oid);
  if (!oid) return malformed("AlgorithmIdentifier without OID");
  Algorithm a;
  a.nid = nid_of_oid(oid->whole);
  if (const auto params = r.next()) a.parameters = std::string(params->whole);
  return a;
}

std::optional<Cipher> content_cipher(const Algorithm& algorithm) {
  const auto cipher = cipher_from_nid(algorithm.nid);
  if (cipher != Cipher::rc2_128) return cipher;
  // RC2-CBC-Parameter ::= SEQUENCE { rc2ParameterVersion INTEGER OPTIONAL, iv OCTET STRING }
  der::Reader outer(algorithm.parameters);
  const auto seq = outer.next_if(der::tag::sequence);
  if (!seq) return Cipher::rc2_40;  // a bare IV means the default, 32 bits: treat as the weakest
  der::Reader r(seq->value);
  const auto version = r.next_if(der::tag::integer);
  if (!version) return Cipher::rc2_40;
  if (version->value.size() > 2) return Cipher::rc2_128;  // 256 and above: the key bits themselves
  long value = 0;
  for (const char c : version->value) value = (value << 8) | static_cast<unsigned char>(c);
  switch (value) {
    case 160: return Cipher::rc2_40;
    case 120: return Cipher::rc2_64;
    case 58: return Cipher::rc2_128;
    default: return value >= 256 ? Cipher::rc2_128 : Cipher::rc2_40;
  }
}

Result<EnvelopedParts> parse_enveloped(std::string_view der) {
  der::Reader top(der);
  const auto content_info = top.expect(der::tag::sequence);
  if (!content_info) return malformed("not a ContentInfo");
  der::Reader ci(content_info->value);
  const auto type = ci.expect(der::tag::oid);
  const auto explicit_content = ci.expect(der::tag::context(0, true));
  if (!type || !explicit_content) return malformed("ContentInfo without type or content");
  EnvelopedParts parts;
  const int type_nid = nid_of_oid(type->whole);
  if (type_nid == NID_id_smime_ct_authEnvelopedData) {
    parts.authenticated = true;
  } else if (type_nid != NID_pkcs7_enveloped) {
    return malformed("not EnvelopedData or AuthEnvelopedData");
  }
  der::Reader inner(explicit_content->value);
  const auto body = inner.expect(der::tag::sequence);
  if (!body) return malformed("bad EnvelopedData");
  der::Reader r(body->value);
  if (!r.expect(der::tag::integer)) return malformed("EnvelopedData without version");
  r.next_if(der::tag::context(0, true));  // originatorInfo: certificates we do not need
  const auto recipients = r.expect(der::tag::set);
  if (!recipients) return malformed("EnvelopedData without RecipientInfos");
  der::Reader each(recipients->value);
  while (!each.empty()) {
    const auto ri = each.next();
    if (!ri) return malformed("bad RecipientInfo");
    if (ri->tag == der::tag::sequence) {
      MAILKMS_TRY(entry, read_key_transport(ri->value));
      parts.recipients.push_back(std::move(entry));
    } else if (ri->tag == der::tag::context(1, true)) {
      MAILKMS_CHECK(read_key_agreement(ri->value, parts.recipients));
    } else {
      RecipientEntry other;
      other.kind_name = ri->tag == der::tag::context(2, true)   ? "kekri"
                        : ri->tag == der::tag::context(3, true) ? "pwri"
                                                                : "ori";
      parts.recipients.push_back(std::move(other));
    }
  }
  const auto eci = r.expect(der::tag::sequence);
  if (!eci) return malformed("EnvelopedData without EncryptedContentInfo");
  {
    der::Reader e(eci->value);
    if (!e.expect(der::tag::oid)) return malformed("EncryptedContentInfo without content type");
    const auto algorithm = e.expect(der::tag::sequence);
    if (!algorithm) return malformed("EncryptedContentInfo without algorithm");
    parts.content_encryption_algorithm = std::string(algorithm->whole);
    const auto content = e.next();
    if (!content) return malformed("EnvelopedData without encrypted content (detached content is not supported)");
    if (content->tag == der::tag::context(0, false)) {
      parts.encrypted_content = std::string(content->value);
    } else if (content->tag == der::tag::context(0, true)) {  // constructed: OCTET STRING chunks
      der::Reader chunks(content->value);
      while (!chunks.empty()) {
        const auto chunk = chunks.expect(der::tag::octet_string);
        if (!chunk) return malformed("bad encrypted content chunk");
        parts.encrypted_content += chunk->value;
      }
    } else {
      return malformed("bad encrypted content");
    }
  }
  if (parts.authenticated) {
    if (const auto attrs = r.next_if(der::tag::context(1, true))) {
      parts.auth_attributes = der::encode(der::tag::set, attrs->value);
    }
    const auto mac = r.expect(der::tag::octet_string);
    if (!mac) return malformed("AuthEnvelopedData without MAC");
    parts.mac = std::string(mac->value);
  }
  return parts;
}

}  // namespace mailkms::smime::detail
