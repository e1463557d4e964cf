#include "mailkms/keystore/mail_signer.hpp"

#include <openssl/crypto.h>

#include <nlohmann/json.hpp>

#include "aead.hpp"

namespace mailkms::keystore {
namespace {

// Behind the barrier: which certificate signs the keystore's mail. Its key
// is at private_key_path(kKeyOwner, "sign-<serial>").
constexpr std::string_view kRecord = "core/mail-signer";
constexpr std::string_view kKeyOwner = "core:mail-signer";

std::string key_id(std::string_view serial) { return "sign-" + std::string(serial); }

// "AB:CD:…", as Thunderbird, Outlook and `openssl x509 -fingerprint` show it.
std::string colon_hex(std::string_view hex) {
  std::string out;
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    if (i > 0) out += ':';
    for (const char c : hex.substr(i, 2)) out += static_cast<char>(c >= 'a' && c <= 'f' ? c - 'a' + 'A' : c);
  }
  return out;
}

}  // namespace

bool MailSigner::usable(const Current& current, const std::string& sender) const {
  return current.identity.address == smime::normalize_address(sender) &&
         current.not_after - kRenewalWindow > clock_.wall();
}

Result<MailSigner::Current> MailSigner::signer_for(const CertificateRecord& record, const std::string& address) {
  MAILKMS_TRY(key, load_private_key(barrier_, *ctx_, kKeyOwner, key_id(record.serial)));
  MAILKMS_TRY(chain, ca_.chain(record.ca_id));
  if (chain.empty()) return make_error(Errc::internal, "issuing CA " + record.ca_id + " has no chain");
  const smime::Certificate root = chain.back();
  chain.pop_back();  // the root is the reader's to trust, not ours to send
  auto signer = smime::LocalSigner::create(ctx_, record.certificate, std::move(key), std::move(chain));
  if (!signer) return make_error(Errc::crypto_failed, signer.error().message);
  Current current;
  current.identity = {address, record.serial, root.subject(), colon_hex(detail::hex_sha256(root.der()))};
  current.not_after = record.certificate.not_after();
  current.signer = std::make_shared<smime::LocalSigner>(std::move(*signer));
  return current;
}

// The stored identity, if there is one and its certificate stands.
Result<std::optional<MailSigner::Current>> MailSigner::load(const std::string& sender) {
  MAILKMS_TRY(stored, barrier_.get(kRecord));
  if (!stored) return std::optional<Current>();
  const auto j = nlohmann::json::parse(std::string_view(reinterpret_cast<const char*>(stored->data()), stored->size()),
                                       nullptr, false);
  if (!j.is_object() || !j.contains("address") || !j.contains("serial")) {
    return make_error(Errc::corrupt, std::string(kRecord) + " is not a mail signer record");
  }
  const std::string address = j.at("address").get<std::string>();
  MAILKMS_TRY(record, ca_.certificate(j.at("serial").get<std::string>()));
  if (record.revoked_at || address != smime::normalize_address(sender)) return std::optional<Current>();
  MAILKMS_TRY(current, signer_for(record, address));
  return std::optional<Current>(std::move(current));
}

Result<MailSigner::Current> MailSigner::make(const std::string& sender, KeyType key_type, int validity_days,
                                             const std::string& actor) {
  const std::string address = smime::normalize_address(sender);
  MAILKMS_TRY(key, generate_key(*ctx_, key_type));
  MAILKMS_TRY(issued, ca_.issue(key.native(), address, Profile::signing, validity_days, actor));
  const std::string serial = issued.certificate.serial_hex();
  MAILKMS_CHECK(store_private_key(barrier_, kKeyOwner, key_id(serial), key));
  MAILKMS_CHECK(barrier_.put(kRecord, nlohmann::json{{"address", address}, {"serial", serial}}.dump()));
  MAILKMS_TRY(record, ca_.certificate(serial));
  return signer_for(record, address);
}

Result<MailSigner::Identity> MailSigner::identity(const std::string& sender, KeyType key_type, int validity_days,
                                                  const std::string& actor) {
  const std::lock_guard lock(mutex_);
  if (current_ && usable(*current_, sender)) return current_->identity;
  std::optional<Current> stored;
  if (current_) {
    stored = std::move(current_);
  } else {
    MAILKMS_TRY(loaded, load(sender));
    stored = std::move(loaded);
  }
  current_.reset();
  if (stored && usable(*stored, sender)) {
    current_ = std::move(stored);
    return current_->identity;
  }
  MAILKMS_TRY(made, make(sender, key_type, validity_days, actor));
  if (stored) (void)ca_.revoke(stored->identity.serial, RevocationReason::superseded, actor);
  current_ = std::move(made);
  return current_->identity;
}

Result<std::string> MailSigner::sign(std::string_view message, const std::string& sender) {
  std::shared_ptr<smime::LocalSigner> signer;
  {
    const std::lock_guard lock(mutex_);
    if (!current_ || current_->identity.address != smime::normalize_address(sender)) {
      return make_error(Errc::internal, "no mail signer for " + sender);
    }
    signer = current_->signer;
  }
  auto signed_message = smime::sign_message(*ctx_, message, *signer, smime::SignOptions{});
  if (!signed_message) return make_error(Errc::crypto_failed, "signing the mail: " + signed_message.error().message);
  // Signed over its canonical CRLF form; handed to sendmail, as every local
  // message is, with LF line ends (which the MTA turns back into CRLF).
  std::string text;
  text.reserve(signed_message->size());
  for (std::size_t i = 0; i < signed_message->size(); ++i) {
    const char c = (*signed_message)[i];
    if (c != '\r' || i + 1 >= signed_message->size() || (*signed_message)[i + 1] != '\n') text += c;
  }
  OPENSSL_cleanse(signed_message->data(), signed_message->size());  // it may hold a token
  return text;
}

}  // namespace mailkms::keystore
