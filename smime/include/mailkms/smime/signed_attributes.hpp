// What a key holder checks before it signs for someone else. The engine
// hands a Signer the DER of the signed attributes (RFC 5652 §5.4); a key
// holder that signed whatever it was given would sign a certificate
// request, a TBSCertificate or a TLS handshake just as readily. This reads
// the few bytes and accepts only S/MIME signed attributes.
#pragma once

#include <chrono>
#include <ctime>
#include <string_view>

#include "mailkms/smime/algorithms.hpp"
#include "mailkms/smime/result.hpp"

namespace mailkms::smime {

// `der` must be one SET OF Attribute and nothing after it, each attribute
// type once, with a contentType of id-data, a messageDigest exactly as
// long as `digest`'s output, and a signingTime within `skew` of `now`.
// Other attributes (SMIMECapabilities, signingCertificateV2, …) may
// follow. Errc::invalid_argument says what is wrong.
Status check_signed_attributes(std::string_view der, Digest digest, std::time_t now, std::chrono::seconds skew);

}  // namespace mailkms::smime
