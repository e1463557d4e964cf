// Outside CAs' CRLs, fetched from the distribution points their
// certificates name, so that a harvested certificate is checked for
// revocation. The gateway fetches them, not the keystore: the process that
// holds users' keys never opens a connection to a URL someone else wrote.
// Only http (a CRL is signed; TLS adds nothing but a way to fail), no
// redirects, at most kMaxCrlBytes, kFetchTimeout; each CRL is kept until
// its nextUpdate (a day at most), and a failure for kRetryAfter, so that a
// slow or absent server delays one message, not every one. It never judges
// a CRL: the keystore verifies its signature and its dates against the
// issuer.
#pragma once

#include <chrono>
#include <ctime>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "mailkms/keystore/error.hpp"
#include "mailkms/smime/certificate.hpp"

namespace mailkms::gateway {

inline constexpr std::size_t kMaxCrlBytes = std::size_t{512} * 1024;  // the keystore's request line is 1 MiB
inline constexpr std::chrono::seconds kFetchTimeout{5};
inline constexpr std::chrono::seconds kRetryAfter{300};

// The http URLs of the CRL distribution points `certificate` names.
std::vector<std::string> crl_urls(const smime::Certificate& certificate);

class CrlFetcher {
 public:
  CrlFetcher();

  // The DER of the CRL at each of `certificate`'s distribution points;
  // an error naming the URL when one cannot be had.
  keystore::Result<std::vector<std::string>> crls_for(const smime::Certificate& certificate);
  // Forget every CRL and failure kept: the next message fetches again.
  void clear();

 private:
  keystore::Result<std::string> fetch(const std::string& url);

  struct Cached {
    std::string der;
    std::string failure;  // why it could not be had, when it could not
    std::time_t until = 0;
  };
  void remember(const std::string& url, Cached entry);
  std::mutex mutex_;
  std::map<std::string, Cached> cache_;  // by URL
};

}  // namespace mailkms::gateway
