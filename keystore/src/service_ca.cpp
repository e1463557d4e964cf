#include "mailkms/keystore/service_ca.hpp"

#include <arpa/inet.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "aead.hpp"
#include "mailkms/keystore/ca.hpp"
#include "mailkms/keystore/signing_request.hpp"
#include "mailkms/smime/ossl.hpp"
#include "row.hpp"
#include "x509_build.hpp"

namespace mailkms::keystore {
namespace {

constexpr std::string_view kCaRow = "service-ca";
constexpr std::string_view kKeyOwner = "service-ca";
constexpr std::string_view kPeerPrefix = "service-peers/";
constexpr int kCaDays = 3650;

bool is_ip_literal(std::string_view name) {
  const std::string text(name);
  in6_addr v6{};
  in_addr v4{};
  return ::inet_pton(AF_INET, text.c_str(), &v4) == 1 || ::inet_pton(AF_INET6, text.c_str(), &v6) == 1;
}

nlohmann::json to_json(const ServicePeer& p) {
  return {{"name", p.name},
          {"role", std::string(to_string(p.role))},
          {"serial", p.serial},
          {"fingerprint", p.fingerprint},
          {"certificate", p.certificate.pem()},
          {"issued", p.issued},
          {"issued_by", p.issued_by},
          {"revoked_at", p.revoked_at ? nlohmann::json(*p.revoked_at) : nlohmann::json()}};
}

Result<ServicePeer> peer_from_json(std::string_view key, std::string_view text) {
  MAILKMS_TRY(j, detail::parse_row(key, text));
  const Error bad = detail::corrupt_row(key, "lacks a field, has one of the wrong type, or holds no certificate");
  try {
    auto cert = smime::Certificate::from_pem(j.at("certificate").get<std::string>());
    const auto role = parse_peer_role(j.at("role").get<std::string>());
    if (!cert || !role) return bad;
    ServicePeer p{j.at("name").get<std::string>(), *role, j.at("serial").get<std::string>(),
                  j.at("fingerprint").get<std::string>(), std::move(*cert), j.at("issued").get<std::time_t>(),
                  std::nullopt, j.at("issued_by").get<std::string>()};
    if (!j.at("revoked_at").is_null()) p.revoked_at = j.at("revoked_at").get<std::time_t>();
    return p;
  } catch (const nlohmann::json::exception&) {
    return bad;
  }
}

// The peer profile: the name as CN and subjectAltName, the role as OU and
// in the extended key usage; TLS 1.3 needs only digitalSignature.
Status add_peer_profile(X509* cert, X509* issuer, const std::string& name, PeerRole role) {
  X509_NAME* subject = X509_get_subject_name(cert);
  const std::string unit(to_string(role));
  const auto text = [](const std::string& s) { return reinterpret_cast<const unsigned char*>(s.c_str()); };
  if (X509_NAME_add_entry_by_txt(subject, "OU", MBSTRING_UTF8, text(unit), -1, -1, 0) != 1 ||
      X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8, text(name), -1, -1, 0) != 1) {
    return detail::crypto_error("cannot name the certificate");
  }
  MAILKMS_CHECK(detail::add_extension(cert, issuer, NID_basic_constraints, "critical,CA:FALSE"));
  MAILKMS_CHECK(detail::add_extension(cert, issuer, NID_key_usage, "critical,digitalSignature"));
  MAILKMS_CHECK(detail::add_extension(cert, issuer, NID_ext_key_usage,
                                      role == PeerRole::keystore ? "serverAuth" : "clientAuth"));
  MAILKMS_CHECK(detail::add_extension(cert, issuer, NID_subject_alt_name,
                                      (is_ip_literal(name) ? "IP:" : "DNS:") + name));
  MAILKMS_CHECK(detail::add_extension(cert, issuer, NID_subject_key_identifier, "hash"));
  return detail::add_extension(cert, issuer, NID_authority_key_identifier, "keyid:always");
}

std::string peer_key(std::string_view serial) { return std::string(kPeerPrefix) + std::string(serial); }

}  // namespace

std::string_view to_string(PeerRole role) noexcept {
  switch (role) {
    case PeerRole::gateway: return "gateway";
    case PeerRole::admin: return "admin";
    case PeerRole::keystore: return "keystore";
  }
  return "gateway";
}

std::optional<PeerRole> parse_peer_role(std::string_view name) {
  if (name == "gateway") return PeerRole::gateway;
  if (name == "admin") return PeerRole::admin;
  if (name == "keystore") return PeerRole::keystore;
  return std::nullopt;
}

bool valid_peer_name(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  if (is_ip_literal(name)) return true;
  const bool characters = std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
  });
  return characters && name.front() != '-' && name.front() != '.' && name.back() != '.' &&
         name.find("..") == std::string_view::npos;
}

Result<std::optional<smime::Certificate>> ServiceCa::stored_certificate() {
  MAILKMS_TRY(row, storage_.get(kCaRow));
  if (!row) return std::optional<smime::Certificate>();
  MAILKMS_TRY(j, detail::parse_row(kCaRow, *row));
  const auto pem = j.find("certificate");
  if (pem == j.end() || !pem->is_string()) return detail::corrupt_row(kCaRow, "holds no certificate");
  auto cert = smime::Certificate::from_pem(pem->get<std::string>());
  if (!cert) return detail::corrupt_row(kCaRow, "holds no certificate");
  return std::optional<smime::Certificate>(std::move(*cert));
}

Result<smime::Certificate> ServiceCa::certificate(const std::string& actor) {
  std::optional<smime::Certificate> made;
  MAILKMS_CHECK(storage_.transaction([&]() -> Status {
    MAILKMS_TRY(stored, stored_certificate());
    if (stored) {
      made = std::move(*stored);
      return Ok{};
    }
    MAILKMS_TRY(key, generate_key(*ctx_, KeyType::ec_p384));
    smime::ossl::X509Ptr cert(X509_new_ex(ctx_->libctx(), nullptr));
    X509_set_version(cert.get(), X509_VERSION_3);
    MAILKMS_CHECK(detail::set_random_serial(cert.get()));
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), -300);
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), 86400L * kCaDays);
    X509_set_pubkey(cert.get(), key.native());
    const std::string name = "mailkms service CA";
    X509_NAME_add_entry_by_txt(X509_get_subject_name(cert.get()), "CN", MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(name.c_str()), -1, -1, 0);
    X509_set_issuer_name(cert.get(), X509_get_subject_name(cert.get()));
    // pathlen:0: it certifies hosts, never another CA.
    MAILKMS_CHECK(detail::add_extension(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0"));
    MAILKMS_CHECK(detail::add_extension(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign"));
    MAILKMS_CHECK(detail::add_extension(cert.get(), cert.get(), NID_subject_key_identifier, "hash"));
    MAILKMS_CHECK(detail::sign_with(*ctx_, cert.get(), key.native()));
    made = smime::Certificate::share(cert.get());
    MAILKMS_CHECK(store_private_key(barrier_, kKeyOwner, "ca", key));
    MAILKMS_CHECK(storage_.put(kCaRow, nlohmann::json{{"certificate", made->pem()}}.dump()));
    return audit_.append({actor, "service-ca-create", "service-ca", "ok", "ec-p384, " + made->subject()});
  }));
  return std::move(*made);
}

Result<ServicePeer> ServiceCa::issue(const std::string& name, PeerRole role, std::string_view csr_pem,
                                     int validity_days, const std::string& actor) {
  if (!valid_peer_name(name)) {
    return make_error(Errc::invalid_argument, "a service certificate names a host (lower case) or an IP address");
  }
  if (validity_days < 1 || validity_days > 3650) return make_error(Errc::invalid_argument, "validity out of range");
  MAILKMS_TRY(public_key, read_signing_request(csr_pem));
  MAILKMS_TRY(ca_certificate, certificate(actor));
  std::optional<ServicePeer> issued;
  MAILKMS_CHECK(storage_.transaction([&]() -> Status {
    MAILKMS_TRY(all, list());
    for (const auto& p : all) {
      if (p.name == name && !p.revoked_at) {
        return make_error(Errc::already_exists, name + " holds a service certificate (serial " + p.serial +
                                                    "): revoke it first");
      }
    }
    MAILKMS_TRY(ca_key, load_private_key(barrier_, *ctx_, kKeyOwner, "ca"));
    smime::ossl::X509Ptr cert(X509_new_ex(ctx_->libctx(), nullptr));
    X509_set_version(cert.get(), X509_VERSION_3);
    MAILKMS_CHECK(detail::set_random_serial(cert.get()));
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), -300);
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), 86400L * validity_days);
    X509_set_pubkey(cert.get(), public_key.get());
    X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_certificate.native()));
    MAILKMS_CHECK(add_peer_profile(cert.get(), ca_certificate.native(), name, role));
    MAILKMS_CHECK(detail::sign_with(*ctx_, cert.get(), ca_key.native()));
    auto certificate = smime::Certificate::share(cert.get());
    ServicePeer peer{name, role, certificate.serial_hex(), detail::hex_sha256(certificate.der()), certificate,
                     std::time(nullptr), std::nullopt, actor};
    MAILKMS_CHECK(storage_.put(peer_key(peer.serial), to_json(peer).dump()));
    MAILKMS_CHECK(audit_.append({actor, "gateway-add", name, "ok", std::string(to_string(role)) + ", serial " + peer.serial}));
    issued = std::move(peer);
    return Ok{};
  }));
  return std::move(*issued);
}

Result<std::vector<ServicePeer>> ServiceCa::list() {
  MAILKMS_TRY(rows, storage_.scan(kPeerPrefix));
  std::vector<ServicePeer> out;
  out.reserve(rows.size());
  for (const auto& [key, value] : rows) {
    MAILKMS_TRY(peer, peer_from_json(key, value));
    out.push_back(std::move(peer));
  }
  std::sort(out.begin(), out.end(), [](const ServicePeer& a, const ServicePeer& b) {
    return a.name != b.name ? a.name < b.name : a.issued < b.issued;
  });
  return out;
}

Result<std::size_t> ServiceCa::revoke(const std::string& name, const std::string& actor) {
  std::size_t revoked = 0;
  MAILKMS_CHECK(storage_.transaction([&]() -> Status {
    MAILKMS_TRY(all, list());
    for (auto& p : all) {
      if (p.name != name || p.revoked_at) continue;
      p.revoked_at = std::time(nullptr);
      MAILKMS_CHECK(storage_.put(peer_key(p.serial), to_json(p).dump()));
      MAILKMS_CHECK(audit_.append({actor, "gateway-revoke", name, "ok", "serial " + p.serial}));
      ++revoked;
    }
    if (revoked == 0) return make_error(Errc::not_found, "no service certificate for " + name + " is in force");
    return Ok{};
  }));
  return revoked;
}

Result<ServicePeer> ServiceCa::admit(const std::string& serial, const std::string& fingerprint) {
  MAILKMS_TRY(row, storage_.get(peer_key(serial)));
  if (!row) return make_error(Errc::permission_denied, "certificate serial " + serial + " was not issued by this keystore");
  MAILKMS_TRY(peer, peer_from_json(peer_key(serial), *row));
  if (peer.fingerprint != fingerprint) {
    return make_error(Errc::permission_denied, "certificate serial " + serial + " is not the one this keystore issued");
  }
  if (peer.revoked_at) return make_error(Errc::permission_denied, peer.name + "'s certificate (serial " + serial + ") is revoked");
  return peer;
}

Result<ServiceKeyRequest> new_service_key_request(const std::string& name) {
  const smime::ossl::Pkey key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  const smime::ossl::X509Req request(X509_REQ_new());
  if (!key || !request || X509_REQ_set_pubkey(request.get(), key.get()) != 1 ||
      X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(request.get()), "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(name.c_str()), -1, -1, 0) != 1 ||
      X509_REQ_sign(request.get(), key.get(), EVP_sha256()) <= 0) {
    return detail::crypto_error("cannot make a key and a request for " + name);
  }
  const smime::ossl::Bio key_out(BIO_new(BIO_s_secmem()));
  const smime::ossl::Bio request_out(BIO_new(BIO_s_mem()));
  if (!key_out || !request_out ||
      PEM_write_bio_PrivateKey(key_out.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1 ||
      PEM_write_bio_X509_REQ(request_out.get(), request.get()) != 1) {
    return detail::crypto_error("cannot write the key and request for " + name);
  }
  const auto text = [](BIO* bio) {
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio, &data);
    return std::string(data, static_cast<std::size_t>(n));
  };
  return ServiceKeyRequest{text(key_out.get()), text(request_out.get())};
}

}  // namespace mailkms::keystore
