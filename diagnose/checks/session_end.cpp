// How the session ended (captures/FORMAT.md "End reasons"): timeouts on either side, a
// destination that could not be reached or refused the connection, a failed upstream TLS, a
// destination that broke the protocol or hung up mid-session, a stall fault, and a capture
// that is incomplete (what it says may be partial).
#include <algorithm>
#include <limits>
#include <set>

#include "diagnose/checks.hpp"
#include "diagnose/classify.hpp"
#include "diagnose/modes.hpp"
#include "protocol/command.hpp"
#include "protocol/relay_fsm.hpp"

namespace mailtap::diagnose {

namespace {

evidence_item end_evidence(const captures::end_record& e) {
  return {e.t_us, "end", "end: " + e.reason + (e.detail.empty() ? "" : " (" + e.detail + ")")};
}

// The commands answered: by the destination, or by the relay before the session ended (a
// refusal of its own, a fault's reply). The relay's reply written as the session ends (its
// 421 4.4.2 when the destination went silent or was lost) goes to the oldest command still
// waiting, and those pipelined behind it get none (protocol/relay_fsm.cpp, upstream_lost):
// neither counts as answered.
std::set<const captures::command_event*> answered_before_end(const conversation& c) {
  const std::uint64_t end_us = c.cap->end ? c.cap->end->t_us : std::numeric_limits<std::uint64_t>::max();
  std::set<const captures::command_event*> answered;
  for (const exchange& x : c.exchanges)
    if (x.command && (x.reply->leg == protocol::leg::upstream || x.reply->t_us < end_us)) answered.insert(x.command);
  return answered;
}

// The stage a session ended in: that of the oldest command still unanswered, else of the last
// command (a pipelining client's MAIL, RCPT and DATA all wait on MAIL's reply: a trial's
// timeout at MAIL read "timeout at data"), an AUTH exchange's responses (recorded redacted,
// or as "*") counting as AUTH; before any command, the greeting's when the destination never
// greeted (`upstream_side`), else the session's.
std::string last_stage(const conversation& c, bool upstream_side) {
  std::string stage = "session";
  bool greeted = false;
  const auto answered = answered_before_end(c);
  for (const auto* e : c.timeline) {
    if (const auto* r = std::get_if<captures::reply_event>(e)) greeted = greeted || r->leg == protocol::leg::upstream;
    const auto* cmd = std::get_if<captures::command_event>(e);
    if (!cmd) continue;
    const auto ph = protocol::parse_command(cmd->text).cmd.ph;
    const bool auth_response = cmd->text == "*" || cmd->text.starts_with("[auth response redacted");
    if (ph != protocol::phase::other || !auth_response || stage != "auth") stage = std::string(protocol::to_string(ph));
    if (!answered.contains(cmd)) break;
  }
  if (stage == "session" && upstream_side && !greeted) stage = "banner";
  // A message whose end went without the destination's answer (none came, or the relay made
  // one when the destination went silent or was lost) ended in data_end, not at its DATA.
  const auto& txns = c.cap->transactions;
  if (!txns.empty() && txns.back().size > 0 &&
      (!txns.back().final_reply || (txns.back().synthesized && txns.back().result == protocol::outcome::unknown)))
    stage = "data_end";
  return stage;
}

void timeout(const conversation& c, const captures::end_record& e, std::vector<finding>& out) {
  finding f;
  f.id = "timeout";
  f.evidence.push_back(end_evidence(e));
  if (e.reason == "upstream_timeout") {
    f.level = severity::error;
    f.source = origin::server;
    f.stage = last_stage(c, true);
    f.title = "the destination did not reply in time (" + f.stage + ")";
    f.explanation = "The destination went silent and the relay's reply timeout (RFC 5321 4.5.3.2) ran out. " +
                    e.detail;
    f.action = "Look at the destination at that stage: a hung service, a firewall that drops packets, a filter "
               "that holds replies.";
  } else if (e.reason == "client_timeout") {
    f.level = severity::warning;
    f.source = origin::client;
    // Inside the message the sender was sending its body, not waiting for the end of data's reply.
    const bool in_message = e.detail.rfind("message data slower", 0) == 0 || e.detail == "no message data in time";
    f.stage = in_message ? "body" : last_stage(c, false);
    f.title = "the sender was too slow (" + e.detail + ")";
    f.explanation = "The client did not send its next command or its data in time, and the relay closed the "
                    "session with 421 4.4.2.";
    f.action = "Look at the sending application or the network from it; raise [timeouts] if the pause is expected.";
  } else {   // fault_stall, or the client gave up during one
    const bool client_gave_up = e.reason == "client_closed";
    f.level = severity::error;
    f.source = origin::injected;
    f.stage = last_stage(c, false);
    f.title = client_gave_up ? "the sender gave up during a stall" : "the session stalled until it was closed";
    f.explanation = client_gave_up
                        ? "Nothing was answered and nothing read until the client closed its connection: a sender "
                          "times out (Postfix's smtp_*_timeout) and keeps the message queued to try again."
                        : "Nothing was answered and nothing read until the stall's maximum ran out.";
    f.action = "A stall fault did this; remove it to deliver.";
    const auto* fe = first_fault(c, [](const protocol::fault_event& x) { return x.decision == "stall"; });
    // The withheld split dot's stall is the firewall finding's (checks/firewall.cpp).
    if (client_gave_up && fe && fe->fault.type == "split_dot_withhold") return;
    if (fe) {
      // The stage the stall held, not the last command's (a stall at a reply stage, or one
      // pipelined behind others).
      if (fe->fault.ph != protocol::phase::other) f.stage = std::string(protocol::to_string(fe->fault.ph));
      mark_injected(f, *fe);
    }
  }
  merge_finding(out, std::move(f));
}

// An error at the greeting, the destination's, in a failure mode's words (modes.cpp).
finding greeting_finding(std::string_view mode_id) {
  const mode_text& m = mode(mode_id);
  finding f;
  f.id = std::string(m.id);
  f.level = severity::error;
  f.stage = "banner";
  f.title = std::string(m.title);
  f.explanation = std::string(m.explanation);
  f.action = std::string(m.action);
  f.source = origin::server;
  return f;
}

void unreachable(const conversation& c, const captures::end_record& e, std::vector<finding>& out) {
  finding f = greeting_finding("destination_unreachable");
  for (const auto* ev : c.timeline)
    if (const auto* n = std::get_if<captures::note_event>(ev))
      if (n->text.rfind("upstream unreachable", 0) == 0 || n->text.rfind("upstream_", 0) == 0)
        f.evidence.push_back(evidence_of(*ev));
  f.evidence.push_back(end_evidence(e));
  finding& held = merge_finding(out, std::move(f));
  if (const auto* fe = first_fault(c, [](const protocol::fault_event& x) { return x.decision == "unreachable"; }))
    mark_injected(held, *fe);
}

// An upstream_unreachable fault with mode no_greeting held the greeting back, and the client
// gave up before the relay's greeting timeout did (Postfix's smtp_helo_timeout and the relay's
// upstream_greeting are both 300 s by default): nothing was said on either leg. That is the unreachable
// destination the fault reproduces, as when the relay's 421 4.4.1 ends the wait
// (checks/replies.cpp); a trial found only the fault's INFO.
bool left_before_withheld_greeting(const conversation& c, const captures::end_record& e) {
  if (e.reason != "client_closed" || !c.exchanges.empty()) return false;
  return first_fault(c, [](const protocol::fault_event& x) { return x.decision == "unreachable"; }) != nullptr;
}

// The destination greeted with 421 (end reason upstream_refused): reached, but refusing
// service. The finding is the one the greeting's reply gets (checks/replies.cpp classifies it
// by its code, and an X.4.x keeps it "unreachable"), with the end cited beside the reply.
void refused_service(const conversation& c, const captures::end_record& e, std::vector<finding>& out) {
  const captures::reply_event* greeting = nullptr;
  for (const auto* ev : c.timeline)
    if (const auto* r = std::get_if<captures::reply_event>(ev); r && r->leg == protocol::leg::upstream && r->reply.code == 421)
      greeting = r;
  const std::string id = classify_by_code(protocol::phase::banner, 421, greeting ? greeting->reply.enhanced : "").mode;
  if (id == "destination_unreachable") return unreachable(c, e, out);
  finding f = greeting_finding(id);
  if (greeting) f.evidence.push_back(evidence_of(*greeting));
  f.evidence.push_back(end_evidence(e));
  merge_finding(out, std::move(f));
}

// A disconnect or reset fault cut the client off (end reason `fault`). After the end of data
// this is the failure that costs most: the client never hears whether its message went
// through. The relay never sends that end upstream (policies/README.md), so nothing was
// delivered, and a sender that gets no reply queues the message and tries again.
void dropped_by_fault(const conversation& c, const captures::end_record& e, std::vector<finding>& out) {
  const auto* fe = first_fault(
      c, [](const protocol::fault_event& x) { return x.decision == "disconnect" || x.decision == "reset"; });
  if (!fe) return;
  // A disconnect with a code says it first: that reply is the finding (checks/replies.cpp).
  for (const auto* ev : c.timeline)
    if (const auto* r = std::get_if<captures::reply_event>(ev); r && r->leg == protocol::leg::client && r->t_us >= fe->t_us)
      return;
  const bool after_end_of_data = fe->fault.ph == protocol::phase::data_end || fe->fault.ph == protocol::phase::bdat;
  const std::string how = fe->fault.decision == "reset" ? "reset (RST)" : "closed";
  finding f;
  f.id = "connection_dropped";
  f.level = after_end_of_data ? severity::error : severity::warning;
  f.stage = std::string(protocol::to_string(fe->fault.ph));
  f.source = origin::none;
  f.title = after_end_of_data ? "the connection was " + how + " after the end of data, without a reply"
                              : "the connection was " + how + " at " + f.stage;
  f.explanation =
      after_end_of_data
          ? "The client sent its message's end and got no reply: the end never went to the destination, so nothing "
            "was delivered, and a sender treats the silence as a temporary failure and sends the message again "
            "later (RFC 5321 4.5.4.1). A firewall or load balancer that drops connections mid-session looks the same."
          : "The connection ended without a reply at " + f.stage + ": a sender treats that as a temporary failure and "
            "tries again later (RFC 5321 4.5.4.1).";
  f.action = "A fault rule did this; remove or narrow it to deliver.";
  f.evidence.push_back(end_evidence(e));
  finding& held = merge_finding(out, std::move(f));
  mark_injected(held, *fe);
}

// The client's handshake with the relay failed (after STARTTLS, or on the SMTPS listener). The
// client negotiates with the relay, not the destination: the certificate it refused is the
// relay's own.
void client_tls_failed(const captures::end_record& e, std::vector<finding>& out) {
  finding f;
  f.id = "client_tls_failed";
  f.level = severity::error;
  f.stage = "starttls";
  f.source = origin::client;
  f.title = "the client's TLS handshake with the relay failed";
  f.explanation = "The client and the relay could not set up TLS, so the session ended before any mail: " + e.detail +
                  ". Behind an inline relay the client checks the relay's certificate, not the destination's "
                  "(a generated one is self-signed), and the two must share a TLS version and a cipher.";
  f.action = "Give the relay a certificate the client trusts ([tls] cert and key, or --tls-cert and --tls-key), or "
             "check the client's TLS versions and ciphers against the relay's.";
  f.evidence.push_back(end_evidence(e));
  merge_finding(out, std::move(f));
}

// The destination broke TLS after its handshake (captures/FORMAT.md, upstream_protocol_error with
// protocol::upstream_tls_broken_detail): it sent what is not TLS on the secured connection
// (plaintext, "wrong version number") or a fatal alert. No SMTP reply to quote: OpenSSL's reason
// is in the detail. After a renegotiation the relay refused, that finding names the cause.
void tls_broken(const conversation& c, const captures::end_record& e, std::vector<finding>& out) {
  if (std::any_of(out.begin(), out.end(), [](const finding& g) {
        return g.id == "tls_renegotiation_refused" && g.source == origin::server && g.level == severity::error;
      }))
    return;
  finding f;
  f.id = "upstream_protocol_error";
  f.level = severity::error;
  f.source = origin::server;
  f.stage = last_stage(c, true);
  f.title = "the destination broke TLS after the handshake";
  f.explanation = "After the TLS handshake the destination sent what TLS does not allow on the secured connection (" +
                  e.detail + "): bytes outside TLS, or a fatal alert. The relay could read nothing more from it and "
                  "closed the connection; it did not hang up on its own. The client got 421 4.4.2 from the relay "
                  "(temporary): nothing in flight was delivered, and the sender will retry.";
  f.action = "Look at the destination's TLS: software that writes plaintext after STARTTLS, a proxy or a firewall's "
             "SMTP inspection between the relay and it that does not follow TLS.";
  for (const auto* ev : c.timeline)
    if (const auto* n = std::get_if<captures::note_event>(ev); n && n->text.rfind("upstream_protocol_error", 0) == 0)
      f.evidence.push_back(evidence_of(*ev));
  f.evidence.push_back(end_evidence(e));
  merge_finding(out, std::move(f));
}

// The destination answered what SMTP does not allow (captures/FORMAT.md, upstream_protocol_error):
// the relay closed its leg, the client got a 4xx from the relay. The destination's fault, never
// the client's.
void protocol_error(const conversation& c, const captures::end_record& e, std::vector<finding>& out) {
  if (e.detail.starts_with(protocol::upstream_tls_broken_detail)) return tls_broken(c, e, out);
  finding f;
  f.id = "upstream_protocol_error";
  f.level = severity::error;
  f.source = origin::server;
  f.stage = last_stage(c, true);
  const bool early = e.detail == "upstream replied during DATA";
  f.title = early ? "the destination replied before the end of the message" : "the destination broke the SMTP protocol";
  f.explanation =
      early ? "After its 354 the destination answered before the client's final dot: it gave up on the message and "
              "read the rest as commands. That reply is final for the message (reported on its own); the relay "
              "closed the connection to the destination, now out of step, and the client got 421 4.4.2."
            : "The destination's reply (" + e.detail + ") is not one SMTP allows there (RFC 5321 4.2, 4.3.2), so the "
              "relay could not pass it on or pair what followed, and closed the connection to it. The client got a "
              "4xx from the relay (temporary): nothing in flight was delivered, and the sender will retry.";
  f.action = early ? "Look at the destination's reason in its reply (size, content, policy)."
                   : "Look at the destination's software or what stands in front of it (a proxy, a firewall's SMTP "
                     "inspection); its reply is in the evidence.";
  // The destination's bytes the relay refused (the last it received before its note: a reply
  // is never recorded as one when it is malformed), then the note.
  const captures::bytes_event* received = nullptr;
  for (const auto* ev : c.timeline) {
    if (const auto* b = std::get_if<captures::bytes_event>(ev)) {
      if (b->leg == protocol::leg::upstream && b->dir == protocol::direction::in) received = b;
    } else if (const auto* n = std::get_if<captures::note_event>(ev); n && n->text.rfind("upstream_protocol_error", 0) == 0) {
      if (received)
        f.evidence.push_back({received->t_us, "bytes", "upstream in: " + protocol::escape_bytes(received->data, 400)});
      received = nullptr;
      f.evidence.push_back(evidence_of(*ev));
    }
  }
  f.evidence.push_back(end_evidence(e));
  merge_finding(out, std::move(f));
}

// The destination answered 221 to a command other than QUIT (the relay's end detail "upstream said
// 221") and closed: it ended the session itself, as Postfix's smtpd does past its error limit
// ("221 2.7.0 Error: I can break rules, too. Goodbye."). A hostile trial found no finding at all.
void destination_said_goodbye(const conversation& c, const captures::end_record& e, std::vector<finding>& out) {
  finding f;
  f.id = "service_closing";
  f.source = origin::server;
  f.stage = last_stage(c, true);
  const exchange* goodbye = nullptr;   // the 221, with the command it answered
  for (const auto& x : c.exchanges)
    if (x.source == origin::server && !x.edit && x.reply->reply.code == 221 && x.ph != protocol::phase::quit) goodbye = &x;
  if (goodbye) f.stage = std::string(protocol::to_string(goodbye->client_ph()));
  // An error when it cut a transaction short (the one open when it came), not for one failed before.
  const std::uint64_t said_at = goodbye ? goodbye->reply->t_us : e.t_us;
  const bool lost_mail = std::any_of(c.cap->transactions.begin(), c.cap->transactions.end(), [&](const captures::transaction& t) {
    return (t.result == protocol::outcome::tempfailed || t.result == protocol::outcome::aborted) &&
           t.start_us <= said_at && t.end_us >= said_at;
  });
  f.level = lost_mail ? severity::error : severity::warning;
  f.title = "the destination closed the session with 221 (" + f.stage + ")";
  f.explanation = "The destination answered 221, the reply to QUIT, to a command that was not QUIT, and closed the "
                  "connection: it ended the session itself, as Postfix's smtpd does with a client past its error limit "
                  "(smtpd_hard_error_limit: \"221 2.7.0 Error: I can break rules, too. Goodbye.\"). Nothing more "
                  "reached it; a message it had not accepted was not delivered, and the sender will try again.";
  f.action = "Read the replies before it (the errors the destination counted) and its log; fix what the client sends, "
             "or raise the destination's error limit.";
  if (goodbye) {
    f.reply = reply_ref{221, goodbye->reply->reply.enhanced, goodbye->reply->reply.text()};
    auto more = evidence_of(*goodbye);
    f.evidence.insert(f.evidence.end(), more.begin(), more.end());
  }
  f.evidence.push_back(end_evidence(e));
  merge_finding(out, std::move(f));
}

// When and where in the file the destination hung up: the relay's note of it
// ("upstream_closed: ...", protocol/relay_fsm.cpp upstream_lost), else the end record.
struct hang_up {
  std::uint64_t t_us = 0;
  const captures::event* note = nullptr;
};

hang_up hang_up_of(const conversation& c, const captures::end_record& e) {
  for (const auto& ev : c.cap->events)
    if (const auto* n = std::get_if<captures::note_event>(&ev); n && n->text.starts_with("upstream_closed: "))
      return {n->t_us, &ev};
  return {e.t_us, nullptr};
}

// The delay rule's hold (when = "command": the client's end of data or a command) the
// destination hung up during, or null: as for its 421 (checks/replies.cpp hold_around), unless
// the destination still owed a reply to a command that had gone to it (recorded before the
// hang-up and the hold's record, which a command the rule held and never forwarded follows:
// relay_fsm abandon_held_line; answered by nothing of the destination's nor before): then it was not
// waiting for what the rule held. A BDAT ... LAST whose last byte the rule held went all but
// that byte: the destination waited for it.
const captures::fault_event* hold_at_hang_up(const conversation& c, const hang_up& at) {
  const auto holds = delay_holds_at(c, at.t_us);
  if (holds.empty()) return nullptr;
  std::set<const captures::command_event*> answered;
  for (const exchange& x : c.exchanges)
    if (x.command && (x.reply->leg == protocol::leg::upstream || x.reply->t_us < at.t_us)) answered.insert(x.command);
  for (const auto* hold : holds) {
    bool owed = false;
    for (const auto& ev : c.cap->events) {
      if (&ev == at.note || std::get_if<captures::fault_event>(&ev) == hold) break;
      const auto* cmd = std::get_if<captures::command_event>(&ev);
      if (!cmd || answered.contains(cmd)) continue;
      const auto parsed = protocol::parse_command(cmd->text).cmd;
      const bool held_chunk = holds_end_of_data(*hold) && parsed.ph == protocol::phase::bdat && parsed.bdat_last;
      owed = owed || !held_chunk;
    }
    if (!owed) return hold;
  }
  return nullptr;
}

// The destination closed the connection mid-session, without a 421 (a 421 is its own reply,
// reported by the replies check) and not after QUIT. After a dot the ambiguous end of data
// says it all (checks/delivery.cpp). During a delay rule's hold the rule is the likely cause.
void destination_hung_up(const conversation& c, const captures::end_record& e, std::vector<finding>& out) {
  if (e.detail == "upstream said 221") return destination_said_goodbye(c, e, out);
  if (e.detail != protocol::upstream_closed_detail && !e.detail.starts_with(protocol::upstream_lost_detail)) return;
  // The destination asked to renegotiate TLS and hung up when refused: that finding says so.
  if (std::any_of(out.begin(), out.end(), [](const finding& g) {
        return g.id == "tls_renegotiation_refused" && g.source == origin::server && g.level == severity::error;
      }))
    return;
  if (std::any_of(c.cap->transactions.begin(), c.cap->transactions.end(),
                  [](const captures::transaction& t) { return t.result == protocol::outcome::unknown; }))
    return;
  finding f;
  f.id = "destination_closed";
  f.source = origin::server;
  f.stage = last_stage(c, true);
  const bool lost_mail = std::any_of(c.cap->transactions.begin(), c.cap->transactions.end(), [](const captures::transaction& t) {
    return t.result == protocol::outcome::tempfailed || t.result == protocol::outcome::aborted;
  });
  f.level = lost_mail ? severity::error : severity::warning;
  f.title = "the destination closed the connection (" + f.stage + ")";
  f.explanation = "The destination hung up without a reply (no 421, no QUIT asked), so the relay told the client "
                  "421 4.4.2 or 451 4.4.2 (temporary) for what was in flight: nothing of it was delivered, and the "
                  "sender will retry.";
  f.action = "Look at the destination's log at that time: a crash, a restart, a connection limit, an idle timeout "
             "shorter than the client's pauses.";
  f.evidence.push_back(end_evidence(e));
  if (const hang_up at = hang_up_of(c, e); const captures::fault_event* hold = hold_at_hang_up(c, at)) {
    // A hostile trial: a bare hang-up during a delay rule's hold was the destination's fault with
    // no word of the hold, where its 421 at the same moment is the rule's (checks/replies.cpp).
    blame_delay_hold(f, *hold, at.t_us, false);
    f.stage = std::string(protocol::to_string(hold->fault.ph));
  }
  merge_finding(out, std::move(f));
}

// The client broke SMTP's framing and the relay closed the session (captures/FORMAT.md,
// protocol_error): a command line over the hard cap, an AUTH response over its cap, a BDAT size
// it cannot read, a BDAT the destination did not offer. A message the relay refused for its line
// endings, or a session closed at the relay's error limit (lines it refused, none over the cap), is
// a smuggling attempt (smuggling.cpp), not this. A fifth trial found these sessions diagnosed "no
// findings".
void client_protocol_error(const captures::capture& c, const captures::end_record& e, std::vector<finding>& out) {
  if (e.detail.rfind("message refused: ", 0) == 0 || ended_at_relay_error_limit(c)) return;
  finding f;
  f.id = "client_protocol_error";
  f.level = severity::error;
  f.source = origin::client;
  const bool bdat = e.detail.find("BDAT") != std::string::npos;
  f.stage = bdat ? "bdat" : e.detail.find("AUTH") != std::string::npos ? "auth" : "other";
  f.title = "the client broke the SMTP protocol: " + e.detail;
  f.action = "Look at the client's software or what stands between it and mailtap (a proxy, a load balancer sending "
             "something else to the SMTP port); the client's bytes are in the capture.";
  if (e.detail == "BDAT without CHUNKING offered") {
    // Its size was read: the command itself was not allowed (protocol/relay_fsm.cpp,
    // refuse_bdat_without_chunking). A hostile trial read it as an unreadable size answered 501.
    f.explanation = "The client sent BDAT, but the destination offered no CHUNKING in its reply to the client's EHLO "
                    "(or the client greeted with HELO), and RFC 3030 2 forbids BDAT then. A destination that does "
                    "not know BDAT would read its chunk as commands, so the relay did not forward it: it answered "
                    "502 5.5.1 and closed the session (after the replies owed to the commands before it). Nothing "
                    "of the message was delivered.";
    f.action = "The client must send its message with DATA when the EHLO reply has no CHUNKING; or offer CHUNKING "
               "at the destination.";
  } else if (bdat) {
    f.explanation = "A BDAT command's size could not be read (RFC 3030 2: BDAT takes a chunk size in digits), so "
                    "the bytes after it could not be framed: the relay answered 501 5.5.4 and closed the session "
                    "(after the replies owed to the commands before it).";
  } else {
    f.explanation = "The client sent a line longer than SMTP allows (RFC 5321 4.5.3.1.4, 512 octets for a command "
                    "line; RFC 4954 4 for an AUTH response) without ending it, so the relay answered 500 5.5.2 and "
                    "closed the session (after the replies owed to the commands before it).";
  }
  f.evidence.push_back(end_evidence(e));
  merge_finding(out, std::move(f));
}

// The client closed (or lost) its connection inside its message (end reason client_closed,
// detail "inside the message"): the relay closed the upstream without the end of data, so
// nothing was delivered. A sixth trial found these sessions diagnosed "no findings".
void message_abandoned(const captures::end_record& e, std::vector<finding>& out) {
  finding f;
  f.id = "message_abandoned";
  f.level = severity::warning;
  f.source = origin::client;
  f.stage = "body";
  f.title = "the sender left inside its message: nothing was delivered";
  f.explanation = "The client closed its connection before its message's end (the CRLF.CRLF after DATA, or the last "
                  "BDAT chunk), so the relay closed the upstream leg without sending that end, and the destination "
                  "delivered nothing (a message is accepted only at its end, RFC 5321 4.1.1.4). A sender that lost "
                  "its connection treats it as a temporary failure and sends the message again.";
  f.action = "Look at the sending side: a client killed or crashed mid-transfer, its own timeout shorter than the "
             "message takes to send, or a firewall or load balancer between it and mailtap that cuts long transfers.";
  f.evidence.push_back(end_evidence(e));
  merge_finding(out, std::move(f));
}

// An incomplete capture that ends inside a transaction: the relay stopped (killed, crashed,
// the machine lost) with a message in flight, or it could not write the rest of the capture
// (README "Keeping the disk": the message's end is then answered 451 4.3.0 by the relay, and
// the failure logged and counted; the capture cannot say which). What became of the message
// depends on where it was: its end had gone upstream (it may have been delivered) or not.
void in_transaction(const conversation& c, const captures::transaction& t, finding& f) {
  f.level = severity::error;
  // Without message bytes, the last command says where it stood: a DATA answered 354 and no
  // byte after it is "data" too, a MAIL with no RCPT yet "mail".
  const bool answered = t.final_reply.has_value();   // the destination's reply to the end, never passed on
  f.stage = t.result == protocol::outcome::unknown || answered ? "data_end" : t.size > 0 ? "data" : last_stage(c, false);
  f.title = "capture incomplete: it ends inside a mail transaction";
  f.explanation = "The capture has no end record and ends inside the transaction from " +
                  (t.without_mail ? std::string(captures::no_mail_sender) : "<" + t.mail_from + ">") + " (" +
                  std::to_string(t.rcpt_to.size()) + (t.rcpt_to.size() == 1 ? " recipient" : " recipients") +
                  (t.size > 0 ? ", " + std::to_string(t.size) + " bytes of its message received" : "") +
                  "). Unless the session is still going on, either the relay stopped (killed, crashed, or its machine "
                  "went down) before the transaction ended, so the client got no final reply through it, or the relay "
                  "could not write the rest of the capture (a full disk: it then answers the message's end 451 4.3.0 "
                  "itself, logs the failure and counts a capture write failure). ";
  if (answered && t.result == protocol::outcome::delivered)
    f.explanation += "The destination accepted the message (" + std::to_string(t.final_reply->code) +
                     (t.final_reply->enhanced.empty() ? "" : " " + t.final_reply->enhanced) +
                     "), but the relay had not passed that reply on (a delay rule held it, or the relay stopped "
                     "first): the sender, told nothing, will send it again (a duplicate).";
  else if (answered)
    f.explanation += "The destination refused the message (" + std::to_string(t.final_reply->code) +
                     "), but the relay had not passed that reply on: the sender, told nothing, will try again.";
  else if (t.result == protocol::outcome::unknown)
    f.explanation += "The message's end had gone to the destination, and no reply to it was recorded: it may have "
                     "been delivered, and the sender, told nothing, will send it again (a duplicate).";
  else
    f.explanation += "The message's end had not gone to the destination, so nothing of it was delivered; the sender "
                     "will send it again.";
  f.action = "Find which at that time: the relay's log (a capture write failure names the session), the service "
             "manager's, the kernel's OOM killer" +
             std::string(t.result == protocol::outcome::unknown || (answered && t.result == protocol::outcome::delivered)
                             ? "; check at the destination whether the message arrived."
                             : ".");
  f.evidence.push_back(transaction_evidence(t));
}

}  // namespace

void check_session_end(const conversation& c, std::vector<finding>& out) {
  if (!c.cap->complete) {
    finding f;
    f.id = "capture_incomplete";
    f.level = severity::warning;
    f.stage = "session";
    f.title = c.cap->end ? "capture incomplete: records were dropped" : "capture incomplete: no end record";
    f.explanation = "The capture is missing records (the relay stopped or the writer fell behind), so what follows "
                    "may be partial.";
    f.action = "Check the relay's log for capture write failures at that time.";
    f.source = origin::relay;
    if (c.cap->end) f.evidence.push_back(end_evidence(*c.cap->end));
    if (!c.cap->transactions.empty() && c.cap->transactions.back().rebuilt) in_transaction(c, c.cap->transactions.back(), f);
    out.push_back(std::move(f));
  }
  if (!c.cap->end) return;
  const auto& e = *c.cap->end;
  // A newcomer's trial: a sender that timed out during a stall got no finding but the fault's INFO.
  // A client that reset its connection during a stall gave up as much as one that closed it (a
  // hostile trial: only INFO findings, exit 0); a stall runs until the session ends.
  const bool lost_in_stall =
      e.reason == "client_closed" && e.detail.starts_with("client connection lost") &&
      first_fault(c, [](const protocol::fault_event& x) { return x.decision == "stall"; }) != nullptr;
  const bool gave_up_in_stall =
      e.reason == "client_closed" && (e.detail == "the client gave up during a stall" || lost_in_stall);
  if (e.reason == "upstream_timeout" || e.reason == "client_timeout" || e.reason == "fault_stall" || gave_up_in_stall)
    timeout(c, e, out);
  else if (e.reason == "upstream_unreachable" || left_before_withheld_greeting(c, e)) unreachable(c, e, out);
  else if (e.reason == "upstream_refused") refused_service(c, e, out);
  else if (e.reason == "client_tls_failed") client_tls_failed(e, out);
  else if (e.reason == "fault") dropped_by_fault(c, e, out);
  else if (e.reason == "upstream_protocol_error") protocol_error(c, e, out);
  else if (e.reason == "protocol_error") client_protocol_error(*c.cap, e, out);
  else if (e.reason == "client_closed" && e.detail == "inside the message") message_abandoned(e, out);
  else if (e.reason == "upstream_closed") destination_hung_up(c, e, out);
  else if (e.reason == "upstream_tls_failed") {
    finding f;
    f.id = "tls_unavailable";
    f.level = severity::error;
    f.stage = "starttls";
    f.title = "the upstream leg could not be secured as required";
    f.explanation = "TLS to the destination failed (or its certificate did not pass a required check), and the TLS "
                    "settings forbid going on in plaintext. " + e.detail;
    f.action = "Check the destination's certificate and TLS versions, or relax the upstream TLS settings.";
    f.source = origin::server;
    f.evidence.push_back(end_evidence(e));
    merge_finding(out, std::move(f));
  }
}

}  // namespace mailtap::diagnose
