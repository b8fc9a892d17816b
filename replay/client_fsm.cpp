// The replay client: sends the recorded steps, settles each reply against the recording.
#include "replay/client_fsm.hpp"

#include <algorithm>
#include <set>

#include "protocol/base64.hpp"
#include "protocol/capabilities.hpp"
#include "protocol/command.hpp"
#include "replay/unforwarded_line.hpp"

namespace mailtap::replay {

std::string_view to_string(step_status s) {
  switch (s) {
    case step_status::matched: return "matched";
    case step_status::diverged: return "diverged";
    case step_status::skipped: return "skipped";
    case step_status::not_sent: return "not_sent";
    case step_status::no_reply: return "no_reply";
    case step_status::sent: return "sent";
  }
  return "matched";
}

namespace {

std::set<std::string> keywords(const protocol::reply& r) {
  std::set<std::string> out;
  const auto caps = protocol::capabilities::from_reply(r);
  for (const auto& c : caps.list()) out.insert(protocol::to_upper(c.keyword));
  return out;
}

std::string joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += (out.empty() ? "" : " / ") + l;
  return out;
}

// How the live reply differs from the recorded one: basic code, enhanced code, the EHLO
// capability keywords (order and parameters aside), and the text when asked.
std::vector<std::string> differences(const protocol::reply& recorded, const protocol::reply& live, protocol::phase ph,
                                     bool compare_text) {
  std::vector<std::string> out;
  if (recorded.code != live.code)
    out.push_back("code: recorded " + std::to_string(recorded.code) + ", live " + std::to_string(live.code));
  if (recorded.enhanced != live.enhanced)
    out.push_back("enhanced code: recorded " + (recorded.enhanced.empty() ? std::string("none") : recorded.enhanced) +
                  ", live " + (live.enhanced.empty() ? std::string("none") : live.enhanced));
  if (ph == protocol::phase::ehlo && recorded.code == 250 && live.code == 250) {
    const auto want = keywords(recorded), got = keywords(live);
    std::string missing, extra;
    for (const auto& k : want)
      if (!got.count(k)) missing += (missing.empty() ? "" : " ") + k;
    for (const auto& k : got)
      if (!want.count(k)) extra += (extra.empty() ? "" : " ") + k;
    if (!missing.empty() || !extra.empty())
      out.push_back("capabilities:" + (missing.empty() ? "" : " missing " + missing) +
                    (missing.empty() || extra.empty() ? "" : ";") + (extra.empty() ? "" : " new " + extra));
  }
  if (compare_text && recorded.lines != live.lines)
    out.push_back("text: recorded \"" + joined(recorded.lines) + "\", live \"" + joined(live.lines) + "\"");
  return out;
}

// "AUTH PLAIN ****" -> mechanism "PLAIN", with an initial response.
struct auth_command {
  std::string mechanism;
  bool initial_response = false;
};
auth_command read_auth(std::string_view text) {
  auto parsed = protocol::parse_command(text);
  auto sp = parsed.cmd.argument.find(' ');
  return {protocol::to_upper(parsed.cmd.argument.substr(0, sp)), sp != std::string::npos};
}

}  // namespace

client_fsm::client_fsm(const script& s, client_options options) : script_(s), options_(std::move(options)) {
  for (const auto& st : s.steps) steps_.push_back(&st);
  if (s.unfinished) steps_.push_back(&*s.unfinished);
  step_result greeting;
  greeting.greeting = true;
  greeting.text = "(greeting)";
  greeting.recorded = s.banner;
  if (s.banner) greeting.recorded_latency_us = s.banner->t_us;
  results_.push_back(std::move(greeting));
  for (std::size_t i = 0; i < steps_.size(); ++i) {
    step_result r;
    r.step = i;
    r.text = steps_[i]->text;
    r.ph = steps_[i]->ph;
    r.recorded = steps_[i]->reply;
    r.recorded_latency_us = steps_[i]->reply_delay_us();
    results_.push_back(std::move(r));
  }
  // Where the destination said 421 after the last step's reply and closed (RFC 5321 3.8; the relay
  // passed it on, pass_on_upstream_421), or hung up and the relay's 421 stood for it, the live
  // server is expected to do the same: each is a result, awaited after the last step.
  first_unsolicited_ = results_.size();
  if (s.end_reason == "upstream_closed") {
    std::uint64_t before = s.banner ? s.banner->t_us : 0;
    for (const auto& st : s.steps)
      if (st.reply) before = st.reply->t_us;
    for (const auto& u : s.unsolicited) {
      if (!u.destination_reply() && !u.stands_for_close) continue;
      step_result r;
      r.unsolicited = true;
      r.step = steps_.size();
      r.text = u.stands_for_close ? "(the server closes)" : "(unsolicited reply)";
      r.recorded = u;
      r.recorded_latency_us = u.t_us > before ? u.t_us - before : 0;
      before = u.t_us;
      results_.push_back(std::move(r));
    }
  }
  settled_at_.assign(results_.size(), 0);
  sent_at_.assign(steps_.size(), 0);
  held_back_.assign(steps_.size(), false);
}

bool client_fsm::diverged() const {
  return std::any_of(results_.begin(), results_.end(), [](const step_result& r) {
    return r.status == step_status::diverged || r.status == step_status::not_sent || r.status == step_status::no_reply;
  });
}

void client_fsm::on_connected(std::uint64_t now_us) {
  inflight_.push_back(0);   // the greeting
  connected_at_ = now_us;
  reply_deadline_us_ = now_us + static_cast<std::uint64_t>(options_.reply_timeout.count()) * 1'000'000;
  if (tls_from_connect()) {
    tls_pending_ = true;
    tls_at_connect_ = true;
    actions_.push_back(protocol::start_tls{protocol::leg::upstream});
    return;
  }
  advance(now_us);
}

void client_fsm::on_tls_ready(std::uint64_t now_us) {
  tls_pending_ = false;
  tls_at_connect_ = false;
  parser_ = {};
  advance(now_us);
}

void client_fsm::on_tls_failed(std::uint64_t now_us) {
  if (finished_) return;
  if (!tls_at_connect_) return finish(now_us, "the TLS handshake failed");
  // Who asked for TLS from connect: the recording (an SMTPS listener's), or --tls-on-connect yes (a
  // trial: a plaintext capture forced into TLS was said to be an SMTPS listener's).
  if (!options_.tls_on_connect)
    return finish(now_us, "the TLS handshake at connect failed (the capture was recorded with TLS from connect, "
                          "on an SMTPS listener; --tls-on-connect no replays it in plaintext)");
  finish(now_us, script_.implicit_tls
                     ? "the TLS handshake at connect failed (--tls-on-connect yes; the capture too was recorded "
                       "with TLS from connect, on an SMTPS listener; --tls-on-connect no replays it in plaintext)"
                     : "the TLS handshake at connect failed (--tls-on-connect yes asked for TLS from connect; the "
                       "capture was recorded in plaintext, as --tls-on-connect as-recorded, the default, replays it)");
}

void client_fsm::on_server_closed(std::uint64_t now_us) {
  if (finished_) return;
  // Steps the recording has no reply to, because its server side closed: so did this one. So
  // did the recorded destination where the relay's 421 stood for its close (a trial: smtp-sink -q
  // RCPT, replayed against itself, was reported DIVERGED for closing where it had closed).
  while (!inflight_.empty()) {
    auto& res = results_[inflight_.front()];
    if (res.recorded && !res.recorded->stands_for_close) break;
    res.status = step_status::matched;
    // What was said of the step as it went (the RSET sent in place of its DATA) is kept after it.
    std::string closed = res.recorded ? "the server closed the connection without a reply, as the recorded destination did (the "
                              "relay's " + std::to_string(res.recorded->reply.code) + " stood for its close: " +
                                  script_.end_reason + ")"
                            : "the server closed the connection without a reply, as when recorded (" +
                                  script_.end_reason + ")";
    res.note = res.note.empty() ? std::move(closed) : std::move(closed) + "; " + res.note;
    settle(inflight_.front(), now_us);
    inflight_.pop_front();
  }
  if (inflight_.empty() && next_ == steps_.size()) {
    finished_ = true;
    awaiting_close_ = false;
    actions_.push_back(protocol::close_leg{protocol::leg::upstream});
    return;
  }
  finish(now_us, "the server closed the connection");
}

void client_fsm::on_connect_failed(std::uint64_t now_us, const std::string& why) {
  if (finished_) return;
  finish(now_us, "not connected: " + why);
}

void client_fsm::on_server_bytes(std::string_view bytes, std::uint64_t now_us) {
  if (finished_) return;
  std::vector<protocol::reply> replies;
  const auto status = parser_.feed(bytes, replies);
  for (auto& r : replies) {
    if (finished_) return;
    take_reply(std::move(r), now_us);
  }
  if (status != protocol::reply_parse_status::ok && !finished_) {
    if (!inflight_.empty())
      results_[inflight_.front()].differences.push_back("the reply cannot be parsed: " +
                                                        std::string(protocol::to_string(status)));
    finish(now_us, "the server's reply could not be parsed");
    return;
  }
  advance(now_us);
}

void client_fsm::on_timer(std::uint64_t now_us) {
  if (finished_) return;
  if (awaiting_close_ && inflight_.empty() && now_us >= reply_deadline_us_) {
    // The recorded destination closed after its last word; the live one did not.
    auto& last = results_.back();
    last.status = step_status::diverged;
    last.differences.push_back("the live server did not close the connection within " +
                               std::to_string(options_.reply_timeout.count()) +
                               " s; the recorded destination closed it here (" + script_.end_reason + ")");
    awaiting_close_ = false;
    finish(now_us, "the live server did not close the connection");
    return;
  }
  if (!inflight_.empty() && now_us >= reply_deadline_us_) {
    finish(now_us, "no reply within " + std::to_string(options_.reply_timeout.count()) + " s");
    return;
  }
  advance(now_us);
}

void client_fsm::take_reply(protocol::reply r, std::uint64_t now_us) {
  if (inflight_.empty()) return;   // a reply nobody asked for: the recording goes on without it
  const std::size_t at = inflight_.front();
  inflight_.pop_front();
  step_result& res = results_[at];
  // The step it answers (none for the greeting and an unsolicited reply).
  const step* st = res.greeting || res.unsolicited ? nullptr : steps_[res.step];
  const std::uint64_t asked = res.greeting ? connected_at_ : st ? sent_at_[res.step] : settled_at_[at - 1];
  res.live_latency_us = now_us > asked ? now_us - asked : 0;
  if (st && st->in_place_reply) {
    // The replay sent what the destination got (the relay's RSET): its reply to that is compared.
    res.differences = differences(*st->in_place_reply, r, protocol::phase::rset, options_.compare_text);
  } else if (!res.recorded) {
    res.differences.push_back("the recording has no reply here: the session ended (" + script_.end_reason +
                              ") and the client heard the connection close");
  } else if (const auto* said = res.recorded->destination_reply()) {
    res.differences = differences(*said, r, res.ph, options_.compare_text);
  } else {
    // Injected or the relay's own: the destination never said it, and may well say otherwise.
    res.differences = differences(res.recorded->reply, r, res.ph, options_.compare_text);
    if (!res.differences.empty())
      res.differences.insert(res.differences.begin(),
                             res.recorded->source == reply_source::injected
                                 ? "the recorded reply was injected by the fault rule '" + res.recorded->rule +
                                       "', not said by the destination"
                             : res.recorded->stands_for_close
                                 ? "the recorded destination closed the connection here without a reply (the relay's " +
                                       std::to_string(res.recorded->reply.code) + " stood for its close: " +
                                       script_.end_reason + "); the live server answered"
                                 : "the recorded reply was the relay's own, not the destination's");
  }
  res.status = res.differences.empty() ? step_status::matched : step_status::diverged;
  if (st && (st->ph == protocol::phase::ehlo || st->ph == protocol::phase::helo)) {
    const bool ehlo = r.code == 250 && st->ph == protocol::phase::ehlo;
    live_chunking_ = ehlo && keywords(r).count("CHUNKING") > 0;
    live_pipelining_ = ehlo && keywords(r).count("PIPELINING") > 0;
  }
  // RFC 3207 4.2: after a 220 to STARTTLS the client starts the handshake, whatever the
  // recorded client heard; anything else said then would be read as a broken handshake.
  const bool starttls_step = st && st->ph == protocol::phase::starttls;
  const bool tls_follows = starttls_step && r.code == 220;
  if (starttls_step && tls_follows != st->starts_tls)
    res.note += std::string(res.note.empty() ? "" : "; ") +
                (tls_follows ? "the recorded client heard " + std::to_string(res.recorded ? res.recorded->reply.code : 0) +
                                 " and went on without TLS; the live server answered 220, so the replay starts TLS "
                                 "and goes on inside it"
                           : "the recorded client started TLS here; the live server did not answer 220, so the "
                             "replay goes on without TLS");
  // A live 354 to a DATA after which the recording has no message (the recorded DATA was
  // refused): the server now reads everything as message data, and each step after it would
  // wait for a reply that never comes, until the server's own timeout. The replay closes the
  // connection without ending a message, so nothing is delivered.
  const bool live_waits_for_a_message =
      st && st->ph == protocol::phase::data && r.code == 354 &&
      (res.step + 1 >= steps_.size() || steps_[res.step + 1]->kind != step_kind::message);
  res.live = std::move(r);
  settle(at, now_us);
  if (live_waits_for_a_message) {
    res.note = "the live server answered 354 and waits for a message the recording does not have: the replay "
               "closed the connection without ending one (nothing was delivered)";
    finish(now_us, "the live server answered 354 to the DATA before, and the replay closed the connection");
    return;
  }
  reply_deadline_us_ = now_us + static_cast<std::uint64_t>(options_.reply_timeout.count()) * 1'000'000;
  // The last unsolicited reply in: the recorded destination closed next.
  if (res.unsolicited && inflight_.empty()) awaiting_close_ = true;
  if (tls_follows) {
    tls_pending_ = true;
    live_chunking_.reset();   // RFC 3207 4.2: what was offered before TLS is forgotten
    live_pipelining_.reset();
    actions_.push_back(protocol::start_tls{protocol::leg::upstream});
  }
}

void client_fsm::settle(std::size_t result, std::uint64_t now_us) {
  settled_at_[result] = std::max<std::uint64_t>(now_us, 1);
  while (settled_prefix_ < results_.size() && settled_at_[settled_prefix_] != 0) ++settled_prefix_;
}

// A step goes out once the replies its recorded client had waited for are in, and the
// recorded pause since then (or since the step before, for a pipelined one) has passed.
bool client_fsm::ready_to_send(std::size_t i, std::uint64_t now_us, std::uint64_t& due_us) const {
  const step& st = *steps_[i];
  if (settled_prefix_ < st.awaits) return false;
  std::uint64_t recorded_ref = 0, live_ref = 0;
  if (st.awaits > 0) {
    const std::size_t k = st.awaits - 1;
    recorded_ref = k == 0 ? (script_.banner ? script_.banner->t_us : 0)
                          : (steps_[k - 1]->reply ? steps_[k - 1]->reply->t_us : 0);
    live_ref = settled_at_[k];
  }
  if (i > 0 && steps_[i - 1]->sent_us >= recorded_ref) {
    recorded_ref = steps_[i - 1]->sent_us;
    live_ref = std::max(live_ref, sent_at_[i - 1]);
  }
  const std::uint64_t pause = st.sent_us > recorded_ref ? st.sent_us - recorded_ref : 0;
  due_us = live_ref + options_.pace.scale(pause);
  return due_us <= now_us;
}

void client_fsm::advance(std::uint64_t now_us) {
  send_due_us_ = 0;
  while (!finished_ && !tls_pending_ && next_ < steps_.size()) {
    const std::size_t i = next_;
    const step& st = *steps_[i];
    step_result& res = results_[i + 1];
    // What the recording shows never reached the destination, whatever the step held: behind the
    // step whose reply from the relay (or a fault) ended the recorded session, all the relay had
    // not sent on; in a session a fault's greeting answered, or after QUIT, everything.
    if (!closing_.empty() && !st.went_upstream) {
      res.status = step_status::skipped;
      res.note = "not sent: " + closing_ + "; " +
                 (st.read_by_relay ? "the relay had read this step and never sent it on to the destination"
                                   : "the relay never read this step, nor did the destination get it");
      settle(i + 1, now_us);
      ++next_;
      continue;
    }
    // Behind that step the recorded destination answered nothing: the recording shows no transaction
    // it took and no delivery (the capture may say `unknown`: whether it delivered is not known).
    // What the relay sent on there goes (sent, above), but never a step that
    // would end a message (a BDAT ... LAST with its chunk, a DATA message with its end): a live
    // server would deliver it, a BDAT chunk having no 354 to wait for. None of it goes, and the
    // connection closes once the replies owed are in, as for a message withheld.
    if (!closing_.empty() && !st.withheld && !st.unfinished &&
        (st.kind == step_kind::message || (st.kind == step_kind::bdat && st.last_chunk))) {
      const std::string what = st.kind == step_kind::message ? "message" : "last BDAT chunk";
      res.status = step_status::skipped;
      res.note = "not sent: " + closing_ + "; the relay had sent this " + what +
                 " on, but the recorded destination answered neither that step nor any after it, so the recording "
                 "shows no delivery of it (whether the destination delivered it is unknown), and a live server "
                 "would deliver the message this " + what +
                 " ends: the replay sent none of it and closed the connection: nothing delivered";
      settle(i + 1, now_us);
      stop_sending(i + 1, now_us, "not sent: the replay closed the connection at the " + what +
                                      " before, which would have ended a message the recorded destination never "
                                      "accepted");
      continue;
    }
    // A message (or a BDAT chunk of one) a fault rule answered itself when recorded: the relay
    // sent the destination RSET in place of its DATA (or first chunk), which the replay sent too
    // (send_step, step::sent_in_place), and none of the message; the replay goes on as the
    // destination's session did (a trial: the replay sent DATA, which the recorded destination
    // never got, and closed the connection inside the message). Whether that session went on is
    // what the recording has of the destination's answer to the RSET (after_rset_in_place): a
    // hostile trial's note said it went on where the destination never answered the RSET and
    // closed.
    if (st.answered_by_fault) {
      const bool chunk = st.kind == step_kind::bdat;
      const std::string after = after_rset_in_place(i);
      res.status = step_status::skipped;
      res.note = std::string("not sent: the destination never got this ") + (chunk ? "BDAT chunk" : "message") +
                 " (" + st.withheld_why + "): the relay sent it RSET in place of the " +
                 (chunk ? "message's first BDAT chunk" : "DATA") + " and answered the client itself, and " +
                 (after.empty() ? "the destination's session went on; the replay sent RSET there too, none of this " +
                                      std::string(chunk ? "chunk" : "message") + ", and went on"
                                : after + "; the replay sent RSET there too and none of this " +
                                      std::string(chunk ? "chunk" : "message")) +
                 ": nothing delivered";
      settle(i + 1, now_us);
      ++next_;
      stop_where_the_session_closed(i);
      continue;
    }
    // A BDAT to a live server that did not offer CHUNKING: it would read the chunk as commands
    // (a trial: a chunk holding "MAIL FROM:...RCPT TO:<victim>...DATA" delivered a message to
    // smtp-sink, which offers no CHUNKING), as the relay refuses such a BDAT (README, "What the
    // relay does on the wire"). Nothing more is sent; the connection closes once the replies
    // owed are in.
    // Not known to be offered (no EHLO answered yet, or none since STARTTLS): the replies in flight
    // (an EHLO's among them) are waited for, then it is not; a pipelined group after a known
    // CHUNKING is sent as recorded.
    if (st.kind == step_kind::bdat && st.sent_in_place.empty() && live_chunking_ != true) {
      if (!live_chunking_ && !inflight_.empty()) break;
      stop_sending(i, now_us, "not sent: the live server's EHLO reply offered no CHUNKING (or none was answered), so "
                              "it would read a BDAT chunk as commands (RFC 3030 2); the replay closed the connection");
      continue;
    }
    if (!st.not_forwarded.empty()) {
      res.status = step_status::skipped;
      res.note = "not sent: " + st.not_forwarded;
      settle(i + 1, now_us);
      ++next_;
      continue;
    }
    // Steps whose conversation the live server did not enter are not sent.
    if (st.kind == step_kind::message || st.kind == step_kind::auth_response) {
      if (settled_prefix_ < i + 1) break;   // wait for the reply to the step before
      const auto& before = results_[i];
      const int want = st.kind == step_kind::message ? 354 : 334;
      if (before.status == step_status::skipped) {
        res.status = step_status::skipped;
        res.note = before.note;
        settle(i + 1, now_us);
        ++next_;
        continue;
      }
      if (!before.live || before.live->code != want) {
        res.status = step_status::not_sent;
        res.note = "not sent: the step before was not answered " + std::to_string(want);
        settle(i + 1, now_us);
        ++next_;
        continue;
      }
    }
    // A message or chunk the destination never got whole: what the relay forwarded of it, and
    // then the connection closes without its end, which the relay never sent upstream either
    // (a trial: a refused body holding "\n.\nMAIL FROM:<evil@x>", sent as recorded, was a
    // message and a smuggled command to a live Postfix, which queued it).
    if (st.withheld) {
      if (!st.forwarded.empty()) {
        if (waits_for_pipelining(i)) break;
        std::uint64_t due = 0;
        if (!ready_to_send(i, now_us, due)) {
          if (due > now_us) send_due_us_ = due;
          break;
        }
        actions_.push_back(protocol::send_bytes{protocol::leg::upstream, st.forwarded, false});
        sent_at_[i] = std::max<std::uint64_t>(now_us, 1);
      }
      const std::string what = st.kind == step_kind::message ? "message" : "BDAT chunk";
      res.status = step_status::skipped;
      res.note = "not sent as recorded: the destination never got this " + what + " whole (" + st.withheld_why +
                 "); " +
                 (st.forwarded.empty()
                      ? std::string("the relay forwarded none of it, and the replay sent none and closed the connection")
                      : "the replay sent the " + std::to_string(st.forwarded.size()) +
                            " bytes of it the relay forwarded and closed the connection without ending it") +
                 ": nothing delivered";
      settle(i + 1, now_us);
      stop_sending(i + 1, now_us, "not sent: the replay closed the connection at the " + what +
                                      " before, which the destination never got whole");
      continue;
    }
    // A line the relay answered itself went no further (replay/unforwarded_line.hpp); nor did
    // one the session ended inside, that long.
    if (st.kind == step_kind::command) {
      if (const auto why = why_never_forwarded(st.bytes); !why.empty()) {
        res.status = step_status::skipped;
        res.note = "not sent: the relay never forwards such a line (" + why + ")";
        settle(i + 1, now_us);
        ++next_;
        stop_where_the_session_closed(i);
        continue;
      }
    }
    if (st.auth && st.kind == step_kind::command && !st.unfinished) {
      const auto cmd = read_auth(st.text);
      auth_material_.clear();
      auth_skipping_ = options_.auth_user.empty() && options_.auth_password.empty();
      if (auth_skipping_) {
        res.status = step_status::skipped;
        res.note = "AUTH " + cmd.mechanism + " not replayed: captures hold no secrets (give --auth-user and --auth-password)";
      } else if (cmd.mechanism == "PLAIN") {
        auth_material_ = {protocol::base64_encode(std::string(1, '\0') + options_.auth_user + '\0' + options_.auth_password)};
      } else if (cmd.mechanism == "LOGIN") {
        auth_material_ = {protocol::base64_encode(options_.auth_user), protocol::base64_encode(options_.auth_password)};
      } else {
        auth_skipping_ = true;
        res.status = step_status::skipped;
        res.note = "AUTH " + cmd.mechanism + " not replayed: only PLAIN and LOGIN can be run from a user and password";
      }
      if (auth_skipping_) {
        settle(i + 1, now_us);
        ++next_;
        stop_where_the_session_closed(i);
        continue;
      }
    }
    if (waits_for_pipelining(i)) break;
    std::uint64_t due = 0;
    if (!ready_to_send(i, now_us, due)) {
      if (due > now_us) send_due_us_ = due;
      break;
    }
    send_step(i, now_us);
    stop_where_the_session_closed(i);
  }
  if (!finished_ && !tls_pending_ && next_ == steps_.size()) expect_the_recorded_ending(now_us);
  if (!finished_ && !tls_pending_ && next_ == steps_.size() && inflight_.empty() && !awaiting_close_) {
    finished_ = true;
    actions_.push_back(protocol::close_leg{protocol::leg::upstream});
    return;
  }
  arm(now_us);
}

// RFC 2920: a client pipelines only where the server's EHLO reply offers PIPELINING (a trial: the
// replay pipelined MAIL, RCPT and DATA to a server that offered none). Step i, which the recorded
// client sent before the replies now in flight came, waits for them where the live server's last
// EHLO reply did not offer it (or none was answered, or none since STARTTLS, which forgets it), as
// a BDAT waits on CHUNKING. A step the recorded client sent before the greeting (an early talker:
// no EHLO had offered anything) goes as recorded.
bool client_fsm::waits_for_pipelining(std::size_t i) {
  const step& st = *steps_[i];
  if (live_pipelining_ == true || inflight_.empty() || st.awaits == 0 || settled_prefix_ < st.awaits) return false;
  held_back_[i] = true;
  return true;
}

// Every step out: the unsolicited replies the recorded destination sent after the last one's are
// awaited behind the replies still owed (they come in that order), then its close; with none
// expected, the replay closes once the replies owed are in, as before.
void client_fsm::expect_the_recorded_ending(std::uint64_t now_us) {
  if (ending_awaited_) return;
  ending_awaited_ = true;
  if (first_unsolicited_ == results_.size()) return;
  if (inflight_.empty())
    reply_deadline_us_ = now_us + static_cast<std::uint64_t>(options_.reply_timeout.count()) * 1'000'000;
  for (std::size_t k = first_unsolicited_; k < results_.size(); ++k) inflight_.push_back(k);
}

// The relay's own reply to step i (or a fault rule's) ended the recorded session: no later step
// has a reply, no reply came after it, and the client did not end the session.
// What the recording has of the destination's answer to the RSET the relay sent in place of the
// message step `i` belongs to (the nearest step before it with step::sent_in_place), when its
// session did not go on: no answer at all (the session ended first: script::end_reason), or a
// reply that closes it (221, 421, RFC 5321 3.8, 4.2.2). Empty when it answered and stayed.
std::string client_fsm::after_rset_in_place(std::size_t i) const {
  const step* in_place = nullptr;
  for (std::size_t k = i; k-- > 0 && !in_place;)
    if (!steps_[k]->sent_in_place.empty()) in_place = steps_[k];
  if (!in_place) return "";
  const std::string sent = in_place->sent_in_place.substr(0, in_place->sent_in_place.size() - 2);
  if (!in_place->in_place_reply)
    return "the recorded destination never answered that " + sent + ": its session ended there (" +
           (script_.end_reason.empty() ? std::string("no end record") : script_.end_reason) + ")";
  const int code = in_place->in_place_reply->code;
  if (code == 221 || code == 421)
    return "the recorded destination answered that " + sent + " " + std::to_string(code) + " and closed the connection";
  return "";
}

bool client_fsm::session_closed_at(std::size_t i) const {
  const step& st = *steps_[i];
  if (!st.reply || !script_.unsolicited.empty()) return false;
  if (st.reply->source != reply_source::relay && st.reply->source != reply_source::injected) return false;
  if (script_.end_reason.empty() || script_.ended_by_client()) return false;
  return std::none_of(steps_.begin() + static_cast<std::ptrdiff_t>(i) + 1, steps_.end(),
                      [](const step* later) { return later->reply.has_value(); });
}

// Where the relay ended the recorded session with its reply to step i (a refused line, the
// refusal that reached its error limit, a fault's reply_and_close, the upstream lost), no reply
// to what its client had sent behind that step is recorded. The destination got only what the
// relay had sent on of it (a relay that lost its upstream answers the first command it owes 421
// and closes, after it forwarded the commands pipelined behind it): that is sent (advance,
// send_step: `sent`, nothing to compare), the rest not, each note saying what the recording
// shows of the step (mostly never read: the relay closed first).
void client_fsm::stop_where_the_session_closed(std::size_t i) {
  if (!closing_.empty() || next_ >= steps_.size() || !session_closed_at(i)) return;
  const recorded_reply& r = *steps_[i]->reply;
  if (r.stands_for_close) {
    closing_ = "the recorded destination closed the connection at an earlier step (the relay's " +
               std::to_string(r.reply.code) + " stood for its close: " + script_.end_reason + ")";
    return;
  }
  const std::string who = r.source == reply_source::injected ? "the fault rule '" + r.rule + "'" : "the relay";
  closing_ = who + " ended the recorded session with its reply " + std::to_string(r.reply.code) +
             " to an earlier step (" + script_.end_reason + ")";
}

// Steps `from` on are not sent (`why`); the connection closes once the replies still owed are in.
void client_fsm::stop_sending(std::size_t from, std::uint64_t now_us, const std::string& why) {
  for (std::size_t j = from; j < steps_.size(); ++j) {
    results_[j + 1].status = step_status::skipped;
    results_[j + 1].note = why;
    settle(j + 1, now_us);
  }
  // The replay closes here on purpose: what the recorded destination said after the last step is
  // not awaited.
  if (!ending_awaited_) {
    ending_awaited_ = true;
    for (std::size_t k = first_unsolicited_; k < results_.size(); ++k) {
      results_[k].status = step_status::skipped;
      results_[k].note = "not awaited: the replay closed the connection before the end of the recording";
      settle(k, now_us);
    }
  }
  next_ = steps_.size();
}

std::string client_fsm::auth_bytes(std::size_t i) {
  const step& st = *steps_[i];
  auto next_material = [this]() -> std::string {
    if (auth_material_.empty()) return "*";   // RFC 4954 4: cancels the exchange
    std::string m = auth_material_.front();
    auth_material_.erase(auth_material_.begin());
    return m;
  };
  if (st.kind == step_kind::auth_response) return next_material() + "\r\n";
  const auto cmd = read_auth(st.text);
  return "AUTH " + cmd.mechanism + (cmd.initial_response ? " " + next_material() : std::string()) + "\r\n";
}

void client_fsm::send_step(std::size_t i, std::uint64_t now_us) {
  const step& st = *steps_[i];
  // An unfinished step goes out as recorded (an AUTH line in it is masked there); a message as
  // the relay forwarded it to the recorded destination (script.hpp `relayed`).
  const bool as_relayed = st.kind == step_kind::message && !st.relayed.empty();
  const bool in_place = !st.sent_in_place.empty();
  const std::string bytes = in_place                   ? st.sent_in_place
                            : st.auth && !st.unfinished ? auth_bytes(i)
                            : as_relayed                ? st.relayed
                                                        : st.bytes;
  actions_.push_back(protocol::send_bytes{protocol::leg::upstream, bytes, st.auth && !in_place});
  sent_at_[i] = std::max<std::uint64_t>(now_us, 1);
  ++next_;
  if (held_back_[i])
    results_[i + 1].note = "sent once the replies before it were in, not pipelined as the recorded client sent it: the "
                           "live server's EHLO reply offered no PIPELINING (or none was answered; RFC 2920)";
  if (in_place) {
    const std::string sent = bytes.substr(0, bytes.size() - 2);
    std::string& note = results_[i + 1].note;
    note += (note.empty() ? "" : "; ") + sent + " sent in its place, as the relay sent the recorded destination " +
            sent + " and never this " + (st.kind == step_kind::bdat ? "BDAT chunk" : "DATA") +
            " (a fault rule answered the message itself); " +
            (st.in_place_reply ? "the live reply is compared with the destination's to " + sent
                               : "the recorded destination never answered that " + sent +
                                     " (the session ended first)");
  }
  if (as_relayed && st.relayed != st.bytes)
    results_[i + 1].note += std::string(results_[i + 1].note.empty() ? "" : "; ") + "sent as the relay forwarded it to the recorded destination (" +
                           std::to_string(st.relayed.size()) + " bytes; bare_eol = " +
                           std::string(protocol::to_string(script_.bare_eol)) +
                           (script_.bare_eol == protocol::bare_eol_mode::normalize_line_ends
                                ? ": each bare CR or LF a CRLF, each NUL a space"
                                : ": each bare CR or LF and each NUL a space") +
                           "), not as its client sent it (" +
                           std::to_string(st.bytes.size()) + " bytes)";
  // The recording ended before this step's reply. If its client left first (or the step is
  // unfinished, or the capture has no end record), there is nothing to compare: sent, and the
  // connection closes after it as the recorded one did. Otherwise its server side closed on
  // the recorded client, and the live server is expected to close too: a reply is a divergence.
  if (!st.reply && (!closing_.empty() || st.unfinished || script_.ended_by_client() || script_.end_reason.empty())) {
    auto& res = results_[i + 1];
    res.status = step_status::sent;
    const std::string why =
        !closing_.empty() ? "sent as the recorded destination got it: the relay had read this step and sent it on "
                            "before " + closing_ + ", and no reply to it is recorded: there is nothing to compare "
                            "it with"
        : st.unfinished ? "sent as recorded, unfinished: the recorded session ended inside this step"
        : script_.end_reason.empty()
            ? "sent; the capture ends before a reply (it has no end record), so nothing is compared"
            : "sent; the recorded client closed before a reply came (" + script_.end_reason +
                  "), so nothing is compared";
    res.note = res.note.empty() ? why : res.note + "; " + why;
    settle(i + 1, now_us);
    return;
  }
  if (inflight_.empty())
    reply_deadline_us_ = now_us + static_cast<std::uint64_t>(options_.reply_timeout.count()) * 1'000'000;
  inflight_.push_back(i + 1);
}

void client_fsm::finish(std::uint64_t now_us, const std::string& why_unanswered) {
  for (auto at : inflight_) {
    results_[at].status = step_status::no_reply;
    results_[at].note = why_unanswered;
    settle(at, now_us);
  }
  inflight_.clear();
  for (std::size_t i = next_; i < steps_.size(); ++i) {
    results_[i + 1].status = step_status::not_sent;
    results_[i + 1].note = "not sent: " + why_unanswered;
  }
  if (!ending_awaited_) {
    ending_awaited_ = true;
    for (std::size_t k = first_unsolicited_; k < results_.size(); ++k) {
      results_[k].status = step_status::not_sent;
      results_[k].note = "not awaited: " + why_unanswered;
    }
  }
  next_ = steps_.size();
  finished_ = true;
  actions_.push_back(protocol::close_leg{protocol::leg::upstream});
}

void client_fsm::arm(std::uint64_t now_us) {
  std::uint64_t wake = 0;
  if (!inflight_.empty() || awaiting_close_) wake = reply_deadline_us_;
  if (send_due_us_ != 0) wake = wake == 0 ? send_due_us_ : std::min(wake, send_due_us_);
  if (wake == 0) return;
  const std::uint64_t wait = wake > now_us ? wake - now_us : 0;
  actions_.push_back(protocol::arm_timer{protocol::leg::upstream, std::chrono::milliseconds((wait + 999) / 1000)});
}

}  // namespace mailtap::replay
