// The fault-injection vocabulary shared by protocol/ (which carries decisions out) and
// policies/ (which makes them): the read-only view the relay offers at each decision point,
// the one decision it gets back, the session-wide plan decided at connect, and the advisor
// interface policies/ implements. Pure value types, no I/O; an advisor belongs to one session.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/phase.hpp"
#include "protocol/reply.hpp"

namespace mailtap::protocol {

// Begins the part of an end record's detail that says an upstream failure was injected, not
// met (" (injected by fault rule 'NAME': ...)"): the relay neither logs nor counts it as the
// upstream's (relay/session_tally.cpp).
inline constexpr std::string_view injected_by_rule = " (injected by fault rule '";

// When in a step the relay asks: before it forwards a command (or, at connect, before it
// connects upstream), or before it relays a reply (the banner, a reply to a command).
// data_end is asked at the command stage when DATA (or the first BDAT) arrives, before any
// byte of the message goes upstream, and at the reply stage when the dot's reply comes back.
// `message` is data_end once more, after the whole message and before its dot goes upstream,
// for the rules that need the message itself (fail_then_pass keyed by Message-ID); DATA only.
enum class fault_stage : unsigned char { command, reply, message };
std::string_view to_string(fault_stage s);

// What a policy may look at. Views are valid for the duration of the call only.
struct fault_query {
  phase ph = phase::other;
  fault_stage stage = fault_stage::command;
  std::string_view verb;          // upper-cased verb of the command ("" at connect, banner, data_end)
  std::string_view argument;      // the command's argument (after the verb and one space)
  std::size_t line_length = 0;    // the command line including CRLF
  std::string_view address;       // MAIL FROM / RCPT TO address of this command, without <>
  std::string_view ehlo_name;     // the last EHLO/HELO argument ("" before one)
  std::string_view mail_from;     // the open transaction's sender ("" outside one)
  // Its recipients so far. At RCPT, at its command and at its reply alike, the ones before it
  // (this one is `address`), not those pipelined behind it.
  std::span<const std::string> recipients;
  std::uint64_t transaction_number = 0;   // 1-based within the session; 0 outside a transaction
  const reply* upstream_reply = nullptr;  // reply stage: what the upstream answered (null at connect)
  std::string_view message_id;    // message stage: the message's Message-ID ("" when it has none)
  bool client_tls = false;
};

// The closed set of decisions (a closed enum: every consumer handles every verdict). Precedence when several rules match, highest
// first: unreachable, disconnect, reset, reply_and_close, reply (and blackhole), stall, delay;
// rewrites compose with proceed and delay only. policies/README.md says why.
enum class verdict : unsigned char {
  proceed, delay, reply, reply_and_close, disconnect, reset, stall, blackhole, unreachable,
};
std::string_view to_string(verdict v);

struct reply_spec {
  int code = 0;
  std::string enhanced;   // "5.2.2", or empty
  std::string text;
  bool operator==(const reply_spec&) const = default;
};

// Edits to what passes, applied when the verdict is proceed or delay.
struct rewrite_edits {
  bool mask_banner = false;                   // PIX: every banner character but '2', '0' and space -> '*'
  std::optional<std::string> banner_text;     // replace the banner's text, keeping its code
  std::vector<std::string> strip_capabilities;  // EHLO keywords removed
  std::vector<std::string> mask_capabilities;   // EHLO keywords shown masked (ASA: STARTTLS -> XXXXXXXA)
  std::optional<std::uint64_t> size;          // SIZE's parameter rewritten to this
  bool mask_command = false;                  // PIX/ASA: the command line overwritten with 'X'
  bool empty() const {
    return !mask_banner && !banner_text && strip_capabilities.empty() && mask_capabilities.empty() && !size &&
           !mask_command;
  }
};

// The edits of the rules contributing to one decision, merged (policies/precedence.cpp), and
// each rule with the edits it asked for itself: a rule counts only when an edit of its own
// changed what passed (policies/README.md "Counted when applied").
struct rewrite_set : rewrite_edits {
  struct contribution {
    std::string rule;
    std::string type;
    rewrite_edits asked;
  };
  std::vector<contribution> rules;
};

struct fault_decision {
  verdict what = verdict::proceed;
  std::string rule;              // the deciding rule's name (empty for proceed)
  std::string type;              // its fault type ("reply", "greylist", ...)
  std::uint64_t delay_us = 0;    // delay: the planned wait
  reply_spec reply;              // reply, reply_and_close, blackhole, disconnect when with_reply
  bool with_reply = false;       // disconnect: send `reply` before the FIN
  bool no_greeting = false;      // unreachable: accepted and never greeted (otherwise refused)
  std::uint64_t stall_max_us = 0;  // stall: the relay gives up after this (0: when the peer does)
  rewrite_set rewrites;
};

// How one leg's writes are shaped (throttle, slice). Zero fields are off.
struct leg_shaping {
  std::uint64_t bytes_per_second = 0;
  std::size_t segment_bytes = 0;
  std::uint64_t gap_us = 0;       // pause after each segment
  bool active() const { return bytes_per_second > 0 || segment_bytes > 0; }
  bool operator==(const leg_shaping&) const = default;
};

// Session-wide settings decided once at connect.
struct session_plan {
  leg_shaping to_client;
  leg_shaping to_upstream;
  std::uint64_t split_dot_gap_us = 0;   // > 0: the '.' and the CRLF of end-of-data go upstream as separate segments
  bool withhold_split_dot = false;      // CSCds90792: a '.' and its CRLF that arrive in separate reads are never passed
  std::vector<std::pair<std::string, std::string>> rules;   // (rule, type) of each contributing rule
  // A rule may act at the message stage (fail_then_pass keyed by Message-ID): a pipelined BDAT
  // message's end then waits for the replies before it (relay_fsm::release_bdat_message).
  bool decides_messages = false;
};

// One injected fault, as recorded in the capture.
struct fault_event {
  std::string rule;
  std::string type;
  std::string decision;            // a verdict name, "rewrite" or "plan"
  phase ph = phase::other;
  std::uint64_t planned_delay_us = 0;
  std::uint64_t actual_delay_us = 0;
  std::string detail;              // what was done, e.g. "552 5.2.2 Mailbox full"
};

// The record of a delay (when = "command") whose held end of data never went: the upstream
// replied, said 421, timed out or was lost first (fault_holds::drop_held_dot writes it). Read
// by diagnose and replay: that message's end never reached the destination.
inline bool held_end_never_forwarded(const fault_event& f) {
  return f.decision == "delay" && f.detail.starts_with("end of data held; the upstream ") &&
         f.detail.ends_with(" before it was forwarded");
}

// Implemented by policies/ (one per session, seeded from the master seed and the session
// number). Never throws.
// The notes a split_dot_withhold rule leaves (protocol/fault_holds.cpp), which `diagnose` reads
// back (diagnose/checks/firewall.cpp): armed at connect, and withheld when it acts.
inline constexpr std::string_view note_split_dot_armed_end =
    " armed: an end of data whose '.' and CRLF arrive in separate segments will be withheld";
inline constexpr std::string_view note_split_dot_withheld =
    "end of data withheld: the '.' and its CRLF arrived in separate segments (CSCds90792)";

class fault_advisor {
 public:
  virtual ~fault_advisor() = default;
  virtual session_plan plan_session() = 0;
  virtual fault_decision decide(const fault_query& q) = 0;
  // A session-wide rule that acts only when its moment comes (split_dot_withhold: a '.' split
  // from its CRLF) is about to act: it is reserved now, as a decision is, and counts with its
  // fault record (applied). False when its max_count is spent by then (sessions armed at once
  // share it): it does not act.
  virtual bool reserve_plan_rule(std::string_view rule) {
    (void)rule;
    return true;
  }
  // A decision reserves its rule (the winner, and each contributing rewrite's): max_count holds
  // it from then on, but it counts as injected only when the relay applies it, which it says
  // here, once per fault record it writes. A decided rule the relay drops without applying it
  // (no recipient was accepted, DATA refused, superseded) is given back with not_applied; so is
  // every reservation still held when the advisor is destroyed (the session ended first).
  virtual void applied(std::string_view rule) { (void)rule; }
  virtual void not_applied(std::string_view rule) { (void)rule; }
};

}  // namespace mailtap::protocol
