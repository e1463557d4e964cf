// Streaming plumbing for large messages: content made of pieces (literal
// strings and ranges of a Spool) read through one BIO, and a BIO that
// base64-encodes whatever is written to it into a Spool. With these, CMS
// streams from the input spool to the output spool in fixed-size chunks.
#pragma once

#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "mailkms/smime/mime.hpp"
#include "mailkms/smime/result.hpp"
#include "mailkms/smime/spool.hpp"
#include "mailkms/smime/ossl.hpp"

namespace mailkms::smime::detail {

class Pieces {
 public:
  void add(std::string literal);
  void add(const Spool& spool, std::size_t offset, std::size_t length);
  void add(const Pieces& other);
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  Status for_each_chunk(const std::function<Status(std::string_view)>& visit) const;
  // Reads up to `length` bytes at `offset`; returns the count.
  Result<std::size_t> read(std::size_t offset, char* buffer, std::size_t length) const;

 private:
  struct Piece {
    std::string literal;
    const Spool* spool = nullptr;
    std::size_t offset = 0;
    std::size_t length = 0;
  };
  std::deque<Piece> pieces_;
  std::size_t size_ = 0;
};

// A read-only BIO over `pieces`, which must outlive it. A failed read is
// kept: OpenSSL's copy loops take -1 for the end of input, so a caller
// must ask error() after use, or a read error would silently truncate.
class PiecesSource {
 public:
  explicit PiecesSource(const Pieces& pieces);
  PiecesSource(const PiecesSource&) = delete;
  PiecesSource& operator=(const PiecesSource&) = delete;
  [[nodiscard]] BIO* bio() const noexcept { return bio_.get(); }
  [[nodiscard]] const std::optional<Error>& error() const noexcept { return error_; }

  // Called by the BIO.
  int read(char* out, int length);
  [[nodiscard]] bool at_end() const noexcept { return offset_ >= pieces_.size(); }
  [[nodiscard]] std::size_t remaining() const noexcept { return pieces_.size() - offset_; }

 private:
  const Pieces& pieces_;
  std::size_t offset_ = 0;
  std::optional<Error> error_;
  ossl::Bio bio_;
};

// Base64 with CRLF every 76 characters into a Spool. BIO_flush is a no-op
// (CMS flushes mid-stream); finish() writes the last partial line.
class Base64Sink {
 public:
  explicit Base64Sink(Spool& out);
  Base64Sink(const Base64Sink&) = delete;
  Base64Sink& operator=(const Base64Sink&) = delete;
  [[nodiscard]] BIO* bio() const noexcept { return bio_.get(); }
  [[nodiscard]] const std::optional<Error>& error() const noexcept { return error_; }
  Status finish();

  // Called by the BIO.
  int write(const char* data, int length);

 private:
  Status encode_lines(std::string_view data);

  Spool& out_;
  std::string pending_;
  std::string encoded_;
  std::optional<Error> error_;
  ossl::Bio bio_;
};

// The pieces of a message's header section: outer fields, MIME-Version,
// then `entity_headers`, then the empty line.
std::string header_section(const std::vector<HeaderField>& outer, const std::vector<HeaderField>& entity_headers);

}  // namespace mailkms::smime::detail
