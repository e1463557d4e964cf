#include "smime_entity.hpp"

#include "text.hpp"

#include <openssl/rand.h>

#include <climits>
#include <cstdlib>
#include <cctype>

namespace mailkms::smime::detail {

Entity pkcs7_mime_entity(std::string_view smime_type, std::string_view der) {
  Entity e;
  std::string type = "application/pkcs7-mime; smime-type=";
  type += smime_type;
  type += "; name=\"smime.p7m\"";
  e.headers.push_back(make_field("Content-Type", type));
  e.headers.push_back({"Content-Transfer-Encoding", " base64"});
  e.headers.push_back({"Content-Disposition", " attachment; filename=\"smime.p7m\""});
  append_base64_lines(e.body, der);
  return e;
}

std::string make_boundary() {
  static constexpr char kHex[] = "0123456789abcdef";
  unsigned char random[12];
  if (RAND_bytes(random, sizeof random) != 1) std::abort();  // no randomness: nothing is safe
  std::string boundary = "----=_mailkms_";
  for (const unsigned char b : random) {
    boundary.push_back(kHex[b >> 4]);
    boundary.push_back(kHex[b & 15]);
  }
  return boundary;
}

Result<std::string> decode_cms_body(const Entity& entity) {
  std::string encoding = "7bit";
  if (const HeaderField* cte = entity.find("Content-Transfer-Encoding")) encoding = cte->unfolded();
  for (char& c : encoding) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (encoding == "base64") return base64_decode(entity.body);
  if (encoding == "binary" || encoding == "8bit" || encoding == "7bit") return entity.body;
  return make_error(Errc::malformed_mime, "S/MIME body in unexpected transfer encoding \"" + encoding + "\"");
}

Result<ossl::Cms> parse_cms(const CryptoContext& ctx, std::string_view der, std::size_t* consumed) {
  if (der.empty()) return make_error(Errc::malformed_cms, "empty CMS body");
  if (der.size() > static_cast<std::size_t>(LONG_MAX)) return make_error(Errc::limit_exceeded, "CMS body too large");
  CMS_ContentInfo* cms = CMS_ContentInfo_new_ex(ctx.libctx(), nullptr);
  if (cms == nullptr) return ossl::error(Errc::internal, "cannot allocate CMS structure");
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  if (d2i_CMS_ContentInfo(&cms, &p, static_cast<long>(der.size())) == nullptr) {
    CMS_ContentInfo_free(cms);
    return ossl::error(Errc::malformed_cms, "the CMS structure does not parse");
  }
  if (consumed != nullptr) *consumed = static_cast<std::size_t>(p - reinterpret_cast<const unsigned char*>(der.data()));
  return ossl::Cms(cms);
}

}  // namespace mailkms::smime::detail
