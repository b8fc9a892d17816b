// The conversation view the checks share: the capture's events in time order, and each
// reply paired with the command it answers, its stage, and who made it (the destination,
// the relay on its own, or a fault rule named by its fault record). Built once per capture
// from captures/reader.hpp's model; pure, thread-safe.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "captures/reader.hpp"
#include "diagnose/finding.hpp"
#include "protocol/phase.hpp"

namespace mailtap::diagnose {

struct exchange {
  const captures::reply_event* reply = nullptr;
  const captures::command_event* command = nullptr;   // null for the greeting and an end of data
  protocol::phase ph = protocol::phase::other;        // banner, ehlo, mail, rcpt, data, data_end, ...
  origin source = origin::server;                     // server, relay or injected
  // The fault record, when injected; or, for the destination's reply, the `rewrite` record of
  // the rule that overwrote its command with X before it went upstream (a verb filter).
  const captures::fault_event* fault = nullptr;
  // The relay's edited copy of the destination's reply (a masked banner, an EHLO reply with
  // STARTTLS removed or masked): it answers the same command as the reply before it.
  bool edit = false;
  // The client's command that `command`, the relay's own, was sent upstream in place of (the
  // RSET of a message a fault answers): the reply reached the client as that command's.
  const captures::command_event* in_place_of = nullptr;
  // The stage the client's conversation stood at: the phase of `in_place_of` when the reply
  // reached the client as its answer (a 421), else `ph`.
  protocol::phase client_ph() const;
};

struct conversation {
  const captures::capture* cap = nullptr;
  std::vector<const captures::event*> timeline;   // every event, by time (file order among equals)
  std::vector<exchange> exchanges;                // every reply, by time
  // The MTA or gateway the destination's greeting, else its reply to EHLO or HELO, names
  // (classify.hpp vendor_of: "postfix" for "ESMTP Postfix"), or "". It names the server of every
  // reply the destination gave: a phrasing that reads as another vendor's does not.
  std::string server_vendor;
};

conversation read_conversation(const captures::capture& c);

// Transcript lines, as `mailtap show` writes them: "C> RCPT TO:<a@x>", "S< 552 5.2.2 Full",
// "R> ...", "U> ...", "!! note", "F! rule (type) decision at phase: detail", "== TLS upstream ...".
evidence_item evidence_of(const captures::event& e);
evidence_item evidence_of(const captures::reply_event& r);

// The evidence of an exchange: its command (when there is one), the fault record that
// made it (when injected), and the reply.
std::vector<evidence_item> evidence_of(const exchange& x);

// The reply's first line without the enhanced code.
std::string reply_text(const captures::reply_event& r);

}  // namespace mailtap::diagnose
