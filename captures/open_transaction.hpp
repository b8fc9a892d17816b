// The transaction an incomplete capture ends inside. A transaction record is written when its
// transaction ends (its final reply, RSET, EHLO, QUIT, the session's end), so a relay killed in
// the middle of one leaves no record of it, only its commands and replies. This rebuilds it
// from them (FORMAT.md "An incomplete capture's open transaction"): sender, recipients with
// their codes, the body received so far and its Message-ID, and the outcome the relay would
// have recorded had it ended then: `unknown` when the message's end had gone upstream (it may
// have been delivered), else `aborted` (or the every-recipient-refused rule's). Pure.
#pragma once
#include <optional>

#include "captures/reader.hpp"

namespace mailtap::captures {

// The open transaction of a capture without an end record, marked `rebuilt`; nullopt when it
// ended outside one, or when a transaction record already covers the last MAIL.
std::optional<transaction> rebuild_open_transaction(const capture& c);

}  // namespace mailtap::captures
