// The fault holds of the relay machine (fault_holds.hpp): asking the fault advisor at each
// decision point and carrying out its one decision.
#include "protocol/fault_holds.hpp"

#include <algorithm>
#include <utility>

#include "protocol/auth_redaction.hpp"

namespace mailtap::protocol {

namespace {
using std::chrono::microseconds;

// A duration as the fault records say it: "2 s", "1.5 s", "250 ms".
std::string duration_text(std::uint64_t us) {
  const std::uint64_t ms = us / 1000;
  if (ms < 1000) return std::to_string(ms) + " ms";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + " s";
  std::string tenths = std::to_string(ms / 1000) + "." + std::to_string(ms % 1000 / 100);
  if (ms % 100 != 0) tenths += std::to_string(ms % 100 / 10) + (ms % 10 ? std::to_string(ms % 10) : "");
  while (tenths.back() == '0') tenths.pop_back();
  return tenths + " s";
}

std::string describe(const reply_spec& r) {
  std::string out = std::to_string(r.code);
  if (!r.enhanced.empty()) out += " " + r.enhanced;
  if (!r.text.empty()) out += " " + r.text;
  return out;
}

// What a server says for a code without text (policies/ gives every reply a text; this is
// the fallback). Never a word about faults: the client must see what a real server sends,
// and only the capture's fault record tells an injected reply from a real one.
std::string plain_text_for(int code) {
  switch (code / 100) {
    case 2: return "Ok";
    case 3: return "Go ahead";
    case 4: return "Temporary failure, please try again later";
    default: return "Rejected";
  }
}

reply reply_from(const reply_spec& spec) {
  return make_reply(spec.code, spec.enhanced, spec.text.empty() ? plain_text_for(spec.code) : spec.text);
}

// PIX fixup: every banner character but '2', '0' and space becomes '*' (line ends kept).
std::string masked_banner(std::string_view raw) {
  std::string out(raw);
  for (char& c : out)
    if (c != '2' && c != '0' && c != ' ' && c != '\r' && c != '\n') c = '*';
  return out;
}

// ASA ESMTP inspection shows a keyword it removed as X's of the same length ending in 'A'
// (STARTTLS -> XXXXXXXA; policies/README.md, firewall fixup).
std::string masked_keyword(std::string_view keyword) {
  if (keyword.empty()) return {};
  return std::string(keyword.size() - 1, 'X') + 'A';
}

std::uint64_t us(std::chrono::milliseconds ms) { return static_cast<std::uint64_t>(ms.count()) * 1000; }
}  // namespace

fault_holds::fault_holds(fault_advisor* advisor, const relay_options& options, relay_outbox& out, reply_queue& owed,
                         transaction_book& txns, relay_stats& stats, session_observer* observer, fault_host& host)
    : advisor_(advisor), options_(options), out_(out), owed_(owed), txns_(txns), stats_(stats), observer_(observer),
      host_(host) {}

// ---------------------------------------------------------------- asking

// Not counted here: a decision counts when it is applied, which its fault record says (event).
fault_decision fault_holds::ask(const fault_query& q) { return advisor_->decide(q); }

void fault_holds::not_applied(const fault_decision& d) {
  if (!advisor_) return;
  if (d.what != verdict::proceed) advisor_->not_applied(d.rule);
  rewrites_not_applied(d.rewrites);
}

void fault_holds::rewrites_not_applied(const rewrite_set& rw) {
  if (!advisor_) return;
  for (const auto& c : rw.rules) advisor_->not_applied(c.rule);
}

void fault_holds::give_back_end_plan(std::uint64_t now, std::uint64_t txn, std::string_view why) {
  if (!plans_end_of(txn)) return;
  out_.note(now, "fault " + end_plan_->rule + " not applied: " + std::string(why));
  drop_end_plan();
}

void fault_holds::drop_end_plan() {
  if (end_plan_) not_applied(*end_plan_);
  end_plan_.reset();
}

fault_query fault_holds::query_for(phase ph, fault_stage stage, const transaction* t) const {
  fault_query q;
  q.ph = ph;
  q.stage = stage;
  q.ehlo_name = ehlo_name_;
  // An SMTPS client is TLS from connect, although its handshake is reported after on_start.
  q.client_tls = host_.client_tls() || options_.tls.implicit_client_tls;
  if (t) {
    q.mail_from = t->rec.mail_from;
    q.recipients = t->rec.rcpt_to;
    q.transaction_number = t->id;
  }
  return q;
}

// Every fault record is one rule applied: the session's count and the advisor's (max_count,
// mailtap_faults_injected_total) follow it, settling the rule's reservation (a decision's, or a
// split_dot_withhold rule's, reserved when it acts).
void fault_holds::event(std::uint64_t now, const fault_decision& d, phase ph, std::string detail,
                        std::uint64_t actual_delay_us) {
  ++stats_.faults_injected;
  if (advisor_) advisor_->applied(d.rule);
  if (!observer_) return;
  fault_event e;
  e.rule = d.rule;
  e.type = d.type;
  e.decision = d.what == verdict::proceed ? "rewrite" : std::string(to_string(d.what));
  e.ph = ph;
  e.planned_delay_us = d.what == verdict::delay ? d.delay_us : 0;
  e.actual_delay_us = actual_delay_us;
  e.detail = std::move(detail);
  observer_->on_fault(now, e);
}

void fault_holds::schedule_wake(std::uint64_t now, std::uint64_t at_us) {
  if (wake_us_ != 0 && wake_us_ <= at_us) return;
  wake_us_ = at_us;
  // Never zero: a zero timer means "disarm".
  out_.push(arm_fault_timer{microseconds(at_us > now ? at_us - now : 1)});
}

bool fault_holds::hold_active(std::uint64_t now) const {
  if (held_line_ || held_banner_ || held_dot_ || stalled_) return true;
  return owed_.delayed_past(now);
}

void fault_holds::timer(std::uint64_t now) {
  if (host_.ended()) return;
  wake_us_ = 0;
  if (stalled_) {
    if (now < stall_until_us_) return schedule_wake(now, stall_until_us_);
    out_.note(now, "stall ended by the relay: its maximum passed");
    return host_.end_session(now, "fault_stall", "the relay gave up a stalled session");
  }
  release_held(now);
  if (host_.ended()) return;
  host_.flush_replies(now);
  if (!host_.ended()) host_.resume_client_input(now);
}

void fault_holds::release_held(std::uint64_t now) {
  if (held_banner_) {
    // A connect delay counts from the connection, a banner delay from the upstream's greeting.
    std::uint64_t due = std::max(started_us_ + connect_delay_us_,
                                 banner_arrived_us_ + (banner_delay_ ? banner_delay_->delay_us : 0));
    if (now < due) {
      schedule_wake(now, due);
    } else {
      // Each records (and counts) once: a greeting held again (a new upstream connection's) is not theirs.
      if (connect_delay_) event(now, *std::exchange(connect_delay_, std::nullopt), phase::connect, "greeting held",
                                now - started_us_);
      if (banner_delay_) event(now, *std::exchange(banner_delay_, std::nullopt), phase::banner, "greeting held",
                               now - banner_arrived_us_);
      reply r = std::move(*held_banner_);
      held_banner_.reset();
      host_.release_banner(now, banner_arrived_us_, r, std::move(held_banner_bytes_));
    }
  }
  if (held_dot_ && !host_.ended()) {
    std::uint64_t due = held_dot_since_us_ + held_dot_->delay_us;
    if (now < due) {
      schedule_wake(now, due);
    } else {
      event(now, *held_dot_, phase::data_end, "end of data held before forwarding", now - held_dot_since_us_);
      held_dot_.reset();
      // The message stage (fail_then_pass keyed by Message-ID) is asked as the end goes, as for
      // an end no delay held (relay_fsm release_end_of_data, the BDAT path): a delayed message
      // went past it unasked. It withdraws a BDAT end's withheld byte itself.
      if (message(now, txns_.find(held_dot_txn_))) {
        bdat_end_withheld_ = false;
        return;
      }
      if (std::exchange(bdat_end_withheld_, false)) {
        bdat_end_hold_over(now);
        host_.release_withheld_bdat(now, held_dot_txn_);
      } else {
        host_.forward_end_of_data(now, held_dot_txn_, held_dot_arrived_us_);
      }
    }
  }
}

// The hold was the relay's time, as a held dot's is (its reply slot is made when it goes:
// relay_fsm forward_end_of_data): BDAT ... LAST's went with its command, so the destination's
// time to answer it counts from when the held end goes, or is dropped (none then), not from
// the command (a hostile trial: a 400 ms hold was the destination's time in `captures show`).
void fault_holds::bdat_end_hold_over(std::uint64_t now) {
  if (reply_slot* last = owed_.awaited_bdat_last()) last->asked.t_forwarded = std::max(last->asked.t_forwarded, now);
}

void fault_holds::session_ending(std::uint64_t now) {
  if (!advisor_) return;
  if (held_banner_) {
    if (connect_delay_)
      event(now, *std::exchange(connect_delay_, std::nullopt), phase::connect,
            "greeting held; the session ended before it was sent", now - started_us_);
    if (banner_delay_)
      event(now, *std::exchange(banner_delay_, std::nullopt), phase::banner,
            "greeting held; the session ended before it was sent", now - banner_arrived_us_);
  }
  if (held_dot_) {
    event(now, *held_dot_, phase::data_end, "end of data held; the session ended before it was forwarded",
          now - held_dot_since_us_);
    held_dot_.reset();
    if (std::exchange(bdat_end_withheld_, false)) host_.drop_withheld_bdat();
  }
  for (reply_slot& p : owed_) {
    if (!p.answer.ready || !p.fault.decision || p.fault.decision->what != verdict::delay || !p.answer.parsed) continue;
    const std::uint64_t since = std::max(p.answer.t_upstream, p.asked.t_received);
    event(now, *p.fault.decision, p.fault.ph,
          "reply " + std::to_string(p.answer.parsed->code) + " held; the session ended before it was relayed",
          now > since ? now - since : 0);
    p.fault.decision->what = verdict::proceed;   // recorded: never again
  }
}

void fault_holds::drop_held_end_of_data(std::uint64_t now) {
  if (!held_dot_) return;
  event(now, *held_dot_, phase::data_end, "end of data held; the client left before it was forwarded",
        now - held_dot_since_us_);
  held_dot_.reset();
  if (std::exchange(bdat_end_withheld_, false)) host_.drop_withheld_bdat();
}

std::optional<fault_holds::dropped_dot> fault_holds::drop_held_dot(std::uint64_t now, std::string_view why) {
  if (!held_dot_) return std::nullopt;
  event(now, *held_dot_, phase::data_end, "end of data held; " + std::string(why) + " before it was forwarded",
        now - held_dot_since_us_);
  held_dot_.reset();
  // BDAT's held end (its withheld last byte): dropped; its BDAT ... LAST is answered by the
  // machine as any chunk the upstream failed (upstream_replied_in_chunk, upstream_lost).
  if (std::exchange(bdat_end_withheld_, false)) {
    bdat_end_hold_over(now);
    host_.drop_withheld_bdat();
    return std::nullopt;
  }
  return dropped_dot{held_dot_txn_, held_dot_arrived_us_};
}

// ---------------------------------------------------------------- connect and banner

void fault_holds::start(std::uint64_t now) {
  started_us_ = now;
  if (!advisor_) return;
  plan_ = advisor_->plan_session();
  if (plan_.to_client.active()) out_.push(shape_leg{leg::client, plan_.to_client});
  if (plan_.to_upstream.active()) out_.push(shape_leg{leg::upstream, plan_.to_upstream});
  for (const auto& [rule, type] : plan_.rules) {
    // A split dot is withheld when one comes (withhold_split_dot, whose stall is the fault
    // record and the count): until then the rule is armed, not injected, which a note says, so
    // that the index, `diagnose` and the API list only rules that acted.
    if (type == "split_dot_withhold") {
      out_.note(now, "rule " + rule + std::string(note_split_dot_armed_end));
      continue;
    }
    ++stats_.faults_injected;
    if (observer_) {
      fault_event e{rule, type, "plan", phase::connect, 0, 0, "session-wide " + type};
      observer_->on_fault(now, e);
    }
  }
  fault_decision d = ask(query_for(phase::connect, fault_stage::command, nullptr));
  switch (d.what) {
    case verdict::proceed: rewrites_not_applied(d.rewrites); return;   // nothing at connect to edit
    case verdict::delay:
      connect_delay_us_ = d.delay_us;
      connect_delay_ = std::move(d);
      return;
    case verdict::unreachable:
      upstream_wanted_ = false;
      if (d.no_greeting) {
        // As if the destination accepted and never greeted: the greeting timeout decides.
        no_greeting_rule_ = d.rule;
        event(now, d, phase::connect, "upstream accepted and never greeted");
        out_.arm(leg::upstream, options_.timeouts.upstream_greeting);
        return;
      }
      event(now, d, phase::connect, "upstream refused the connection");
      // The client hears word for word what the shell reports for a real refusal
      // (relay/session.cpp), naming the upstream as configured (`builtin`, never the built-in
      // sink's own port); the capture's note and end detail say it was injected.
      {
        const std::string reason = "connect to " + options_.upstream + ": Connection refused";
        host_.upstream_unreachable(now, reason,
                                   reason + std::string(injected_by_rule) + d.rule + "': no connection was attempted)");
      }
      return;
    default:
      if (!greeting(now, d)) not_applied(d);   // a verdict nothing at connect carries out (blackhole)
      return;
  }
}

// A fault that answers (or silences) the greeting: at connect, or in place of the upstream's
// banner. True when it took over.
bool fault_holds::greeting(std::uint64_t now, const fault_decision& d) {
  const phase ph = host_.greeted() ? phase::banner : phase::connect;
  if (d.what == verdict::proceed || d.what == verdict::delay || d.what == verdict::blackhole ||
      d.what == verdict::unreachable)
    return false;
  // The upstream is not needed any more: a connected one is told QUIT, an unconnected one never dialled.
  if (host_.greeted() && !out_.closed(leg::upstream)) {
    if (observer_) observer_->on_relay_command(now, "QUIT");
    out_.send(leg::upstream, "QUIT\r\n", now);
    out_.close(leg::upstream);
  }
  upstream_wanted_ = false;
  out_.mark_closed(leg::upstream);
  host_.greeting_answered_by_fault();
  out_.arm(leg::upstream, std::chrono::milliseconds{0});
  bool with_reply = d.what == verdict::reply || d.what == verdict::reply_and_close ||
                    (d.what == verdict::disconnect && d.with_reply);
  if (with_reply) {
    reply r = reply_from(d.reply);
    out_.say(now, r);
    event(now, d, ph, "greeting: " + describe(d.reply));
    host_.reply_sent(now);
    if (d.what == verdict::reply && r.klass() == 5) {
      // RFC 5321 3.1: after a 554 greeting the server waits for QUIT, answering 503 meanwhile.
      refusing_ = true;
      out_.arm(leg::client, options_.timeouts.client_idle);
      return true;
    }
    host_.end_session(now, "fault", d.rule);
    return true;
  }
  switch (d.what) {
    case verdict::reset:
      event(now, d, ph, "connection reset");
      out_.close_with_reset(leg::client);
      host_.end_session(now, "fault", d.rule);
      return true;
    case verdict::stall: begin_stall(now, d, ph); return true;
    default:
      event(now, d, ph, "connection closed");
      host_.end_session(now, "fault", d.rule);
      return true;
  }
}

bool fault_holds::banner(std::uint64_t now, reply& r, std::string& bytes) {
  if (!advisor_) return false;
  fault_query q = query_for(phase::banner, fault_stage::reply, nullptr);
  q.upstream_reply = &r;
  fault_decision d = ask(q);
  if (greeting(now, d)) return true;
  if (d.what != verdict::proceed && d.what != verdict::delay) not_applied(d);   // nothing carries it out here
  const rewrite_set& rw = d.rewrites;
  // The text first (the rule loaded first gives it), then the mask: each credited to the rules
  // that asked for it only when it changed the greeting (a text the greeting already had, a
  // mask of a text with nothing to mask, changed nothing).
  // Each edit is compared with the greeting it edits, without keeping copies of it.
  const auto edit = [&bytes](std::string edited) {
    const bool changed = edited != bytes;
    bytes = std::move(edited);
    return changed;
  };
  const bool replaced = rw.banner_text && edit(make_reply(r.code, "", *rw.banner_text).raw);
  const bool masked = rw.mask_banner && edit(masked_banner(bytes));
  credit_rewrites(now, rw, phase::banner, [&](const rewrite_edits& asked) {
    if (masked && asked.mask_banner) return std::string("greeting masked");
    if (replaced && asked.banner_text && asked.banner_text == rw.banner_text) return std::string("greeting replaced");
    return std::string();
  });
  if (bytes != r.raw && observer_) {   // the greeting the client saw, as the capture's relay reply
    reply shown = r;
    shown.raw = bytes;
    shown.lines.clear();
    std::string_view rest = bytes;
    while (!rest.empty()) {
      auto eol = rest.find("\r\n");
      std::string_view one = rest.substr(0, eol);
      shown.lines.emplace_back(one.size() > 4 ? one.substr(4) : std::string_view());
      rest.remove_prefix(eol == std::string_view::npos ? rest.size() : eol + 2);
    }
    observer_->on_reply(now, leg::client, direction::out, shown);
  }
  if (d.what == verdict::delay) banner_delay_ = std::move(d);
  if (!banner_delay_ && !connect_delay_) return false;
  held_banner_ = r;
  held_banner_bytes_ = std::move(bytes);
  banner_arrived_us_ = now;
  out_.arm(leg::upstream, std::chrono::milliseconds{0});
  release_held(now);
  return true;
}

// ---------------------------------------------------------------- commands

bool fault_holds::hold_line(std::uint64_t now, std::uint64_t arrived, std::string_view line,
                            const parsed_command& parsed, std::optional<fault_decision>& decided) {
  if (!advisor_ || refusing_) return false;
  const command& cmd = parsed.cmd;
  if (cmd.ph == phase::ehlo || cmd.ph == phase::helo) ehlo_name_ = cmd.argument;
  transaction* open = txns_.open();
  // RCPT or DATA outside a transaction (no MAIL, or after RSET) is the destination's to refuse
  // (503, RFC 5321 4.1.4): no rule answers it, and no greylist learns its address.
  if ((cmd.ph == phase::rcpt || cmd.ph == phase::data) && !open) return false;
  fault_query q = query_for(cmd.ph, fault_stage::command, open);
  q.verb = cmd.verb;
  q.argument = cmd.argument;
  q.line_length = line.size();
  if (cmd.address) q.address = *cmd.address;
  // At MAIL the sender and the transaction number are the ones this command opens; at RCPT
  // `recipients` holds the earlier ones (this one is `address`).
  if (cmd.ph == phase::mail && !open) {
    q.mail_from = q.address;
    q.recipients = {};
    q.transaction_number = txns_.next_id();
  }
  fault_decision d = ask(q);
  if (d.what == verdict::delay) {
    // The line waits where it is, parsed once: its command and decision are kept with it.
    held_line_ = held_command{std::move(d), parsed, now, std::min(arrived, now)};
    schedule_wake(now, now + held_line_->decision.delay_us);
    return true;
  }
  if (d.what == verdict::proceed && d.rewrites.empty()) return false;
  decided = std::move(d);
  return false;
}

bool fault_holds::line_waits(std::uint64_t now) {
  if (!held_line_) return false;
  std::uint64_t due = held_line_->since_us + held_line_->decision.delay_us;
  if (now >= due) return false;
  schedule_wake(now, due);
  return true;
}

bool fault_holds::take_decided_line(std::uint64_t now, std::string_view line, const parsed_command& parsed,
                                    const std::optional<fault_decision>& decided) {
  if (!decided) return false;
  if (decided->what != verdict::proceed && decided->what != verdict::delay) {
    apply_command_fault(now, stripped_crlf(line), parsed.cmd, *decided);
    return true;
  }
  if (!decided->rewrites.mask_command) {
    rewrites_not_applied(decided->rewrites);   // none is carried out on a command line but its mask
    return false;
  }
  forward_masked_command(now, line, parsed.cmd, decided->rewrites);
  return true;
}

// The held line's delay is over: it goes on as it was parsed and decided then.
parsed_command fault_holds::take_held_line(std::uint64_t now, std::optional<fault_decision>& decided) {
  held_command held = std::move(*held_line_);
  held_line_.reset();
  event(now, held.decision, held.parsed.cmd.ph, "command held before forwarding", now - held.since_us);
  decided = std::move(held.decision);
  return std::move(held.parsed);
}

void fault_holds::apply_command_fault(std::uint64_t now, std::string_view body, const command& cmd,
                                      const fault_decision& d) {
  host_.announce_command(now, body, cmd);
  transaction* open = txns_.open();
  std::uint64_t txn = 0;
  phase ph = cmd.ph;
  switch (cmd.ph) {
    case phase::mail:
      if (!open) txn = host_.begin_transaction(now, cmd);
      break;
    case phase::rcpt:
      if (open && host_.record_recipient(now, *open, cmd.address.value_or(cmd.argument))) txn = open->id;
      break;
    case phase::data: txn = open ? open->id : 0; break;
    case phase::bdat:
      // The chunk's payload follows the command: read it, never forward it.
      txn = open ? open->id : 0;
      host_.expect_bdat_payload(cmd, false);
      break;
    case phase::ehlo:
    case phase::helo:
    case phase::rset:
      // Not forwarded: the upstream's transaction is untouched. A message a fault absorbs has
      // none there (the relay's RSET went in its place): this reply aborts it, as the
      // destination's to a forwarded RSET would (relay_fsm after_reply).
      if (absorbing_ && open) {
        open->sealed = true;
        txn = open->id;
      } else {
        ph = phase::other;
      }
      break;
    default: break;
  }
  switch (d.what) {
    case verdict::reply:
    case verdict::blackhole: queue_reply(now, ph, cmd.ph, txn, d, then_do::nothing); break;
    case verdict::reply_and_close: queue_reply(now, ph, cmd.ph, txn, d, then_do::close); break;
    case verdict::disconnect:
      if (d.with_reply) queue_reply(now, ph, cmd.ph, txn, d, then_do::close);
      else owed_.fault_marker(now, cmd.ph, d, then_do::close);
      break;
    case verdict::reset: owed_.fault_marker(now, cmd.ph, d, then_do::reset); break;
    case verdict::stall: owed_.fault_marker(now, cmd.ph, d, then_do::stall); break;
    default: break;
  }
  if (d.what != verdict::reply && d.what != verdict::blackhole) input_stopped_ = true;
  host_.flush_replies(now);
  host_.take_empty_bdat_chunk(now);
}

// PIX/ASA: the verb is not allowed, so the command goes on overwritten with X and the server
// answers it (500). The capture keeps what the client sent (AUTH redacted as ever).
void fault_holds::forward_masked_command(std::uint64_t now, std::string_view line, const command& cmd,
                                         const rewrite_set& rw) {
  host_.announce_command(now, line.substr(0, line.size() - 2), cmd);
  credit_rewrites(now, rw, cmd.ph, [&](const rewrite_edits& asked) {
    return asked.mask_command ? "command overwritten with X: " + cmd.verb : std::string();
  });
  std::string masked(line.size() - 2, 'X');
  masked += "\r\n";
  host_.handle_command(now, masked, parse_command(std::string_view(masked).substr(0, masked.size() - 2)), false);
  if (cmd.ph == phase::bdat) {   // the chunk still follows its (masked) command: read it, never parse it
    host_.expect_bdat_payload(cmd, false);
    host_.take_empty_bdat_chunk(now);
  }
}

reply_slot& fault_holds::queue_reply(std::uint64_t now, phase ph, phase shown, std::uint64_t txn,
                                     const fault_decision& d, then_do then) {
  reply r = reply_from(d.reply);
  host_.local_reply(now, ph, r.code, r.enhanced, r.text());
  reply_slot& p = owed_.back();
  p.asked.txn = txn;
  p.fault.decision = d;
  p.fault.then = then;
  p.fault.ph = shown;
  return p;
}

void fault_holds::then(std::uint64_t now, const reply_slot& p) {
  const fault_decision& d = *p.fault.decision;
  switch (p.fault.then) {
    case then_do::nothing: return;
    case then_do::close:
      if (!p.answer.parsed) event(now, d, p.fault.ph, "connection closed");   // with a reply: recorded with it
      host_.end_session(now, "fault", d.rule);
      return;
    case then_do::reset:
      event(now, d, p.fault.ph, "connection reset");
      out_.close_with_reset(leg::client);
      host_.end_session(now, "fault", d.rule);
      return;
    case then_do::stall: begin_stall(now, d, p.fault.ph); return;
  }
}

void fault_holds::answer_refused_session(std::uint64_t now, std::string_view body, const command& cmd) {
  host_.announce_command(now, body, cmd);
  if (cmd.ph == phase::quit) host_.local_reply(now, phase::quit, 221, "2.0.0", options_.name + " closing connection");
  else host_.local_reply(now, phase::other, 503, "5.5.1", "Bad sequence of commands: this session was refused");
  host_.flush_replies(now);
}

void fault_holds::begin_stall(std::uint64_t now, const fault_decision& d, phase ph) {
  // With a `max` the relay ends the stall itself (timer(): "stall ended by the relay"):
  // the record says so from the start, not only in that later note (a newcomer's trial).
  event(now, d, ph,
        d.stall_max_us > 0 ? "stalled: no replies, nothing read for at most " + duration_text(d.stall_max_us) +
                                 ", then the relay ends it (unless the client gives up first)"
                           : std::string("stalled: no replies, nothing read until the client gives up"));
  stalled_ = true;
  stall_phase_ = ph;
  stall_since_us_ = now;
  out_.arm(leg::client, std::chrono::milliseconds{0});
  out_.arm(leg::upstream, std::chrono::milliseconds{0});
  // What the client sent and nobody will read is still recorded.
  host_.record_and_drop_client_input(now);
  stall_until_us_ = now + (d.stall_max_us > 0 ? d.stall_max_us : us(options_.timeouts.client_idle));
  schedule_wake(now, stall_until_us_);
}

// ---------------------------------------------------------------- the message

bool fault_holds::plan_end_of_data(std::uint64_t now, transaction& t, bool chunked) {
  if (!advisor_) return false;
  fault_decision d = ask(query_for(phase::data_end, fault_stage::command, &t));
  drop_end_plan();   // an earlier message's, never used
  end_plan_txn_ = t.id;
  switch (d.what) {
    case verdict::reply:
    case verdict::reply_and_close:
    case verdict::blackhole: {
      out_.note(now, "fault " + d.rule + " answers this message itself: the upstream gets RSET, never the message");
      owed_.expect(now, phase::rset, command_kind::internal_rset);
      if (observer_) observer_->on_relay_command(now, "RSET");
      out_.send(leg::upstream, "RSET\r\n", now);
      host_.arm_upstream_for_head();
      end_plan_ = std::move(d);
      if (!chunked) {
        // The 354 waits behind the replies to MAIL and RCPT: whether it is a 354 at all
        // depends on them (open_absorbed_message).
        host_.local_reply(now, phase::data, 354, "", "End data with <CR><LF>.<CR><LF>");
        owed_.back().asked.txn = t.id;
        owed_.back().fault.absorb_go = true;
        absorbing_ = true;
        host_.client_awaits_data_go();
        host_.flush_replies(now);
      }
      return true;
    }
    case verdict::disconnect:
    case verdict::reset:
    case verdict::stall:
    case verdict::delay:
      // The message goes upstream, its end waits: DATA's dot (end_of_data), or BDAT's last
      // chunk's last byte, or an empty last chunk's command (hold_bdat_end).
      end_plan_ = std::move(d);
      return false;
    default: not_applied(d); return false;
  }
}

bool fault_holds::hold_bdat_end(std::uint64_t now, const transaction& t) {
  if (!end_plan_ || end_plan_txn_ != t.id) return false;
  if (every_recipient_refused(t)) {   // the upstream refuses the message itself
    give_back_end_plan(now, t.id, "no recipient was accepted");
    return false;
  }
  switch (end_plan_->what) {
    case verdict::delay:
      held_dot_ = std::move(*end_plan_);
      end_plan_.reset();
      held_dot_since_us_ = now;
      held_dot_arrived_us_ = now;
      held_dot_txn_ = t.id;
      bdat_end_withheld_ = true;
      schedule_wake(now, now + held_dot_->delay_us);
      return true;
    case verdict::disconnect:
    case verdict::reset:
    case verdict::stall: {
      // As at DATA's dot: the end never goes upstream, so nothing there answers its BDAT ...
      // LAST; the fault does (or ends the session) once the replies before it are out.
      const fault_decision d = std::move(*end_plan_);
      end_plan_.reset();
      if (owed_.withdraw_bdat_last()) host_.drop_withheld_bdat();
      end_message_with(now, d, t.id);
      return true;
    }
    default: return false;
  }
}

bool fault_holds::end_of_data(std::uint64_t now, transaction* t, std::uint64_t arrived_us) {
  if (!end_plan_) return false;
  fault_decision d = std::move(*end_plan_);
  end_plan_.reset();
  const std::uint64_t txn = t ? t->id : 0;
  if (absorbing_) {   // the message went nowhere: the fault's reply is the answer, whatever happened to the transaction
    absorbing_ = false;
    queue_reply(now, phase::data_end, phase::data_end, txn, d,
                      d.what == verdict::reply_and_close ? then_do::close : then_do::nothing);
    host_.flush_replies(now);
    return true;
  }
  if (txn != end_plan_txn_) {   // planned for another message
    not_applied(d);
    return false;
  }
  switch (d.what) {
    case verdict::delay:
      held_dot_ = std::move(d);
      held_dot_since_us_ = now;
      held_dot_arrived_us_ = arrived_us;
      held_dot_txn_ = txn;
      schedule_wake(now, now + held_dot_->delay_us);
      return true;
    case verdict::disconnect:
    case verdict::reset:
    case verdict::stall: end_message_with(now, d, txn); return true;
    default: not_applied(d); return false;
  }
}

// `d` is a disconnect, reset or stall. The message's end (the dot, BDAT's last byte) is never
// sent: nothing is delivered.
void fault_holds::end_message_with(std::uint64_t now, const fault_decision& d, std::uint64_t txn) {
  switch (d.what) {
    case verdict::disconnect:
      if (d.with_reply) queue_reply(now, phase::data_end, phase::data_end, txn, d, then_do::close);
      else owed_.fault_marker(now, phase::data_end, d, then_do::close);
      break;
    case verdict::reset: owed_.fault_marker(now, phase::data_end, d, then_do::reset); break;
    default: owed_.fault_marker(now, phase::data_end, d, then_do::stall); break;
  }
  input_stopped_ = true;
  host_.flush_replies(now);
}

// The message stage: the whole message is in and its dot not yet sent (fail_then_pass keyed by
// Message-ID). The body already went upstream, so the only way to fail it without delivering it
// is to withhold the dot and close the upstream leg; the client gets the reply, then FIN.
bool fault_holds::message(std::uint64_t now, transaction* t) {
  if (!advisor_ || !t || every_recipient_refused(*t)) return false;
  fault_query q = query_for(phase::data_end, fault_stage::message, t);
  q.message_id = t->rec.message_id ? std::string_view(*t->rec.message_id) : std::string_view();
  fault_decision d = ask(q);
  if (d.what != verdict::reply && d.what != verdict::reply_and_close && d.what != verdict::disconnect) {
    not_applied(d);   // nothing else acts at the message stage
    return false;
  }
  out_.note(now, "fault " + d.rule + " fails this message after its body: the dot is withheld and the upstream closed");
  if (owed_.withdraw_bdat_last()) host_.drop_withheld_bdat();   // BDAT: its last byte, not a dot, is withheld
  if (d.what == verdict::disconnect && !d.with_reply) owed_.fault_marker(now, phase::data_end, d, then_do::close);
  else queue_reply(now, phase::data_end, phase::data_end, t->id, d, then_do::close);
  input_stopped_ = true;
  host_.close_upstream_once_answered(now);
  host_.flush_replies(now);
  return true;
}

void fault_holds::finish_absorbed_bdat(std::uint64_t now, bool last_chunk) {
  transaction* t = txns_.find(end_plan_txn_);
  if (!t || !end_plan_ || every_recipient_refused(*t)) {
    // The transaction failed meanwhile (MAIL or every RCPT refused): what a server answers a
    // chunk without recipients, and the fault is not applied (a blackhole's 250 here would
    // accept a message that had no recipient; the DATA path answers 554, open_absorbed_message).
    if (end_plan_) out_.note(now, "fault " + end_plan_->rule + " not applied: no recipient was accepted");
    host_.local_reply(now, phase::bdat, 503, "5.5.1", "No valid recipients");
    if (t) {
      // The refusal is the transaction's end, as a destination's refused chunk is (RFC 3030 2):
      // settled by this reply (after_reply), and sealed against the client's next MAIL.
      owed_.back().asked.txn = t->id;
      owed_.back().asked.last_chunk = last_chunk;
      t->sealed = true;
    }
    // The plan is given back at the first 503. The rest of the message (chunks pipelined behind
    // this one) is still read and refused here, never sent upstream, until its LAST chunk; what
    // the client begins after a refused chunk (RFC 3030 2: RSET, EHLO, HELO or MAIL) ends it
    // (end_absorbed_message), so that its next message is never absorbed.
    drop_end_plan();
    if (last_chunk) absorbing_ = false;
    host_.flush_replies(now);
    return;
  }
  // The replies to the RCPTs may still be to come (the chunk was pipelined behind them): the
  // chunk's reply is judged, and the fault applied, as it goes out (release_absorbed_chunk).
  if (!last_chunk) {
    host_.local_reply(now, phase::bdat, 250, "2.0.0", "chunk accepted");
    owed_.back().asked.txn = t->id;
    owed_.back().fault.absorbed_chunk = true;
    host_.flush_replies(now);
    return;
  }
  absorbing_ = false;
  t->sealed = true;
  const fault_decision d = std::move(*end_plan_);
  end_plan_.reset();
  reply_slot& p = queue_reply(now, phase::bdat, phase::data_end, t->id, d,
                              d.what == verdict::reply_and_close ? then_do::close : then_do::nothing);
  p.asked.last_chunk = true;
  p.fault.absorbed_chunk = true;
  host_.flush_replies(now);
}

// A chunk of a message a fault answers, as its reply goes out: the replies before it (MAIL's,
// the RCPTs') are in, pipelined or not. With a recipient accepted the last chunk's fault reply
// goes out (and is applied, reply_releasing); without one the chunk gets finish_absorbed_bdat's
// 503, which settles the transaction (relay_fsm after_reply), and the fault is not applied: a
// message without a recipient is never accepted, as DATA gets no 354 (open_absorbed_message).
void fault_holds::release_absorbed_chunk(std::uint64_t now, reply_slot& p) {
  const transaction* t = txns_.find(p.asked.txn);
  if (t && !every_recipient_refused(*t)) return;
  if (p.fault.decision) {
    out_.note(now, "fault " + p.fault.decision->rule + " not applied: no recipient was accepted");
    not_applied(*p.fault.decision);
  }
  // A chunk before the last: its 503 gives the plan back, as finish_absorbed_bdat's does,
  // unless the client has begun another message since.
  give_back_end_plan(now, p.asked.txn, "no recipient was accepted");
  p.fault.decision.reset();
  p.fault.then = then_do::nothing;
  p.answer.parsed = make_reply(503, "5.5.1", "No valid recipients");
  p.answer.bytes = p.answer.parsed->raw;
}

// Every recipient recorded has its reply and none accepted it. A recipient whose reply has not
// come yet (BDAT pipelined behind RCPT) may still be accepted: not refused yet.
bool fault_holds::every_recipient_refused(const transaction& t) {
  const auto& codes = t.rec.rcpt_codes;
  return codes.size() == t.rec.rcpt_to.size() && std::none_of(codes.begin(), codes.end(), [](int c) { return c / 100 == 2; });
}

void fault_holds::count_blackhole(std::uint64_t now, const fault_decision& d) {
  if (d.what != verdict::blackhole) return;
  ++stats_.blackholed;
  out_.note(now, "blackhole " + d.rule + ": the relay answered 250 itself; nothing was delivered");
}

void fault_holds::open_absorbed_message(std::uint64_t now, reply_slot& p) {
  transaction* t = txns_.find(p.asked.txn);
  bool accepted = t && std::any_of(t->rec.rcpt_codes.begin(), t->rec.rcpt_codes.end(),
                                   [](int code) { return code / 100 == 2; });
  if (accepted) return host_.begin_data(now);
  // Like a server: no DATA without an accepted recipient. The planned fault does not apply.
  out_.note(now, "fault " + (end_plan_ ? end_plan_->rule : std::string()) + " not applied: no recipient was accepted");
  absorbing_ = false;
  drop_end_plan();
  host_.client_back_to_commands();
  p.answer.parsed = make_reply(554, "5.5.1", "No valid recipients");
  p.answer.bytes = p.answer.parsed->raw;
}

void fault_holds::answer_absorbed_go_with_421(std::uint64_t now, reply_slot& go, const reply& r) {
  out_.note(now, "fault " + (end_plan_ ? end_plan_->rule : std::string()) +
                     " not applied: the upstream said 421 before the message began");
  absorbing_ = false;
  drop_end_plan();
  host_.client_back_to_commands();
  go.fault.absorb_go = false;
  go.answer.local = false;   // the destination's own reply, passed on
  go.answer.t_upstream = now;
  go.answer.parsed = r;
  go.answer.bytes = r.raw;
}

// CSCds90792: the firewall never passes a '.' and CRLF that came in separate segments; the
// sender hears nothing and times out. The body already went upstream, so it is recorded as it
// went (size, Message-ID, the body stage), and the stall becomes the message's data_end
// stage when its transaction ends (transaction_settled).
bool fault_holds::withhold_split_dot(std::uint64_t now) {
  if (!plan_.withhold_split_dot) return false;
  fault_decision d;
  d.what = verdict::stall;
  for (const auto& [rule, type] : plan_.rules)
    if (type == "split_dot_withhold") d.rule = rule, d.type = type;
  // Reserved when it acts (start reserves nothing), counted by begin_stall's record.
  if (!advisor_->reserve_plan_rule(d.rule)) {
    out_.note(now, "rule " + d.rule + " not applied: its max_count is used up; the end of data is passed on");
    return false;
  }
  out_.note(now, note_split_dot_withheld);
  if (transaction* t = host_.close_message(now)) {   // recorded as end_of_data records a message's end
    withheld_dot_txn_ = t->id;
    withheld_dot_since_us_ = now;
  }
  begin_stall(now, d, phase::data_end);
  return true;
}

// The withheld dot's stage runs from the dot to the end of its transaction (the client gave
// up, the stall's maximum passed, shutdown): all of it the fault's, none the upstream's.
void fault_holds::transaction_settled(std::uint64_t now, std::uint64_t id) {
  if (id != withheld_dot_txn_) return;
  withheld_dot_txn_ = 0;
  if (observer_) observer_->on_stage({phase::data_end, withheld_dot_since_us_, now - withheld_dot_since_us_, 0, 0, 0});
}


// ---------------------------------------------------------------- replies

void fault_holds::reply_stage(std::uint64_t now, reply_slot& p, const reply& r) {
  if (!advisor_) return;
  // The reply to BDAT LAST is the end-of-data reply: data_end rules apply to it.
  const phase ph = p.asked.ph == phase::bdat && p.asked.last_chunk ? phase::data_end : p.asked.ph;
  fault_query q = query_for(ph, fault_stage::reply, p.asked.txn ? txns_.find(p.asked.txn) : txns_.open());
  q.upstream_reply = &r;
  q.address = p.asked.address;
  // The recipients before this RCPT, as at its command: not itself, nor those pipelined behind it.
  if (ph == phase::rcpt) q.recipients = q.recipients.first(std::min(q.recipients.size(), p.asked.recipients_before));
  fault_decision d = ask(q);
  p.fault.ph = ph;
  if (d.what == verdict::delay) {
    p.fault.release_us = now + d.delay_us;
    p.fault.decision = std::move(d);
  } else if (!d.rewrites.empty()) {
    p.fault.decision = std::move(d);
  } else if (d.what != verdict::proceed) {
    not_applied(d);   // a reply's stage carries out delays and rewrites only
  }
}

void fault_holds::remember_address(reply_slot& p, const command& cmd) const {
  if (!advisor_) return;
  p.asked.address = cmd.address.value_or("");
  // A RCPT's place in its transaction: the recipients recorded before it (it is recorded itself,
  // and `txn` set, unless past limits::recipients_recorded_cap).
  if (const transaction* t = txns_.open(); t && cmd.ph == phase::rcpt)
    p.asked.recipients_before = t->rec.rcpt_to.size() - (p.asked.txn ? 1 : 0);
}

bool fault_holds::reply_delayed(std::uint64_t now, const reply_slot& head) {
  if (head.fault.release_us <= now) return false;
  schedule_wake(now, head.fault.release_us);
  return true;
}

void fault_holds::reply_releasing(std::uint64_t now, reply_slot& p) {
  if (p.fault.decision && p.fault.decision->what == verdict::delay) {
    // A client gone has it released at once (relay_fsm::on_client_gone), never relayed.
    event(now, *p.fault.decision, p.fault.ph,
          "reply " + std::to_string(p.answer.parsed->code) + " held" +
              (out_.closed(leg::client) ? "; the client was gone before it was relayed" : ""),
          now - std::max(p.answer.t_upstream, p.asked.t_received));
    p.fault.decision->what = verdict::proceed;   // recorded: session_ending must not record it again
  }
  if (p.fault.absorb_go) open_absorbed_message(now, p);   // 354, or 554 when no recipient was accepted
  if (p.fault.absorbed_chunk) release_absorbed_chunk(now, p);   // the fault's reply, or 503 likewise
  if (p.answer.local && p.fault.decision && makes_a_reply(p.fault.decision->what)) fault_reply_out(now, p);
}

// A fault's reply is applied when it goes out, not when it is queued: one the session ends
// before sending (behind replies that never came) never acted, and its rule is given back
// (policies/README.md "Counted when applied"); so is one for a client that is gone
// (give_back_for_a_gone_client).
void fault_holds::fault_reply_out(std::uint64_t now, const reply_slot& p) {
  const fault_decision& d = *p.fault.decision;
  count_blackhole(now, d);
  event(now, d, p.fault.ph, describe(d.reply));
}

bool fault_holds::give_back_for_a_gone_client(std::uint64_t now, const reply_slot& p) {
  if (!out_.closed(leg::client) || !p.fault.decision) return false;
  const fault_decision& d = *p.fault.decision;
  const bool marker = !p.answer.parsed;
  if (!marker && !(p.answer.local && makes_a_reply(d.what))) return false;   // a delay, or the upstream's reply
  out_.note(now, "fault " + d.rule + " not applied: the client was gone before it acted");
  not_applied(d);
  return true;
}

bool fault_holds::makes_a_reply(verdict v) {
  return v == verdict::reply || v == verdict::reply_and_close || v == verdict::blackhole || v == verdict::disconnect;
}

void fault_holds::apply_capability_rewrites(std::uint64_t now, capabilities& caps, const rewrite_set& rw,
                                          std::string& changes) {
  capability_edits_done done;
  for (const auto& kw : rw.strip_capabilities)
    if (caps.remove(kw)) done.stripped.push_back(kw);
  // A firewall masks what the server offered, even where the relay itself would not offer it.
  for (const auto& kw : rw.mask_capabilities)
    if (caps.rename(kw, masked_keyword(kw))) done.masked.push_back(kw);
  if (rw.size && (caps.has("SIZE") || *rw.size > 0)) {
    caps.set("SIZE", std::to_string(*rw.size));
    done.size = rw.size;
  }
  const std::string all = done.of(rw);
  if (!all.empty()) changes += (changes.empty() ? "" : ", ") + all;
  // A rule that changed nothing (a keyword the server did not offer, one another rule took
  // first, a SIZE another rule set) was not applied.
  credit_rewrites(now, rw, phase::ehlo, [&](const rewrite_edits& asked) {
    const std::string own = done.of(asked);
    return own.empty() ? own : "EHLO reply " + own;
  });
}

std::string fault_holds::capability_edits_done::of(const rewrite_edits& asked) const {
  std::string out;
  auto add = [&](std::string what) { out += (out.empty() ? "" : ", ") + what; };
  auto done_to = [](const std::vector<std::string>& keywords, std::string_view kw) {
    return std::any_of(keywords.begin(), keywords.end(), [&](const std::string& k) { return iequals(k, kw); });
  };
  for (const auto& kw : asked.strip_capabilities)
    if (done_to(stripped, kw)) add("stripped " + kw);
  for (const auto& kw : asked.mask_capabilities)
    if (done_to(masked, kw)) add("masked " + kw + " as " + masked_keyword(kw));
  if (asked.size && asked.size == size) add("SIZE " + std::to_string(*size));
  return out;
}

void fault_holds::credit_rewrites(std::uint64_t now, const rewrite_set& rw, phase ph,
                                  const std::function<std::string(const rewrite_edits& asked)>& own) {
  for (const auto& c : rw.rules) {
    std::string detail = own(c.asked);
    if (detail.empty()) {
      if (advisor_) advisor_->not_applied(c.rule);
      continue;
    }
    fault_decision shown;
    shown.rule = c.rule;
    shown.type = c.type;
    event(now, shown, ph, std::move(detail));
  }
}

}  // namespace mailtap::protocol
