// Every refusal (4xx, 5xx) the client got, by stage: its meaning from the basic and the
// enhanced code, the failure mode it shows (classify.hpp), and who made it. Refusals that
// only follow from an earlier one (503 after a refused greeting) and the relay's own
// smuggling refusals, its 550 5.6.0 to a message among them (reported by checks/smuggling.cpp),
// are not repeated here.
#include <algorithm>
#include <variant>

#include "diagnose/checks.hpp"
#include "diagnose/classify.hpp"
#include "diagnose/end_of_data.hpp"
#include "diagnose/modes.hpp"
#include "diagnose/reply_codes.hpp"
#include "protocol/command.hpp"

namespace mailtap::diagnose {

namespace {

using protocol::phase;

bool transaction_stage(phase ph) {
  return ph == phase::mail || ph == phase::rcpt || ph == phase::data || ph == phase::data_end || ph == phase::bdat;
}

// The transaction open at `t_us`, if any.
const captures::transaction* transaction_at(const captures::capture& c, std::uint64_t t_us) {
  for (const auto& t : c.transactions)
    if (t.start_us <= t_us && t_us <= t.end_us) return &t;
  return nullptr;
}

// The relay's own 421/451 X.4.x to the client because it lost the upstream leg mid-session (a
// timeout, a hang-up, a protocol error), or timed the client out: checks/session_end.cpp
// reports the cause (the destination, or the client's `timeout`). Classified as a refusal, it would read as the destination's 4xx or as a
// command the client got wrong. (An unreachable destination's 421 4.4.1 is that finding's own
// reply, made by the relay: kept.)
bool relay_upstream_loss_reply(const conversation& c, const exchange& x) {
  if (x.source != origin::relay || x.fault || !c.cap->end) return false;
  const auto& reason = c.cap->end->reason;
  const auto& r = x.reply->reply;
  // The relay's 421 that closes a session for STARTTLS injection on either leg: the smuggling
  // check reports it (it read as the destination closing the session).
  if ((reason == "upstream_starttls_injection" || reason == "starttls_injection") && r.code == 421) return true;
  return (reason == "upstream_closed" || reason == "upstream_protocol_error" || reason == "upstream_timeout" ||
          reason == "upstream_tls_failed" || reason == "client_timeout") &&
         (r.code == 421 || r.code == 451) && r.enhanced.rfind("4.4.", 0) == 0;
}

// The relay's 454 to STARTTLS when TLS to the destination failed and the settings forbid going
// on in plaintext: checks/session_end.cpp reports it (tls_unavailable, from the destination).
bool relay_upstream_tls_refusal(const conversation& c, const exchange& x) {
  return x.source == origin::relay && !x.fault && x.reply->reply.code == 454 && c.cap->end &&
         c.cap->end->reason == "upstream_tls_failed";
}

// The relay's refusal of a command it would not forward (bare CR/LF, NUL, a forbidden verb, a
// BDAT the destination did not offer): 500/501/502 with X.5.x, made by the relay without a
// fault. The smuggling check or the session's end (client_protocol_error) reports it.
bool relay_syntax_refusal(const exchange& x) {
  const int code = x.reply->reply.code;
  return x.source == origin::relay && (code == 500 || code == 501 || code == 502) &&
         x.reply->reply.enhanced.size() > 2 && x.reply->reply.enhanced[2] == '5';
}

// The modes that say only that the destination refused (a 4xx or 5xx naming no more specific
// cause): a reply the relay made itself must not read as the destination's.
bool destination_generic(std::string_view mode) { return mode == "temporary_failure" || mode == "permanent_failure"; }

// A refusal is an error when it stops mail: at the greeting, AUTH, or in a transaction
// (a refused recipient of a transaction that was delivered to others is a warning).
severity severity_of(const conversation& c, const exchange& x) {
  const phase ph = x.client_ph();
  if (ph == phase::banner || ph == phase::connect || ph == phase::auth) return severity::error;
  if (!transaction_stage(ph)) return severity::warning;
  if (ph == phase::rcpt) {
    const auto* t = transaction_at(*c.cap, x.reply->t_us);
    if (t && t->result == protocol::outcome::delivered) return severity::warning;
  }
  return severity::error;
}

// DATA or a BDAT chunk refused because no recipient was accepted (Postfix's "554 5.5.1 Error:
// no valid recipients", 503 elsewhere, the relay's own 503 5.5.1 to a chunk): the client pipelined
// it behind its RCPTs (RFC 2920 3.1), and the refusals of those RCPTs, reported on their own, say
// what happened. A permanent failure here would contradict a transaction whose recipients were
// only deferred. (BDAT was left out, and its 503 read as a second error of the destination's.)
bool follows_refused_recipients(const conversation& c, const exchange& x) {
  if ((x.ph != phase::data && x.ph != phase::bdat) || x.reply->reply.klass() != 5) return false;
  const auto* t = transaction_at(*c.cap, x.reply->t_us);
  if (!t || t->rcpt_codes.empty()) return false;
  return std::none_of(t->rcpt_codes.begin(), t->rcpt_codes.end(), [](int code) { return code / 100 == 2; });
}

// The 501 that answers the client's "*" to an AUTH challenge: RFC 4954 4 obliges the server
// to refuse AUTH so, and the client chose it (the relay records "*" as itself).
bool client_cancelled_auth(const exchange& x) {
  return x.ph == phase::auth && x.reply->reply.code == 501 && x.command && x.command->text == "*" &&
         x.source == origin::server;
}

// The 501 that answers mailtap's own "*": the client's AUTH response held a bare CR, bare LF
// or NUL, so the relay cancelled the exchange in its place (protocol/relay_fsm.cpp,
// take_auth_response) and noted why between the response and the reply.
bool relay_cancelled_auth(const conversation& c, const exchange& x) {
  if (x.ph != phase::auth || x.reply->reply.code != 501 || !x.command || x.source != origin::server) return false;
  return std::any_of(c.timeline.begin(), c.timeline.end(), [&](const captures::event* e) {
    const auto* n = std::get_if<captures::note_event>(e);
    return n && n->t_us >= x.command->t_us && n->t_us <= x.reply->t_us &&
           n->text.starts_with("AUTH response refused");
  });
}

// Whether the command `x` answers was recorded before its reply: it went to the destination
// before the reply came. A command a delay held and never forwarded is recorded when the session
// gives it up, after the reply (relay_fsm abandon_held_line).
bool recorded_before_its_reply(const conversation& c, const exchange& x) {
  for (const auto& e : c.cap->events) {
    if (std::get_if<captures::command_event>(&e) == x.command) return true;
    if (std::get_if<captures::reply_event>(&e) == x.reply) return false;
  }
  return false;
}

// The delay fault (when = "command") that held the client's end of data or a command when the
// destination's reply `x` came, or null: its record is written as the hold ends
// (protocol/fault_holds.cpp: "end of data held...", "command held..."), after the hold's actual
// delay. Meanwhile the destination waited for what the rule held, unless `x` answers a command
// that went to it before: a MAIL, or a first RCPT, pipelined ahead of the RCPT the rule held
// (in the same read as it: the times alone cannot tell), answered 421 while the destination
// still had it. A BDAT ... LAST went, all of it but the last byte the rule held: its reply is
// the held end's.
const captures::fault_event* hold_around(const conversation& c, const exchange& x) {
  for (const auto* fe : delay_holds_at(c, x.reply->t_us)) {
    const bool held_chunk = holds_end_of_data(*fe) && x.ph == phase::bdat && last_chunk_of(x);
    if (x.command && !held_chunk && recorded_before_its_reply(c, x)) continue;
    return fe;
  }
  return nullptr;
}

std::string all_lines(const captures::reply_event& r) {
  std::string out;
  for (const auto& l : r.reply.lines) out += (out.empty() ? "" : " ") + l;
  return out;
}

}  // namespace

void check_replies(const conversation& c, std::vector<finding>& out) {
  bool greeting_refused = false;
  // MAIL was refused and none accepted since: the client's RCPT and DATA pipelined behind it
  // (RFC 2920 3.1) are answered 503 "need MAIL command" by the destination, a consequence of
  // that refusal, reported on its own (a newcomer's trial: an injected 452 to MAIL came with
  // two "permanent failures from the destination" that advised bouncing).
  // Whatever else the destination refuses of that transaction follows from it too: Postfix
  // answers a BDAT pipelined behind a refused MAIL "551 5.0.0 Discarded N bytes after earlier
  // error" (a trial: a second "permanent failure at bdat", its 551 read as "User not local").
  bool mail_refused = false;
  // A chunk was refused: the destination discards the chunks after it up to the last (the same
  // 551 of Postfix's after its 552 5.3.4 to a chunk over its size limit), refusals of that one.
  bool chunk_refused = false;
  for (const exchange& x : c.exchanges) {
    const auto& r = x.reply->reply;
    const bool refusal = !x.edit && (r.klass() == 4 || r.klass() == 5);
    if (x.ph == phase::mail) {
      mail_refused = refusal;
      chunk_refused = false;
    } else if (x.ph == phase::ehlo || x.ph == phase::helo || x.ph == phase::rset) {
      mail_refused = chunk_refused = false;
    }
    // A 421 is the destination closing the session (RFC 5321 3.8), an event of its own.
    const bool follows = refusal && r.code != 421 &&
                         ((mail_refused && (x.ph == phase::rcpt || x.ph == phase::data || x.ph == phase::bdat)) ||
                          (chunk_refused && x.ph == phase::bdat));
    if (x.ph == phase::bdat) chunk_refused = (chunk_refused || refusal) && !last_chunk_of(x);
    if (follows) continue;
    if (x.edit || r.klass() < 4 || r.klass() > 5) continue;
    if (x.ph == phase::banner) greeting_refused = greeting_refused || r.klass() == 5;
    else if (greeting_refused && r.code == 503) continue;   // RFC 5321 3.1: every command after a 554 greeting
    if (relay_syntax_refusal(x) || follows_refused_recipients(c, x) || relay_upstream_loss_reply(c, x) ||
        relay_upstream_tls_refusal(c, x) || smuggling_reply(c, x))
      continue;
    // The relay's 454 after a failed upstream handshake: checks/tls.cpp reports the fall-back.
    if (x.source == origin::relay && r.code == 454 && upstream_tls_fallback(c)) continue;

    const bool cancelled = client_cancelled_auth(x);
    const bool refused_response = !cancelled && relay_cancelled_auth(c, x);
    const reply_verdict v = cancelled          ? reply_verdict{"auth_cancelled", "", false}
                            : refused_response ? reply_verdict{"auth_response_refused", "", false}
                                               : classify(x.ph, r.code, r.enhanced, all_lines(*x.reply));
    const mode_text& m = mode(v.mode);
    finding f;
    f.id = std::string(m.id);
    // Greylisting defers the first attempt by design (the sender's retry gets through): a
    // warning, not the error a CI gate on diagnose would fail on.
    f.level = cancelled || v.mode == "greylisting" ? severity::warning
              : refused_response                  ? severity::error
                                                  : severity_of(c, x);
    f.stage = std::string(protocol::to_string(x.client_ph()));
    f.title = std::string(m.title);
    f.explanation = std::string(m.explanation);
    f.action = std::string(m.action);
    f.source = x.source;
    f.reply = reply_ref{r.code, r.enhanced, reply_text(*x.reply)};
    f.basic_meaning = basic_meaning(r.code, x.ph);
    if (auto e = enhanced_meaning(r.enhanced)) f.enhanced_meaning = *e;
    // Whose wording it is says something about the destination only when the destination wrote
    // it; what its greeting (or reply to EHLO) names is the server, whatever a phrasing suggests
    // (a trial: Postfix's "Over quota" read as Gmail's).
    if (x.source == origin::server) f.vendor = c.server_vendor.empty() ? v.vendor : c.server_vendor;
    if (v.refined && !f.vendor.empty() && f.vendor == v.vendor)
      f.explanation += " (The wording is " + v.vendor + "'s; the code alone says " +
                       classify_by_code(x.ph, r.code, r.enhanced).mode + ".)";
    else if (v.refined && x.source == origin::server)
      f.explanation += " (The wording says so; the code alone says " + classify_by_code(x.ph, r.code, r.enhanced).mode +
                       ".)";
    if (x.source == origin::relay && v.mode == "service_closing") {
      // The relay's own closing 421 (a drain past its deadline, say): the destination did not close.
      f.title = "mailtap closed the session with 421";
      f.explanation = "mailtap answered 421 and closed the client's connection (RFC 5321 3.8): it was stopping "
                      "(a drain past its deadline) or its upstream leg had ended; the session's end reason says "
                      "which. A sender keeps any message not yet accepted queued and tries again later.";
      f.action = "Read the session's end reason, and mailtap's log lines with its session id.";
    } else if (x.source == origin::relay && destination_generic(v.mode)) {
      // A hostile trial: the relay's 502 to a BDAT was "permanent failure at the destination".
      const bool temporary = r.klass() == 4;
      f.title = temporary ? "temporary failure made by mailtap" : "permanent refusal made by mailtap";
      f.explanation = "mailtap answered " + std::to_string(r.code) + " itself (its text says why): the destination "
                      "never gave this reply." +
                      (temporary ? " A sender keeps the mail queued and tries again later." : "");
      f.action = "Read the reply's text, and mailtap's log lines with its session id.";
    } else if (x.source == origin::relay) {
      f.explanation += " This reply was made by mailtap itself, not by the destination.";
    }
    f.evidence = evidence_of(x);
    const captures::fault_event* hold =
        x.source == origin::server && v.mode == "service_closing" ? hold_around(c, x) : nullptr;
    if (hold) {
      // A hostile trial with real Postfix: its timeout during a 4 s hold of the dot was "the
      // destination closed the session", from the destination, as if the destination had failed.
      blame_delay_hold(f, *hold, x.reply->t_us, true);
    } else if (x.fault && x.source == origin::server) {
      // The destination's answer to what a verb filter left of the command (conversation.hpp).
      f.rule = x.fault->fault.rule;
      f.explanation = "The fault rule '" + f.rule + "' (" + x.fault->fault.type +
                      ") overwrote this command with X before it went upstream, as a firewall's SMTP fixup "
                      "does: the destination refused the X it received, not the command the client sent. " +
                      f.explanation;
      f.action = "Remove the rule, or add the command to its allow list, if the client should get through.";
    } else if (x.fault) {
      f.rule = x.fault->fault.rule;
      f.explanation = "Injected by the fault rule '" + f.rule + "' (" + x.fault->fault.type +
                      "): the destination never saw this command. What it reproduces: " + f.explanation;
    }
    // One finding per mode, stage, code and origin: ten recipients refused alike are one finding.
    auto same = [&](const finding& g) {
      return g.id == f.id && g.stage == f.stage && g.reply && g.reply->code == r.code &&
             g.reply->enhanced == r.enhanced && g.source == f.source && g.rule == f.rule;
    };
    if (auto it = std::find_if(out.begin(), out.end(), same); it != out.end()) {
      for (auto& e : f.evidence) it->evidence.push_back(std::move(e));
      if (static_cast<int>(f.level) < static_cast<int>(it->level)) it->level = f.level;
      continue;
    }
    out.push_back(std::move(f));
  }
}

}  // namespace mailtap::diagnose
