// The replay server: the live client's bytes are cut into steps the way the recording's were
// (replay/script.cpp), by the replies this machine has played: after a 354 the message up to
// its end where the relay found it (protocol/data_framer.hpp in the capture's bare_eol mode:
// CRLF.CRLF, and in an older normalize capture "\n.\n" too), after a 334 an AUTH response,
// a BDAT line with its counted payload. Each step is compared with the recorded one as it
// arrives (a running comparison: nothing but the current line is held), and answered with
// the recorded reply after the recorded delay.
#include "replay/server_fsm.hpp"

#include <algorithm>
#include <optional>

#include "protocol/auth_redaction.hpp"
#include "protocol/command.hpp"
#include "protocol/data_framer.hpp"
#include "protocol/limits.hpp"
#include "protocol/reply.hpp"

namespace mailtap::replay {

std::string_view to_string(divergence::what w) {
  switch (w) {
    case divergence::what::command: return "command";
    case divergence::what::message: return "message";
    case divergence::what::client_name: return "client_name";
    case divergence::what::extra: return "extra";
    case divergence::what::missing: return "missing";
    case divergence::what::unexpected: return "unexpected";
    case divergence::what::timeout: return "timeout";
    case divergence::what::stopped: return "stopped";
  }
  return "command";
}

namespace {

// What the machine says where the recording has nothing more to say.
constexpr std::string_view reply_extra_quit = "221 2.0.0 mailtap replay: bye (the recording ended before this QUIT)\r\n";
constexpr std::string_view reply_early_quit = "221 2.0.0 mailtap replay: bye (the recording goes on after this QUIT)\r\n";
constexpr std::string_view reply_extra = "421 4.3.0 mailtap replay: the recording has no more replies\r\n";
// A reply due within this is sent at once: the shell's timer counts milliseconds
// (protocol::arm_timer), and a sub-millisecond wait would cost a timer's wake-up for nothing.
constexpr std::uint64_t timer_resolution_us = 500;
constexpr std::string_view reply_line_too_long = "500 5.5.2 mailtap replay: line too long\r\n";
// A BDAT line without a size the relay can frame its chunk by (RFC 3030): what the relay
// answers before it closes (protocol/relay_fsm.cpp, command_fault::bad_bdat).
constexpr std::string_view reply_bad_bdat = "501 5.5.4 mailtap replay: Syntax error in BDAT parameters\r\n";
// The relay's answer to a client idle for client_idle (protocol/relay_fsm.cpp, client_timed_out).
constexpr std::string_view reply_idle = "421 4.4.2 mailtap replay: timeout waiting for client input\r\n";
// Its answer when it shuts down (RFC 5321 3.8: 421 before closing).
constexpr std::string_view reply_stopping = "421 4.3.2 mailtap replay: shutting down\r\n";

// "AUTH PLAIN" of "AUTH PLAIN ****": what an AUTH command shows once its material is masked.
std::string auth_head(std::string_view line) {
  auto first = line.find(' ');
  auto second = first == std::string_view::npos ? first : line.find(' ', first + 1);
  return protocol::to_upper(line.substr(0, second));
}

std::string_view without_crlf(std::string_view line) {
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

bool is_auth_command(std::string_view line) { return protocol::iequals(line.substr(0, line.find(' ')), "AUTH"); }

// A live line as the reports show it, AUTH material masked as captures mask it
// (captures/FORMAT.md, protocol/auth_redaction.hpp): an AUTH command keeps its verb and
// mechanism ("AUTH PLAIN ****"), a line of the exchange after a 334 is masked whole.
std::string shown_line(std::string_view line, bool auth_response) {
  if (auth_response) return std::string(line.size(), '*');
  if (is_auth_command(line)) return protocol::escape_bytes(protocol::masked_auth_line(line), 1000);
  return protocol::escape_bytes(line, 1000);
}

// Where a command line's case-insensitive words end (RFC 5321 2.4: verbs and argument
// keywords such as "FROM:" and "TO:" are not case sensitive; a mailbox's local part is): the
// verb, and for MAIL and RCPT the keyword after it.
std::size_t keywords_end(std::string_view line) {
  std::size_t end = std::min(line.find_first_of(" \r\n"), line.size());
  const std::string_view verb = line.substr(0, end);
  if ((protocol::iequals(verb, "MAIL") || protocol::iequals(verb, "RCPT")) && end < line.size() && line[end] == ' ') {
    const std::size_t colon = line.find(':', end + 1);
    if (colon != std::string_view::npos) {
      const std::string_view keyword = line.substr(end + 1, colon + 1 - (end + 1));
      if (protocol::iequals(keyword, "FROM:") || protocol::iequals(keyword, "TO:")) end = colon + 1;
    }
  }
  return end;
}

// The live command line with its verb (and MAIL/RCPT keyword) spelled as the recording spells
// them, where they are the same words in another case: "mail FROM:" reads as "MAIL FROM:".
std::string as_recorded_case(std::string_view live, std::string_view recorded) {
  std::string out(live);
  const std::size_t n = keywords_end(live);
  if (n > 0 && n <= recorded.size() && keywords_end(recorded) == n && protocol::iequals(live.substr(0, n), recorded.substr(0, n)))
    out.replace(0, n, recorded.substr(0, n));
  return out;
}

// A MAIL line with its SIZE parameter's value taken out ("MAIL FROM:<a> SIZE= BODY=8BITMIME"),
// so that two lines differing only there compare equal; nothing when the line has no SIZE after
// its path. The keyword and everything else stay as sent.
std::optional<std::string> without_size_value(std::string_view line) {
  const std::size_t path_end = line.find('>');
  if (path_end == std::string_view::npos) return std::nullopt;
  for (std::size_t pos = line.find(' ', path_end); pos != std::string_view::npos; pos = line.find(' ', pos + 1)) {
    if (!protocol::iequals(line.substr(pos + 1, 5), "SIZE=")) continue;
    const std::size_t value = pos + 6;
    std::string out(line);
    out.erase(value, std::min(line.find(' ', value), line.size()) - value);
    return out;
  }
  return std::nullopt;
}

// Bytes read outside any step (before a TLS handshake), shown the same way: an AUTH line's
// initial response and every line after it masked, since they may be its exchange.
std::string shown_bytes(std::string_view bytes) {
  std::string out;
  bool masking = false;
  for (std::size_t pos = 0; pos < bytes.size();) {
    std::size_t lf = bytes.find('\n', pos);
    const std::size_t end = lf == std::string_view::npos ? bytes.size() : lf + 1;
    const std::string_view line = bytes.substr(pos, end - pos);
    if (!masking && is_auth_command(protocol::stripped_crlf(line))) {
      out += protocol::masked_auth_line(line);
      masking = true;
    } else {
      out += masking ? protocol::masked_auth_line(line) : std::string(line);
    }
    pos = end;
  }
  return protocol::escape_bytes(out, 80);
}

}  // namespace

server_fsm::server_fsm(const script& s, timing t, server_options o) : script_(s), timing_(t), options_(o) {}

void server_fsm::diverge(divergence::what w, std::size_t step, std::uint64_t now_us, std::string recorded,
                         std::string live) {
  divergences_.push_back({w, step, now_us, std::move(recorded), std::move(live)});
}

// A live client writes its own message (its Date, Message-ID, Received): a message that
// differs is reported, and counts as a divergence only with --compare-message.
void server_fsm::message_differs(std::size_t step, std::uint64_t now_us, std::string recorded, std::string live) {
  if (options_.compare_message) diverge(divergence::what::message, step, now_us, std::move(recorded), std::move(live));
  else noted_.push_back({divergence::what::message, step, now_us, std::move(recorded), std::move(live)});
}

// An EHLO or HELO as recorded but for the name after the verb: the live client's own host
// name. Reported (noted), and a divergence only with compare_client_name. False for anything
// else (another verb), which compare() counts.
bool server_fsm::client_name_differs(const step& recorded, std::size_t step, std::uint64_t now_us, const std::string& shown) {
  const auto live = protocol::parse_command(unit_.line);
  const auto live_ph = live.cmd.ph;
  if (live.fault != protocol::command_fault::none) return false;   // a bare LF in it, say: the line differs
  if (live_ph != protocol::phase::ehlo && live_ph != protocol::phase::helo) return false;
  if (protocol::parse_command(without_crlf(recorded.bytes)).cmd.ph != live_ph) return false;
  if (options_.compare_client_name) diverge(divergence::what::client_name, step, now_us, recorded.text, shown);
  else noted_.push_back({divergence::what::client_name, step, now_us, recorded.text, shown});
  return true;
}

// A MAIL as recorded but for its SIZE parameter's value: a live client declares its own
// message's size (Postfix sends SIZE on every MAIL, RFC 1870), which differs as the message
// does. Noted, and a divergence only with compare_message, as the message is. False for
// anything else (another address or parameter), which compare() counts.
bool server_fsm::size_differs(const step& recorded, std::size_t step, std::uint64_t now_us, const std::string& shown) {
  const auto live = protocol::parse_command(unit_.line);
  if (live.fault != protocol::command_fault::none || live.cmd.ph != protocol::phase::mail) return false;
  const auto live_line = without_size_value(as_recorded_case(unit_.line, recorded.bytes));
  if (!live_line || live_line != without_size_value(without_crlf(recorded.bytes))) return false;
  message_differs(step, now_us, recorded.text, shown);
  return true;
}

// The machine is waiting for the client: nothing of its own to send, no handshake running.
bool server_fsm::waiting_for_client() const {
  return !finished_ && !closing_ && !tls_pending_ && out_.empty() && options_.client_idle.count() > 0;
}

void server_fsm::time_out(std::uint64_t now_us) {
  const std::uint64_t idle_s = static_cast<std::uint64_t>(options_.client_idle.count()) / 1000;
  // Part of the step may have come: a message's or chunk's bytes so far, or a line's without its CRLF.
  const bool in_payload = mode_ == mode::message || mode_ == mode::bdat_payload;
  const std::size_t partial = in_payload ? unit_.seen + in_.size() : in_.size();
  diverge(divergence::what::timeout, next_step_, now_us,
          next_step_ < script_.steps.size() ? script_.steps[next_step_].text : "",
          (partial > 0 ? std::to_string(partial) + " bytes of it, then nothing for " : std::string("nothing for ")) +
              (idle_s > 0 ? std::to_string(idle_s) + " s" : std::to_string(options_.client_idle.count()) + " ms") +
              ": 421 4.4.2, closed");
  queue(now_us, std::string(reply_idle), then::close);
}

void server_fsm::on_start(std::uint64_t now_us) {
  idle_deadline_us_ = now_us + static_cast<std::uint64_t>(options_.client_idle.count()) * 1000;
  if (script_.implicit_tls) {
    tls_pending_ = true;
    actions_.push_back(protocol::start_tls{protocol::leg::client});
    return;
  }
  if (!script_.banner) {
    queue(now_us, {}, then::close);
  } else {
    queue(now_us + timing_.scale(script_.banner->t_us), script_.banner->reply.raw,
          script_.banner->reply.code == 421 ? then::close : then::nothing);
    if (script_.steps.empty()) queue_after_last(now_us);
  }
  send_due(now_us);
}

void server_fsm::on_tls_ready(std::uint64_t now_us) {
  tls_pending_ = false;
  idle_deadline_us_ = now_us + static_cast<std::uint64_t>(options_.client_idle.count()) * 1000;
  in_.clear();
  mode_ = mode::command;
  if (script_.implicit_tls && next_step_ == 0 && played_.empty() && last_due_us_ == 0 && script_.banner) {
    queue(now_us, script_.banner->reply.raw, then::nothing);   // SMTPS: the greeting follows the handshake
    if (script_.steps.empty()) queue_after_last(now_us);
  }
  send_due(now_us);
}

void server_fsm::on_tls_failed(std::uint64_t now_us) {
  if (finished_) return;
  diverge(divergence::what::missing, next_step_, now_us, "a TLS handshake", "the handshake failed");
  finished_ = true;
  drop_unsent();
  actions_.push_back(protocol::close_leg{protocol::leg::client});
}

void server_fsm::on_client_closed(std::uint64_t now_us) {
  if (finished_) return;
  if (next_step_ < script_.steps.size())
    diverge(divergence::what::missing, next_step_, now_us, script_.steps[next_step_].text,
            "the client closed the connection");
  finished_ = true;
  drop_unsent();
  actions_.push_back(protocol::close_leg{protocol::leg::client});
}

void server_fsm::on_stop(std::uint64_t now_us) {
  if (finished_) return;
  if (next_step_ < script_.steps.size() || !out_.empty())
    diverge(divergence::what::stopped, next_step_, now_us,
            next_step_ < script_.steps.size() ? script_.steps[next_step_].text : "the recording's last replies",
            "the replay server was stopped: 421 4.3.2, closed");
  drop_unsent();
  actions_.push_back(protocol::send_bytes{protocol::leg::client, std::string(reply_stopping)});
  actions_.push_back(protocol::close_leg{protocol::leg::client});
  finished_ = true;
}

void server_fsm::on_client_bytes(std::string_view bytes, std::uint64_t now_us) {
  if (finished_ || closing_) return;
  if (tls_pending_) {   // RFC 3207 4.2: nothing sent before the handshake is read as protected
    diverge(divergence::what::unexpected, next_step_, now_us, "a TLS handshake", shown_bytes(bytes));
    return;
  }
  idle_deadline_us_ = now_us + static_cast<std::uint64_t>(options_.client_idle.count()) * 1000;
  in_.append(bytes);
  take_input(now_us);
  send_due(now_us);
}

void server_fsm::on_timer(std::uint64_t now_us) {
  if (finished_) return;
  if (waiting_for_client() && now_us + timer_resolution_us >= idle_deadline_us_) time_out(now_us);
  send_due(now_us);
}

void server_fsm::take_input(std::uint64_t now_us) {
  std::size_t pos = 0;
  while (pos < in_.size() && !closing_ && !tls_pending_) {
    std::string_view rest = std::string_view(in_).substr(pos);
    if (mode_ == mode::message) {
      // The framer holds at most two bytes back; the message itself is only counted. It ends
      // where the relay ended the recorded one, in the capture's bare_eol mode (as the script
      // cuts it): in an older normalize capture (normalize_line_ends) "\n.\n" ends it and what
      // follows is commands.
      if (!framer_) framer_.emplace(script_.bare_eol);
      std::string ignored;
      const std::size_t used = framer_->feed(rest, ignored);
      unit_.append(rest.substr(0, used), script_, next_step_);
      pos += used;
      if (!framer_->ended()) break;
      framer_.reset();
      take_step(step_kind::message, now_us);
      continue;
    }
    if (mode_ == mode::bdat_payload) {
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(bdat_remaining_, rest.size()));
      unit_.append(rest.substr(0, n), script_, next_step_);
      pos += n;
      bdat_remaining_ -= n;
      if (bdat_remaining_ > 0) break;
      take_step(step_kind::bdat, now_us);
      continue;
    }
    // Only CRLF ends a line, as the relay reads a command line or an AUTH response (RFC 5321
    // 2.3.8) and as the script cuts the recording into steps: a bare LF is part of the line.
    const auto crlf = rest.find("\r\n");
    if (crlf == std::string_view::npos) {
      if (rest.size() > protocol::limits::command_line_hard_cap + protocol::limits::auth_response_cap) {
        diverge(divergence::what::command, next_step_, now_us,
                next_step_ < script_.steps.size() ? script_.steps[next_step_].text : "", "a line over the cap");
        queue(now_us, std::string(reply_line_too_long), then::close);
      }
      break;
    }
    const std::string_view line = rest.substr(0, crlf + 2);
    pos += line.size();
    if (mode_ == mode::command && next_step_ < script_.steps.size())
      unit_.append(as_recorded_case(line, script_.steps[next_step_].bytes), script_, next_step_);
    else
      unit_.append(line, script_, next_step_);
    unit_.line = std::string(line.substr(0, line.size() - 2));
    const std::string& shown_as = unit_.line;   // a bare LF inside shows as \n (shown_line)
    if (mode_ == mode::auth) {
      unit_.shown = shown_line(shown_as, true);
      take_step(step_kind::auth_response, now_us);
      continue;
    }
    const auto parsed = protocol::parse_command(unit_.line);
    // After a live AUTH, a line that is no SMTP command is taken for its SASL response even
    // where the reply played was not 334 (the recorded client sent an initial response, this
    // one its response on a line of its own): masked whole, as an exchange's lines are.
    const bool sasl_line = live_auth_exchange_ && parsed.cmd.ph == protocol::phase::other;
    unit_.shown = shown_line(shown_as, sasl_line);
    live_auth_exchange_ = sasl_line || parsed.cmd.ph == protocol::phase::auth;
    if (parsed.fault == protocol::command_fault::bad_bdat) {
      // Where its chunk ends is unknown, so nothing after it can be read as commands: the
      // relay closes, and a recorded reply played here would take a chunk's bytes for commands.
      diverge(divergence::what::command, next_step_, now_us,
              next_step_ < script_.steps.size() ? script_.steps[next_step_].text : "", unit_.shown + " (unparseable BDAT size)");
      queue(now_us, std::string(reply_bad_bdat), then::close);
      break;
    }
    if (parsed.cmd.ph == protocol::phase::bdat && parsed.fault == protocol::command_fault::none) {
      bdat_remaining_ = parsed.cmd.bdat_size;
      mode_ = mode::bdat_payload;
      if (bdat_remaining_ == 0) take_step(step_kind::bdat, now_us);
      continue;
    }
    take_step(step_kind::command, now_us);
  }
  in_.erase(0, pos);
  if (tls_pending_ && !in_.empty()) {
    diverge(divergence::what::unexpected, next_step_, now_us, "a TLS handshake", shown_bytes(in_));
    in_.clear();
  }
}

void server_fsm::live_unit::append(std::string_view bytes, const script& s, std::size_t step) {
  if (step < s.steps.size()) {
    const std::string& recorded = s.steps[step].bytes;
    if (matches && (seen + bytes.size() > recorded.size() || recorded.compare(seen, bytes.size(), bytes) != 0)) {
      std::size_t i = 0;
      while (i < bytes.size() && seen + i < recorded.size() && recorded[seen + i] == bytes[i]) ++i;
      first_difference = seen + i;
      matches = false;
    }
  }
  seen += bytes.size();
}

void server_fsm::compare(const step& recorded, step_kind kind, std::uint64_t now_us) {
  const std::size_t index = next_step_;
  const std::string live = kind == step_kind::message ? message_text(unit_.seen)
                                                      : unit_.shown;
  if ((kind == step_kind::message) != (recorded.kind == step_kind::message)) {
    diverge(divergence::what::command, index, now_us, recorded.text, live);
    return;
  }
  if (kind == step_kind::auth_response) return;   // masked in the capture: nothing to compare
  if (recorded.auth && kind == step_kind::command) {
    const auto want = auth_head(without_crlf(recorded.bytes));
    if (auth_head(unit_.line) != want) diverge(divergence::what::command, index, now_us, want, auth_head(unit_.line));
    return;
  }
  if (unit_.matches && unit_.seen == recorded.bytes.size()) return;
  const std::string at = ", first difference at byte " +
                         std::to_string(unit_.matches ? std::min(unit_.seen, recorded.bytes.size()) : unit_.first_difference);
  if (kind == step_kind::message) {
    message_differs(index, now_us, recorded.text, live + at);
    return;
  }
  // A BDAT chunk of another size or content is the message differing, not the conversation,
  // as long as it is the last chunk where the recorded one was (RFC 3030 2).
  if (kind == step_kind::bdat && recorded.kind == step_kind::bdat &&
      protocol::parse_command(unit_.line).cmd.bdat_last ==
          protocol::parse_command(without_crlf(recorded.bytes.substr(0, recorded.bytes.find('\n') + 1))).cmd.bdat_last) {
    message_differs(index, now_us, recorded.text, live + at);
    return;
  }
  if (kind == step_kind::command &&
      (client_name_differs(recorded, index, now_us, live) || size_differs(recorded, index, now_us, live)))
    return;
  diverge(divergence::what::command, index, now_us, recorded.text, live);
}

void server_fsm::take_step(step_kind kind, std::uint64_t now_us) {
  const std::string live = kind == step_kind::message ? message_text(unit_.seen)
                                                      : unit_.shown;
  const protocol::phase live_ph =
      kind == step_kind::command ? protocol::parse_command(unit_.line).cmd.ph : protocol::phase::other;
  const bool live_starttls = live_ph == protocol::phase::starttls;
  const bool live_quit = live_ph == protocol::phase::quit;
  const bool live_data = live_ph == protocol::phase::data;
  const bool live_auth = live_ph == protocol::phase::auth;
  mode_ = mode::command;
  if (next_step_ >= script_.steps.size()) {
    diverge(divergence::what::extra, next_step_, now_us, "", live);
    played_.push_back({next_step_, live, live_quit ? 221 : 421, reply_source::server, "", now_us, 0});
    queue(now_us, std::string(live_quit ? reply_extra_quit : reply_extra), then::close);
    out_.back().played = played_.size() - 1;
    unit_ = {};
    return;
  }
  const step& recorded = script_.steps[next_step_];
  compare(recorded, kind, now_us);
  unit_ = {};
  if (live_quit && protocol::parse_command(recorded.text).cmd.ph != protocol::phase::quit) {
    // RFC 5321 4.1.1.10: the receiver of QUIT MUST send 221 and close, whatever the recorded
    // server said to the command recorded here (reported above as a divergence).
    played_.push_back({next_step_, live, 221, reply_source::server, "", now_us, 0});
    queue(now_us, std::string(reply_early_quit), then::close);
    out_.back().played = played_.size() - 1;
    return;
  }
  const bool last = ++next_step_ == script_.steps.size();
  if (!recorded.reply) {   // the recording ended before this step was answered
    played_.push_back({next_step_ - 1, live, 0, reply_source::server, "", now_us, 0});
    queue(now_us, {}, then::close);
    return;
  }
  const recorded_reply& r = *recorded.reply;
  const std::uint64_t delay = timing_.scale(recorded.reply_delay_us());
  played_.push_back({next_step_ - 1, live, r.reply.code, r.source, r.rule, now_us, delay});
  // A delay fault is recorded when it let the reply go: at the reply's time, after the step.
  for (const auto& f : script_.faults)
    if (f.fault.decision == "delay" && f.t_us >= recorded.done_us && f.t_us <= r.t_us) played_.back().delay_rule = f.fault.rule;
  then after = then::nothing;
  if (r.reply.code == 221 || r.reply.code == 421) after = then::close;
  else if (recorded.starts_tls && live_starttls) after = then::tls;
  queue(now_us + delay, r.reply.raw, after);
  out_.back().played = played_.size() - 1;
  if (after == then::tls) tls_pending_ = true;
  if (r.reply.code == 354 && live_data) mode_ = mode::message;
  if (r.reply.code == 334 && (recorded.auth || live_auth || kind == step_kind::auth_response)) mode_ = mode::auth;
  if (last && after == then::nothing) queue_after_last(now_us);
}

// After the last recorded step: the replies the recording has after it (a 421 at a timeout),
// then a close if the server's side ended the recorded session.
void server_fsm::queue_after_last(std::uint64_t now_us) {
  const std::uint64_t recorded_ref = script_.steps.empty() ? (script_.banner ? script_.banner->t_us : 0)
                                                           : script_.steps.back().done_us;
  for (const auto& u : script_.unsolicited) {
    const std::uint64_t gap = u.t_us > recorded_ref ? u.t_us - recorded_ref : 0;
    queue(now_us + timing_.scale(gap), u.reply.raw, then::nothing);
  }
  // The recorded client left first, or the capture does not say (no end record): the server
  // waits for the live client to go. Otherwise the recorded server side closed, and so does this.
  if (!script_.ended_by_client() && !script_.end_reason.empty()) queue(now_us, {}, then::close);
}

void server_fsm::drop_unsent() {
  for (const auto& o : out_)
    if (o.played && !o.bytes.empty()) played_[*o.played].sent = false;
  out_.clear();
}

void server_fsm::queue(std::uint64_t due_us, std::string bytes, then after) {
  // Replies leave in order: none overtakes an earlier one with a longer delay.
  last_due_us_ = std::max(last_due_us_, due_us);
  out_.push_back({last_due_us_, std::move(bytes), after, std::nullopt});
  if (after == then::close) closing_ = true;
}

void server_fsm::send_due(std::uint64_t now_us) {
  while (!out_.empty() && out_.front().due_us <= now_us + timer_resolution_us && !finished_) {
    outgoing o = std::move(out_.front());
    out_.pop_front();
    if (!o.bytes.empty()) {
      actions_.push_back(protocol::send_bytes{protocol::leg::client, std::move(o.bytes)});
      // The client's turn from here: its idle time counts from the last reply it was sent.
      idle_deadline_us_ = now_us + static_cast<std::uint64_t>(options_.client_idle.count()) * 1000;
    }
    if (o.after == then::tls) {
      actions_.push_back(protocol::start_tls{protocol::leg::client});
    } else if (o.after == then::close) {
      actions_.push_back(protocol::close_leg{protocol::leg::client});
      finished_ = true;
      drop_unsent();
    }
  }
  if (!out_.empty() && !finished_) {
    // Over timer_resolution_us, so at least 1 ms; rounded to the nearest millisecond, so a
    // reply is at most half a millisecond early (and sent then, see the loop above) or late.
    const std::uint64_t wait_us = out_.front().due_us - now_us;
    actions_.push_back(protocol::arm_timer{protocol::leg::client, std::chrono::milliseconds((wait_us + 500) / 1000)});
  } else if (waiting_for_client()) {
    // Rounded up, and never zero (zero disarms).
    const std::uint64_t wait_us = idle_deadline_us_ > now_us ? idle_deadline_us_ - now_us : 0;
    actions_.push_back(protocol::arm_timer{protocol::leg::client,
                                           std::chrono::milliseconds(std::max<std::uint64_t>(1, (wait_us + 999) / 1000))});
  }
}

}  // namespace mailtap::replay
