// The socket protocol's readers against what a peer could send.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "mailkms/keystore/protocol.hpp"
#include "test_support.hpp"

using namespace mailkms;
using namespace mailkms::keystore;

TEST_CASE("a key-agreement wrapped key whose KEK length is not its wrap algorithm's is refused", "[protocol]") {
  smime::KeyAgreementInput in;
  in.originator_point = std::string(65, '\x04');
  in.kdf_digest = smime::Digest::sha256;
  in.key_wrap_algorithm = "\x30\x0b\x06\x09\x60\x86\x48\x01\x65\x03\x04\x01\x2d";  // id-aes256-wrap
  in.encrypted_key = std::string(40, '\x01');
  in.wrap = smime::KeyAgreementInput::Wrap::aes256;
  in.kek_length = 32;
  nlohmann::json j = protocol::to_json(in);
  REQUIRE(protocol::wrapped_key_from_json(j));

  for (const int kek_length : {16, 24}) {
    j["kek_length"] = kek_length;
    const auto r = protocol::wrapped_key_from_json(j);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::invalid_argument);
  }
  j["wrap"] = static_cast<int>(smime::KeyAgreementInput::Wrap::aes128);
  j["kek_length"] = 16;
  CHECK(protocol::wrapped_key_from_json(j));
  j["kek_length"] = 32;
  CHECK_FALSE(protocol::wrapped_key_from_json(j));
  j["wrap"] = static_cast<int>(smime::KeyAgreementInput::Wrap::des_ede3);
  j["kek_length"] = 24;
  CHECK(protocol::wrapped_key_from_json(j));
}

TEST_CASE("numbers in a wrapped key must be whole numbers: a fraction or 1e300 is refused, not converted", "[protocol]") {
  // Converting 1e300 to int is undefined behaviour: the peer must never
  // get that far.
  smime::KeyAgreementInput agreement;
  agreement.originator_point = std::string(65, '\x04');
  agreement.kdf_digest = smime::Digest::sha256;
  agreement.key_wrap_algorithm = "\x30\x0b\x06\x09\x60\x86\x48\x01\x65\x03\x04\x01\x2d";  // id-aes256-wrap
  agreement.encrypted_key = std::string(40, '\x01');
  agreement.wrap = smime::KeyAgreementInput::Wrap::aes256;
  agreement.kek_length = 32;
  smime::KeyTransportInput transport;
  transport.encrypted_key = std::string(256, '\x02');
  transport.content_key_length = 32;
  const nlohmann::json agreed = protocol::to_json(agreement);
  const nlohmann::json transported = protocol::to_json(transport);
  REQUIRE(protocol::wrapped_key_from_json(agreed));
  REQUIRE(protocol::wrapped_key_from_json(transported));

  for (const auto& [base, field, value] : std::vector<std::tuple<nlohmann::json, std::string, nlohmann::json>>{
           {agreed, "wrap", 2.0},
           {agreed, "wrap", 1e300},
           {agreed, "wrap", -1e300},
           {agreed, "kek_length", 32.0},
           {agreed, "kek_length", 1e300},
           {transported, "content_key_length", 32.5},
           {transported, "content_key_length", -32},
           {transported, "content_key_length", 1e300}}) {
    INFO(field << " = " << value.dump());
    nlohmann::json j = base;
    j[field] = value;
    const auto r = protocol::wrapped_key_from_json(j);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::invalid_argument);
  }
}
