// The signing core shared by the entity, string and spool forms.
#pragma once

#include "mailkms/smime/sign.hpp"
#include "spooled_message.hpp"
#include "stream.hpp"

namespace mailkms::smime::detail {

// A signature layer: its content header fields and its body.
struct SignedEntity {
  std::vector<HeaderField> headers;
  Pieces body;
};

// Signs canonical entity bytes (content headers, empty line, body).
Result<SignedEntity> sign_pieces(const CryptoContext& ctx, const Pieces& canonical, Signer& signer,
                                 const SignOptions& options);

// Signs the entity of a spooled message; `scratch` holds converted bytes.
Result<SignedEntity> sign_spooled(const CryptoContext& ctx, const SpooledMessage& message, Spool& scratch,
                                  Signer& signer, const SignOptions& options);

}  // namespace mailkms::smime::detail
