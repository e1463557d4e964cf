// The message between DATA and the next hop: its header fields read as an
// MTA hands them to a milter, the whole message spooled as the milter
// spools it (so the gateway sees the same bytes from either front end),
// and the outgoing message made from the gateway's Outcome.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mailkms/gateway/gateway.hpp"

namespace mailkms::proxy {

class MessageIntake {
 public:
  enum class Trouble { none, spool, too_big };
  // `size_limit` is asked once the header is read (the gateway's, per
  // transaction); 0 is none.
  MessageIntake(smime::SpoolOptions options, std::function<std::size_t(const std::vector<smime::HeaderField>&)> size_limit)
      : options_(std::move(options)), size_limit_(std::move(size_limit)) {}

  // Dot-unstuffed message bytes, in order, in CRLF form.
  void add(std::string_view bytes);
  // The end of data: the header is complete even without its empty line.
  void finish();

  [[nodiscard]] Trouble trouble() const noexcept { return trouble_; }
  [[nodiscard]] const std::vector<smime::HeaderField>& headers() const noexcept { return headers_; }
  // The header section followed by the body; valid after finish() without trouble.
  [[nodiscard]] const smime::Spool& spool() const { return *spool_; }
  // Where the body starts in spool().
  [[nodiscard]] std::size_t body_offset() const noexcept { return body_offset_; }

 private:
  // One header line (without CRLF); false once it is no header field.
  bool header_line(std::string_view line);
  void end_of_header();
  void keep(std::string_view bytes);

  smime::SpoolOptions options_;
  std::function<std::size_t(const std::vector<smime::HeaderField>&)> size_limit_;
  std::vector<smime::HeaderField> headers_;
  std::string pending_;  // header bytes not yet a complete line
  bool in_header_ = true;
  std::optional<smime::Spool> spool_;
  std::size_t body_offset_ = 0;
  std::size_t limit_ = 0;
  Trouble trouble_ = Trouble::none;
};

// The message to send on: `headers` with the Outcome's edits applied (as
// the milter's MTA applies them), then its new body, or else the body of
// `received` from `body_offset`.
smime::Result<smime::Spool> outgoing_message(const std::vector<smime::HeaderField>& headers,
                                             const gateway::Outcome& outcome, const smime::Spool& received,
                                             std::size_t body_offset, const smime::SpoolOptions& options);

}  // namespace mailkms::proxy
