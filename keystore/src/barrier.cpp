#include "mailkms/keystore/barrier.hpp"

#include <mutex>

#include "aead.hpp"

namespace mailkms::keystore {
namespace {

std::string associated_data(std::string_view key) {
  std::string aad = "mailkms/barrier/v1";
  aad.push_back('\0');
  aad += key;
  return aad;
}

Error sealed_error() { return make_error(Errc::sealed, "the keystore is sealed"); }

}  // namespace

bool Barrier::sealed() const {
  const std::shared_lock lock(mutex_);
  return !master_key_.has_value();
}

Status Barrier::unseal(smime::SecretBytes master_key) {
  if (master_key.size() != detail::kKeyBytes) return make_error(Errc::invalid_argument, "a master key is 32 bytes");
  const std::unique_lock lock(mutex_);
  master_key_ = std::move(master_key);
  return Ok{};
}

void Barrier::seal() {
  const std::unique_lock lock(mutex_);
  master_key_.reset();  // SecretBytes wipes itself
}

Status Barrier::put(std::string_view key, std::string_view plaintext) {
  std::string record;
  {
    const std::shared_lock lock(mutex_);
    if (!master_key_) return sealed_error();
    MAILKMS_TRY(sealed_record, detail::seal_record(*master_key_, plaintext, associated_data(key)));
    record = std::move(sealed_record);
  }
  return storage_.put(key, record);
}

Result<std::optional<smime::SecretBytes>> Barrier::get(std::string_view key) {
  {
    const std::shared_lock lock(mutex_);
    if (!master_key_) return sealed_error();
  }
  MAILKMS_TRY(record, storage_.get(key));
  if (!record) return std::optional<smime::SecretBytes>();
  const std::shared_lock lock(mutex_);
  if (!master_key_) return sealed_error();
  auto opened = detail::open_record(*master_key_, *record, associated_data(key));
  if (!opened) return make_error(Errc::corrupt, std::string(key) + ": " + opened.error().message);
  return std::optional<smime::SecretBytes>(std::move(*opened));
}

Result<std::optional<std::string>> Barrier::reseal(std::string_view key, std::string_view record,
                                                  const smime::SecretBytes& new_master_key) const {
  const std::shared_lock lock(mutex_);
  if (!master_key_) return sealed_error();
  auto opened = detail::open_record(*master_key_, record, associated_data(key));
  if (!opened) return std::optional<std::string>();
  MAILKMS_TRY(sealed_again,
              detail::seal_record(new_master_key,
                                  std::string_view(reinterpret_cast<const char*>(opened->data()), opened->size()),
                                  associated_data(key)));
  return std::optional<std::string>(std::move(sealed_again));
}

Result<smime::SecretBytes> Barrier::replace_master_key(smime::SecretBytes new_master_key) {
  if (new_master_key.size() != detail::kKeyBytes) return make_error(Errc::invalid_argument, "a master key is 32 bytes");
  const std::unique_lock lock(mutex_);
  if (!master_key_) return sealed_error();
  smime::SecretBytes old = std::move(*master_key_);
  master_key_ = std::move(new_master_key);
  return old;
}

}  // namespace mailkms::keystore
