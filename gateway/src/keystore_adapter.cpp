#include <utility>

#include "mailkms/gateway/keystore_port.hpp"
#include "mailkms/keystore/protocol.hpp"

namespace mailkms::gateway {
namespace {

keystore::Result<std::vector<TrustMaterial::Anchor>> anchors_from(const nlohmann::json& answer) {
  std::vector<TrustMaterial::Anchor> anchors;
  for (const auto& anchor : answer.value("anchors", nlohmann::json::array())) {
    auto certificate = smime::Certificate::from_pem(anchor.value("certificate", ""));
    if (!certificate) return keystore::make_error(keystore::Errc::corrupt, "a trust anchor does not parse");
    std::vector<std::string> domains;
    for (const auto& d : anchor.value("domains", nlohmann::json::array())) {
      if (!d.is_string()) return keystore::make_error(keystore::Errc::corrupt, "a trust anchor's scope does not parse");
      domains.push_back(d.get<std::string>());
    }
    anchors.push_back({std::move(*certificate), std::move(domains)});
  }
  return anchors;
}

keystore::Result<std::vector<std::shared_ptr<X509_CRL>>> crls_from(const nlohmann::json& answer) {
  std::vector<std::shared_ptr<X509_CRL>> lists;
  const nlohmann::json lists_by_ca = answer.value("crls", nlohmann::json::object());
  for (const auto& [ca, encoded] : lists_by_ca.items()) {
    MAILKMS_TRY(der, keystore::protocol::unbase64(encoded));
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    X509_CRL* crl = d2i_X509_CRL(nullptr, &p, static_cast<long>(der.size()));
    if (crl == nullptr) return keystore::make_error(keystore::Errc::corrupt, "the CRL of CA " + ca + " does not parse");
    lists.emplace_back(crl, X509_CRL_free);
  }
  return lists;
}

}  // namespace

keystore::Result<keystore::CertificateLookup> KeystoreAdapter::certificates(std::span<const std::string> addresses) {
  return keystore::lookup_certificates(client_, addresses);
}

keystore::Result<std::shared_ptr<smime::Signer>> KeystoreAdapter::signer(const std::string& address) {
  MAILKMS_TRY(made, keystore::RemoteSigner::create(client_, address));
  return std::shared_ptr<smime::Signer>(std::make_shared<keystore::RemoteSigner>(std::move(made)));
}

std::unique_ptr<smime::KeyUnwrapper> KeystoreAdapter::unwrapper(const std::string& address,
                                                                const smime::Certificate& certificate) {
  return std::make_unique<keystore::RemoteKeyUnwrapper>(client_, address, certificate);
}

keystore::Result<bool> KeystoreAdapter::redeem(const EnrollmentRedemption& reply) {
  return keystore::redeem_token(client_, reply.from, reply.token, reply.password, reply.csr_pem);
}

keystore::Result<bool> KeystoreAdapter::is_keystore_mark(std::string_view mark, std::string_view recipient,
                                                         std::string_view message_id) {
  return keystore::check_mail_mark(client_, mark, recipient, message_id);
}

keystore::Result<TrustMaterial> KeystoreAdapter::trust() {
  MAILKMS_TRY(anchors, client_.call("trust-anchors", nlohmann::json::object()));
  MAILKMS_TRY(crls, client_.call("crls", nlohmann::json::object()));
  TrustMaterial material;
  MAILKMS_TRY(parsed_anchors, anchors_from(anchors));
  MAILKMS_TRY(parsed_crls, crls_from(crls));
  material.anchors = std::move(parsed_anchors);
  material.system_roots = anchors.value("system_roots", false);
  material.crls = std::move(parsed_crls);
  return material;
}

keystore::Result<bool> KeystoreAdapter::remember(const HarvestedCertificate& harvested) {
  return keystore::remember_certificate(client_, harvested.address, harvested.certificate, harvested.chain,
                                        harvested.capabilities, harvested.signing_time, harvested.crls);
}

}  // namespace mailkms::gateway
