#include "mailkms/keystore/seal.hpp"

#include <openssl/crypto.h>
#include <sys/stat.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "aead.hpp"
#include "mailkms/keystore/kdf.hpp"
#include "mailkms/smime/mime.hpp"

namespace mailkms::keystore {
namespace {

constexpr std::string_view kKeyFilePrefix = "mailkms-key-file-1:";

std::string aad_for(SealMethod method) { return "mailkms/seal/v1/" + std::string(to_string(method)); }

Result<SealRecord> wrap(SealRecord record, const smime::SecretBytes& kek, const smime::SecretBytes& master_key) {
  MAILKMS_TRY(wrapped, detail::seal_record(kek, std::string_view(reinterpret_cast<const char*>(master_key.data()),
                                                                  master_key.size()),
                                           aad_for(record.method)));
  record.wrapped_master_key = std::move(wrapped);
  return record;
}

Result<smime::SecretBytes> unwrap(const SealRecord& record, const smime::SecretBytes& kek) {
  auto master = detail::open_record(kek, record.wrapped_master_key, aad_for(record.method));
  if (!master) return make_error(Errc::wrong_secret, "that does not open the seal");
  return std::move(*master);
}

std::string view(const smime::SecretBytes& s) { return std::string(reinterpret_cast<const char*>(s.data()), s.size()); }

}  // namespace

std::string_view to_string(SealMethod method) noexcept {
  switch (method) {
    case SealMethod::passphrase: return "passphrase";
    case SealMethod::key_file: return "key-file";
    case SealMethod::shares: return "shares";
  }
  return "passphrase";
}

std::string SealRecord::to_json() const {
  nlohmann::json j;
  j["version"] = 1;
  j["method"] = std::string(to_string(method));
  if (method == SealMethod::passphrase) {
    j["kdf"] = {{"algorithm", "scrypt"}, {"n", scrypt.n}, {"r", scrypt.r}, {"p", scrypt.p},
                {"salt", smime::base64_encode_mime(salt)}};
  }
  if (method == SealMethod::shares) {
    j["shares"] = share_count;
    j["threshold"] = threshold;
  }
  j["wrapped_master_key"] = smime::base64_encode_mime(wrapped_master_key);
  return j.dump();
}

Result<SealRecord> SealRecord::from_json(std::string_view text) {
  const auto j = nlohmann::json::parse(text, nullptr, false);
  const Error bad = make_error(Errc::corrupt, "the seal record does not parse");
  if (j.is_discarded() || !j.is_object() || j.value("version", 0) != 1) return bad;
  SealRecord r;
  const std::string method = j.value("method", "");
  if (method == "passphrase") {
    r.method = SealMethod::passphrase;
    const auto& kdf = j.value("kdf", nlohmann::json::object());
    if (kdf.value("algorithm", "") != "scrypt") return bad;
    r.scrypt.n = kdf.value("n", std::uint64_t{0});
    r.scrypt.r = kdf.value("r", std::uint32_t{0});
    r.scrypt.p = kdf.value("p", std::uint32_t{0});
    auto salt = smime::base64_decode(kdf.value("salt", ""));
    if (!salt || r.scrypt.n == 0 || r.scrypt.r == 0 || r.scrypt.p == 0) return bad;
    r.salt = std::move(*salt);
  } else if (method == "key-file") {
    r.method = SealMethod::key_file;
  } else if (method == "shares") {
    r.method = SealMethod::shares;
    r.share_count = j.value("shares", 0);
    r.threshold = j.value("threshold", 0);
  } else {
    return bad;
  }
  auto wrapped = smime::base64_decode(j.value("wrapped_master_key", ""));
  if (!wrapped || wrapped->empty()) return bad;
  r.wrapped_master_key = std::move(*wrapped);
  return r;
}

smime::SecretBytes new_master_key() { return detail::random_secret(detail::kKeyBytes); }

Result<SealRecord> seal_with_passphrase(const smime::SecretBytes& master_key, std::string_view passphrase,
                                        const ScryptParameters& parameters) {
  if (passphrase.size() < 12) return make_error(Errc::invalid_argument, "a passphrase needs at least 12 characters");
  SealRecord record;
  record.method = SealMethod::passphrase;
  record.scrypt = parameters;
  record.salt = view(detail::random_secret(16));
  MAILKMS_TRY(kek, scrypt(passphrase, record.salt, parameters));
  return wrap(std::move(record), kek, master_key);
}

Result<std::pair<SealRecord, std::string>> seal_with_key_file(const smime::SecretBytes& master_key) {
  const smime::SecretBytes kek = detail::random_secret(detail::kKeyBytes);
  SealRecord record;
  record.method = SealMethod::key_file;
  MAILKMS_TRY(sealed, wrap(std::move(record), kek, master_key));
  std::string contents(kKeyFilePrefix);
  contents += smime::base64_encode_mime(view(kek));
  return std::pair{std::move(sealed), std::move(contents)};
}

Result<std::pair<SealRecord, std::vector<std::string>>> seal_with_shares(const smime::SecretBytes& master_key,
                                                                         int count, int threshold) {
  const smime::SecretBytes kek = detail::random_secret(detail::kKeyBytes);
  MAILKMS_TRY(shares, split_secret(kek, count, threshold));
  SealRecord record;
  record.method = SealMethod::shares;
  record.share_count = count;
  record.threshold = threshold;
  MAILKMS_TRY(sealed, wrap(std::move(record), kek, master_key));
  std::vector<std::string> encoded;
  encoded.reserve(shares.size());
  for (const auto& s : shares) encoded.push_back(encode_share(s));
  return std::pair{std::move(sealed), std::move(encoded)};
}

Result<smime::SecretBytes> seal_key_from_passphrase(const SealRecord& record, std::string_view passphrase) {
  if (record.method != SealMethod::passphrase) return make_error(Errc::invalid_argument, "this keystore is not sealed with a passphrase");
  MAILKMS_TRY(kek, scrypt(passphrase, record.salt, record.scrypt));
  MAILKMS_CHECK(unwrap(record, kek));
  return kek;
}

Result<smime::SecretBytes> seal_key_from_key_file(const SealRecord& record, const std::filesystem::path& path) {
  if (record.method != SealMethod::key_file) return make_error(Errc::invalid_argument, "this keystore is not sealed with a key file");
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return make_error(Errc::not_found, "cannot read the key file " + path.string());
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    return make_error(Errc::permission_denied,
                      "the key file " + path.string() + " is open to its group or others: chmod 600 it");
  }
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  std::string contents = text.str();
  if (contents.substr(0, kKeyFilePrefix.size()) != kKeyFilePrefix) {
    OPENSSL_cleanse(contents.data(), contents.size());
    return make_error(Errc::wrong_secret, "not a mailkms key file");
  }
  auto kek = smime::base64_decode(std::string_view(contents).substr(kKeyFilePrefix.size()));
  OPENSSL_cleanse(contents.data(), contents.size());
  if (!kek || kek->size() != detail::kKeyBytes) return make_error(Errc::wrong_secret, "not a mailkms key file");
  smime::SecretBytes secret(std::move(*kek));
  MAILKMS_CHECK(unwrap(record, secret));
  return secret;
}

Result<smime::SecretBytes> seal_key_from_shares(const SealRecord& record, std::span<const std::string> shares) {
  if (record.method != SealMethod::shares) return make_error(Errc::invalid_argument, "this keystore is not sealed with shares");
  if (static_cast<int>(shares.size()) < record.threshold) {
    return make_error(Errc::wrong_secret, std::to_string(record.threshold) + " shares are needed, " +
                                              std::to_string(shares.size()) + " given");
  }
  std::vector<Share> decoded;
  for (const auto& text : shares) {
    MAILKMS_TRY(share, decode_share(text));
    decoded.push_back(std::move(share));
  }
  MAILKMS_TRY(kek, combine_shares(decoded));
  MAILKMS_CHECK(unwrap(record, kek));
  return kek;
}

Result<smime::SecretBytes> open_seal(const SealRecord& record, const smime::SecretBytes& seal_key) {
  return unwrap(record, seal_key);
}

Result<SealRecord> reseal(const SealRecord& record, const smime::SecretBytes& seal_key,
                          const smime::SecretBytes& new_master_key) {
  MAILKMS_CHECK(unwrap(record, seal_key));  // the same seal, or none
  return wrap(record, seal_key, new_master_key);
}

Result<smime::SecretBytes> unseal_with_passphrase(const SealRecord& record, std::string_view passphrase) {
  MAILKMS_TRY(kek, seal_key_from_passphrase(record, passphrase));
  return unwrap(record, kek);
}

Result<smime::SecretBytes> unseal_with_key_file(const SealRecord& record, const std::filesystem::path& path) {
  MAILKMS_TRY(kek, seal_key_from_key_file(record, path));
  return unwrap(record, kek);
}

Result<smime::SecretBytes> unseal_with_shares(const SealRecord& record, std::span<const std::string> shares) {
  MAILKMS_TRY(kek, seal_key_from_shares(record, shares));
  return unwrap(record, kek);
}

}  // namespace mailkms::keystore
