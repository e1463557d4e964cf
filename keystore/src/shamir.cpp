#include "mailkms/keystore/shamir.hpp"

#include <openssl/rand.h>

#include <set>

namespace mailkms::keystore {
namespace {

// Multiplication in GF(2^8) modulo x^8 + x^4 + x^3 + x + 1, without
// branches or tables that depend on the secret.
std::uint8_t gf_mul(std::uint8_t a, std::uint8_t b) {
  std::uint8_t product = 0;
  for (int i = 0; i < 8; ++i) {
    product ^= static_cast<std::uint8_t>(-(b & 1) & a);
    const auto high = static_cast<std::uint8_t>(a >> 7);
    a = static_cast<std::uint8_t>((a << 1) ^ (0x1b & -high));
    b >>= 1;
  }
  return product;
}

std::uint8_t gf_inverse(std::uint8_t a) {  // a^254
  std::uint8_t result = 1;
  std::uint8_t base = a;
  for (int e = 254; e > 0; e >>= 1) {
    if (e & 1) result = gf_mul(result, base);
    base = gf_mul(base, base);
  }
  return result;
}

constexpr std::string_view kPrefix = "mailkms-share-1-";

}  // namespace

Result<std::vector<Share>> split_secret(const smime::SecretBytes& secret, int count, int threshold) {
  if (threshold < 2 || count < threshold || count > 255) {
    return make_error(Errc::invalid_argument, "shares need 2 <= threshold <= count <= 255");
  }
  std::vector<Share> shares(static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i) {
    shares[static_cast<std::size_t>(i)].index = static_cast<std::uint8_t>(i + 1);
    shares[static_cast<std::size_t>(i)].bytes.resize(secret.size());
  }
  std::string coefficients(static_cast<std::size_t>(threshold - 1), '\0');
  for (std::size_t byte = 0; byte < secret.size(); ++byte) {
    if (RAND_priv_bytes(reinterpret_cast<unsigned char*>(coefficients.data()), threshold - 1) != 1) {
      return make_error(Errc::crypto_failed, "no randomness for the shares");
    }
    for (auto& share : shares) {
      // Horner: f(x) = secret + c1 x + … + c(k-1) x^(k-1)
      std::uint8_t y = 0;
      for (std::size_t c = coefficients.size(); c-- > 0;) {
        y = gf_mul(static_cast<std::uint8_t>(y ^ static_cast<std::uint8_t>(coefficients[c])), share.index);
      }
      share.bytes[byte] = static_cast<char>(y ^ secret.data()[byte]);
    }
  }
  OPENSSL_cleanse(coefficients.data(), coefficients.size());
  return shares;
}

Result<smime::SecretBytes> combine_shares(std::span<const Share> shares) {
  if (shares.empty()) return make_error(Errc::invalid_argument, "no shares");
  std::set<std::uint8_t> seen;
  for (const auto& s : shares) {
    if (s.index == 0 || !seen.insert(s.index).second) return make_error(Errc::invalid_argument, "shares must be distinct");
    if (s.bytes.size() != shares.front().bytes.size()) return make_error(Errc::invalid_argument, "shares differ in length");
  }
  std::string secret(shares.front().bytes.size(), '\0');
  for (const auto& j : shares) {
    // Lagrange basis at 0: prod over m != j of x_m / (x_m - x_j)
    std::uint8_t basis = 1;
    for (const auto& m : shares) {
      if (m.index == j.index) continue;
      basis = gf_mul(basis, gf_mul(m.index, gf_inverse(static_cast<std::uint8_t>(m.index ^ j.index))));
    }
    for (std::size_t byte = 0; byte < secret.size(); ++byte) {
      secret[byte] = static_cast<char>(static_cast<std::uint8_t>(secret[byte]) ^
                                       gf_mul(basis, static_cast<std::uint8_t>(j.bytes[byte])));
    }
  }
  return smime::SecretBytes(std::move(secret));
}

std::string encode_share(const Share& share) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(kPrefix);
  out += std::to_string(share.index);
  out += '-';
  for (const char b : share.bytes) {
    out.push_back(kHex[static_cast<unsigned char>(b) >> 4]);
    out.push_back(kHex[static_cast<unsigned char>(b) & 15]);
  }
  return out;
}

Result<Share> decode_share(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.remove_suffix(1);
  const Error bad = make_error(Errc::invalid_argument, "not a mailkms share (mailkms-share-1-N-HEX)");
  if (text.substr(0, kPrefix.size()) != kPrefix) return bad;
  text.remove_prefix(kPrefix.size());
  const std::size_t dash = text.find('-');
  if (dash == std::string_view::npos || dash == 0 || dash > 3) return bad;
  int index = 0;
  for (const char c : text.substr(0, dash)) {
    if (c < '0' || c > '9') return bad;
    index = index * 10 + (c - '0');
  }
  if (index < 1 || index > 255) return bad;
  const std::string_view hex = text.substr(dash + 1);
  if (hex.empty() || hex.size() % 2 != 0) return bad;
  Share share{static_cast<std::uint8_t>(index), std::string(hex.size() / 2, '\0')};
  const auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < share.bytes.size(); ++i) {
    const int hi = nibble(hex[2 * i]);
    const int lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return bad;
    share.bytes[i] = static_cast<char>(hi << 4 | lo);
  }
  return share;
}

}  // namespace mailkms::keystore
