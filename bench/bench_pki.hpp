// Keys and certificates made in memory for the benchmarks: one CA and as
// many users as a case needs, RSA-2048 or EC P-256.
#pragma once

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <string>
#include <vector>

namespace mailkms::bench {

struct User {
  EVP_PKEY* key;
  X509* cert;
};

class BenchPki {
 public:
  explicit BenchPki(bool ec, int users);
  ~BenchPki();
  BenchPki(const BenchPki&) = delete;
  BenchPki& operator=(const BenchPki&) = delete;

  [[nodiscard]] X509* ca_cert() const { return ca_.cert; }
  [[nodiscard]] const std::vector<User>& users() const { return users_; }

 private:
  User ca_;
  std::vector<User> users_;
};

}  // namespace mailkms::bench
