#include "mailkms/smime/verify.hpp"

#include <openssl/cmserr.h>

#include <cstring>
#include <variant>

#include "mailkms/smime/ossl.hpp"
#include "smime_entity.hpp"
#include "spooled_message.hpp"
#include "stream.hpp"

namespace mailkms::smime {
namespace {

VerifyResult malformed(Error error) {
  VerifyResult r;
  r.status = SignatureStatus::malformed;
  r.reason = error.message;
  r.error = std::move(error);
  return r;
}

// A delimiter line of a multipart body: where it starts, where the line
// after it starts, and whether it closes the multipart.
struct Delimiter {
  std::size_t start = 0;
  std::size_t after = 0;
  bool closing = false;
};

// Finds the first `most` delimiter lines "--boundary" (RFC 2046 §5.1.1) in
// a body fed to it in pieces of any size: the whole body in memory, or a
// spool a chunk at a time. One scanner for both, so that the message in
// memory and the message streamed from a spool are split alike. It looks
// only at line starts and keeps no bytes, so its cost is linear in the
// body whatever the boundary and however long the lines.
class DelimiterScanner {
 public:
  DelimiterScanner(std::string_view delimiter, std::size_t most) : delimiter_(delimiter), most_(most) {}

  [[nodiscard]] bool enough() const { return found_.size() >= most_; }
  void feed(std::string_view piece);
  // The body ended: a delimiter may end without its CRLF.
  void finish();
  [[nodiscard]] const std::vector<Delimiter>& found() const { return found_; }

 private:
  // Where in the current line the scanner is: matching "--boundary", just
  // past it, past one '-' of a closing "--", in transport padding, past
  // the CR, or in the rest of a line that is no delimiter.
  enum class State { delimiter, after_delimiter, one_dash, padding, carriage_return, other };
  void next_line(std::size_t start) {
    state_ = State::delimiter;
    matched_ = 0;
    closing_ = false;
    line_start_ = start;
  }
  void step(char c, std::size_t after);

  std::string delimiter_;
  std::size_t most_;
  std::vector<Delimiter> found_;
  State state_ = State::delimiter;
  std::size_t matched_ = 0;
  bool closing_ = false;
  std::size_t line_start_ = 0;
  std::size_t fed_ = 0;  // bytes fed so far
};

// One byte; `after` is the offset just past it.
void DelimiterScanner::step(char c, std::size_t after) {
  // A line feed ends the line whatever state it finds.
  const auto then = [&](State s) {
    if (c == '\n') {
      next_line(after);
    } else {
      state_ = s;
    }
  };
  switch (state_) {
    case State::delimiter:
      if (c == delimiter_[matched_]) {
        if (++matched_ == delimiter_.size()) state_ = State::after_delimiter;
      } else {
        then(State::other);
      }
      return;
    case State::after_delimiter:
      then(c == '-' ? State::one_dash : (c == ' ' || c == '\t') ? State::padding : c == '\r' ? State::carriage_return : State::other);
      return;
    case State::one_dash:
      closing_ = c == '-';
      then(closing_ ? State::padding : State::other);
      return;
    case State::padding:
      then((c == ' ' || c == '\t') ? State::padding : c == '\r' ? State::carriage_return : State::other);
      return;
    case State::carriage_return:
      if (c == '\n') found_.push_back({line_start_, after, closing_});
      then(State::other);
      return;
    case State::other:
      then(State::other);
      return;
  }
}

void DelimiterScanner::feed(std::string_view piece) {
  for (std::size_t i = 0; i < piece.size() && !enough();) {
    if (state_ == State::other) {  // skip to the next line at memchr's speed
      const auto* nl = static_cast<const char*>(std::memchr(piece.data() + i, '\n', piece.size() - i));
      if (nl == nullptr) break;
      i = static_cast<std::size_t>(nl - piece.data()) + 1;
      next_line(fed_ + i);
      continue;
    }
    step(piece[i], fed_ + i + 1);
    ++i;
  }
  fed_ += piece.size();
}

void DelimiterScanner::finish() {
  if (!enough() && (state_ == State::after_delimiter || state_ == State::padding)) {
    found_.push_back({line_start_, fed_, closing_});
  }
}

// Where the signed part and the signature part of a multipart/signed body
// are (RFC 1847 §2.1), from its first delimiter lines.
struct SignedLayout {
  std::size_t content_start = 0;
  std::size_t content_length = 0;
  std::size_t signature_start = 0;
  std::size_t signature_length = 0;
};

Result<SignedLayout> signed_layout(const std::vector<Delimiter>& d) {
  const auto broken = [](const char* what) { return make_error(Errc::malformed_mime, what); };
  if (d.empty() || d[0].closing) return broken("multipart/signed without its first boundary");
  if (d.size() < 2 || d[1].closing) return broken("multipart/signed without a signature part");
  if (d.size() < 3) return broken("multipart/signed without its closing boundary");
  if (!d[2].closing) return broken("multipart/signed with more than two parts");
  // The CRLF before each delimiter belongs to the delimiter.
  if (d[1].start < d[0].after + 2 || d[2].start < d[1].after + 2) return broken("empty part in multipart/signed");
  SignedLayout layout{d[0].after, d[1].start - 2 - d[0].after, d[1].after, d[2].start - 2 - d[1].after};
  if (layout.signature_length > kMaxSignaturePart) {
    return make_error(Errc::limit_exceeded, "signature part larger than " + std::to_string(kMaxSignaturePart) + " bytes");
  }
  return layout;
}

std::optional<std::time_t> signing_time(CMS_SignerInfo* si) {
  const int index = CMS_signed_get_attr_by_NID(si, NID_pkcs9_signingTime, -1);
  if (index < 0) return std::nullopt;
  const ASN1_TYPE* value = X509_ATTRIBUTE_get0_type(CMS_signed_get_attr(si, index), 0);
  if (value == nullptr || (value->type != V_ASN1_UTCTIME && value->type != V_ASN1_GENERALIZEDTIME)) return std::nullopt;
  std::tm tm{};
  if (ASN1_TIME_to_tm(value->value.utctime, &tm) != 1) return std::nullopt;
  return timegm(&tm);
}

std::optional<Capabilities> capabilities(CMS_SignerInfo* si) {
  const auto* value = static_cast<ASN1_STRING*>(
      CMS_signed_get0_data_by_OBJ(si, OBJ_nid2obj(NID_SMIMECapabilities), -3, V_ASN1_SEQUENCE));
  if (value == nullptr) return std::nullopt;
  const unsigned char* p = ASN1_STRING_get0_data(value);
  X509_ALGORS* algorithms = d2i_X509_ALGORS(nullptr, &p, ASN1_STRING_length(value));
  if (algorithms == nullptr) {
    ERR_clear_error();
    return std::nullopt;
  }
  Capabilities caps;
  for (int i = 0; i < sk_X509_ALGOR_num(algorithms); ++i) {
    const X509_ALGOR* a = sk_X509_ALGOR_value(algorithms, i);
    const int n = OBJ_obj2nid(a->algorithm);
    if (n == NID_rsaesOaep) caps.rsa_oaep = true;
    if (const auto c = cipher_from_nid(n)) caps.ciphers.push_back(*c);
  }
  sk_X509_ALGOR_pop_free(algorithms, X509_ALGOR_free);
  return caps;
}

SignatureStatus status_of_chain_error(int error) {
  switch (error) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID: return SignatureStatus::expired;
    case X509_V_ERR_CERT_REVOKED: return SignatureStatus::revoked;
    default: return SignatureStatus::untrusted;
  }
}

// Chain, key usage and revocation for one signer whose signature is intact.
void judge_signer(const CryptoContext& ctx, SignerReport& report, STACK_OF(X509) * carried,
                  const VerifyOptions& options) {
  X509* cert = report.certificate.native();
  if ((X509_get_extension_flags(cert) & EXFLAG_KUSAGE) != 0 &&
      (X509_get_key_usage(cert) & (KU_DIGITAL_SIGNATURE | KU_NON_REPUDIATION)) == 0) {
    report.status = SignatureStatus::untrusted;
    report.reason = "the signer's certificate may not sign: keyUsage has neither digitalSignature nor nonRepudiation";
    return;
  }
  if (options.trust == nullptr) {
    report.status = SignatureStatus::untrusted;
    report.reason = "no trust anchors configured";
    return;
  }
  ossl::X509StoreCtx sctx(X509_STORE_CTX_new_ex(ctx.libctx(), nullptr));
  if (!sctx || X509_STORE_CTX_init(sctx.get(), options.trust->native(), cert, carried) != 1) {
    report.status = SignatureStatus::untrusted;
    report.reason = "cannot build a chain: " + ossl::drain_errors();
    return;
  }
  X509_STORE_CTX_set_purpose(sctx.get(), X509_PURPOSE_SMIME_SIGN);
  if (options.at) X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(sctx.get()), *options.at);
  if (X509_verify_cert(sctx.get()) != 1) {
    const int error = X509_STORE_CTX_get_error(sctx.get());
    X509* where = X509_STORE_CTX_get_current_cert(sctx.get());
    report.status = status_of_chain_error(error);
    report.reason = X509_verify_cert_error_string(error);
    if (where != nullptr && where != cert) report.reason += " (" + Certificate::share(where).subject() + ")";
    ERR_clear_error();
    return;
  }
  if (options.revocation != nullptr) {
    STACK_OF(X509)* chain = X509_STORE_CTX_get0_chain(sctx.get());
    for (int i = 0; i + 1 < sk_X509_num(chain); ++i) {
      const Certificate subject = Certificate::share(sk_X509_value(chain, i));
      const Certificate issuer = Certificate::share(sk_X509_value(chain, i + 1));
      if (options.revocation->check(subject, issuer) == Revocation::revoked) {
        report.status = SignatureStatus::revoked;
        report.reason = "certificate revoked: " + subject.subject();
        return;
      }
    }
  }
  if (options.from) {
    std::string addresses;
    for (const auto& a : report.addresses) addresses += (addresses.empty() ? "" : ", ") + a;
    if (addresses.empty()) addresses = "none";
    if (options.from->empty()) {
      report.status = SignatureStatus::signer_mismatch;
      report.reason = "the message has no single readable From field to match the signer (" + addresses + ")";
      return;
    }
    for (const auto& author : *options.from) {
      if (!report.certificate.has_email(author)) {
        report.status = SignatureStatus::signer_mismatch;
        report.reason = "From <" + author + "> is not an address of the signer (" + addresses + ")";
        return;
      }
    }
  }
  // A scoped anchor vouches for its domains alone: the authors, or without
  // them every address the signer's certificate names.
  const std::vector<std::string>& vouched = options.from ? *options.from : report.addresses;
  for (const auto& address : vouched) {
    if (auto outside = options.trust->out_of_scope(X509_STORE_CTX_get0_chain(sctx.get()), address)) {
      report.status = SignatureStatus::untrusted;
      report.reason = std::move(*outside);
      return;
    }
  }
  report.status = SignatureStatus::pass;
  report.reason = "signed by " + (report.addresses.empty() ? report.certificate.subject() : report.addresses.front());
}

// The verdict on a parsed SignedData; `detached` is the signed content of
// a multipart/signed, or empty for opaque signed-data.
// `detached`: the signed content, read through to its end; null when the
// content is inside the SignedData.
VerifyResult verify_cms(const CryptoContext& ctx, CMS_ContentInfo* cms, BIO* detached, const VerifyOptions& options) {
  VerifyResult result;
  if (OBJ_obj2nid(CMS_get0_type(cms)) != NID_pkcs7_signed) {
    return malformed(make_error(Errc::malformed_cms, "the signature is not a CMS SignedData"));
  }
  STACK_OF(CMS_SignerInfo)* infos = CMS_get0_SignerInfos(cms);
  if (sk_CMS_SignerInfo_num(infos) <= 0) {
    result.status = SignatureStatus::no_signature;
    result.reason = "SignedData without signers";
    return result;
  }
  ossl::X509Stack carried(CMS_get1_certs(cms));
  for (int i = 0; i < sk_X509_num(carried.get()); ++i) {
    result.certificates.push_back(Certificate::share(sk_X509_value(carried.get(), i)));
  }

  // The mathematics: content digest and signature, for every signer.
  // Detached content is only digested, not copied out.
  ossl::Bio content_out(detached != nullptr ? BIO_new(BIO_s_null()) : BIO_new(BIO_s_mem()));
  const bool intact = CMS_verify(cms, nullptr, nullptr, detached, content_out.get(),
                                 CMS_NO_SIGNER_CERT_VERIFY | CMS_BINARY) == 1;
  result.intact = intact;
  std::string math_error;
  bool certificate_missing = false;
  if (!intact) {
    const unsigned long code = ERR_peek_error();
    certificate_missing = ERR_GET_LIB(code) == ERR_LIB_CMS && ERR_GET_REASON(code) == CMS_R_SIGNER_CERTIFICATE_NOT_FOUND;
    math_error = ossl::drain_errors();
  }
  if (detached == nullptr && intact) {
    auto parsed = parse_entity(ossl::bio_contents(content_out.get()), options.limits);
    if (!parsed) return malformed(std::move(parsed).error());
    result.content = std::move(*parsed);
  }

  CMS_set1_signers_certs(cms, nullptr, 0);
  ERR_clear_error();
  for (int i = 0; i < sk_CMS_SignerInfo_num(infos); ++i) {
    CMS_SignerInfo* si = sk_CMS_SignerInfo_value(infos, i);
    X509* cert = nullptr;
    X509_ALGOR* digest_algorithm = nullptr;
    CMS_SignerInfo_get0_algs(si, nullptr, &cert, &digest_algorithm, nullptr);
    if (cert == nullptr) {
      result.status = SignatureStatus::untrusted;
      result.reason = "the signer's certificate is not in the message";
      continue;
    }
    SignerReport report{Certificate::share(cert), {}, signing_time(si), Digest::sha256, capabilities(si),
                        SignatureStatus::fail, {}};
    report.addresses = report.certificate.email_addresses();
    const int digest_nid = digest_algorithm != nullptr ? OBJ_obj2nid(digest_algorithm->algorithm) : NID_undef;
    if (const auto d = digest_from_nid(digest_nid)) {
      report.digest = *d;
    } else {
      report.reason = std::string("signed with unsupported digest ") + OBJ_nid2sn(digest_nid);
      result.signers.push_back(std::move(report));
      continue;
    }
    if (intact) {
      judge_signer(ctx, report, carried.get(), options);
    } else {
      report.reason = "the content or the signature was altered (" + math_error + ")";
    }
    if (is_weak(report.digest) || (report.certificate.is_rsa() && report.certificate.key_bits() < 2048)) {
      result.weak = true;
    }
    result.signers.push_back(std::move(report));
  }
  if (!intact && certificate_missing) {
    result.status = SignatureStatus::untrusted;
    result.reason = "the signer's certificate is not in the message";
    return result;
  }
  if (result.signers.empty()) return result;
  // One good signature makes the message good (RFC 5652 §5.1).
  const SignerReport* verdict = &result.signers.front();
  for (const auto& s : result.signers) {
    if (s.status == SignatureStatus::pass) {
      verdict = &s;
      break;
    }
  }
  result.status = verdict->status;
  result.reason = verdict->reason;
  if (result.weak) result.reason += "; weak: SHA-1 digest or RSA key under 2048 bits";
  return result;
}

// The boundary of an S/MIME multipart/signed, or the result that says why
// there is none to verify.
std::variant<std::string, VerifyResult> signed_boundary(const ContentType& type) {
  const auto protocol = type.parameter("protocol");
  if (!protocol || (*protocol != "application/pkcs7-signature" && *protocol != "application/x-pkcs7-signature")) {
    VerifyResult r;
    r.status = SignatureStatus::no_signature;
    r.reason = "multipart/signed with protocol \"" + protocol.value_or("") + "\" is not S/MIME";
    return r;
  }
  auto boundary = type.parameter("boundary");
  if (!boundary || boundary->empty() || boundary->size() > 70) {  // RFC 2046 §5.1.1
    return malformed(make_error(Errc::malformed_mime, "multipart/signed without a valid boundary (1 to 70 characters)"));
  }
  return std::move(*boundary);
}

// The signature part's entity, as CMS.
Result<ossl::Cms> signature_cms(const CryptoContext& ctx, std::string_view part, const MimeLimits& limits) {
  MAILKMS_TRY(entity, parse_entity(part, limits));
  MAILKMS_TRY(der, detail::decode_cms_body(entity));
  return detail::parse_cms(ctx, der);
}

void note_micalg(VerifyResult& result, const ContentType& type) {
  if (const auto label = type.parameter("micalg"); label && !result.signers.empty()) {
    const auto declared = parse_digest(*label);
    if (declared != result.signers.front().digest) {
      result.reason += "; note: micalg \"" + *label + "\" differs from the digest used, " +
                       std::string(name(result.signers.front().digest));
    }
  }
}

// The layout of a multipart/signed body in a spool, read a chunk at a time
// and no further than its closing delimiter.
Result<SignedLayout> find_signed_layout(const Spool& spool, std::size_t offset, std::size_t length,
                                        std::string_view delimiter) {
  DelimiterScanner scanner(delimiter, 3);
  const Status walked = spool.for_each_chunk(offset, length, [&](std::string_view chunk) -> Status {
    scanner.feed(chunk);
    if (scanner.enough()) return make_error(Errc::internal, "enough");  // stops the walk
    return Ok{};
  });
  if (!walked && !scanner.enough()) return walked.error();
  scanner.finish();
  auto layout = signed_layout(scanner.found());
  if (!layout) return layout;
  // Offsets within the spool, not the body.
  layout->content_start += offset;
  layout->signature_start += offset;
  return layout;
}

// The signed part must be a MIME entity, as the in-memory reader requires
// (parse_entity): whether it is depends on its header section alone, which
// ends within the first max_header_bytes + 2 bytes or is too large.
Status check_signed_part(const Spool& spool, std::size_t offset, std::size_t length, const MimeLimits& limits) {
  std::string head(std::min(length, limits.max_header_bytes + 4), '\0');
  MAILKMS_TRY(got, spool.read(offset, head.data(), head.size()));
  if (got != head.size()) return make_error(Errc::io_error, "the spool ended inside the signed part");
  auto entity = parse_entity(head, limits);
  if (!entity) return std::move(entity).error();
  return Ok{};
}

}  // namespace

std::string_view to_string(SignatureStatus status) noexcept {
  switch (status) {
    case SignatureStatus::pass: return "pass";
    case SignatureStatus::fail: return "fail";
    case SignatureStatus::untrusted: return "untrusted";
    case SignatureStatus::expired: return "expired";
    case SignatureStatus::revoked: return "revoked";
    case SignatureStatus::signer_mismatch: return "signer-mismatch";
    case SignatureStatus::no_signature: return "no-signature";
    case SignatureStatus::malformed: return "malformed";
  }
  return "malformed";
}

TrustStore::TrustStore() : store_(X509_STORE_new()) {}
TrustStore::TrustStore(TrustStore&& other) noexcept : store_(other.store_), scopes_(std::move(other.scopes_)) {
  other.store_ = nullptr;
}
TrustStore& TrustStore::operator=(TrustStore&& other) noexcept {
  std::swap(store_, other.store_);
  std::swap(scopes_, other.scopes_);
  return *this;
}
TrustStore::~TrustStore() { X509_STORE_free(store_); }

void TrustStore::add(const Certificate& anchor, const std::vector<std::string>& domains) {
  X509_STORE_add_cert(store_, anchor.native());
  ERR_clear_error();  // adding the same anchor twice is not an error
  if (domains.empty()) return;
  auto& scope = scopes_[anchor.der()];
  for (const auto& d : domains) scope.push_back(normalize_address(d));
}

std::optional<std::string> TrustStore::out_of_scope(STACK_OF(X509) * chain, std::string_view address) const {
  if (scopes_.empty()) return std::nullopt;
  for (int i = 0; i < sk_X509_num(chain); ++i) {
    const Certificate certificate = Certificate::share(sk_X509_value(chain, i));
    const auto scope = scopes_.find(certificate.der());
    if (scope == scopes_.end()) continue;
    const auto& domains = scope->second;
    if (std::any_of(domains.begin(), domains.end(), [&](const std::string& d) { return address_in_domain(address, d); })) {
      continue;
    }
    std::string listed;
    for (const auto& d : domains) listed += (listed.empty() ? "" : ", ") + d;
    return "the trust anchor " + certificate.subject() + " vouches only for " + listed + ", not " + std::string(address);
  }
  return std::nullopt;
}

Status TrustStore::add_system_roots() {
  if (X509_STORE_set_default_paths(store_) != 1) return ossl::error(Errc::io_error, "cannot load the system roots");
  return Ok{};
}

VerifyResult verify_entity(const CryptoContext& ctx, const Entity& entity, const VerifyOptions& options) {
  ERR_clear_error();  // whatever an earlier caller left must not become our reason
  auto type = content_type(entity);
  if (!type) return malformed(std::move(type).error());

  if (type->is("multipart", "signed")) {
    auto boundary = signed_boundary(*type);
    if (auto* why = std::get_if<VerifyResult>(&boundary)) return std::move(*why);
    DelimiterScanner scanner("--" + std::get<std::string>(boundary), 3);
    scanner.feed(entity.body);
    scanner.finish();
    auto layout = signed_layout(scanner.found());
    if (!layout) return malformed(std::move(layout).error());
    const std::string_view body(entity.body);
    const std::string_view signed_part = body.substr(layout->content_start, layout->content_length);
    auto cms = signature_cms(ctx, body.substr(layout->signature_start, layout->signature_length), options.limits);
    if (!cms) return malformed(std::move(cms).error());
    auto content = parse_entity(signed_part, options.limits);
    if (!content) return malformed(std::move(content).error());
    // Digested through the same source as a spooled message's signed part.
    // Not a memory BIO: OpenSSL 3.0's CMS_verify copies one, and leaks the
    // copy when it cannot set up a digest the SignedData names.
    const Spool body_spool = Spool::borrow(entity.body);
    detail::Pieces pieces;
    pieces.add(body_spool, layout->content_start, layout->content_length);
    detail::PiecesSource content_in(pieces);
    if (content_in.bio() == nullptr) return malformed(make_error(Errc::internal, "cannot set up streaming"));
    VerifyResult result = verify_cms(ctx, cms->get(), content_in.bio(), options);
    result.content = std::move(*content);
    note_micalg(result, *type);
    return result;
  }

  if (type->is("application", "pkcs7-mime") || type->is("application", "x-pkcs7-mime")) {
    auto der = detail::decode_cms_body(entity);
    if (!der) return malformed(std::move(der).error());
    auto cms = detail::parse_cms(ctx, *der);
    if (!cms) return malformed(std::move(cms).error());
    VerifyResult result = verify_cms(ctx, cms->get(), nullptr, options);
    result.opaque = true;
    return result;
  }

  VerifyResult r;
  r.status = SignatureStatus::no_signature;
  r.reason = "the message is not signed (" + type->type + "/" + type->subtype + ")";
  return r;
}

VerifyResult verify_message(const CryptoContext& ctx, std::string_view message, VerifyOptions options) {
  auto parsed = parse_message(message, options.limits);
  if (!parsed) return malformed(std::move(parsed).error());
  if (!options.from) options.from = author_addresses(*parsed);
  return verify_entity(ctx, parsed->entity, options);
}


VerifyResult verify_message(const CryptoContext& ctx, const Spool& message, VerifyOptions options) {
  ERR_clear_error();
  auto spooled = detail::parse_spooled_message(message, options.limits);
  if (!spooled) return malformed(std::move(spooled).error());
  if (!options.from) options.from = author_addresses(Message{spooled->outer, {}});
  auto type = content_type(Entity{spooled->content_headers, {}});
  if (!type) return malformed(std::move(type).error());
  // Signed-data carries its content inside, and OpenSSL reads it whole;
  // bare line feeds are made CRLF in memory, as the string version does.
  const auto in_memory = [&]() -> VerifyResult {
    if (message.size() > options.max_in_memory) {
      return malformed(make_error(Errc::limit_exceeded, "a message of " + std::to_string(message.size()) +
                                                            " bytes that can only be verified in memory"));
    }
    auto text = message.to_string();
    if (!text) return malformed(std::move(text).error());
    return verify_message(ctx, std::string_view(*text), std::move(options));
  };
  if (!type->is("multipart", "signed") || spooled->bare_line_feeds) return in_memory();

  auto boundary = signed_boundary(*type);
  if (auto* why = std::get_if<VerifyResult>(&boundary)) return std::move(*why);
  auto layout = find_signed_layout(message, spooled->body_offset, spooled->body_length,
                                   "--" + std::get<std::string>(boundary));
  if (!layout) return malformed(std::move(layout).error());
  const std::size_t signature_length = layout->signature_length;
  std::string signature(signature_length, '\0');
  auto got = message.read(layout->signature_start, signature.data(), signature.size());
  if (!got) return malformed(std::move(got).error());
  if (*got != signature.size()) return malformed(make_error(Errc::io_error, "the spool ended inside the signature part"));
  auto cms = signature_cms(ctx, signature, options.limits);
  if (!cms) return malformed(std::move(cms).error());
  if (auto readable = check_signed_part(message, layout->content_start, layout->content_length, options.limits);
      !readable) {
    return malformed(std::move(readable).error());
  }

  // The signed part streams from the spool through the digest.
  detail::Pieces content;
  content.add(message, layout->content_start, layout->content_length);
  detail::PiecesSource in(content);
  if (in.bio() == nullptr) return malformed(make_error(Errc::internal, "cannot set up streaming"));
  VerifyResult result = verify_cms(ctx, cms->get(), in.bio(), options);
  if (in.error()) return malformed(*in.error());  // a spool that cannot be read is not an altered message
  note_micalg(result, *type);
  return result;
}

}  // namespace mailkms::smime
