// The STARTTLS sequencer (starttls_sequencer.hpp): STARTTLS on both legs (RFC 3207). The order,
// from issue 3, and why:
//   1. client STARTTLS (nothing may follow it in the client's buffer: CVE-2011-0411);
//   2. the relay secures the upstream leg first: STARTTLS upstream, its 220 (nothing may
//      follow it either), then the handshake -- so the client never believes in a TLS path
//      that the relay cannot complete;
//   3. 220 to the client only if that worked, else 454 4.7.0 (after a failed handshake,
//      unless TLS or verification is mandatory, on a new plaintext upstream connection:
//      "plaintext fall-back" below, issue 13); a STARTTLS asked with no EHLO reply on the
//      connection gets the destination's own refusal instead (pass_on_refusal);
//   4. the client's handshake;
//   5. the client's EHLO, forwarded upstream inside TLS, its reply relayed.
// When the client leg is TLS from the start (implicit TLS) and the mode asks for TLS
// upstream, or the mode is `required`, the relay secures the upstream right after the banner
// with its own EHLO and STARTTLS, before any client command is relayed.
#include <algorithm>

#include "protocol/starttls_sequencer.hpp"

#include "protocol/capabilities.hpp"

namespace mailtap::protocol {

namespace {
constexpr std::chrono::milliseconds disarmed_timer{0};
}  // namespace

bool starttls_sequencer::upstream_needs_tls_now() const {
  if (upstream_tls_ || out_.closed(leg::upstream) || securing_upstream_) return false;
  return options_.tls.upstream == upstream_tls_mode::required ||
         (options_.tls.upstream == upstream_tls_mode::mirror && client_tls_);
}

starttls_sequencer::starttls_sequencer(const relay_options& options, relay_outbox& out, reply_queue& owed,
                                       session_observer* observer, starttls_host& host)
    : options_(options), out_(out), owed_(owed), observer_(observer), host_(host) {}

bool starttls_sequencer::offers_starttls() const {
  // STARTTLS is the relay's to offer: it terminates TLS itself, and offers it only when it can
  // also secure the upstream as the mode asks. After a failed upstream handshake (the leg fell
  // back to plaintext) mirror and required would refuse it (advance): not offered, though the
  // destination still lists it.
  return options_.tls.offer_starttls && !client_tls_ &&
         (options_.tls.upstream == upstream_tls_mode::never || options_.tls.upstream == upstream_tls_mode::opportunistic ||
          upstream_tls_ || (upstream_offers_starttls_ && !upstream_tls_broken_));
}

void starttls_sequencer::after_banner(std::uint64_t now) {
  if (upstream_needs_tls_now()) secure_upstream_first(now);
}

// The replies the relay consumes: to its own EHLO and STARTTLS, the client's STARTTLS, and
// the greeting of a new upstream connection.
void starttls_sequencer::take_reply(std::uint64_t now, reply_slot& p, const reply& r) {
  switch (p.asked.kind) {
    case command_kind::internal_ehlo:
      owed_.erase(p);
      return take_internal_ehlo_reply(now, r);
    case command_kind::client_starttls:
    case command_kind::internal_starttls: return take_starttls_reply(now, p, r);
    case command_kind::internal_greeting:
      owed_.erase(p);
      return take_new_upstream_greeting(now, r);
    default: return;
  }
}

void starttls_sequencer::note_upstream_capabilities(const reply& r) {
  if (r.code != 250) return;
  upstream_offers_starttls_ = capabilities::from_reply(r).has("STARTTLS");
  upstream_ehlo_seen_ = true;
}

// ---------------------------------------------------------------- the relay's own commands

void starttls_sequencer::send_own_command(std::uint64_t now, phase ph, command_kind kind, std::string_view line) {
  owed_.expect(now, ph, kind);
  if (observer_) observer_->on_relay_command(now, line);
  out_.send(leg::upstream, std::string(line) + "\r\n", now);
  host_.arm_upstream_for_head();
}

// ---------------------------------------------------------------- the relay's own securing

void starttls_sequencer::secure_upstream_first(std::uint64_t now) {
  securing_upstream_ = true;
  out_.note(now, "securing the upstream leg (TLS " + std::string(to_string(options_.tls.upstream)) +
                ") before relaying client commands: EHLO, STARTTLS");
  send_own_command(now, phase::ehlo, command_kind::internal_ehlo, "EHLO " + options_.name);
}

void starttls_sequencer::take_internal_ehlo_reply(std::uint64_t now, const reply& r) {
  if (reconnecting_) return take_replayed_hello_reply(now, r);
  note_upstream_capabilities(r);
  if (r.code != 250 || !upstream_offers_starttls_) {
    upstream_tls_failed(now, r.code != 250 ? "upstream refused EHLO with " + std::to_string(r.code)
                                         : "upstream does not offer STARTTLS");
    return;
  }
  tls_step_ = tls_step::upstream_starttls_sent;
  send_own_command(now, phase::starttls, command_kind::internal_starttls, "STARTTLS");
}

// ---------------------------------------------------------------- the client's STARTTLS

// A refusal the relay makes itself counts toward its limit of refused commands (relay_fsm
// too_many_refusals): a hostile trial sent STARTTLS 300 times after TLS, or inside a
// transaction, and had 300 answers of 503; the destination never sees these lines, so its own
// limit could not end the session either (Postfix ends it at the 20th error).
void starttls_sequencer::refuse_starttls(std::uint64_t now, int code, std::string_view enhanced, std::string_view text) {
  host_.count_refused_command();
  out_.note(now, "STARTTLS refused: " + std::string(text));
  if (host_.too_many_refusals(now)) return;
  host_.local_reply(now, phase::starttls, code, enhanced, text);
  host_.flush_replies(now);
}

// The client's STARTTLS owed at the head of the queue, refused with 454 once it was looked at
// (the upstream refused it, its handshake failed, or the upstream leg cannot match). The reply
// answers that command: its stage starts when it came, and the upstream's part runs to
// `upstream_until` (when the upstream refused or its handshake failed; 0: the relay decided
// alone), not the client's think time before a new command.
void starttls_sequencer::refuse_owed_starttls(std::uint64_t now, std::string_view text, std::uint64_t upstream_until) {
  const reply_slot asked = owed_.pop_head();
  host_.client_back_to_commands();
  host_.count_refused_command();
  out_.note(now, "STARTTLS refused: " + std::string(text));
  // Decided by the relay alone (upstream_until 0: the upstream leg cannot match), it counts
  // toward the relay's limit as refuse_starttls's do; one the upstream caused does not.
  if (upstream_until == 0 && host_.too_many_refusals(now)) return;
  host_.local_reply(now, phase::starttls, 454, "4.7.0", text);
  reply_slot& answer = owed_.back();   // nothing follows a STARTTLS (injection), so it is the head
  answer.asked.t_received = asked.asked.t_received;
  answer.asked.t_forwarded = asked.asked.t_forwarded;
  answer.answer.t_upstream = upstream_until;
  host_.flush_replies(now);
}

void starttls_sequencer::client_starttls(std::uint64_t now) {
  if (!options_.tls.offer_starttls) return refuse_starttls(now, 454, "4.7.0", "TLS not available");
  if (client_tls_) return refuse_starttls(now, 503, "5.5.1", "TLS already active");
  if (host_.in_transaction()) return refuse_starttls(now, 503, "5.5.1", "STARTTLS not allowed inside a mail transaction");
  if (std::size_t unread = host_.unread_client_bytes(); unread > 0) return pipelined_injection(now, unread);
  owed_.expect(now, phase::starttls, command_kind::client_starttls);
  host_.client_awaits_handshake();
  advance(now);
}

void starttls_sequencer::advance(std::uint64_t now) {
  if (host_.ended() || tls_step_ != tls_step::idle || owed_.empty() ||
      owed_.front().asked.kind != command_kind::client_starttls)
    return;
  // STARTTLS is an extension the EHLO reply announces (RFC 3207 4, RFC 5321 4.1.4 and 2.2.1).
  // Without an EHLO reply on this connection (none yet, HELO alone, or none since a handshake,
  // RFC 3207 4.2) nothing was offered and nothing refused, and RFC 3207 4 asks for no EHLO
  // before STARTTLS: Postfix's smtpd answers it 220 before any hello and after HELO
  // (tests/integration/test_starttls_after_helo.py). Judged by what it had not seen, the relay
  // once told an upstream's client "454 the upstream does not offer STARTTLS" where it did
  // (mirror) or gave the client TLS alone (opportunistic); answered "503 Send EHLO first"
  // (f6ac0eb), the client of a destination that takes it lost TLS. The relay asks the
  // destination instead: its STARTTLS upstream, whose 220 goes on as after an EHLO that offered
  // it, and whose refusal reaches the client as it is (pass_on_refusal).
  const bool may_offer = upstream_ehlo_seen_ ? upstream_offers_starttls_ : true;
  const auto mode = options_.tls.upstream;
  bool secure_upstream = !upstream_tls_ && mode != upstream_tls_mode::never &&
                         (mode != upstream_tls_mode::opportunistic || may_offer);
  if (secure_upstream && upstream_tls_broken_) {
    // The upstream's handshake already failed in this session (the leg fell back to
    // plaintext): a second attempt would fail the same way.
    if (mode == upstream_tls_mode::opportunistic) {
      out_.note(now, "the upstream's TLS failed earlier in this session; the upstream leg stays plaintext (opportunistic)");
      return grant_client_tls(now);
    }
    return refuse_owed_starttls(now, "TLS not available: the upstream's TLS handshake failed", 0);
  }
  if (secure_upstream && !may_offer) {
    // mirror/required: the client would get TLS the upstream leg cannot match.
    return refuse_owed_starttls(now, "TLS not available: the upstream does not offer STARTTLS", 0);
  }
  if (!secure_upstream) return grant_client_tls(now);
  if (!upstream_ehlo_seen_)
    out_.note(now, "STARTTLS without an EHLO reply: nothing says whether the upstream offers it; asking the upstream");
  tls_step_ = tls_step::upstream_starttls_sent;
  out_.send(leg::upstream, "STARTTLS\r\n", now);
  host_.arm_upstream_for_head();
}

void starttls_sequencer::take_starttls_reply(std::uint64_t now, reply_slot& p, const reply& r) {
  bool internal = p.asked.kind == command_kind::internal_starttls;
  if (internal) owed_.erase(p);
  if (r.code == 220) {
    tls_step_ = tls_step::upstream_handshake;
    out_.arm(leg::upstream, disarmed_timer);
    out_.push(start_tls{leg::upstream});
    return;
  }
  std::string why = "upstream refused STARTTLS with " + std::to_string(r.code);
  if (internal) return upstream_tls_failed(now, why);
  tls_step_ = tls_step::idle;
  if (!upstream_ehlo_seen_) return pass_on_refusal(now, p, r);
  if (options_.tls.upstream == upstream_tls_mode::opportunistic) {
    out_.note(now, why + "; the upstream leg stays plaintext (opportunistic)");
    return grant_client_tls(now);
  }
  refuse_owed_starttls(now, "TLS not available: " + why, now);
}

// The client's STARTTLS, put to the destination with no EHLO reply to judge it by (advance),
// was refused: the client hears the destination's own reply, as it would without the relay,
// and goes on in plaintext (RFC 3207 4). A destination may want EHLO first (Exim answers 503
// "STARTTLS command used when not advertised", OpenSMTPD 503 before any hello): its client
// then says EHLO, sees STARTTLS offered or not, and asks again, and the relay then knows what
// the destination offers. A trial had 454 in mirror where the destination said 503, and in
// opportunistic TLS to the client alone over a plaintext upstream leg that EHLO would have
// secured.
void starttls_sequencer::pass_on_refusal(std::uint64_t now, reply_slot& p, const reply& r) {
  host_.client_back_to_commands();
  out_.note(now, "STARTTLS refused by the upstream (" + std::to_string(r.code) +
                     "), asked with no EHLO reply: its reply goes to the client as it is");
  p.answer.bytes = r.raw;
  p.answer.parsed = r;
  p.answer.ready = true;
  host_.flush_replies(now);
}

void starttls_sequencer::grant_client_tls(std::uint64_t now) {
  reply_slot& head = owed_.front();
  head.answer.local = true;
  head.answer.ready = true;
  head.answer.parsed = make_reply(220, "2.0.0", "Ready to start TLS");
  head.answer.bytes = head.answer.parsed->raw;
  tls_step_ = tls_step::client_handshake;
  host_.flush_replies(now);
  if (host_.ended()) return;
  out_.push(start_tls{leg::client});
}

// ---------------------------------------------------------------- handshake results

void starttls_sequencer::tls_ready(std::uint64_t now, leg which, const tls_summary& tls) {
  if (observer_) {
    observer_->on_tls(now, which, tls);
    std::uint64_t start = now > tls.handshake_us ? now - tls.handshake_us : 0;
    // The upstream's handshake is time spent on the upstream; the client's is the client's.
    bool up = which == leg::upstream;
    observer_->on_stage({phase::tls, start, tls.handshake_us, up ? tls.handshake_us : 0, 0, up ? 0 : tls.handshake_us});
  }
  if (which == leg::client) {
    client_tls_ = true;
    if (tls_step_ == tls_step::client_handshake) {
      tls_step_ = tls_step::idle;
      host_.client_back_to_commands();   // RFC 3207 4.2: the client starts over with EHLO
    }
    out_.arm(leg::client, options_.timeouts.client_idle);
    return;
  }
  upstream_tls_ = true;
  upstream_offers_starttls_ = false;
  upstream_ehlo_seen_ = false;   // RFC 3207 4.2: what it offered before TLS no longer counts
  if (securing_upstream_) {
    securing_upstream_ = false;
    tls_step_ = tls_step::idle;
    host_.arm_upstream_for_head();
    host_.resume_client_input(now);   // client commands held until now
  } else if (tls_step_ == tls_step::upstream_handshake) {
    if (!owed_.empty()) owed_.front().answer.t_upstream = now;   // STARTTLS waited on the upstream until now
    grant_client_tls(now);
  }
}

void starttls_sequencer::upstream_tls_failed(std::uint64_t now, std::string_view reason) {
  out_.note(now, "TLS on the upstream leg failed: " + std::string(reason));
  if (may_fall_back_to_plaintext()) return fall_back_to_plaintext(now, reason);
  // The upstream connection is unusable after a failed handshake, and must never carry the
  // client's conversation in plaintext instead.
  if (!out_.closed(leg::upstream)) out_.close(leg::upstream);
  out_.arm(leg::upstream, disarmed_timer);
  host_.remember_upstream_loss("upstream_tls_failed", reason);
  tls_step_ = tls_step::idle;
  if (!owed_.empty() && owed_.front().asked.kind == command_kind::client_starttls) {
    refuse_owed_starttls(now, "TLS not available: " + std::string(reason), now);   // then 421: upstream gone
    return;
  }
  securing_upstream_ = false;
  host_.end_with_reply(now, make_reply(421, "4.7.0", options_.name + " cannot secure the upstream leg: " + std::string(reason)),
                 "upstream_tls_failed", reason);
}

// ---------------------------------------------------------------- plaintext fall-back
//
// Between MTAs TLS is opportunistic (RFC 7435 3; Postfix smtp_tls_security_level = may):
// when the upstream's handshake fails, Postfix opens a new connection and delivers in
// plaintext. The relay does the same, unless TLS upstream is `required` or the certificate
// must verify: the client hears 454 to its STARTTLS (RFC 3207 4: it may go on without TLS),
// the old connection is dropped, and on the new one the relay takes the greeting and replays
// the client's EHLO before any held client command goes upstream. The client's STARTTLS was
// its only command in flight (nothing may follow it), so nothing else is owed.

bool starttls_sequencer::may_fall_back_to_plaintext() const {
  return options_.tls.upstream != upstream_tls_mode::required && !options_.tls.upstream_verification_required &&
         !securing_upstream_ && !out_.closed(leg::upstream) && !owed_.empty() &&
         owed_.front().asked.kind == command_kind::client_starttls;
}

void starttls_sequencer::fall_back_to_plaintext(std::uint64_t now, std::string_view reason) {
  out_.note(now, "upstream TLS handshake failed (" + std::string(reason) + "); " +
                std::string(note_upstream_tls_fallback) +
                ", as an MTA with opportunistic TLS does (RFC 7435); the client is told 454 and goes on without TLS");
  tls_step_ = tls_step::idle;
  upstream_tls_broken_ = true;
  upstream_offers_starttls_ = false;
  upstream_ehlo_seen_ = false;   // that connection's; the new one's replayed hello says anew
  reconnecting_ = true;   // before the 454 goes out: what the client sends next waits
  refuse_owed_starttls(now, "TLS not available: " + std::string(reason), now);
  if (host_.ended()) return;
  host_.forget_upstream_input();   // whatever the old connection left half-parsed is gone with it
  owed_.expect(now, phase::other, command_kind::internal_greeting);
  out_.arm(leg::upstream, disarmed_timer);   // the shell's connect has its own deadline
  out_.push(reconnect_upstream{});
}

bool starttls_sequencer::upstream_reconnected(std::uint64_t now) {
  if (!reconnecting_) return false;
  out_.note(now, note_new_plaintext_upstream);
  out_.send(leg::upstream, options_.upstream_preamble, now);   // a PROXY header names the client on it too
  out_.arm(leg::upstream, options_.timeouts.upstream_greeting);
  return true;
}

void starttls_sequencer::take_new_upstream_greeting(std::uint64_t now, const reply& r) {
  if (r.code != 220) return reconnect_failed(now, "the new upstream connection greeted with " + std::to_string(r.code));
  if (hello_line_.empty()) return finish_reconnect(now);   // no hello the upstream accepted yet: the client says it
  // The client's own hello, replayed on the new connection: the relay sends it, so it is
  // recorded as the relay's command (show's `U>`), with the reply that answers it.
  send_own_command(now, phase::ehlo, command_kind::internal_ehlo, hello_line_);
}

void starttls_sequencer::take_replayed_hello_reply(std::uint64_t now, const reply& r) {
  if (r.code != 250)
    return reconnect_failed(now, "the new upstream connection answered the replayed hello with " +
                                     std::to_string(r.code));
  note_upstream_capabilities(r);
  host_.upstream_hello_answered(r);
  finish_reconnect(now);
}

void starttls_sequencer::finish_reconnect(std::uint64_t now) {
  reconnecting_ = false;
  out_.note(now, "plaintext upstream ready" + std::string(hello_line_.empty() ? "" : " (client's hello replayed)") +
                "; the session goes on without TLS");
  host_.arm_upstream_for_head();
  host_.resume_client_input(now);   // commands the client sent after the 454
  host_.end_if_client_done(now);
}

void starttls_sequencer::reconnect_failed(std::uint64_t now, std::string_view detail) {
  reconnecting_ = false;
  out_.note(now, "plaintext fall-back failed: " + std::string(detail));
  out_.close(leg::upstream);
  out_.arm(leg::upstream, disarmed_timer);
  host_.end_with_reply(now, make_reply(421, "4.4.2", options_.name + " upstream unavailable: " + std::string(detail)),
                 "upstream_refused", detail);
}

// The client's STARTTLS came with bytes after it (CVE-2011-0411): nothing after it is read and it
// gets no 220, but the commands pipelined before it (RFC 2920 3.1) still get their replies, in
// order, and then the session ends. A hostile trial on the PROXY listener (its header, EHLO,
// STARTTLS and MAIL in one write) got the banner and a close, EHLO's reply dropped; a client of
// the plain listener writing the same got the same.
void starttls_sequencer::pipelined_injection(std::uint64_t now, std::size_t unread) {
  const std::string detail = std::to_string(unread) + " bytes pipelined after STARTTLS";
  out_.note(now, "STARTTLS injection on the client leg: " + detail + "; session closed (CVE-2011-0411)" +
                     (owed_.empty() ? "" : " once the replies owed before it are out"));
  host_.close_after_owed(now, "starttls_injection", detail);
}

void starttls_sequencer::injection(std::uint64_t now, leg where, std::string_view detail) {
  out_.note(now, "STARTTLS injection on the " + std::string(to_string(where)) + " leg: " + std::string(detail) +
                "; session closed (CVE-2011-0411)");
  if (where == leg::client) return host_.end_session(now, "starttls_injection", detail);
  // The 220 already asked for the upstream handshake: withdraw it, the leg is being closed.
  out_.withdraw_start_tls();
  host_.end_with_reply(now, make_reply(421, "4.7.0", options_.name + " upstream sent unexpected bytes after STARTTLS; closing"),
                 "upstream_starttls_injection", detail);
}

}  // namespace mailtap::protocol
