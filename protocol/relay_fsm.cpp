// The relay session machine. Reading order: events (on_*), client input processing,
// upstream replies and their pairing, transactions, leaving, output helpers.
#include "protocol/relay_fsm.hpp"

#include <algorithm>
#include <utility>

#include "protocol/auth_redaction.hpp"
#include "protocol/base64.hpp"
#include "protocol/capabilities.hpp"
#include "protocol/limits.hpp"

namespace mailtap::protocol {

namespace {
using std::chrono::milliseconds;
constexpr milliseconds disarmed{0};
// How long a drain waits for the next command of a session it has just answered (most often
// the client's QUIT, a round trip away) before it says 421 unasked: maybe_finish_drain.
constexpr std::uint64_t drain_next_command_grace_us = 2'000'000;

// A line ending in CRLF with no other CR, LF or NUL in it.
bool clean_crlf_line(std::string_view line) {
  if (line.size() < 2 || line.substr(line.size() - 2) != "\r\n") return false;
  return line.substr(0, line.size() - 2).find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

}  // namespace

relay_fsm::relay_fsm(relay_options options, session_observer* observer, fault_advisor* faults)
    : options_(std::move(options)),
      observer_(observer),
      out_(observer),
      faults_(faults, options_, out_, owed_, txns_, stats_, observer_, *this) {
  out_.record_client_input_first(&in_);
}

std::vector<action> relay_fsm::take_actions() {
  report_client_pause();
  return out_.take();
}

// The shell stops reading the client while the machine holds more unparsed input than its
// cap (a pipelining client ahead of a slow upstream), and resumes once it is parsed.
void relay_fsm::report_client_pause() {
  if (ended_) return;   // the shell stops reading anyway; no action follows the end
  bool paused = in_.above_watermark();
  if (paused == client_paused_) return;
  client_paused_ = paused;
  out_.push(pause_reading{leg::client, paused});
}

// Nothing of this event's actions may overtake the transaction record just reported (a reply
// settling it above all): the barrier goes first, and the shell holds what follows it until
// the recorder has written the record.
void relay_fsm::request_capture_barrier() { out_.barrier_first(); }

// ---------------------------------------------------------------- events

void relay_fsm::on_start(std::uint64_t now) {
  started_us_ = now;
  dial_from_us_ = now;
  faults_.start(now);   // the session plan and the connect phase
  if (faults_.upstream_wanted() && !ended_) out_.push(connect_upstream{});
}

void relay_fsm::on_upstream_connected(std::uint64_t now) {
  if (ended_) return;
  connected_us_ = now;
  if (observer_) observer_->on_stage({phase::connect, dial_from_us_, now - dial_from_us_, now - dial_from_us_, 0});
  out_.send(leg::upstream, options_.upstream_preamble, now);
  out_.arm(leg::upstream, options_.timeouts.upstream_greeting);
}

void relay_fsm::on_upstream_unreachable(std::uint64_t now, std::string_view reason) {
  if (ended_) return;
  // The first dial's time, as a connected session's connect stage has it: a refusal at once, or
  // the whole upstream_connect for an address that drops the SYN. (A new plaintext connection
  // after a failed upstream TLS handshake is no connect stage.)
  if (observer_ && connected_us_ == 0)
    observer_->on_stage({phase::connect, dial_from_us_, now - dial_from_us_, now - dial_from_us_, 0});
  upstream_unreachable(now, reason, {});
}

void relay_fsm::upstream_unreachable(std::uint64_t now, std::string_view reason, std::string_view detail) {
  if (detail.empty()) detail = reason;
  out_.mark_closed(leg::upstream);
  out_.note(now, "upstream unreachable: " + std::string(detail));
  // The reply line stays within RFC 5321's 512 octets (a long name, or each of its addresses'
  // errors); the note, the log and the end record keep the whole reason.
  std::string text = options_.name + " upstream unavailable: " + std::string(reason);
  if (text.size() > limits::own_reply_text_max) text = text.substr(0, limits::own_reply_text_max - 3) + "...";
  end_with_reply(now, make_reply(421, "4.4.1", text), "upstream_unreachable", detail);
}

void relay_fsm::on_client_bytes(std::uint64_t now, std::string_view bytes) {
  if (ended_ || out_.closed(leg::client)) return;
  client_bytes_at_us_ = now;
  if (faults_.stalled()) {   // a stall reads nothing; what the client sends is still recorded (AUTH masked), then dropped
    in_.append(bytes);
    record_rest_of_client_input(now);
    return;
  }
  if (!closing_reason_.empty()) {   // closing on a protocol error: recorded, never read (close_after_owed)
    in_.append(bytes);
    record_rest_of_client_input(now);
    return;
  }
  in_.append(bytes);
  if (!client_greeted_) record_early_talk(now);
  if (in_message()) credit_data_rate(now, bytes.size());
  process_client_input(now);
  arm_client_deadline(now);
}

// A client that speaks before its greeting (an early talker, which Postfix's postscreen rejects
// with its pregreet test) has its lines recorded when they came, not when the greeting lets
// them be parsed: the capture shows it talking first (a hostile trial: its EHLO came after the
// 220 in the file, at the 220's time). Whole lines only; AUTH material masked as when parsed,
// and every line after an AUTH command, whose responses it would be.
void relay_fsm::record_early_talk(std::uint64_t now) {
  // Before the greeting nothing is parsed, so buffer offsets stay put: each read scans only the
  // lines it completed (early_scanned_), and the masks after an AUTH merge into one.
  const std::string_view rest = in_.unparsed();
  const std::size_t last = rest.rfind("\r\n");
  if (early_scanned_ > rest.size()) early_scanned_ = 0;   // the buffer was dropped (recorded whole meanwhile)
  if (last == std::string_view::npos || last + 2 <= early_scanned_) return;
  for (std::size_t at = early_scanned_; at < last + 2;) {
    const std::size_t end = rest.find("\r\n", at) + 2;
    const std::string_view line = rest.substr(at, end - at);
    if (early_after_auth_) in_.mask(in_.pos() + at, in_.pos() + end);
    else mask_auth_in_line(in_.pos() + at, line);
    early_after_auth_ = early_after_auth_ || parse_command(stripped_crlf(line)).cmd.ph == phase::auth;
    at = end;
  }
  early_scanned_ = last + 2;
  if (!std::exchange(early_talk_noted_, true))
    out_.note(now, "the client sent a command before its greeting (an early talker: Postfix's postscreen "
                   "pregreet test rejects it)");
  in_.record_ahead(last + 2, now, observer_);
}

void relay_fsm::on_upstream_bytes(std::uint64_t now, std::string_view bytes) {
  if (ended_ || out_.closed(leg::upstream)) return;
  if (observer_) observer_->on_bytes(now, leg::upstream, direction::in, bytes);
  std::vector<reply> got;
  auto status = replies_.feed(bytes, got);
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (ended_ || out_.closed(leg::upstream)) break;
    if (observer_) observer_->on_reply(now, leg::upstream, direction::in, got[i]);
    const bool more_behind = i + 1 < got.size() || replies_.pending_bytes() > 0;
    if (greeted_ && more_behind && answers_relay_xclient()) {
      // The upstream starts over after its reply to XCLIENT and waits for the relay's EHLO: a
      // reply already behind it answers nothing asked, and would be taken for that EHLO's (a
      // hostile trial: "220 again" and "250 extra" in one read gave the client "250 extra").
      out_.close(leg::upstream);
      return upstream_lost(now, "upstream_protocol_error", "upstream sent more after its reply to XCLIENT, before the relay's EHLO");
    }
    if (!greeted_) take_banner(now, std::move(got[i]));
    else take_upstream_reply(now, std::move(got[i]));
    if (tls_.awaiting_upstream_handshake() && (i + 1 < got.size() || replies_.pending_bytes() > 0)) {
      // Nothing read as protected across a STARTTLS boundary (ARCHITECTURE.md, "Invariants";
      // RFC 3207 5): bytes after the upstream's 220 would be read as if they came through TLS.
      tls_.injection(now, leg::upstream, "upstream sent bytes after its 220 to STARTTLS");
      return;
    }
  }
  if (status != reply_parse_status::ok && !ended_ && !out_.closed(leg::upstream)) {
    out_.close(leg::upstream);
    upstream_lost(now, "upstream_protocol_error", to_string(status));
    return;
  }
  if (!ended_) process_client_input(now);   // input held for a reply may now proceed
}

void relay_fsm::on_client_eof(std::uint64_t now) {
  if (ended_ || client_input_ended_) return;
  client_input_ended_ = true;
  out_.arm(leg::client, disarmed);   // nothing more will come: only the upstream's timers matter now
  if (faults_.stalled()) return end_session(now, "client_closed", "the client gave up during a stall");
  process_client_input(now);    // what it sent before its FIN is still taken
  if (ended_) return;   // what it sent before its FIN may have ended the session
  // Measured from the client's last bytes, or from when the relay last resumed reading it if
  // that is later: its own pauses (a slow upstream's backlog, its recorder's, its parse cap)
  // are not the client's delay. A FIN that came with the last bytes is no later than they.
  client_gave_up_ = client_bytes_at_us_ != UINT64_MAX &&
                    now >= std::max(client_bytes_at_us_, client_reading_resumed_us_) + client_gave_up_after_us;
  if (owed_.owes_end_of_data() || faults_.holds_end_of_data() || awaiting_capture_ || bdat_end_awaits_replies_) {
    if (!owed_.owes(phase::quit)) out_.note(now, std::string(note_closed_before_end_of_data_reply));
    else if (client_gave_up_) out_.note(now, std::string(note_closed_after_quit_before_end_of_data_reply));
  }
  end_if_client_done(now);
}

void relay_fsm::on_client_gone(std::uint64_t now, std::string_view reason) {
  if (ended_) return;
  client_input_ended_ = true;
  out_.mark_closed(leg::client);   // nothing more is sent to it
  out_.arm(leg::client, disarmed);
  out_.note(now, std::string(note_client_connection_lost) + std::string(reason));
  // Replies a delay fault held for it are no longer held (flush_replies): the reply to an end
  // of data among them settles its transaction with what the destination said.
  flush_replies(now);
  end_if_client_done(now);
}

// A FIN ends the client's input: the session ends once every reply it is owed has gone out.
// A client that is gone is owed nothing, but the upstream's reply to a message already sent
// is still awaited and recorded: it says whether the message was delivered.
void relay_fsm::end_if_client_done(std::uint64_t now) {
  if (ended_ || !client_input_ended_) return;
  // The recorder's wait is dropped for a client that gave up only where a fault planned for that
  // end would act on it: a slow disk alone does not lose a message a client still reading (one
  // that sent QUIT behind it and closes its side a second later, as `nc -q 1` does) is told of.
  const bool capture_wait_dropped =
      awaiting_capture_ && (out_.closed(leg::client) || (client_gave_up_ && faults_.plans_end_of(awaiting_capture_->txn)));
  if ((client_left() && (faults_.holds_end_of_data() || bdat_end_awaits_replies_)) || capture_wait_dropped) {
    // Gone before its message was handed off, or closed its side long after its last bytes, as a
    // sender that gave up waiting does (Postfix at its timeout; no write shows that it is gone
    // while the relay sends nothing): the message's end, which a delay fault holds, or which
    // waits for the replies before it or for the recorder, is never sent, so nothing is
    // delivered that the client could not be told of, and would send again.
    drop_held_message_end(now);
    out_.note(now, std::string(out_.closed(leg::client) ? "client connection lost" : "client closed its connection") +
                       " while the end of data was held: upstream closed without it; this message was not delivered");
    // An earlier message's end went upstream (BDAT pipelines them): its reply is still awaited
    // and recorded, as for any client gone; the session ends when it comes. Nothing more of the
    // client's is taken meanwhile: the destination waits inside the held message's last chunk,
    // and the next byte sent would end it (a client that closed its side is still read).
    // A client that only closed its side still reads: it gets every reply it is owed first,
    // one a delay fault holds included (a client gone has had those released: on_client_gone).
    if (out_.closed(leg::client) ? owed_.awaiting_end_of_data() : !owed_.empty()) {
      record_rest_of_client_input(now);
      closing_reason_ = "client_closed";
      closing_detail_ = "while the end of data was held";
      return;
    }
    return end_session(now, "client_closed", "while the end of data was held");
  }
  if (client_gave_up_ && faults_.line_held()) {
    // A sender that gave up while a delay fault held its command line: the line is never
    // forwarded, nor anything behind it (a BDAT ... LAST with its chunk would deliver a message
    // it gave up on). A client gone never has it taken (process_client_input).
    abandon_held_line(now);
    record_rest_of_client_input(now);
    if (!owed_.empty()) {   // it still reads: the replies it is owed first
      closing_reason_ = "client_closed";
      closing_detail_ = "client closed its connection while a delay fault held its command";
      return;
    }
    return end_session(now, "client_closed", "client closed its connection while a delay fault held its command");
  }
  // Input still to be taken, unless the client is gone: nothing it sent is taken any more
  // (process_client_input), so a line a delay holds, or input the recorder's backlog holds, is
  // never forwarded, and waiting for it would keep the session for good.
  if (!out_.closed(leg::client) && (faults_.input_waits() || input_held_ || awaiting_capture_ || bdat_end_awaits_replies_))
    return;
  if (in_message() && in_.fully_parsed()) {
    // Client vanishes inside the message: close upstream without the dot; nothing delivered.
    // An earlier message's end went upstream before it (BDAT pipelines them): its reply is still
    // awaited and recorded, and a client that only closed its side still gets it; the session
    // ends inside this message once it is in.
    if (closing_reason_.empty())
      out_.note(now, "client closed the connection inside the message: upstream closed without end of data");
    const transaction* inside = txns_.newest();
    if (owed_.owes_end_of_data_other_than(inside ? inside->id : 0, out_.closed(leg::client))) {
      record_rest_of_client_input(now);
      closing_reason_ = "client_closed";
      closing_detail_ = "inside the message";
      return;
    }
    return end_session(now, "client_closed", "inside the message");
  }
  if (mode_ == client_mode::auth_response) {
    // The upstream waits for a response that cannot come: the exchange is over unfinished.
    out_.note(now, "client closed the connection inside an AUTH exchange");
    return end_session(now, "client_closed", "inside an AUTH exchange");
  }
  if (out_.closed(leg::client)) {
    if (owed_.awaiting_end_of_data()) return;
    return end_session(now, "client_closed", "client connection lost");
  }
  if (!owed_.empty()) return;   // replies still owed
  if (!closing_reason_.empty()) return end_session(now, closing_reason_, closing_detail_);
  if (!in_.fully_parsed() && !partial_line()) return;   // complete lines still to be taken
  end_session(now, "client_closed", "client closed its sending side");
}

void relay_fsm::drop_held_message_end(std::uint64_t now) {
  // A BDAT message's end is its withheld last byte (or empty LAST command): its reply is then
  // no longer awaited.
  const bool chunked = !withheld_bdat_.empty();
  faults_.drop_held_end_of_data(now);
  if (const auto txn = std::exchange(bdat_end_awaits_replies_, std::nullopt))
    faults_.give_back_end_plan(now, *txn, "the client was gone before it acted");
  if (const auto waited = std::exchange(awaiting_capture_, std::nullopt))
    faults_.give_back_end_plan(now, waited->txn, "the client was gone before it acted");
  withheld_bdat_.clear();
  if (chunked) owed_.withdraw_bdat_last();
}

void relay_fsm::close_after_owed(std::uint64_t now, std::string_view reason, std::string detail) {
  record_rest_of_client_input(now);   // what came with it is recorded, before the reply, never read
  closing_reason_ = std::string(reason);
  closing_detail_ = std::move(detail);
  client_input_ended_ = true;
  out_.arm(leg::client, disarmed);
  flush_replies(now);
  end_if_client_done(now);
}

void relay_fsm::on_upstream_eof(std::uint64_t now) {
  if (ended_ || out_.closed(leg::upstream)) return;
  upstream_lost(now, "upstream_closed", upstream_closed_detail);
}

void relay_fsm::on_upstream_gone(std::uint64_t now, std::string_view reason) {
  if (ended_ || out_.closed(leg::upstream)) return;
  upstream_lost(now, "upstream_closed", std::string(upstream_lost_detail) + ": " + std::string(reason));
}

// A hostile trial: plaintext bytes after the upstream's handshake ("wrong version number") were
// filed as the destination hanging up (upstream_closed, diagnose's destination_closed).
void relay_fsm::on_upstream_tls_error(std::uint64_t now, std::string_view reason) {
  if (ended_ || out_.closed(leg::upstream)) return;
  upstream_lost(now, "upstream_protocol_error", std::string(upstream_tls_broken_detail) + ": " + std::string(reason));
}

void relay_fsm::on_timeout(std::uint64_t now, leg which) {
  if (ended_) return;
  if (which == leg::client) {
    if (client_input_ended_) return;
    // While the client waits on an upstream reply (up to 10 minutes for end of data), or on
    // a reply a fault delays, or on the relay's own backpressure, it is not the slow one.
    // Inside an AUTH exchange the upstream waits on the client's response, not the reverse.
    if (!in_message() && !partial_line() && mode_ != client_mode::auth_response &&
        (owed_.awaiting_upstream() || faults_.hold_active(now) || input_held_ || awaiting_capture_)) {
      out_.arm(leg::client, options_.timeouts.client_idle);
      return;
    }
    client_timed_out(now);
    return;
  }
  out_.close(leg::upstream);
  std::string detail = "no reply from upstream in time";
  if (!greeted_ && !faults_.no_greeting_rule().empty())
    detail += std::string(injected_by_rule) + faults_.no_greeting_rule() + "': no connection was attempted)";
  upstream_lost(now, "upstream_timeout", detail);
}

void relay_fsm::on_write_stalled(std::uint64_t now, leg which, std::chrono::milliseconds waited) {
  if (ended_) return;
  const std::string detail = std::string(which == leg::upstream ? "the upstream" : "the client") + " took no data for " +
                             std::to_string(waited.count() / 1000) + " s";
  if (which == leg::upstream) {
    out_.close_with_reset(leg::upstream);
    upstream_lost(now, "upstream_timeout", detail);
    return;
  }
  ++stats_.client_timeouts;
  out_.note(now, "client timeout: " + detail);
  out_.close_with_reset(leg::client);
  end_session(now, "client_timeout", detail);
}

void relay_fsm::on_drain(std::uint64_t now) {
  if (ended_) return;
  if (faults_.stalled()) {   // a stalled session answers nothing, and would hold shutdown to its deadline
    out_.note(now, "stalled session closed by shutdown");
    return end_session(now, "drain", "stalled");
  }
  draining_ = true;
  maybe_finish_drain(now, true);
}

void relay_fsm::hold_client_input(std::uint64_t now, bool held) {
  if (ended_ || held == input_held_) return;
  input_held_ = held;
  if (!held) client_reading_resumed_us_ = now;
  if (!held) process_client_input(now);
}

void relay_fsm::on_tls_ready(std::uint64_t now, leg which, const tls_summary& tls) {
  if (ended_) return;
  if (which == leg::client) upstream_chunking_ = false;   // RFC 3207 4.2: known again from the next EHLO
  tls_.tls_ready(now, which, tls);
  // The client's handshake is its tls stage's client time: its next command's think time
  // starts where the handshake ended, not at the 220 before it.
  if (which == leg::client) think_from_us_ = std::max(think_from_us_, now);
  // On the SMTPS listener the shell dials once the client's handshake is done: the connect
  // stage is the upstream's from there, not the client's handshake before it.
  if (which == leg::client && connected_us_ == 0) dial_from_us_ = std::max(dial_from_us_, now);
}

void relay_fsm::on_upstream_plaintext_in_handshake(std::uint64_t now, std::string_view bytes) {
  if (ended_) return;
  if (observer_) observer_->on_bytes(now, leg::upstream, direction::in, bytes);
  out_.note(now, "upstream sent plaintext where its TLS handshake should be (" + std::to_string(bytes.size()) +
                     " bytes recorded, never read)");
}

void relay_fsm::on_tls_failed(std::uint64_t now, leg which, std::string_view reason) {
  if (ended_) return;
  if (which == leg::upstream) return tls_.upstream_tls_failed(now, reason);
  out_.note(now, "TLS on the client leg failed: " + std::string(reason));
  end_session(now, "client_tls_failed", reason);
}

void relay_fsm::on_upstream_reconnected(std::uint64_t now) {
  if (ended_) return;
  if (tls_.upstream_reconnected(now)) xclient_.new_connection();
}

void relay_fsm::on_abort(std::uint64_t now, std::string_view reason) {
  if (ended_) return;
  out_.note(now, "session aborted by the relay: " + std::string(reason));
  end_session(now, "relay_error", reason);
}

void relay_fsm::on_drain_deadline(std::uint64_t now) {
  if (ended_) return;
  // A message still in transfer is not delivered (its end never goes upstream); its bytes so
  // far are recorded, and the client hears why, as at any other shutdown (RFC 5321 3.8: 421).
  if (in_message()) out_.note(now, "shutdown deadline passed inside the message: upstream closed without end of data");
  else if (drain_grace_until_us_ != 0 && owed_.empty() && txns_.empty())
    out_.note(now, "shutdown deadline passed while the client's next command was awaited");
  else out_.note(now, "shutdown deadline passed with the session still busy");
  end_with_reply(now, make_reply(421, "4.3.2", options_.name + " shutting down"), "drain", "deadline passed");
}

// ---------------------------------------------------------------- the client's pace

bool relay_fsm::partial_line() const {
  if (mode_ != client_mode::command && mode_ != client_mode::auth_response) return false;
  return !in_.fully_parsed() && in_.unparsed().find("\r\n") == std::string_view::npos;
}

void relay_fsm::begin_data(std::uint64_t now) {
  mode_ = client_mode::data;
  framer_.emplace(options_.eol);
  data_started_us_ = now;
  body_backlog_us_ = 0;
  if (backlog_since_us_ != 0) backlog_since_us_ = now;   // counted from the message's start
  begin_message_input(now);
}

void relay_fsm::on_upstream_backlog(std::uint64_t now, bool backed_up) {
  if (backed_up) {
    if (backlog_since_us_ == 0) backlog_since_us_ = std::max<std::uint64_t>(now, 1);
    return;
  }
  if (mode_ == client_mode::data) body_backlog_us_ = held_back_us(now);
  backlog_since_us_ = 0;
  client_reading_resumed_us_ = now;   // the shell reads the client again
}

void relay_fsm::on_paced_upstream_write(std::uint64_t now, std::uint64_t began) { owed_.paced_write_ended(began, now); }

std::uint64_t relay_fsm::held_back_us(std::uint64_t now) const {
  return body_backlog_us_ + (backlog_since_us_ != 0 ? now - std::min(now, backlog_since_us_) : 0);
}

void relay_fsm::begin_message_input(std::uint64_t now) {
  data_budget_us_ = static_cast<std::uint64_t>(options_.timeouts.client_idle.count()) * 1000;
  data_last_read_us_ = now;
}

// Postfix's smtpd_min_data_rate: each read spends the time since the last one and earns
// n / rate seconds, never more than client_idle in all.
void relay_fsm::credit_data_rate(std::uint64_t now, std::size_t n) {
  const std::uint64_t cap = static_cast<std::uint64_t>(options_.timeouts.client_idle.count()) * 1000;
  if (options_.timeouts.min_data_rate == 0) {
    data_budget_us_ = cap;
  } else {
    std::uint64_t spent = now - std::min(now, data_last_read_us_);
    data_budget_us_ = data_budget_us_ > spent ? data_budget_us_ - spent : 0;
    data_budget_us_ = std::min(cap, data_budget_us_ + n * 1'000'000 / options_.timeouts.min_data_rate);
  }
  data_last_read_us_ = now;
}

void relay_fsm::arm_client_deadline(std::uint64_t now) {
  if (ended_ || client_input_ended_) return;
  std::uint64_t due;
  if (in_message()) {
    due = data_last_read_us_ + data_budget_us_;
  } else if (partial_line()) {
    const std::uint64_t at = in_.stream_offset();
    if (at != partial_line_at_) {   // a new line began in this read
      partial_line_at_ = at;
      partial_line_since_us_ = now;
    }
    due = partial_line_since_us_ + static_cast<std::uint64_t>(options_.timeouts.client_command.count()) * 1000;
  } else {
    due = now + static_cast<std::uint64_t>(options_.timeouts.client_idle.count()) * 1000;
  }
  // Rounded up, and never zero (zero disarms).
  const std::uint64_t left_us = due > now ? due - now : 0;
  out_.arm(leg::client, milliseconds(std::max<std::uint64_t>(1, (left_us + 999) / 1000)));
}

void relay_fsm::client_timed_out(std::uint64_t now) {
  ++stats_.client_timeouts;
  std::string detail;
  if (in_message()) {
    detail = options_.timeouts.min_data_rate > 0
                 ? "message data slower than " + std::to_string(options_.timeouts.min_data_rate) + " bytes/s"
                 : "no message data in time";
  } else if (partial_line()) {
    detail = "command line not completed in " + std::to_string(options_.timeouts.client_command.count() / 1000) + " s";
  } else {
    detail = "idle";
  }
  out_.note(now, "client timeout: " + detail);
  end_with_reply(now, make_reply(421, "4.4.2", options_.name + " timeout waiting for client input"), "client_timeout",
                 detail);
}

// The size of the message in transfer, as received so far (the session ends inside it).
void relay_fsm::record_received_size() {
  if (mode_ == client_mode::bdat_payload) {   // counted as declared at its command: less what never came
    if (transaction* t = txns_.find(bdat_txn_)) t->rec.size -= std::min(t->rec.size, std::exchange(bdat_remaining_, 0));
    return;
  }
  if (mode_ != client_mode::data || !framer_) return;
  if (transaction* t = txns_.open()) t->rec.size = framer_->message_bytes();
}

// ---------------------------------------------------------------- client input

void relay_fsm::process_client_input(std::uint64_t now) {
  // The shell's reading paused at the parse cap goes on once this parse has brought the input
  // under it (report_client_pause): from now, as far as a FIN's timing goes (client_gave_up_).
  struct resume_check {
    relay_fsm& fsm;
    std::uint64_t now;
    ~resume_check() {
      if (fsm.client_paused_ && !fsm.in_.above_watermark()) fsm.client_reading_resumed_us_ = now;
    }
  } resumed{*this, now};
  // Lines waiting while the relay secures the upstream leg (its EHLO and STARTTLS, the
  // handshake) or identifies the client (XCLIENT) wait on the upstream: the span is kept for
  // handle_command, which gives each line the part of it after its arrival.
  if (greeted_ && !upstream_prepared()) {
    if (!waiting_on_upstream_ && !in_.fully_parsed()) {
      waiting_on_upstream_ = true;
      upstream_wait_from_us_ = now;
    }
  } else if (waiting_on_upstream_) {
    waiting_on_upstream_ = false;
    upstream_wait_to_us_ = now;
  }
  if (!greeted_ || !upstream_prepared() || input_held_) return;   // early talkers wait for the banner
  if (faults_.holds_conversation()) return;
  if (out_.closed(leg::client)) return;   // gone: nothing it sent is relayed any more
  if (faults_.line_waits(now)) return;   // delay(when=command): the line waits where it is
  bool progress = true;
  // A fault can hold (the dot) or stop (close, reset, stall) the conversation mid-buffer:
  // nothing pipelined after that point may be taken.
  // A message's end waiting for the recorder (await_capture) holds everything after it.
  while (progress && !ended_ && !in_.fully_parsed() && !faults_.stops_parsing() && !awaiting_capture_ &&
         !bdat_end_awaits_replies_) {
    switch (mode_) {
      case client_mode::command: progress = take_command_line(now); break;
      case client_mode::data: take_data(now); progress = mode_ != client_mode::data; break;
      case client_mode::bdat_payload:
        take_bdat_payload(now);
        progress = mode_ != client_mode::bdat_payload;
        break;
      case client_mode::auth_response: progress = take_auth_response(now); break;
      case client_mode::starttls:
        // ARCHITECTURE.md, "Invariants" (RFC 3207 5): nothing the client sends between STARTTLS and its handshake may be read as protected.
        tls_.injection(now, leg::client, "client sent bytes before the TLS handshake");
        progress = false;
        break;
      case client_mode::awaiting_data_go:
      case client_mode::awaiting_auth: progress = false; break;
    }
  }
  record_consumed_client_input(now);
  end_if_client_done(now);
}

void relay_fsm::record_consumed_client_input(std::uint64_t now) { in_.record_parsed(now, observer_); }

void relay_fsm::mask_unparsed_auth() {
  // In a message the rest is message data. Otherwise it is command lines: an AUTH command's
  // initial response is masked, and so is everything after an AUTH command or inside an AUTH
  // exchange (its responses), to the end of what is recorded unparsed.
  if (in_message() || mode_ == client_mode::awaiting_data_go) return;
  const std::string_view rest = in_.unparsed();
  const std::size_t base = in_.pos();
  unparsed_secret_ = unparsed_secret_ || mode_ == client_mode::awaiting_auth || mode_ == client_mode::auth_response;
  for (std::size_t at = 0; at < rest.size();) {
    const std::size_t lf = rest.find('\n', at);
    const std::size_t end = lf == std::string_view::npos ? rest.size() : lf + 1;
    const std::string_view line = stripped_crlf(rest.substr(at, end - at));
    if (unparsed_secret_) {
      in_.mask(base + at, base + end);
    } else if (const auto sp = find_separator(line); sp != std::string_view::npos && iequals(line.substr(0, sp), "AUTH")) {
      unparsed_secret_ = true;
      if (const auto ir = auth_initial_response_at(line); ir != std::string_view::npos) in_.mask(base + at + ir, base + end);
    }
    at = end;
  }
}

void relay_fsm::record_rest_of_client_input(std::uint64_t now) {
  mask_unparsed_auth();
  in_.record_and_drop_rest(now, observer_);
}

// QUIT ends the session (RFC 5321 4.1.1.10) and a pipelined group (RFC 2920 3.1): what the
// client sends after it is recorded as it came, never relayed or taken as commands, as
// Postfix's smtpd never reads it.
bool relay_fsm::ignore_after_quit(std::uint64_t now) {
  mask_unparsed_auth();   // recorded, never parsed: "QUIT\r\nAUTH PLAIN ..." keeps its secret
  in_.advance(in_.unparsed().size());
  if (!std::exchange(after_quit_noted_, true))
    out_.note(now, "the client sent bytes after QUIT: recorded, not relayed (QUIT ends the session)");
  return false;
}

bool relay_fsm::take_command_line(std::uint64_t now) {
  if (quit_taken_) return ignore_after_quit(now);
  // The upstream is gone while a delay holds replies it gave: a new command could never be
  // answered. It waits; the held replies go out, then the session ends (flush_replies).
  if (out_.closed(leg::upstream) && !owed_.empty() && !owed_.awaiting_upstream() && faults_.hold_active(now))
    return false;
  if (owed_.size() >= limits::pipelined_commands_cap) return false;
  std::string_view rest = in_.unparsed();
  // A BDAT pipelined behind EHLO (RFC 2920 3.1 ends a group at EHLO; some clients go on) waits
  // for EHLO's reply: only that says whether the destination takes BDAT at all
  // (refuse_bdat_without_chunking). Judged before it, a destination offering CHUNKING was
  // recorded as one without (a hostile trial).
  if (rest.size() > 5 && iequals(rest.substr(0, 5), "BDAT ") && owed_.owes(phase::ehlo)) return false;
  // Only CRLF ends a command line (RFC 5321 2.3.8). A bare LF inside it does not: the whole
  // line to its CRLF is refused, so nothing after a bare LF reaches the upstream as a
  // command of its own (parse_command flags it, like a bare CR).
  auto crlf = rest.find("\r\n");
  if (crlf == std::string_view::npos) {
    if (rest.size() > limits::command_line_hard_cap) {
      // Recorded below as consumed input: an over-long AUTH line still hides its response.
      if (auto at = auth_initial_response_at(rest); at != std::string_view::npos)
        in_.mask(in_.pos() + at, in_.size());
      in_.advance_to_end();
      ++stats_.refused_commands;
      out_.note(now, "command line over " + std::to_string(limits::command_line_hard_cap) + " bytes without CRLF");
      local_reply(now, phase::other, 500, "5.5.2", "Line too long");
      close_after_owed(now, "protocol_error", "command line too long");
    }
    return false;
  }
  std::string_view line = rest.substr(0, crlf + 2);
  bool well_formed = line.size() <= limits::command_line_accepted;
  parsed_command parsed;
  std::optional<fault_decision> decided;   // a fault for this line (a verdict, or rewrites only)
  // Draining with nothing owed: the line is answered 421 (handle_command) before any fault rule
  // sees it; a rule answering MAIL would open a transaction the drain then waited on.
  bool drain_answers = false;
  // A line taken later than it came (held while the relay secured the upstream leg, or while
  // its recorder caught up) was the relay's time from its read on, not the client's.
  std::uint64_t arrived = std::min(now, client_bytes_at_us_);
  if (faults_.line_held()) {
    arrived = faults_.held_line_since();
    parsed = faults_.take_held_line(now, decided);   // parsed when it was held
    // The MAIL ahead of it may have been refused during the hold (a 550): a RCPT is that
    // attempt's recipient, as one pipelined and never held is; another command ends the
    // attempt's record. A hostile trial: the held RCPT went upstream, in no record.
    if (parsed.fault == command_fault::none) follow_held_refusal(parsed.cmd);
  } else if (well_formed) {
    parsed = parse_command(line.substr(0, line.size() - 2));
    // Before any fault answers it. (A RCPT is held only inside an open transaction, where this
    // lists it nowhere: it follows once, when taken, above or in abandon_held_line.)
    if (parsed.fault == command_fault::none) follow_held_refusal(parsed.cmd);
    drain_answers = drain_answers_with_421(parsed.cmd.ph);
    if (parsed.fault == command_fault::none && !drain_answers && faults_.hold_line(now, arrived, line, parsed, decided)) {
      // The line waits for its delay, recorded as it came (masked as below).
      mask_auth_in_line(in_.pos(), line);
      in_.record_ahead(line.size(), now, observer_);
      return false;
    }
  }
  std::size_t line_start = in_.pos();
  in_.advance(line.size());
  mask_auth_in_line(line_start, line);
  ++stats_.commands;
  if (!well_formed) {
    ++stats_.refused_commands;
    if (observer_) observer_->on_command(now, escape_bytes(redacted_auth_command(stripped_crlf(line))));
    out_.note(now, "command refused: line too long");
    if (too_many_refusals(now)) return true;
    local_reply(now, phase::other, 500, "5.5.2", "Line too long");
    flush_replies(now);
    return true;
  }
  if (faults_.refusing() && parsed.fault != command_fault::http_request) {   // HTTP closes even a refused session
    faults_.answer_refused_session(now, stripped_crlf(line), parsed.cmd);
    return true;
  }
  line_arrived_us_ = arrived;
  const bool anew = !drain_answers && begins_anew(parsed);
  if (drain_answers || !faults_.take_decided_line(now, line, parsed, decided))
    handle_command(now, line, parsed);   // else answered, stopped or masked
  if (anew) client_began_anew();
  line_arrived_us_ = UINT64_MAX;
  return true;
}

// One more command the relay refused itself: at limits::relay_hard_errors the session closes
// with 421 4.7.0 in that command's place, as Postfix's smtpd does at smtpd_hard_error_limit.
bool relay_fsm::too_many_refusals(std::uint64_t now) {
  if (++own_refusals_ < limits::relay_hard_errors) return false;
  out_.note(now, std::to_string(limits::relay_hard_errors) + " commands refused by the relay: session closed");
  local_reply(now, phase::other, 421, "4.7.0", options_.name + " Error: too many errors");
  close_after_owed(now, "protocol_error", "too many commands refused by the relay");
  return true;
}

// Mask an AUTH exchange's line, or an AUTH initial response, before deciding anything else:
// lines refused (too long) or held by a delay are recorded too, and used to reach the
// recorder with the credentials.
void relay_fsm::mask_auth_in_line(std::size_t line_start, std::string_view line) {
  if (auth_open_) in_.mask(line_start, line_start + line.size());
  if (auto at = auth_initial_response_at(stripped_crlf(line)); at != std::string_view::npos)
    in_.mask(line_start + at, line_start + line.size());
}

bool relay_fsm::begins_anew(const parsed_command& parsed) {
  if (parsed.fault != command_fault::none) return false;   // refused: nothing begins
  switch (parsed.cmd.ph) {
    case phase::rset:
    case phase::ehlo:
    case phase::helo: return true;
    case phase::mail: return txns_.open() == nullptr;   // inside a transaction it is refused (503)
    default: return false;
  }
}

void relay_fsm::client_began_anew() {
  bdat_message_refused_ = false;
  // A message still open here and upstream (its RSET, EHLO or HELO answered by a fault, never
  // forwarded) keeps the fault planned for its end: the client may still finish it.
  if (const transaction* open = txns_.open(); open && !faults_.absorbing() && faults_.plans_end_of(open->id)) return;
  faults_.end_absorbed_message();
}

void relay_fsm::handle_command(std::uint64_t now, std::string_view line, const parsed_command& parsed, bool announce) {
  const command& cmd = parsed.cmd;
  std::string_view body = stripped_crlf(line);
  if (announce) announce_command(now, body, cmd);
  if (cmd.ph == phase::quit && parsed.fault == command_fault::none) quit_taken_ = true;
  // A refused command is never forwarded; its reply keeps its place in the pipeline.
  // Only a refused RCPT keeps its phase, so the transaction records it against the address.
  auto refuse = [&](int code, std::string_view enh, std::string_view text, std::string_view why) {
    ++stats_.refused_commands;
    out_.note(now, std::string("command refused: ") + std::string(why));
    if (too_many_refusals(now)) return;
    local_reply(now, cmd.ph == phase::rcpt ? phase::rcpt : phase::other, code, enh, text);
    flush_replies(now);
  };
  // An HTTP request (a browser or proxy on the SMTP port): its headers and body would follow
  // as commands, so a web form could send mail through the relay. Like Postfix's
  // smtpd_forbidden_commands: 221 2.7.0 and close, reading and forwarding nothing more (the
  // request's headers, its body); the replies owed to commands pipelined before it come first.
  auto close_for_http = [&] {
    ++stats_.refused_commands;
    std::string why = is_http_verb(cmd.verb) ? "HTTP request (" + cmd.verb + ")" : "HTTP header line";
    out_.note(now, "command refused: " + why + "; session closed");
    local_reply(now, phase::other, 221, "2.7.0", options_.name + " Error: I can break rules, too. Goodbye.");
    close_after_owed(now, "http_command", why);
  };
  switch (parsed.fault) {
    case command_fault::none: break;
    case command_fault::nul_byte: return refuse(500, "5.5.2", "Syntax error: NUL in command", "NUL byte");
    case command_fault::bare_cr: return refuse(500, "5.5.2", "Syntax error: bare CR in command", "bare CR");
    case command_fault::bare_lf: return refuse(500, "5.5.2", "Syntax error: bare LF in command", "bare LF");
    case command_fault::leading_space:
      return refuse(500, "5.5.2", "Syntax error: white space before the command", "white space before the verb");
    case command_fault::http_request: return close_for_http();
    case command_fault::forbidden_verb:
      return refuse(500, "5.5.1", "Command not recognized", "verb never forwarded: " + cmd.verb);
    case command_fault::starttls_parameters:
      return refuse(501, "5.5.4", "Syntax error (no parameters allowed)", "STARTTLS with a parameter");
    case command_fault::bad_bdat:
      // RFC 3030: the chunk size frames the bytes that follow; without it nothing is safe.
      ++stats_.refused_commands;
      out_.note(now, "command refused: bad BDAT");
      local_reply(now, phase::other, 501, "5.5.4", "Syntax error in BDAT parameters");
      close_after_owed(now, "protocol_error", "unparseable BDAT size");
      return;
  }
  if (drain_answers_with_421(cmd.ph)) {
    maybe_finish_drain(now, true);   // answers this command
    return;
  }
  if (cmd.ph == phase::starttls) {
    tls_.client_starttls(now);   // starttls_sequencer: never passed through blind
    return;
  }
  transaction* open = txns_.open();
  // A message a fault answers has no transaction upstream (the relay's RSET went in its place:
  // fault_holds::plan_end_of_data), so a MAIL inside it would open one there that the relay
  // does not record, and the message after it would go upstream with what the fault kept. The
  // upstream would refuse a MAIL inside its own transaction (RFC 5321 4.1.4): refused here.
  if (cmd.ph == phase::mail && open && faults_.absorbing())
    return refuse(503, "5.5.1", "Error: nested MAIL command", "MAIL inside a message a fault answers");
  bool rcpt_recorded = false;
  if (cmd.ph == phase::rcpt && open) {
    rcpt_recorded = record_recipient(now, *open, cmd.address.value_or(cmd.argument));
    if (open->rcpts_forwarded >= limits::recipients_cap) {
      ++stats_.refused_commands;
      out_.note(now, "command refused: recipient limit reached");
      local_reply(now, phase::rcpt, 452, "4.5.3", "Too many recipients");
      if (rcpt_recorded) owed_.back().asked.txn = open->id;   // its code is recorded against this transaction
      flush_replies(now);
      return;
    }
    ++open->rcpts_forwarded;
  }

  reply_slot p;
  p.asked.ph = cmd.ph;
  if (cmd.ph == phase::ehlo || cmd.ph == phase::helo) p.asked.hello = std::string(body);   // for a reconnect
  p.asked.t_received = std::min(line_arrived_us_, now);
  p.asked.t_forwarded = now;
  // Held while the upstream leg was being secured: that wait is the upstream's part of the
  // stage (its handshake), not the relay's (a newcomer's trial: an SMTPS client's EHLO showed
  // the upstream's handshake as relay time). A delay fault's hold after it stays the relay's.
  if (p.asked.t_received < upstream_wait_to_us_)
    p.asked.upstream_wait_us = upstream_wait_to_us_ - std::max(p.asked.t_received, upstream_wait_from_us_);
  p.asked.txn = open && (cmd.ph != phase::rcpt || rcpt_recorded) ? open->id : 0;
  faults_.remember_address(p, cmd);
  switch (cmd.ph) {
    case phase::mail:
      // A MAIL inside an open transaction gets the upstream's 503 and must not settle it.
      p.asked.txn = open ? 0 : begin_transaction(now, cmd);
      break;
    case phase::rset:
    case phase::ehlo:
    case phase::helo:
      if (open) open->sealed = true;   // aborted when this command's reply arrives
      if (cmd.ph != phase::rset) upstream_chunking_ = false;   // until the reply to this one offers it
      break;
    case phase::data:
      // A fault that answers the message itself takes it here, before any of it goes upstream.
      if (open && faults_.plan_end_of_data(now, *open, false)) return;
      mode_ = client_mode::awaiting_data_go;
      break;
    case phase::bdat:
      if (!upstream_chunking_) return refuse_bdat_without_chunking(now);
      if (!open && (bdat_message_refused_ || faults_.absorbing())) {
        // More of a message whose chunk was refused: relayed (the upstream answers it), or
        // refused here when a fault was answering it (fault_holds::finish_absorbed_bdat), and
        // recorded as bytes only; its transaction is over.
      } else if (!open) {   // BDAT without MAIL: the upstream will refuse it; still recorded
        p.asked.txn = begin_transaction(now, cmd);
        open = txns_.open();
        open->rec.without_mail = true;   // its empty sender is no MAIL FROM:<>
      } else if (open->rec.size == 0 && !faults_.absorbing() && faults_.plan_end_of_data(now, *open, true)) {
        faults_.absorb_message();   // the first chunk: the whole message is answered by the fault
      }
      begin_message_input(now);
      if (open) open->rec.size += cmd.bdat_size;
      expect_bdat_payload(cmd, !faults_.absorbing());
      if (faults_.absorbing()) return take_empty_bdat_chunk(now);
      p.asked.last_chunk = cmd.bdat_last;
      // The message's end is held like the dot (end_of_bdat_message): here the chunk's last
      // byte, or for an empty last chunk the command itself.
      if (cmd.bdat_last && open) open->sealed = true;
      if (cmd.bdat_last && cmd.bdat_size == 0) withheld_bdat_.assign(line);
      break;
    case phase::auth:
    {
      auth_open_ = true;
      mode_ = client_mode::awaiting_auth;
      auto sp = find_separator(cmd.argument);
      auth_mechanism_ = to_upper(cmd.argument.substr(0, sp));
      bool names_user = auth_mechanism_ == "PLAIN" || auth_mechanism_ == "LOGIN";
      auth_username_pending_ = names_user && sp == std::string::npos;
      if (names_user && sp != std::string::npos) note_auth_username(now, cmd.argument.substr(sp + 1));
      break;
    }
    default: break;
  }
  owed_.push(std::move(p));
  if (withheld_bdat_.empty()) out_.send(leg::upstream, line, now, cmd.ph == phase::auth);
  arm_upstream_for_head();
  take_empty_bdat_chunk(now);
}

// BDAT where the destination did not offer CHUNKING (RFC 3030 2: a client MUST NOT send it
// then), or after HELO: a destination that does not know BDAT answers it 500 and reads its chunk
// as commands, so a chunk of "RSET, MAIL, RCPT, DATA ..." pipelined behind it would be a message
// the client smuggled past the relay (a hostile trial delivered one through aiosmtpd). Answered
// 502 and closed, as a bad BDAT line is: what follows (its chunk) is recorded, never read, never
// forwarded; the replies owed to the commands before it go first (RFC 2920 3.1).
void relay_fsm::refuse_bdat_without_chunking(std::uint64_t now) {
  ++stats_.refused_commands;
  out_.note(now, "command refused: BDAT, which the destination did not offer (no CHUNKING in its EHLO reply); "
                 "session closed");
  local_reply(now, phase::other, 502, "5.5.1", "Error: BDAT not offered (the destination has no CHUNKING); closing connection");
  close_after_owed(now, "protocol_error", "BDAT without CHUNKING offered");
}

void relay_fsm::expect_bdat_payload(const command& cmd, bool forward) {
  // The chunk's transaction: the open one, whoever reads the chunk (relayed, or taken by a
  // fault); none after a refused chunk (bdat_message_refused_).
  const transaction* open = txns_.open();
  bdat_txn_ = open ? open->id : 0;
  bdat_remaining_ = cmd.bdat_size;
  bdat_last_ = cmd.bdat_last;
  discard_payload_ = !forward;
  mode_ = client_mode::bdat_payload;
}

// A zero-length chunk is complete now: "BDAT 0 LAST" used to leave the session in payload
// mode until the client sent more bytes (blocking drain, and losing the Message-ID).
void relay_fsm::take_empty_bdat_chunk(std::uint64_t now) {
  if (mode_ == client_mode::bdat_payload && bdat_remaining_ == 0) take_bdat_payload(now);
}

void relay_fsm::announce_command(std::uint64_t now, std::string_view body, const command& cmd) {
  if (!observer_) return;
  // An AUTH line is redacted whatever its phase reads as (white space before the verb makes it "other").
  if (cmd.ph == phase::auth) observer_->on_command(now, redacted_auth_command(body));
  else if (auth_initial_response_at(body) != std::string_view::npos)
    observer_->on_command(now, escape_bytes(redacted_auth_command(body), limits::command_line_accepted));
  else observer_->on_command(now, escape_bytes(body, limits::command_line_accepted));
}

void relay_fsm::take_data(std::uint64_t now) {
  const bool failed_before = data_failure_.has_value();
  std::string forward;
  std::string_view rest = in_.unparsed();
  forward.reserve(rest.size());   // what came, or less (the terminator is not copied): one allocation
  const std::size_t used = framer_->feed(rest, forward);
  in_.advance(used);
  if (failed_before) failed_message_read_ += used;
  const bool dot_split = framer_->ended() && in_.dot_was_split();
  // The client's bytes are recorded before the relay's copy of them: the capture then
  // records that copy by reference to them (captures/FORMAT.md `bytes_ref`).
  record_consumed_client_input(now);
  if (auto* t = txns_.open()) t->headers.feed(forward);
  if (!forward.empty() && !data_failure_ && !faults_.absorbing()) out_.send_owned(leg::upstream, std::move(forward), now);
  if (framer_->fault() != data_fault::none && !data_failure_) {
    std::string why(to_string(framer_->fault()));
    out_.note(now, "message refused: " + why + "; upstream closed without end of data");
    data_failure_ = make_reply(550, "5.6.0", "Message refused by " + options_.name + ": " + why);
    out_.close(leg::upstream);   // the only way out of DATA that delivers nothing
    // The session ends once the 550 is out (nothing more can be relayed): the client's doing.
    remember_upstream_loss("protocol_error", "message refused: " + why);
  }
  if (framer_->ended()) {
    failed_message_read_ = 0;
    if (dot_split && faults_.withhold_split_dot(now)) return;
    return end_of_data(now);
  }
  bound_failed_message(now);
}

// A failed message (data_failure_, or a BDAT chunk whose upstream is gone) is read to its end
// so that the end can be answered, but not for ever: past limits::failed_message_read_max bytes
// read after the failure the client hears 421 and the session ends, as the upstream's loss (or
// the refusal) would have ended it after the message.
void relay_fsm::bound_failed_message(std::uint64_t now) {
  if (failed_message_read_ <= limits::failed_message_read_max) return;
  std::string detail = "the message failed";
  if (data_failure_) detail += " (" + std::to_string(data_failure_->code) + " " + data_failure_->text() + ")";
  else if (out_.closed(leg::upstream)) detail += " (" + upstream_lost_reason_ + ")";
  detail += " and " + std::to_string(failed_message_read_) + " more bytes of it came without its end";
  out_.note(now, detail);
  const std::string reason = out_.closed(leg::upstream) && !upstream_lost_reason_.empty() ? upstream_lost_reason_ : "protocol_error";
  failed_message_read_ = 0;
  // Out of the message (a DATA message's size so far recorded), back to command mode.
  const bool in_chunk = mode_ == client_mode::bdat_payload;
  if (mode_ == client_mode::data) close_message(now);
  mode_ = client_mode::command;
  bdat_remaining_ = 0;
  discard_payload_ = false;
  // The chunk's BDAT is owed the failure (the destination's early reply, as it gave it):
  // answered now, without the rest of the chunk, and the session ends after it.
  if (in_chunk && data_failure_) return answer_failed_chunk(now);
  // The destination's own early refusal (its 552, say) is the transaction's verdict.
  if (data_failure_ && std::exchange(data_failure_from_upstream_, false))
    if (const transaction* t = txns_.open())
      finish_transaction(now, t->id, outcome_of_code(data_failure_->code), data_failure_, false);
  data_failure_.reset();
  // The 421 goes after any reply still owed (a BDAT chunk's before this one, a reply a delay
  // fault holds), in order (RFC 2920 3.1).
  local_reply(now, phase::other, 421, "4.3.0", options_.name + " closing connection: the message failed and " +
                                                   std::to_string(limits::failed_message_read_max) +
                                                   " more bytes came without its end");
  close_after_owed(now, reason, detail);
}

// The DATA message is in (its dot seen, or withheld by a fault): its size as framed, its
// Message-ID, the body stage; the client is back in command mode.
transaction* relay_fsm::close_message(std::uint64_t now) {
  mode_ = client_mode::command;
  transaction* t = txns_.open();
  if (t) {
    t->rec.size = framer_->message_bytes();
    take_message_id(*t);
    t->sealed = true;
  }
  // The sender's transfer, less the time the upstream's backlog held it back (a hostile trial:
  // an upstream that stopped reading for 3 s was charged to the sender as transfer time).
  const std::uint64_t took = now - data_started_us_;
  const std::uint64_t held = std::min(held_back_us(now), took);
  body_backlog_us_ = 0;
  if (backlog_since_us_ != 0) backlog_since_us_ = now;
  if (observer_) observer_->on_stage({phase::body, data_started_us_, took, held, 0, took - held});
  think_from_us_ = std::max(think_from_us_, now);   // the body stage counted the sender's time up to here
  framer_.reset();
  return t;
}

// The end of the message also ends its header section (RFC 5322 3.5: the body is optional).
// Without this a header-only message's last field, often Message-ID, was never taken: the
// scanner only takes a field when the next line starts.
void relay_fsm::take_message_id(transaction& t) {
  t.headers.feed("\r\n");
  t.rec.message_id = t.headers.message_id();
}

void relay_fsm::end_of_data(std::uint64_t now) {
  mode_ = client_mode::command;
  stats_.normalized_line_endings += framer_->normalized();
  stats_.long_data_lines += framer_->long_lines();
  if (framer_->normalized() > 0 || framer_->nuls_replaced() > 0)
    out_.note(now, "normalized " + std::to_string(framer_->normalized()) + " bare CR/LF to spaces" +
                  (framer_->nuls_replaced() ? ", " + std::to_string(framer_->nuls_replaced()) + " NUL to spaces" : ""));
  if (framer_->long_lines() > 0)   // forwarded unchanged, as Postfix and Exim accept them
    out_.note(now, std::to_string(framer_->long_lines()) + " message line(s) over " + std::to_string(limits::data_line_rfc_max) +
                  " octets (RFC 5321 4.5.3.1.6), longest " + std::to_string(framer_->longest_line()) + ": forwarded unchanged");
  transaction* t = close_message(now);
  const std::uint64_t id = t ? t->id : 0;
  if (wait_for_capture(message_end::data, id, now)) return;
  release_end_of_data(now, id, now);
}

bool relay_fsm::wait_for_capture(message_end kind, std::uint64_t txn, std::uint64_t arrived) {
  if (!options_.end_waits_for_capture || capture_failed_ || (kind == message_end::data && data_failure_)) return false;
  awaiting_capture_ = capture_wait{kind, txn, arrived};
  out_.push(await_capture{});
  return true;
}

void relay_fsm::on_capture_settled(std::uint64_t now, bool capture_failed) {
  if (ended_ || !awaiting_capture_) return;
  const capture_wait waited = *std::exchange(awaiting_capture_, std::nullopt);
  if (capture_failed) capture_failed_ = true;
  if (waited.kind == message_end::data) release_end_of_data(now, waited.txn, waited.arrived_us);
  else release_bdat_message(now, txns_.find(waited.txn));
  process_client_input(now);   // what the client pipelined after the message waited too
  end_if_client_done(now);     // its input ended meanwhile: the session may be over now
}

// `arrived`: when the dot came. Its stage starts there, not where the capture let it go: a
// QUIT pipelined after it (Postfix does) was taken meanwhile, and the two stages swapped starts.
void relay_fsm::release_end_of_data(std::uint64_t now, std::uint64_t id, std::uint64_t arrived) {
  transaction* t = txns_.find(id);
  if (!data_failure_ && capture_failed_) {
    // The capture failed in DATA: the dot is not sent, the client gets 451 4.3.0 (README,
    // "Outcomes": no message is delivered that the capture cannot show).
    out_.note(now, "capture cannot be written: end of data withheld, upstream closed");
    data_failure_ = make_reply(451, "4.3.0", options_.name + " cannot record this message; try again later");
    out_.close(leg::upstream);
  }
  if (!data_failure_ && faults_.end_of_data(now, t, arrived)) return;
  // Failed before its dot could go (refused for its line endings, the upstream's reply or loss
  // while the recorder held the dot): a fault planned for its end never acts, and is given back.
  if (data_failure_) faults_.give_back_end_plan(now, id, "the message failed before its end");
  faults_.stop_absorbing();
  if (!data_failure_ && faults_.message(now, t)) return;
  forward_end_of_data(now, id, arrived);
}

// The message failed before its end went upstream (data_failure_): the dot is answered with
// that failure, the upstream's own reply as it gave it when it was the upstream's. `arrived`:
// when the dot came (its stage starts there, as a forwarded dot's does: a delay fault's hold
// is the relay's time, not the sender's think time).
void relay_fsm::answer_failed_message(std::uint64_t now, std::uint64_t id, std::uint64_t arrived) {
  reply r = std::move(*data_failure_);
  data_failure_.reset();
  local_reply(now, phase::data_end, r.code, r.enhanced, r.text());
  owed_.back().asked.txn = id;
  owed_.back().asked.t_received = std::min(arrived, now);
  if (std::exchange(data_failure_from_upstream_, false)) {
    owed_.back().answer.local = false;
    owed_.back().answer.bytes = r.raw;
    owed_.back().answer.parsed = std::move(r);
  }
  flush_replies(now);
}

void relay_fsm::forward_end_of_data(std::uint64_t now, std::uint64_t txn, std::uint64_t arrived) {
  // Failed before the dot could go (refused for its line endings; the upstream replied, or was
  // lost, while the recorder held it): never sent.
  if (data_failure_) return answer_failed_message(now, txn, arrived);
  if (transaction* t = txns_.find(txn)) t->end_sent = true;
  reply_slot& slot = owed_.expect(now, phase::data_end, command_kind::relayed, txn);
  slot.asked.t_received = std::min(arrived, now);
  slot.asked.t_forwarded = now;
  if (const std::uint64_t gap_us = faults_.plan().split_dot_gap_us; gap_us > 0) {
    // slice split_dot: the '.' and its CRLF leave as separate segments (what trips CSCds90792).
    out_.send(leg::upstream, ".", now);
    out_.push(segment_break{leg::upstream, std::chrono::microseconds(gap_us)});
    out_.send(leg::upstream, "\r\n", now);
  } else {
    out_.send(leg::upstream, ".\r\n", now);
  }
  arm_upstream_for_head();
}

void relay_fsm::take_bdat_payload(std::uint64_t now) {
  std::string_view rest = in_.unparsed();
  std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(bdat_remaining_, rest.size()));
  // Owned: the client's bytes are recorded before the relay's copy of them (as in take_data),
  // and recording lets go of the input buffer `rest` views.
  std::string chunk(rest.substr(0, n));
  in_.advance(n);
  record_consumed_client_input(now);
  bdat_remaining_ -= n;
  if (data_failure_ || out_.closed(leg::upstream)) failed_message_read_ += n;   // a failed chunk
  // BDAT LAST sealed it, and the payload still belongs to it; gone when a chunk was refused.
  transaction* t = txns_.find(bdat_txn_);
  if (t) t->headers.feed(chunk);
  if (!out_.closed(leg::upstream) && n > 0 && !discard_payload_) {
    if (bdat_last_ && bdat_remaining_ == 0) {   // the message's last byte waits (end_of_bdat_message)
      withheld_bdat_.assign(chunk, chunk.size() - 1);
      chunk.pop_back();
    }
    out_.send_owned(leg::upstream, std::move(chunk), now);
  }
  if (bdat_remaining_ > 0) return bound_failed_message(now);
  failed_message_read_ = 0;
  mode_ = client_mode::command;
  if (bdat_last_ && t) take_message_id(*t);
  const bool discarded = std::exchange(discard_payload_, false);
  if (discarded && data_failure_) answer_failed_chunk(now);
  else if (discarded && faults_.absorbing()) faults_.finish_absorbed_bdat(now, bdat_last_);
  else if (!discarded && bdat_last_) end_of_bdat_message(now, t);
}

// The whole message is in and the last of it not yet upstream: what the dot's release is to
// DATA (end_of_data), this is to BDAT. A capture that cannot be written, a delay, disconnect,
// reset or stall at data_end and a message-stage fault (fail_then_pass by Message-ID) all act
// here, before the upstream can complete the message.
void relay_fsm::end_of_bdat_message(std::uint64_t now, transaction* t) {
  if (t && !out_.closed(leg::upstream) && wait_for_capture(message_end::bdat, t->id, now)) return;
  release_bdat_message(now, t);
}

void relay_fsm::release_bdat_message(std::uint64_t now, transaction* t) {
  // The upstream went away mid-chunk (upstream_lost answered), or said 421 to a reply the end
  // waited for (upstream_said_421 answers): nothing more goes to it.
  if (out_.closed(leg::upstream) || upstream_said_421_) {
    withheld_bdat_.clear();
    if (t) faults_.give_back_end_plan(now, t->id, "the upstream was lost before the message's end");
    return;
  }
  if (!t) {
    // Its transaction already failed (the upstream refused an earlier chunk), so nothing can be
    // delivered; the chunk is still completed upstream, or its count and the next command
    // would be read out of step.
    release_withheld_bdat(now, 0);
    return;
  }
  if (capture_failed_) {
    out_.note(now, "capture cannot be written: the last BDAT chunk is withheld, upstream closed");
    withheld_bdat_.clear();
    owed_.withdraw_bdat_last();
    local_reply(now, phase::data_end, 451, "4.3.0", options_.name + " cannot record this message; try again later");
    owed_.back().asked.txn = t->id;
    close_upstream_once_answered(now);
    return;
  }
  if ((faults_.plans_end_of(t->id) || faults_.plan().decides_messages) && replies_before_message_owed(*t)) {
    // Pipelined "MAIL, RCPT, BDAT n LAST": with every recipient refused the upstream refuses the
    // message and a fault at its end is not applied, as DATA's 554 leaves it unapplied; which it
    // is, the replies before the last chunk say. Nothing after the chunk is taken meanwhile.
    bdat_end_awaits_replies_ = t->id;
    return;
  }
  if (faults_.hold_bdat_end(now, *t)) return;
  if (faults_.message(now, t)) return;
  release_withheld_bdat(now, t->id);
}

// A reply that refuses what it answers: a failure, or a 221 to anything but QUIT, the server
// closing the channel as its 421 would (take_upstream_reply).
bool relay_fsm::refuses(const reply_request& asked, const reply& r) {
  return r.klass() != 2 || (r.code == 221 && asked.ph != phase::quit);
}

bool relay_fsm::replies_before_message_owed(const transaction& t) const {
  return t.rec.rcpt_codes.size() < t.rec.rcpt_to.size() || owed_.owes(phase::mail, t.id);
}

// Whether the destination may have delivered transaction t, whose end went upstream and whose
// final reply never came: it was sent a recipient it has not refused, and it refused neither MAIL
// nor a chunk before the last (RFC 3030 2). Its replies count whether passed on or still held by
// a delay fault; a recipient a fault answered never reached it.
bool relay_fsm::may_have_delivered(const transaction& t) {
  // A server that said 421 (or 221) to a command before the reply awaited closed there (RFC 5321
  // 3.8): it took nothing it was sent after that command.
  if (!t.end_sent || upstream_said_421_) return false;
  std::size_t refused = t.rcpts_refused_upstream;
  for (const reply_slot& s : owed_) {
    if (s.asked.txn != t.id || !s.answer.ready || s.answer.local || !s.answer.parsed || !refuses(s.asked, *s.answer.parsed))
      continue;
    if (s.asked.ph == phase::rcpt) ++refused;
    else if (s.asked.ph == phase::mail || (s.asked.ph == phase::bdat && !s.asked.last_chunk)) return false;
  }
  return refused < t.rcpts_forwarded;
}

// The upstream's reply to transaction t's end (the dot, BDAT ... LAST), in but not yet passed on;
// null when none came.
const reply* relay_fsm::held_end_reply(const transaction& t) const {
  for (const reply_slot& s : owed_)
    if (s.asked.txn == t.id && s.answer.ready && !s.answer.local && s.answer.parsed &&
        (s.asked.ph == phase::data_end || (s.asked.ph == phase::bdat && s.asked.last_chunk)))
      return &*s.answer.parsed;
  return nullptr;
}

void relay_fsm::resume_bdat_end(std::uint64_t now) {
  const std::uint64_t id = *bdat_end_awaits_replies_;
  transaction* t = txns_.find(id);
  if (t && replies_before_message_owed(*t)) return;
  bdat_end_awaits_replies_.reset();
  // Gone (MAIL refused): the chunk is still completed upstream, which refuses it.
  if (!t)
    faults_.give_back_end_plan(now, id, out_.closed(leg::upstream) || upstream_said_421_
                                            ? "the upstream was lost before the message's end"
                                            : "the transaction failed before the message's end");
  release_bdat_message(now, t);
}

// A pipelined "MAIL, RCPT, BDAT n LAST" whose message a fault failed (or the capture could not
// record) used to close the upstream before MAIL's and RCPT's replies came: they never did, and
// the session hung with the client told nothing (a fifth trial).
void relay_fsm::close_upstream_once_answered(std::uint64_t now) {
  if (owed_.awaiting_upstream()) {
    close_upstream_when_answered_ = true;
    arm_upstream_for_head();
    return;
  }
  close_upstream_when_answered_ = false;
  out_.close(leg::upstream);
  out_.arm(leg::upstream, disarmed);
  flush_replies(now);
}

void relay_fsm::release_withheld_bdat(std::uint64_t now, std::uint64_t txn) {
  if (transaction* t = txns_.find(txn)) t->end_sent = true;
  out_.send(leg::upstream, std::exchange(withheld_bdat_, {}), now);
  arm_upstream_for_head();
}

bool relay_fsm::take_auth_response(std::uint64_t now) {
  std::string_view rest = in_.unparsed();
  auto crlf = rest.find("\r\n");   // only CRLF ends it, as a command line (RFC 5321 2.3.8)
  // Over the cap, whether its CRLF came in the same read or not (RFC 4954 4: 12288 octets of
  // base64 and its CRLF).
  if ((crlf == std::string_view::npos ? rest.size() : crlf + 2) > limits::auth_response_cap) {
    refuse_auth_response(now);
    return false;
  }
  if (crlf == std::string_view::npos) return false;
  std::string_view line = rest.substr(0, crlf + 2);
  // "*" cancels the exchange (RFC 4954 4): no secret, and recorded as itself so that the
  // server's 501 reads as the client's doing.
  const bool cancel = stripped_crlf(line) == "*";
  if (!cancel) in_.mask(in_.pos(), in_.pos() + line.size());
  in_.advance(line.size());
  if (observer_)
    observer_->on_command(now, cancel ? std::string("*")
                                      : "[auth response redacted, " + std::to_string(stripped_crlf(line).size()) + " bytes]");
  mode_ = client_mode::awaiting_auth;
  if (!clean_crlf_line(line)) {
    // Like a command line (take_command_line), a response with a bare CR or LF or a NUL is never
    // forwarded: the upstream could split it differently. Cancelling the exchange ("*", RFC 4954
    // 4) keeps the replies paired: the upstream's 501 answers the client.
    ++stats_.refused_commands;
    out_.note(now, "AUTH response refused: bare CR, bare LF or NUL; exchange cancelled");
    auth_username_pending_ = false;
    line = "*\r\n";
  } else if (std::exchange(auth_username_pending_, false)) {
    note_auth_username(now, stripped_crlf(line));
  }
  out_.send(leg::upstream, line, now, true);
  arm_upstream_for_head();
  return true;
}

// An AUTH response over its cap: 500 5.5.6 (RFC 4954 4), then the session ends, since what
// follows in the client's stream cannot be told apart from the rest of it. The 500 answers the
// AUTH command, whose reply the upstream, still waiting for a response, would never give.
void relay_fsm::refuse_auth_response(std::uint64_t now) {
  in_.advance_to_end();
  in_.mask(0, in_.pos());
  ++stats_.refused_commands;
  out_.note(now, "AUTH response over " + std::to_string(limits::auth_response_cap) + " bytes refused");
  if (reply_slot* p = owed_.first_awaited(); p && p->asked.ph == phase::auth) {
    p->answer.parsed = make_reply(500, "5.5.6", "Authentication exchange line is too long");
    p->answer.bytes = p->answer.parsed->raw;
    p->answer.local = true;
    p->answer.ready = true;
  }
  flush_replies(now);
  end_session(now, "protocol_error", "AUTH response too long");
}

// Only with record_auth_username: PLAIN's authcid (RFC 4616: authzid NUL authcid NUL passwd)
// or LOGIN's first response. Nothing past the username is ever looked at.
void relay_fsm::note_auth_username(std::uint64_t now, std::string_view base64_response) {
  if (!options_.record_auth_username) return;
  auto decoded = base64_decode(base64_response);
  if (!decoded) return;
  std::string_view user = *decoded;
  if (auth_mechanism_ == "PLAIN") {
    auto first = user.find('\0');
    if (first == std::string_view::npos) return;
    user.remove_prefix(first + 1);
    user = user.substr(0, user.find('\0'));
  }
  out_.note(now, "AUTH " + auth_mechanism_ + " username '" + escape_bytes(user, 256) + "'");
}

// ---------------------------------------------------------------- replies

void relay_fsm::take_banner(std::uint64_t now, reply r) {
  if (r.code != 220 && r.code != 421 && r.code != 554 && r.code != 521) {
    // RFC 5321 4.3.2: a greeting is 220, or 554 (or 421, 3.8; 521, RFC 7504 3). The relay
    // passes on no reply a command cannot have: a 3xx asks for more input (a hostile trial:
    // "354" went to the client as its greeting), and another 2xx read as a greeting by a client
    // that takes any 2xx (Postfix's smtp does) hides a destination that never said 220 (a
    // hostile trial: "250 hello" greeted the client and its message was relayed).
    out_.close(leg::upstream);
    return upstream_lost(now, "upstream_protocol_error",
                         "upstream greeted with " + std::to_string(r.code) + ", which is no greeting");
  }
  greeted_ = true;
  std::string bytes = r.raw;
  if (faults_.banner(now, r, bytes)) return;   // answered, held or ended by a fault
  release_banner(now, now, r, std::move(bytes));
}

void relay_fsm::release_banner(std::uint64_t now, std::uint64_t arrived_us, const reply& r, std::string bytes) {
  out_.send(leg::client, bytes, now);
  client_greeted_ = true;
  // The upstream's part ends when its greeting came; a fault that held it after that is the relay's.
  const std::uint64_t upstream_us = arrived_us > connected_us_ ? arrived_us - connected_us_ : 0;
  if (observer_) observer_->on_stage({phase::banner, connected_us_, now - connected_us_, upstream_us, 0});
  think_from_us_ = now;
  out_.arm(leg::upstream, disarmed);
  out_.arm(leg::client, options_.timeouts.client_idle);
  greeting_refused_ = r.code == 554 || r.code == 521;
  if (r.code == 421) end_session(now, "upstream_refused", r.text());
  else tls_.after_banner(now);
}

void relay_fsm::take_upstream_reply(std::uint64_t now, reply r) {
  reply_slot* awaited = owed_.first_awaited();
  if (!awaited) {
    if (upstream_in_data() && !data_failure_) return upstream_replied_in_data(now, std::move(r));
    if (r.code == 421) {   // RFC 5321 3.8: a server may close with 421 at any time
      if (faults_.stalled()) {
        // A stall answers nothing, not even this (upstream_lost); what is open or held ends
        // tempfailed when the stall does, as after any 421 of the server's.
        upstream_said_421_ = true;
        return upstream_lost(now, "upstream_closed", "upstream said 421");
      }
      if (!owed_.empty() && !owed_.awaiting_upstream() && faults_.hold_active(now)) {
        // Replies it gave before it are held by a delay fault: they go out first, at their
        // time, then this 421 (flush_replies); no command is taken meanwhile
        // (take_command_line), as none could be answered.
        upstream_421_after_held_ = std::move(r);
        upstream_said_421_ = true;   // whatever ends the session first, an open transaction is tempfailed
        out_.close(leg::upstream);
        out_.arm(leg::upstream, disarmed);
        remember_upstream_loss("upstream_closed", "upstream said 421");
        return;
      }
      pass_on_upstream_421(now, r);
    } else if (++unsolicited_replies_ > limits::unsolicited_upstream_replies_max) {
      out_.close(leg::upstream);
      upstream_lost(now, "upstream_protocol_error",
                    "upstream sent more than " + std::to_string(limits::unsolicited_upstream_replies_max) +
                        " replies no command asked for");
    } else {
      out_.note(now, "unsolicited upstream reply dropped: " + std::to_string(r.code));
    }
    return;
  }
  if (early_chunk_reply(*awaited)) return upstream_replied_in_chunk(now, std::move(r));
  reply_slot& p = *awaited;
  p.answer.t_upstream = now;
  if (p.asked.kind == command_kind::relayed) {
    if (const char* why = not_a_reply_to(p.asked, r)) {
      out_.close(leg::upstream);
      return upstream_lost(now, "upstream_protocol_error",
                           "upstream answered " + std::string(to_string(p.asked.ph)) + " with " + std::to_string(r.code) + ": " + why);
    }
  }
  if (const char* why = not_a_reply_to_relay_command(p.asked.kind, r)) {
    out_.close(leg::upstream);
    return upstream_lost(now, "upstream_protocol_error",
                         "upstream answered " + std::string(relay_command_name(p.asked.kind)) +
                             " with " + std::to_string(r.code) + ": " + why);
  }
  if (r.code == 421 && p.asked.kind == command_kind::client_starttls) {
    // The upstream is leaving (RFC 5321 3.8): the client hears its 421 as the answer to its
    // STARTTLS, not a 454 it would carry on after.
    p.answer.bytes = r.raw;
    p.answer.parsed = std::move(r);
    p.answer.ready = true;
    flush_replies(now);
    return upstream_said_421(now, "upstream said 421 to STARTTLS");
  }
  switch (p.asked.kind) {
    case command_kind::relayed: break;
    case command_kind::internal_rset:   // a fault took the message: the upstream's transaction is reset
      owed_.erase(p);
      out_.note(now, "upstream answered the relay's RSET with " + std::to_string(r.code));
      if (reply_slot* go = r.code == 421 ? owed_.absorbed_go() : nullptr) {
        // The client's DATA has not had its 354: it gets the upstream's 421 instead, which
        // ends its transaction (after_reply) and the session.
        faults_.answer_absorbed_go_with_421(now, *go, r);
        flush_replies(now);
        return upstream_said_421(now, "upstream said 421 to the relay's RSET");
      }
      flush_replies(now);   // the relay's own 354 waited behind it
      if (ended_) return;
      if (r.code == 421) {
        // The upstream is leaving: nothing more goes to it. A client waiting for nothing hears
        // the upstream's own 421 (RFC 5321 3.8), as an unsolicited one; commands still owed
        // get the relay's.
        if (owed_.empty()) return pass_on_upstream_421(now, r);
        return upstream_said_421(now, "upstream said 421 to the relay's RSET");
      }
      arm_upstream_for_head();
      return;
    case command_kind::internal_ehlo:
    case command_kind::client_starttls:
    case command_kind::internal_starttls:
    case command_kind::internal_greeting: return tls_.take_reply(now, p, r);   // starttls_sequencer
    case command_kind::internal_xclient: return xclient_.take_reply(now, p, r, tls_.hello_line());   // xclient_exchange
    case command_kind::xclient_hello: xclient_.hello_answered(p); break;
  }
  if (p.asked.ph == phase::ehlo || p.asked.ph == phase::helo) tls_.hello_answered(r, p.asked.hello);
  if (p.asked.ph == phase::ehlo && xclient_.begin(now, p, r, tls_.hello_line())) return;
  if (p.asked.ph == phase::ehlo) tls_.note_upstream_capabilities(r);
  if (p.asked.ph == phase::auth) {
    if (r.code == 334) {       // challenge: the client's next line is an AUTH response
      // In its turn (flush_replies, send_auth_challenge): a reply owed before it, which a delay
      // fault holds (EHLO's, with AUTH pipelined behind it), goes first. A hostile trial: the
      // 334 reached the client at once, ahead of the EHLO reply.
      p.answer.challenge = r.raw;
      out_.arm(leg::upstream, disarmed);   // the upstream waits for the client's response
      flush_replies(now);
      return;
    }
    auth_open_ = false;
    mode_ = client_mode::command;
    out_.note(now, "AUTH " + auth_mechanism_ + " finished with " + std::to_string(r.code) +
                  (r.klass() == 2 ? " (accepted)" : " (refused)"));
  } else if (p.asked.ph == phase::data) {
    if (r.code == 354) {
      begin_data(now);
    } else {
      mode_ = client_mode::command;
      faults_.drop_end_plan();   // no message follows: a fault planned for its end does not apply
    }
  }
  faults_.reply_stage(now, p, r);   // a delay, an EHLO rewrite
  p.answer.bytes = p.asked.ph == phase::ehlo ? edit_ehlo_reply(now, r, p.fault.decision ? &p.fault.decision->rewrites : nullptr) : r.raw;
  // A 221 to anything but QUIT is the server closing too (Postfix's smtpd says "221 2.7.0 Error:
  // I can break rules, too. Goodbye." to a client past its error limit): the client has it, and
  // no 421 of the relay's follows it when the connection then closes.
  const bool closing = r.code == 421 || (r.code == 221 && p.asked.ph != phase::quit);
  upstream_said_421_ = closing;   // before flush_replies: a message's end released in it is not sent
  const int closing_code = r.code;
  const std::string closing_detail = "upstream said " + std::to_string(closing_code);
  const bool held_end_refused = !closing && refuses_a_held_bdat_message(p, r);
  p.answer.parsed = std::move(r);
  p.answer.ready = true;
  if (held_end_refused) drop_held_bdat_end_of_refused_message(now, p.asked.txn, *p.answer.parsed);
  flush_replies(now);
  if (closing) return upstream_said_421(now, closing_detail, closing_code);
  if (!ended_ && close_upstream_when_answered_ && !owed_.awaiting_upstream()) return close_upstream_once_answered(now);
  if (!ended_) arm_upstream_for_head();
}

// The upstream's own 421 to a client owed nothing (RFC 5321 3.8: a server may close with 421 at
// any time): the client gets it, an open transaction ends tempfailed with it, and so does the
// session, whose end detail says the upstream said 421, as every other 421's does. (It was the
// reply's own text: a hostile trial's "250 ok" and "421 then bye" in one read after the dot
// ended with the detail "then bye".)
void relay_fsm::pass_on_upstream_421(std::uint64_t now, const reply& r) {
  upstream_said_421_ = true;   // a transaction the end settles (a held MAIL's) is tempfailed too
  out_.send(leg::client, r.raw, now);
  // A held MAIL's transaction and a held RCPT's recipient, before the record: the 421 is final
  // for both alike.
  if (faults_.line_held_is(phase::mail) || faults_.line_held_is(phase::rcpt)) abandon_held_line(now);
  if (auto* open = txns_.open()) finish_transaction(now, open->id, outcome::tempfailed, r, false);
  end_session(now, "upstream_closed", "upstream said 421");
}

// RFC 5321 3.8 and 4.2.2: 421 is the server closing the channel, whatever it answered. The
// client has it (flush_replies); nothing more goes to a server that is leaving. `code`: 421, or
// the 221 to a command other than QUIT that closes as 421 does.
void relay_fsm::upstream_said_421(std::uint64_t now, std::string_view detail, int code) {
  if (ended_) return;
  upstream_said_421_ = true;   // also for a 421 to STARTTLS or to the relay's RSET (abandon_transactions)
  upstream_closing_code_ = code;   // the commands still owed are told so (upstream_loss_reply)
  if (owed_.empty()) {
    // A held MAIL's transaction or a held RCPT's recipient, before the record (a 421 to the MAIL
    // ahead of a held RCPT: the refused MAIL's record, follow_held_refusal).
    if (faults_.line_held_is(phase::mail) || faults_.line_held_is(phase::rcpt)) abandon_held_line(now);
    if (auto* open = txns_.open()) finish_transaction(now, open->id, outcome::tempfailed, std::nullopt, false);
    return end_session(now, "upstream_closed", detail);
  }
  out_.close(leg::upstream);
  upstream_lost(now, "upstream_closed", detail);   // the commands still owed get 421 too
}

// The replies a command the relay sent for itself cannot have: an intermediate reply to its RSET
// (RFC 5321 4.3.2), a success other than 220 to STARTTLS (RFC 3207 4). Null when it may.
bool relay_fsm::answers_relay_xclient() {
  const reply_slot* awaited = owed_.first_awaited();
  return awaited && awaited->asked.kind == command_kind::internal_xclient;
}

const char* relay_fsm::relay_command_name(command_kind kind) {
  switch (kind) {
    case command_kind::internal_rset: return "the relay's RSET";
    case command_kind::internal_xclient: return "the relay's XCLIENT";
    case command_kind::client_starttls:
    case command_kind::internal_starttls: return "STARTTLS";
    default: return "the relay's command";
  }
}

const char* relay_fsm::not_a_reply_to_relay_command(command_kind kind, const reply& r) {
  if (kind == command_kind::internal_rset && r.klass() == 3) return "RSET is answered with 250 or a failure (RFC 5321 4.3.2)";
  if ((kind == command_kind::client_starttls || kind == command_kind::internal_starttls) &&
      (r.klass() == 3 || (r.klass() == 2 && r.code != 220)))
    return "STARTTLS is answered with 220 or a failure (RFC 3207 4)";
  // Postfix's XCLIENT_README: success is a new greeting, 220. A 354 (a hostile trial) would
  // have the relay's EHLO and the client's commands read as message data.
  if (kind == command_kind::internal_xclient && (r.klass() == 3 || (r.klass() == 2 && r.code != 220)))
    return "XCLIENT is answered with 220 or a failure";
  return nullptr;
}

// Replies RFC 5321 4.3.2 does not allow for the command (and RFC 4954 for AUTH): a 3xx other
// than DATA's 354 or AUTH's 334, a 2xx to DATA, or a 2xx other than 250 to EHLO or HELO.
// Passed on, a 250 to DATA would make the client's message "delivered" with nothing sent, a
// 354 to MAIL would open a message no one asked for. Null when the reply may answer it.
const char* relay_fsm::not_a_reply_to(const reply_request& asked, const reply& r) {
  if (r.klass() == 3 && !(asked.ph == phase::data && r.code == 354) && !(asked.ph == phase::auth && r.code == 334))
    return "no such intermediate reply to that command (RFC 5321 4.3.2)";
  if (asked.ph == phase::data && r.klass() == 2) return "DATA is answered with 354 or a failure (RFC 5321 4.3.2)";
  // A 221 to the message's end (Postfix's smtpd says "221 2.7.0 Error: I can break rules, too.
  // Goodbye." to a client past its error limit) would read as its acceptance to a client that
  // takes any 2xx (Postfix's smtp logs status=sent and drops the message: a hostile trial).
  if ((asked.ph == phase::data_end || asked.ph == phase::bdat) && r.klass() == 2 && r.code != 250)
    return "the end of data and BDAT succeed only with 250 (RFC 5321 4.3.2, RFC 3030 2)";
  // A 220 to EHLO (a greeting said again) would read to the client as a hello accepted.
  if ((asked.ph == phase::ehlo || asked.ph == phase::helo) && r.klass() == 2 && r.code != 250)
    return "EHLO and HELO succeed only with 250 (RFC 5321 4.3.2)";
  return nullptr;
}

bool relay_fsm::upstream_in_data() const {
  return mode_ == client_mode::data || (awaiting_capture_ && awaiting_capture_->kind == message_end::data) ||
         faults_.holds_dot();
}

// After its 354 the upstream answered before the dot: it has given up on the message and
// reads whatever follows as commands. That reply is final for the message: nothing more is
// forwarded (the rest of the body would be taken as commands), the client's data is read to
// its end and answered with it, and the upstream leg, now out of step, is closed.
void relay_fsm::upstream_replied_in_data(std::uint64_t now, reply r) {
  fail_message_on_early_reply(now, std::move(r), "during the message", "DATA");
}

// `r` came before the message's end reached the upstream (`when`): the message's answer, the
// upstream's 4xx or 5xx as it gave it, a 2xx or 3xx turned into 451 4.4.2 (it accepts
// nothing: ARCHITECTURE.md, invariants); the upstream leg is closed.
void relay_fsm::fail_message_on_early_reply(std::uint64_t now, reply r, std::string_view when,
                                            std::string_view command) {
  ++stats_.upstream_replied_in_data;
  const int code = r.code;
  out_.note(now, "upstream replied " + std::to_string(r.code) + " " + std::string(when) +
                ": nothing more is forwarded, the upstream leg is closed");
  if (r.klass() == 4 || r.klass() == 5) {
    data_failure_ = std::move(r);
    data_failure_from_upstream_ = true;
  } else {
    data_failure_ = make_reply(451, "4.4.2", options_.name + ": upstream replied before the end of the message");
  }
  if (data_failure_->code == 421) {
    // RFC 5321 3.8: a server may close with 421 at any time, in a message too; not a reply out
    // of place (captures/FORMAT.md "End reasons": upstream_closed).
    upstream_said_421_ = true;
    remember_upstream_loss("upstream_closed", "upstream said 421 during " + std::string(command));
  } else {
    remember_upstream_loss("upstream_protocol_error", "upstream replied during " + std::string(command));
  }
  out_.close(leg::upstream);
  out_.arm(leg::upstream, disarmed);
  give_back_failed_messages_end_plan(now);
  answer_held_dot_now(now, (code == 421 ? "the upstream said " : "the upstream replied ") + std::to_string(code));
}

// The message failed inside its body (the upstream replied or was lost): a fault planned for its
// end never acts, and is given back now, not when (if ever) its dot comes, so that a client slow
// to send it does not keep the rule's max_count reserved (policies/README.md) meanwhile.
void relay_fsm::give_back_failed_messages_end_plan(std::uint64_t now) {
  if (const transaction* t = txns_.newest()) faults_.give_back_end_plan(now, t->id, "the message failed before its end");
}

// The upstream failed the message (data_failure_: it replied, said 421, or was lost: `why`)
// while a delay fault holds the client's dot: the dot can never go, so the client has that
// failure now, as for a BDAT message's held end (upstream_replied_in_chunk), not when the hold
// would have ended (a hostile trial with real Postfix: the destination's 421 reached the client
// 4 s late, and the capture said the dot was held before forwarding, as if it had gone).
void relay_fsm::answer_held_dot_now(std::uint64_t now, std::string_view why) {
  const auto dropped = faults_.drop_held_dot(now, why);
  if (!dropped) return;
  answer_failed_message(now, dropped->txn, dropped->arrived_us);
}

bool relay_fsm::refuses_a_held_bdat_message(const reply_slot& p, const reply& r) const {
  return p.asked.ph == phase::bdat && p.asked.kind == command_kind::relayed && !p.asked.last_chunk && p.asked.txn &&
         refuses(p.asked, r) && faults_.holds_bdat_end_of(p.asked.txn);
}

// The destination refused a chunk before the last (RFC 3030 2: the transaction failed, the
// chunks after it are read and discarded) while a delay fault holds that message's end, BDAT
// ... LAST's last byte, pipelined behind it. The end can complete nothing, so it is dropped, never
// forwarded, now and not when the hold would have ended (a hostile trial: the byte went 4 s
// later to a destination that had failed the transaction, the rule reserved meanwhile); the
// delay's record says so (drop_held_dot). Each BDAT still gets its reply (RFC 3030 2): the last
// chunk, which the destination can no longer answer, has its refusal, as the relay's own. The
// upstream, still owed that byte, is out of step: it is closed once the chunks between are
// answered, and the session then ends as after any upstream closing (flush_replies), its reason
// the fault's.
void relay_fsm::drop_held_bdat_end_of_refused_message(std::uint64_t now, std::uint64_t txn, const reply& refusal) {
  remember_upstream_loss("fault", "the upstream refused a chunk before the message's end, which fault rule '" +
                                      faults_.held_end_rule() + "' (delay) held: the upstream leg was closed");
  faults_.drop_held_dot(now, "the upstream replied " + std::to_string(refusal.code));
  out_.note(now, "upstream refused a chunk before the last (" + std::to_string(refusal.code) +
                     "): the message's end a delay fault held is dropped, never forwarded; BDAT LAST is answered "
                     "with that refusal and the upstream leg closed");
  for (reply_slot& s : owed_) {
    if (s.asked.txn != txn || s.asked.ph != phase::bdat || !s.asked.last_chunk || s.answer.ready) continue;
    s.answer.t_upstream = now;
    s.answer.bytes = refusal.raw;
    s.answer.parsed = refusal;
    s.answer.local = true;
    s.answer.ready = true;
  }
  close_upstream_once_answered(now);
}

bool relay_fsm::early_chunk_reply(const reply_slot& awaited) const {
  if (awaited.asked.ph != phase::bdat || awaited.asked.kind != command_kind::relayed || !owed_.is_newest(awaited))
    return false;
  // Its chunk still streams, or its last byte (or a "BDAT 0 LAST" itself) is withheld.
  return (mode_ == client_mode::bdat_payload && !discard_payload_) || !withheld_bdat_.empty();
}

void relay_fsm::upstream_replied_in_chunk(std::uint64_t now, reply r) {
  fail_message_on_early_reply(now, std::move(r), "to BDAT before its chunk was all sent", "BDAT");
  withheld_bdat_.clear();
  if (mode_ == client_mode::bdat_payload) {
    discard_payload_ = true;   // take_bdat_payload answers at the chunk's end
    return;
  }
  answer_failed_chunk(now);
}

void relay_fsm::answer_failed_chunk(std::uint64_t now) {
  reply r = std::move(*data_failure_);
  data_failure_.reset();
  const bool local = !std::exchange(data_failure_from_upstream_, false);
  reply_slot* p = owed_.first_awaited();
  if (!p) return;
  p->answer.t_upstream = now;
  p->answer.bytes = r.raw;
  p->answer.local = local;
  p->answer.ready = true;
  owed_.drop_after(*p);
  const transaction* t = p->asked.txn ? txns_.find(p->asked.txn) : txns_.newest();
  if (t) finish_transaction(now, t->id, outcome_of_code(r.code), r, local);
  p->answer.parsed = std::move(r);
  flush_replies(now);
  if (!ended_) end_session(now, upstream_lost_reason_, upstream_lost_detail_);
}

std::string relay_fsm::edit_ehlo_reply(std::uint64_t now, const reply& r, const rewrite_set* rewrites) {
  if (r.code != 250) return r.raw;
  capabilities caps = capabilities::from_reply(r);
  upstream_chunking_ = caps.has("CHUNKING");   // what the destination itself offered, before any fault's edit
  std::string changes;
  // Fault rewrites come first, in place: a firewall masks or strips what the server offered
  // (STARTTLS too), and the relay then does not offer what a fault took away.
  bool starttls_faulted = false;
  if (rewrites && !rewrites->empty()) {
    faults_.apply_capability_rewrites(now, caps, *rewrites, changes);
    for (const auto* list : {&rewrites->mask_capabilities, &rewrites->strip_capabilities})
      for (const auto& kw : *list) starttls_faulted = starttls_faulted || iequals(kw, "STARTTLS");
  }
  bool offer = tls_.offers_starttls();   // the relay terminates TLS itself (starttls_sequencer)
  bool had = caps.has("STARTTLS");
  auto add_change = [&](std::string what) { changes += (changes.empty() ? "" : ", ") + what; };
  if (had && !offer) {
    caps.remove("STARTTLS");
    add_change("removed STARTTLS");
  } else if (!had && offer && !starttls_faulted) {
    caps.set("STARTTLS", "");
    add_change("added STARTTLS");
  }
  // XCLIENT/XFORWARD: never advertised to clients (they would let a client forge its identity upstream).
  for (std::string_view kw : {"XCLIENT", "XFORWARD"})
    if (caps.remove(kw)) changes += (changes.empty() ? "removed " : ", removed ") + std::string(kw);
  if (changes.empty()) return r.raw;
  out_.note(now, "EHLO reply edited: " + changes);
  std::string bytes = caps.to_reply_bytes();
  if (observer_) {
    reply shown = r;
    shown.raw = bytes;
    shown.lines.clear();
    shown.lines.push_back(caps.greeting());
    for (const auto& c : caps.list()) shown.lines.push_back(c.params.empty() ? c.keyword : c.keyword + " " + c.params);
    observer_->on_reply(now, leg::client, direction::out, shown);
  }
  return bytes;
}

void relay_fsm::local_reply(std::uint64_t now, phase ph, int code, std::string_view enhanced,
                            std::string_view text) {
  owed_.answer_locally(now, ph, make_reply(code, enhanced, text));
}

void relay_fsm::flush_replies(std::uint64_t now) {
  while (!ended_ && !faults_.stalled() && owed_.ready_head()) {
    // A delay fault holds it (and all after it), for a client still there to hear it.
    if (!out_.closed(leg::client) && faults_.reply_delayed(now, owed_.front())) return;
    reply_slot p = owed_.pop_head();
    if (faults_.give_back_for_a_gone_client(now, p)) {
      // The recipient the fault refused was never forwarded: its code is still its record's.
      if (p.asked.ph == phase::rcpt && p.answer.parsed) after_reply(now, p);
      continue;
    }
    if (!p.answer.parsed) {   // a fault marker: disconnect, reset or stall once the replies before it are out
      think_from_us_ = now;
      faults_.then(now, p);
      continue;
    }
    faults_.reply_releasing(now, p);
    if (out_.closed(leg::client) && !p.answer.local && p.asked.answers_end_of_data()) {
      // The proof of hand-off still counts: the capture says what became of the message.
      ++stats_.unacknowledged_end_of_data;
      out_.note(now, "upstream answered the end of data with " + std::to_string(p.answer.parsed->code) +
                    " after the client left: not acknowledged to the client");
    }
    out_.send(leg::client, p.answer.bytes, now);
    if (observer_) {
      if (p.answer.local) observer_->on_reply(now, leg::client, direction::out, *p.answer.parsed);
      std::uint64_t think = p.asked.t_received > think_from_us_ ? p.asked.t_received - think_from_us_ : 0;
      // Local replies can still have waited on the upstream (a STARTTLS answered once the
      // upstream leg was secured).
      const std::uint64_t sent = std::max(p.asked.t_received, p.asked.t_forwarded);
      std::uint64_t upstream = p.answer.t_upstream > sent ? p.answer.t_upstream - sent : 0;
      upstream = std::min(upstream + p.asked.upstream_wait_us, now - p.asked.t_received);
      observer_->on_stage({p.asked.ph, p.asked.t_received, now - p.asked.t_received, upstream, think});
    }
    think_from_us_ = now;
    // The body stage starts when the client has its 354, not when the upstream's came: a delay
    // fault holding the 354 is the relay's time (the data stage's), not the sender's.
    if (p.asked.ph == phase::data && p.answer.parsed->code == 354 && mode_ == client_mode::data &&
        now > data_started_us_) {
      data_started_us_ = now;
      if (in_.fully_parsed()) begin_message_input(now);   // its data-rate budget starts here too
    }
    last_client_code_ = p.answer.parsed->code;
    // QUIT's reply released to a client gone (a delay held it): the client never had it, and
    // its leaving ends the session (end_if_client_done), not the QUIT.
    if (p.asked.ph == phase::quit && out_.closed(leg::client)) continue;
    after_reply(now, p);
    if (p.fault.then != then_do::nothing) faults_.then(now, p);
  }
  if (!ended_ && !faults_.stalled() && !owed_.empty() && !owed_.front().answer.ready &&
      !owed_.front().answer.challenge.empty())
    send_auth_challenge(now, owed_.front());
  if (ended_ || faults_.stalled()) return;
  // Not for a client gone or given up: end_if_client_done (below) drops the end instead.
  if (bdat_end_awaits_replies_ && !client_left()) {
    resume_bdat_end(now);
    if (ended_ || faults_.stalled()) return;
  }
  // A DATA (or AUTH) pipelined behind the command the upstream's loss answered was dropped
  // unanswered (upstream_lost: owed_.drop_after): no go-ahead will come, the client is in
  // command mode again. A hostile trial: with the upstream's 221 to MAIL held by a delay (when =
  // "reply") and RCPT and DATA pipelined behind, the held 221 and the relay's 421 went out when
  // the hold ended and the session then never ended, its later commands unread, until the drain.
  if (out_.closed(leg::upstream) && owed_.empty()) {
    if (mode_ == client_mode::awaiting_data_go) mode_ = client_mode::command;
    if (mode_ == client_mode::awaiting_auth) abandon_auth_exchange();
  }
  if (out_.closed(leg::upstream) && owed_.empty() && mode_ == client_mode::command && !faults_.refusing() &&
      !faults_.absorbing()) {
    // The upstream is gone (we aborted its transaction, or it died in DATA): nothing more
    // can be relayed, so say so and close; once is enough (RFC 5321 3.8: 421, then close).
    // An upstream that said 421 while replies were held has its own 421 passed on.
    if (upstream_421_after_held_) return pass_on_upstream_421(now, *upstream_421_after_held_);
    // A message the relay refused (550 5.6.0: its own closing of the upstream, the client's
    // doing) is answered and the connection closed, as Postfix does with
    // smtpd_forbid_bare_newline: a 421 "upstream connection is closed" after it would blame the
    // upstream, and the client would read it as the reply to its next command.
    if (last_client_code_ != 421 && last_client_code_ != 221 && upstream_lost_reason_ != "protocol_error")
      out_.say(now, make_reply(421, "4.4.2", options_.name + " closing: upstream connection is closed"));
    // The cause recorded by upstream_lost (a timeout, a protocol error), not just "closed".
    end_session(now, upstream_lost_reason_, upstream_lost_detail_);
    return;
  }
  tls_.advance(now);   // a pipelined STARTTLS proceeds once everything before it is answered
  maybe_finish_drain(now);
  end_if_client_done(now);
}

// An AUTH the client awaits a go-ahead (334) or an outcome for can have neither: the upstream is
// gone (upstream_lost answered it with the relay's 421, or dropped it unanswered behind the
// command it answered). The exchange is over, and the client is in commands again. What it
// pipelined behind AUTH it sent as the exchange's responses: masked before the mode says
// commands (mask_unparsed_auth reads the mode), as it would have been had the exchange gone on.
// A review of b19b514: its reset (flush_replies) left auth_open_ set, and it, as f2eb076's
// (after_reply), recorded an AUTH response pipelined behind AUTH in the clear.
void relay_fsm::abandon_auth_exchange() {
  mask_unparsed_auth();
  auth_open_ = false;
  mode_ = client_mode::command;
}

// The upstream's 334 to AUTH, every reply before it out: the client's next line is its response,
// awaited from now; the slot still awaits the exchange's final reply.
void relay_fsm::send_auth_challenge(std::uint64_t now, reply_slot& p) {
  out_.send(leg::client, std::exchange(p.answer.challenge, {}), now);
  mode_ = client_mode::auth_response;
  out_.arm(leg::client, options_.timeouts.client_idle);
}

void relay_fsm::after_reply(std::uint64_t now, const reply_slot& p) {
  const reply& r = *p.answer.parsed;
  transaction* t = txns_.find(p.asked.txn);
  auto settle = [&](outcome o) { finish_transaction(now, p.asked.txn, o, r, p.answer.local); };
  // The upstream gone, no reply to a command the machine waits on can come: a DATA or AUTH the
  // relay answered itself (upstream_lost, while a delay held the replies before it) leaves the
  // client in commands, and flush_replies ends the session. Not while the upstream is there: a
  // reply flushed late (a delay) may belong to a DATA before the one now waiting.
  const bool upstream_gone = out_.closed(leg::upstream);
  switch (p.asked.ph) {
    case phase::mail:
      // A 221 (the server closing, as its 421 would) takes no transaction: tempfailed, as 421.
      if (refuses(p.asked, r) && t)
        finish_transaction(now, p.asked.txn, r.klass() == 2 ? outcome::tempfailed : outcome_of_code(r.code), r,
                           p.answer.local, true);
      break;
    case phase::rcpt:
      if (t) t->rec.rcpt_codes.push_back(r.code);
      if (t && !p.answer.local && refuses(p.asked, r)) ++t->rcpts_refused_upstream;
      break;
    case phase::data:
      // (A 2xx to DATA, the end of data or BDAT other than 250 never gets here: not_a_reply_to.)
      if (r.code != 354 && upstream_gone && mode_ == client_mode::awaiting_data_go) mode_ = client_mode::command;
      if (r.code != 354 && t) settle(outcome_of_code(r.code));
      break;
    case phase::data_end:
      if (t) settle(outcome_of_code(r.code));
      break;
    case phase::bdat:
      if (r.klass() != 2 && !p.asked.last_chunk && p.asked.txn) {
        bdat_message_refused_ = true;
        // The message failed before its end: a fault planned for that end never acts.
        faults_.give_back_end_plan(now, p.asked.txn, "the message failed before its end");
      }
      if (t && (r.klass() != 2 || p.asked.last_chunk)) settle(outcome_of_code(r.code));
      break;
    case phase::auth:
      if (r.code != 334 && upstream_gone && mode_ == client_mode::awaiting_auth) abandon_auth_exchange();
      break;
    case phase::rset:
      // The relay's own RSET (a fault answers the message) that the relay had to answer with a
      // failure, the upstream lost: the client hears it as the answer to its DATA or chunk, as
      // it would the destination's, and the transaction ends with it (a 421 to DATA: tempfailed).
      if (p.asked.kind == command_kind::internal_rset && p.answer.local && r.klass() >= 4) {
        // The RSET is the open transaction's (fault_holds::plan_end_of_data), asked for no txn.
        if (transaction* open = txns_.open()) finish_transaction(now, open->id, outcome_of_code(r.code), r, true);
        break;
      }
      [[fallthrough]];
    case phase::ehlo:
    case phase::helo:
      if (t) finish_transaction(now, p.asked.txn, outcome::aborted, std::nullopt, false);
      break;
    case phase::quit:
      // A QUIT the relay answered with a failure because the upstream was lost (a timeout, a
      // protocol error) ends the session for that reason (flush_replies, upstream_lost_reason_),
      // not as client_quit: the client did not get what it asked for.
      if (p.answer.local && r.klass() != 2 && out_.closed(leg::upstream)) break;
      end_session(now, "client_quit", "");
      break;
    default: break;
  }
}

// ---------------------------------------------------------------- transactions

std::uint64_t relay_fsm::begin_transaction(std::uint64_t now, const command& cmd) {
  ++stats_.transactions;
  return txns_.begin(now, cmd.ph == phase::mail ? cmd.address.value_or(cmd.argument) : std::string());
}

bool relay_fsm::record_recipient(std::uint64_t now, transaction& t, std::string address) {
  auto recorded = txns_.record_recipient(t, std::move(address));
  if (recorded == recipient_recording::cap_reached)
    out_.note(now, "more than " + std::to_string(limits::recipients_recorded_cap) +
                  " recipients in one transaction: the rest are answered but not recorded");
  return recorded == recipient_recording::recorded;
}

void relay_fsm::finish_transaction(std::uint64_t now, std::uint64_t id, outcome o,
                                   const std::optional<reply>& final_reply, bool synthesized, bool refused_mail) {
  // Settled before its end (a BDAT chunk refused, a session cut short): the Message-ID of the
  // header fields complete so far, as a message refused at its end has it.
  if (transaction* t = txns_.find(id); t && !t->rec.message_id) t->rec.message_id = t->headers.message_id();
  auto rec = txns_.settle(now, id, o, final_reply, synthesized);
  if (!rec) return;
  if (rec->result == outcome::delivered) ++stats_.delivered;
  faults_.transaction_settled(now, id);   // a withheld dot's stall, as a stage
  report_held_refusal();   // an earlier refused MAIL's record comes first
  if (refused_mail) {
    held_refusal_ = std::make_unique<transaction_record>(std::move(*rec));
    return;
  }
  report_transaction(std::move(*rec));
}

void relay_fsm::report_transaction(transaction_record&& rec) {
  if (!observer_) return;
  observer_->on_transaction(rec);
  request_capture_barrier();
}

// A command after a refused MAIL: a RCPT is that attempt's recipient (held_refusal_), as the
// cap allows; any other command ends it, and its record is written.
void relay_fsm::follow_held_refusal(const command& cmd) {
  if (!held_refusal_) return;
  if (cmd.ph != phase::rcpt) return report_held_refusal();
  auto& to = held_refusal_->rcpt_to;
  if (!txns_.open() && to.size() < limits::recipients_recorded_cap) to.push_back(cmd.address.value_or(cmd.argument));
}

void relay_fsm::report_held_refusal() {
  if (!held_refusal_) return;
  transaction_record rec = std::move(*held_refusal_);
  held_refusal_.reset();
  report_transaction(std::move(rec));
}

void relay_fsm::abandon_transactions(std::uint64_t now) {
  while (const transaction* oldest = txns_.oldest()) {
    const transaction& t = *oldest;
    if (const reply* answer = held_end_reply(t)) {
      // The destination answered the message's end, but a delay still held its reply when the
      // session ended: its word decides, as if passed on (a 250 is delivered, not unknown).
      out_.note(now, std::string(note_end_of_data_reply_held_at_session_end));
      finish_transaction(now, t.id, outcome_of_code(answer->code), *answer, false);   // only 250 of 2xx is held (not_a_reply_to)
    } else if (may_have_delivered(t)) {
      // The dot (or BDAT LAST) went upstream but its reply never came back: the message may
      // already be delivered, and the client, never told, will likely resend it.
      ++stats_.ambiguous_end_of_data;
      out_.note(now, "ambiguous end of data: the session ended after the message was sent upstream");
      finish_transaction(now, t.id, outcome::unknown, std::nullopt, false);
    } else {
      // The upstream's 421 (or 221) closed the channel under it: a transient failure, as a 421
      // to its MAIL or RCPT makes it (README "Outcomes"), not the client's or the relay's abort.
      finish_transaction(now, t.id, upstream_said_421_ ? outcome::tempfailed : outcome::aborted, std::nullopt, false);
    }
  }
}

// ---------------------------------------------------------------- leaving

void relay_fsm::upstream_lost(std::uint64_t now, std::string_view reason, std::string_view detail) {
  if (faults_.stalled()) {   // a stall answers nothing, not even this; the client gives up on its own
    if (!out_.closed(leg::upstream)) out_.close(leg::upstream);
    out_.arm(leg::upstream, disarmed);
    out_.note(now, std::string(reason) + " during a stall: " + std::string(detail));
    return;
  }
  if (!out_.closed(leg::upstream)) out_.close(leg::upstream);
  out_.arm(leg::upstream, disarmed);
  remember_upstream_loss(reason, detail);
  out_.note(now, std::string(reason) + ": " + std::string(detail));
  if (!greeted_) {
    // The wait for a greeting that never came is the upstream's: the banner stage says so.
    if (observer_ && connected_us_ != 0)
      observer_->on_stage({phase::banner, connected_us_, now - connected_us_, now - connected_us_, 0});
    end_with_reply(now, make_reply(421, "4.4.1", options_.name + " upstream did not greet: " + std::string(detail)), reason,
                   detail);
    return;
  }
  if (upstream_in_data()) {
    // The upstream died in DATA (or before its dot went: the capture settling, a delay fault
    // holding it): keep reading the client's data to its end, then 451.
    if (!data_failure_)
      data_failure_ = make_reply(451, "4.4.2", options_.name + " lost the upstream connection during message transfer");
    give_back_failed_messages_end_plan(now);
    answer_held_dot_now(now, reason == "upstream_timeout" ? "the upstream timed out" : "the upstream was lost");
    return;
  }
  // A BDAT message's end a delay holds never goes: its fault record says why (drop_held_dot).
  faults_.drop_held_dot(now, reason == "upstream_timeout" ? "the upstream timed out"
                             : upstream_closing_code_ != 0 ? "the upstream said " + std::to_string(upstream_closing_code_)
                                                           : std::string("the upstream was lost"));
  reply_slot* it = owed_.first_awaited();
  if (!it && !owed_.empty() && faults_.hold_active(now)) {
    // Replies the upstream already gave are held by a delay fault: they still go out first;
    // flush_replies ends the session once they are (out_.closed(leg::upstream)).
    return;
  }
  if (it) {
    // The command waited on the upstream until now (its stage's upstream time, not the relay's).
    it->answer.t_upstream = now;
    const transaction* owner = txns_.find(it->asked.txn);
    // A transaction already settled before its end's reply (a chunk before the last refused, a
    // 421 to it) cannot be delivered, whether the last chunk went or not: nothing ambiguous.
    const bool end_went_upstream = owner && may_have_delivered(*owner);
    if (end_went_upstream && it->asked.answers_end_of_data()) {
      // The dot went out but no reply came back: the message may or may not be delivered.
      ++stats_.ambiguous_end_of_data;
      // A timeout is named as one (a newcomer's trial: the sender's log said "lost" for an
      // upstream that was there and silent, while the capture said upstream_timeout).
      const bool timed_out = reason == "upstream_timeout";
      out_.note(now, timed_out ? "ambiguous end of data: upstream timed out after the message was sent"
                               : "ambiguous end of data: upstream lost after the message was sent");
      it->answer.parsed = make_reply(451, "4.4.2", options_.name + (timed_out ? " upstream timed out" : " lost the upstream") +
                                                       " after end of data; delivery status unknown");
      it->answer.bytes = it->answer.parsed->raw;
      it->answer.ready = true;
      it->answer.local = true;
      owed_.drop_after(*it);
      finish_transaction(now, it->asked.txn, outcome::unknown, it->answer.parsed, true);
    } else {
      if (end_went_upstream) {
        // A pipelined BDAT ... LAST went whole behind the command waiting here (MAIL, RCPT, a
        // chunk before it): the destination may have taken the message and delivered it before
        // the connection was lost, so the transaction is unknown, not the 421's tempfail, though
        // the client gets the 421 for the command it waits on.
        ++stats_.ambiguous_end_of_data;
        out_.note(now, "ambiguous end of data: upstream lost after the message was sent, before the replies to its envelope");
        finish_transaction(now, it->asked.txn, outcome::unknown, std::nullopt, false);
      }
      // A QUIT owed its reply has what it asked for, the session's end (a destination that
      // closes after an accepted message, without its 221): 221, not a failure.
      // Only a plain close: a timeout or a protocol error keeps its 421 and its end reason.
      it->answer.parsed = it->asked.ph == phase::quit && reason == "upstream_closed"
                              ? make_reply(221, "2.0.0", options_.name + " closing connection")
                              : upstream_loss_reply(reason, detail);
      it->answer.bytes = it->answer.parsed->raw;
      it->answer.ready = true;
      it->answer.local = true;
      owed_.drop_after(*it);
    }
    flush_replies(now);   // ends the session: out_.closed(leg::upstream) with nothing pending
    // Unless a delay still holds replies the upstream gave: they go out first, then the 421.
    if (!ended_ && !faults_.hold_active(now)) end_session(now, reason, detail);
    return;
  }
  // A server that refused service at its greeting (554, or 521, RFC 7504 3) and then closes has
  // said its last word: no 421 of the relay's after it.
  if (greeting_refused_) {
    record_rest_of_client_input(now);
    return end_session(now, reason, detail);
  }
  end_with_reply(now, upstream_loss_reply(reason, detail), reason, detail);
}

// 421 4.4.2 (RFC 3463 X.4.2: bad connection) naming what happened: a timeout is no hang-up.
reply relay_fsm::upstream_loss_reply(std::string_view reason, std::string_view detail) const {
  if (reason == "upstream_timeout")
    return make_reply(421, "4.4.2", options_.name + " upstream timed out: " + std::string(detail));
  // The upstream said it was closing (421, or 221 to a command other than QUIT): the commands
  // pipelined behind the one it answered are told that, the service closing the channel (RFC
  // 5321 3.8), not that a connection was lost (a hostile trial: DATA behind a RCPT answered 221
  // got "upstream connection lost").
  if (reason == "upstream_closed" && upstream_closing_code_ != 0)
    return make_reply(421, "4.4.2", options_.name + " upstream service closing transmission channel (it said " +
                                        std::to_string(upstream_closing_code_) + ")");
  // The relay closed a connection that was still up (the detail, in the capture, says how).
  if (reason == "upstream_protocol_error")
    return make_reply(421, "4.4.2", options_.name + (detail.starts_with(upstream_tls_broken_detail)
                                                         ? " upstream broke TLS, connection closed"
                                                         : " upstream broke the SMTP protocol, connection closed"));
  return make_reply(421, "4.4.2", options_.name + " upstream connection lost");
}

void relay_fsm::end_with_reply(std::uint64_t now, const reply& r, std::string_view reason, std::string_view detail) {
  // A line a delay fault holds is recorded as the command it is before the rest is dropped, or
  // its record would be empty (abandon_held_line reads it from the unparsed input).
  abandon_held_line(now);
  record_rest_of_client_input(now);   // bytes that came before the reply are recorded before it
  out_.say(now, r);
  end_session(now, reason, detail);
}

void relay_fsm::remember_upstream_loss(std::string_view reason, std::string_view detail) {
  upstream_lost_reason_ = std::string(reason);
  upstream_lost_detail_ = std::string(detail);
}

// A command a delay fault held (when = "command") when the session ended never went upstream:
// its command record and its fault record (the delay it got) are still written, with a note,
// so that the capture shows what the client asked for (its bytes were recorded as they came).
void relay_fsm::abandon_held_line(std::uint64_t now) {
  if (!faults_.line_held()) return;
  const std::uint64_t since = faults_.held_line_since();
  const std::string_view rest = in_.unparsed();
  const std::size_t crlf = rest.find("\r\n");
  const std::string_view body = rest.substr(0, crlf == std::string_view::npos ? rest.size() : crlf);
  std::optional<fault_decision> decided;
  const parsed_command parsed = faults_.take_held_line(now, decided);
  announce_command(since, body, parsed.cmd);
  out_.note(now, "the session ended while a delay fault held this command: it was never forwarded");
  // A MAIL held so still began a transaction the client asked for: it has its record, settled
  // as the session's end settles every transaction in flight (abandon_transactions: aborted, or
  // tempfailed after the upstream's 421), as a held DATA's or RCPT's transaction has. A hostile
  // trial: a sender that gave up on a held MAIL left no transaction record at all.
  if (parsed.cmd.ph == phase::mail && parsed.fault == command_fault::none && !txns_.open())
    begin_transaction(since, parsed.cmd);
  // A RCPT held so is its transaction's recipient, listed without a code, as every recipient the
  // destination never answered is; after a refused MAIL (its 421, the session ending with it),
  // that attempt's, as a RCPT pipelined behind the MAIL is (follow_held_refusal).
  if (parsed.cmd.ph == phase::rcpt && parsed.fault == command_fault::none) {
    if (transaction* open = txns_.open()) record_recipient(now, *open, parsed.cmd.address.value_or(parsed.cmd.argument));
    else follow_held_refusal(parsed.cmd);
  }
}

void relay_fsm::end_session(std::uint64_t now, std::string_view reason, std::string_view detail) {
  if (ended_) return;
  abandon_held_line(now);
  faults_.session_ending(now);   // a delay still holding something: recorded, with the time it held
  if (!greeted_ && connected_us_ == 0 && !faults_.no_greeting_rule().empty() && observer_) {
    // A greeting an upstream_unreachable fault withholds (mode no_greeting: no connection is
    // made) is a stage too, all of it the fault's: the relay's time, not an upstream's (a
    // newcomer's trial: a sender that gave up on it left "(no stages)").
    observer_->on_stage({phase::banner, dial_from_us_, now - dial_from_us_, 0, 0});
  }
  if (const auto stall = faults_.stalled_stage(); stall && observer_) {
    // A stall's stage never got its reply: it runs to the end, all of it the fault's (a
    // newcomer's trial: the stalled RCPT and its 5 s were missing from the stage table).
    const auto [ph, since] = *stall;
    observer_->on_stage({ph, since, now - since, 0, since > think_from_us_ ? since - think_from_us_ : 0, 0});
  }
  record_received_size();   // a message cut short keeps the size of what came
  abandon_transactions(now);
  report_held_refusal();
  // Every byte the client sent, a line the end cut off too, before the end record: nothing may follow it.
  record_rest_of_client_input(now);
  ended_ = true;
  out_.arm(leg::client, disarmed);
  out_.arm(leg::upstream, disarmed);
  if (!out_.closed(leg::client)) out_.close(leg::client);
  if (!out_.closed(leg::upstream)) out_.close(leg::upstream);
  if (observer_) observer_->on_end(now, reason, detail);
}

// Draining, with nothing owed and no transaction open: a command other than QUIT gets the 421.
bool relay_fsm::drain_answers_with_421(phase ph) const {
  return draining_ && owed_.empty() && txns_.empty() && ph != phase::quit;
}

// During a drain a session ends with 421 once nothing is owed and no transaction is open. One
// idle when the drain began (or sending a command now) hears it at once. One that has just been
// answered first gets drain_next_command_grace_us for its next command, most often QUIT,
// answered 221 as usual: a 421 sent unasked right after its last reply was read by the client
// as the answer to that QUIT (RFC 5321 3.8 allows it, but the sender then reports a failure).
void relay_fsm::maybe_finish_drain(std::uint64_t now, bool at_once) {
  if (!draining_ || ended_ || !owed_.empty() || !txns_.empty() || mode_ != client_mode::command || quit_taken_) return;
  if (!at_once) {
    if (drain_grace_until_us_ == 0) drain_grace_until_us_ = now + drain_next_command_grace_us;
    if (now < drain_grace_until_us_) {
      faults_.wake_at(now, drain_grace_until_us_);   // again after any other wake-up on the timer
      return;
    }
  }
  end_with_reply(now, make_reply(421, "4.3.2", options_.name + " shutting down"), "drain", "");
}

// ---------------------------------------------------------------- output helpers

void relay_fsm::arm_upstream_for_head() {
  const reply_slot* it = owed_.first_awaited();
  if (!it || out_.closed(leg::upstream)) {
    out_.arm(leg::upstream, disarmed);
    return;
  }
  const auto& t = options_.timeouts;
  switch (it->asked.ph) {
    case phase::data: out_.arm(leg::upstream, t.upstream_data_init); break;
    case phase::data_end: out_.arm(leg::upstream, t.upstream_data_end); break;
    case phase::bdat: out_.arm(leg::upstream, it->asked.last_chunk ? t.upstream_data_end : t.upstream_reply); break;
    default: out_.arm(leg::upstream, t.upstream_reply); break;
  }
}

}  // namespace mailtap::protocol
