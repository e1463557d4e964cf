#include "mailkms/gateway/crl_fetcher.hpp"
#include "mailkms/errno_text.hpp"

#include <curl/curl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <memory>

#include "mailkms/smime/ossl.hpp"

namespace mailkms::gateway {
namespace {

struct CurlFree {
  void operator()(CURL* p) const { curl_easy_cleanup(p); }
};

// Appends what the server sends, and stops the transfer past the cap
// (a server may not say how long its answer is).
std::size_t collect(char* data, std::size_t size, std::size_t count, void* user) {
  auto* body = static_cast<std::string*>(user);
  const std::size_t n = size * count;
  if (body->size() + n > kMaxCrlBytes) return 0;
  body->append(data, n);
  return n;
}

// Until when a fetched CRL may be kept: its nextUpdate, within a day.
std::time_t keep_until(const std::string& der, std::time_t now) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  const smime::ossl::X509Crl crl(d2i_X509_CRL(nullptr, &p, static_cast<long>(der.size())));
  std::time_t until = now + 86400;
  if (crl && X509_CRL_get0_nextUpdate(crl.get()) != nullptr) {
    std::tm tm{};
    if (ASN1_TIME_to_tm(X509_CRL_get0_nextUpdate(crl.get()), &tm) == 1) until = std::min(until, timegm(&tm));
  }
  return until;
}

}  // namespace

std::vector<std::string> crl_urls(const smime::Certificate& certificate) {
  std::vector<std::string> urls;
  const smime::ossl::CrlDistPoints points(static_cast<CRL_DIST_POINTS*>(
      X509_get_ext_d2i(certificate.native(), NID_crl_distribution_points, nullptr, nullptr)));
  if (!points) return urls;
  for (int i = 0; i < sk_DIST_POINT_num(points.get()); ++i) {
    const DIST_POINT* point = sk_DIST_POINT_value(points.get(), i);
    if (point->distpoint == nullptr || point->distpoint->type != 0) continue;  // a full name, not relative
    const GENERAL_NAMES* names = point->distpoint->name.fullname;
    for (int j = 0; j < sk_GENERAL_NAME_num(names); ++j) {
      const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, j);
      if (name->type != GEN_URI) continue;
      const ASN1_IA5STRING* uri = name->d.uniformResourceIdentifier;
      std::string url(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                      static_cast<std::size_t>(ASN1_STRING_length(uri)));
      if (url.starts_with("http://")) urls.push_back(std::move(url));
    }
  }
  return urls;
}

CrlFetcher::CrlFetcher() {
  static std::once_flag initialized;
  std::call_once(initialized, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

void CrlFetcher::clear() {
  const std::lock_guard lock(mutex_);
  cache_.clear();
}

keystore::Result<std::vector<std::string>> CrlFetcher::crls_for(const smime::Certificate& certificate) {
  std::vector<std::string> crls;
  for (const auto& url : crl_urls(certificate)) {
    MAILKMS_TRY(der, fetch(url));
    crls.push_back(std::move(der));
  }
  return crls;
}

keystore::Result<std::string> CrlFetcher::fetch(const std::string& url) {
  const std::time_t now = std::time(nullptr);
  {
    const std::lock_guard lock(mutex_);
    if (const auto it = cache_.find(url); it != cache_.end() && it->second.until > now) {
      if (!it->second.failure.empty()) return keystore::make_error(keystore::Errc::unavailable, it->second.failure);
      return it->second.der;
    }
  }
  std::unique_ptr<CURL, CurlFree> curl(curl_easy_init());
  if (!curl) return keystore::make_error(keystore::Errc::internal, "cannot start a transfer for " + url);
  std::string body;
  char error[CURL_ERROR_SIZE] = {};
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http");
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(std::chrono::milliseconds(kFetchTimeout).count()));
  curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(kMaxCrlBytes));
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
  const CURLcode done = curl_easy_perform(c);
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  if (done != CURLE_OK || status != 200) {
    const std::string why = done != CURLE_OK ? (error[0] != '\0' ? std::string(error) : curl_easy_strerror(done))
                                             : "HTTP status " + std::to_string(status);
    const std::string failure = "the CRL at " + url + " cannot be had: " + why;
    remember(url, {{}, failure, now + kRetryAfter.count()});
    return keystore::make_error(keystore::Errc::unavailable, failure);
  }
  remember(url, {body, {}, keep_until(body, now)});
  return body;
}

void CrlFetcher::remember(const std::string& url, Cached entry) {
  const std::lock_guard lock(mutex_);
  if (cache_.size() >= 1024) cache_.clear();  // bounded; refilled on demand
  cache_[url] = std::move(entry);
}

}  // namespace mailkms::gateway
