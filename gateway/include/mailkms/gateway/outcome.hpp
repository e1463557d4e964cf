// What the gateway decided for one message, in terms any front end can
// apply: an SMTP verdict, header edits, a new body, recipients moved to
// their own copies. The milter maps it to smfi_* calls, the proxy to its
// own relay. Never carries a secret.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "mailkms/smime/mime.hpp"
#include "mailkms/smime/spool.hpp"

namespace mailkms::gateway {

struct Reply {
  std::string code;      // "550"
  std::string enhanced;  // "5.7.1"
  std::string text;
};

struct HeaderEdit {
  enum class Kind {
    change,      // the index-th field (1-based) named `name` gets `value`, in place
    remove,      // the index-th field (1-based) named `name`
    append,      // a new field at the end of the header
    prepend,     // a new field at the top (trace fields: Authentication-Results)
  };
  Kind kind;
  std::string name;
  std::string value;  // without the leading space; folded with CRLF + WSP
  int index = 0;
};

// A copy of the message for recipients that could not share this one.
struct Reinjection {
  std::vector<std::string> recipients;
  smime::Spool message;  // the whole message, already transformed and marked
};

// What the gateway did to a message it lets go on, for the metrics
// (GatewayMetrics names each): how it left, never what it said.
enum class Action {
  passed,            // as it came: policy asked nothing of it, or let it go after a failure
  signed_,
  encrypted,
  signed_encrypted,
  split,             // copies treated differently for different recipients
  verified,          // inbound: a signature checked into Authentication-Results
  decrypted,
  enrollment,        // a reply to the enrollment address, handed to the keystore
  keystore_mail,     // the keystore's own mail to a user, sent as it is
  own_copy,          // a copy this gateway re-injected, already processed
};

// Why a message was not treated as policy asked, for the metrics: the
// failures the on_* settings decide, and the front ends' own trouble.
enum class FailureClass {
  none,
  keystore,       // unreachable, sealed, or refusing a key operation
  malformed,      // MIME or CMS that cannot be read
  bad_signature,  // inbound, a signature that does not verify
  internal,
  spool,          // the message could not be stored
  too_big,
  reinjection,    // a copy for other recipients was not taken
  next_hop,       // the proxy's next hop could not be reached
};

// How a front end answered a message, in the terms the metrics count.
struct Disposition {
  enum class Verdict { deliver, reject, tempfail, discard };
  Verdict verdict = Verdict::deliver;
  bool quarantine = false;
  Action action = Action::passed;
  FailureClass failure = FailureClass::none;
};

struct Outcome {
  using Verdict = Disposition::Verdict;
  Verdict verdict = Verdict::deliver;
  Reply reply;                           // for reject and tempfail
  bool quarantine = false;               // deliver into the MTA's hold queue
  std::string quarantine_reason;
  std::vector<HeaderEdit> header_edits;  // removals name indexes in the original header
  // A new body: `message` from `body_offset` to its end.
  std::optional<smime::Spool> message;
  std::size_t body_offset = 0;
  std::vector<std::string> removed_recipients;
  std::vector<Reinjection> reinjections;
  std::string log;  // one line: rule, action and reason, no content
  Action action = Action::passed;
  FailureClass failure = FailureClass::none;

  [[nodiscard]] Disposition disposition() const { return {verdict, quarantine, action, failure}; }
};

// The edits that turn header `before` into `after`: a field of `before`
// whose value `after` replaced is changed in place (one edit where a
// removal and an append would take two round trips to the MTA); other
// fields of `before` absent from `after` are removed, highest index first;
// the rest of `after` is appended, in order. Changes come first, since
// removals renumber. Fields are compared by name (case-insensitively) and
// unfolded value.
std::vector<HeaderEdit> diff_headers(const std::vector<smime::HeaderField>& before,
                                     const std::vector<smime::HeaderField>& after);

}  // namespace mailkms::gateway
