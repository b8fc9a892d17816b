// relay_fsm: a peer leaves while something is held. One parameterised matrix over
//   who leaves, and when: the client reset (on_client_gone), the client closing its side with its
//   last bytes (a half-close that still waits for its replies), the client closing its side a
//   second or more after its last bytes (a sender that gave up), the upstream closing
//   (on_upstream_eof), the upstream's 421 or 221 to a command other than QUIT (or an unsolicited
//   421), an upstream timeout;
//   what is held then: nothing (the end of data went upstream, its reply awaited), a command line
//   a delay fault holds (DATA, or BDAT with its chunk), the reply to the end of data a delay
//   holds, the end of data a delay holds (phase::data_end), a stall at the end of data, the
//   recorder's wait before the end is released (await_capture), a pipelined `BDAT n LAST` whose
//   last byte waits for the replies to MAIL and RCPT;
//   DATA or BDAT; one message, or a second pipelined behind the first (the hold on the second).
// A scripted destination answers what the relay forwards (it parses the upstream stream), so that
// what went upstream, and which replies came back, is known for each message. Every case asserts
// invariants only (captures/FORMAT.md "End reasons" and "Transaction outcome", README "Outcomes"
// and "Failures"), never log text:
//   - the session finishes, with exactly one end record, within bounded fake time;
//   - nothing goes upstream after a client reset, and no held end of data after a client that
//     gave up (unless only the recorder held it);
//   - one transaction record per MAIL; its outcome: delivered iff the destination's 2xx to its end
//     came; else tempfailed after the upstream's 421/221; else unknown iff its end went upstream;
//     else aborted (or, the upstream lost before the end went, aborted or tempfailed);
//   - a client still reading gets every reply it was owed in order, or replies in order then a
//     421 (at most one more 421 after an upstream's 421/221), and nothing after that;
//   - a client reset is sent nothing more;
//   - the end reason is the one FORMAT.md's table gives.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/action.hpp"
#include "protocol/fault.hpp"
#include "protocol/observer.hpp"
#include "protocol/relay_fsm.hpp"
#include "relay_playbook.hpp"

namespace mailtap::protocol {
namespace {

using namespace playbook;

// ---------------------------------------------------------------- a scripted advisor (one-shot decisions)

class leaving_advisor : public fault_advisor {
 public:
  void on(phase ph, fault_stage stage, fault_decision d) { once_[{ph, stage}].push_back(std::move(d)); }
  session_plan plan_session() override { return {}; }
  bool reserve_plan_rule(std::string_view) override { return true; }
  void applied(std::string_view) override {}
  void not_applied(std::string_view) override {}
  fault_decision decide(const fault_query& q) override {
    auto& queue = once_[{q.ph, q.stage}];
    if (queue.empty()) return {};
    fault_decision d = std::move(queue.front());
    queue.pop_front();
    return d;
  }

 private:
  std::map<std::pair<phase, fault_stage>, std::deque<fault_decision>> once_;
};

fault_decision delay_of(std::uint64_t us, std::string rule) {
  fault_decision d;
  d.what = verdict::delay;
  d.rule = std::move(rule);
  d.type = "delay";
  d.delay_us = us;
  return d;
}
fault_decision stall_for(std::uint64_t max_us, std::string rule) {
  fault_decision d;
  d.what = verdict::stall;
  d.rule = std::move(rule);
  d.type = "stall";
  d.stall_max_us = max_us;
  return d;
}

// ---------------------------------------------------------------- a scripted destination

// Reads what the relay sends upstream as an SMTP server would and queues its replies, each
// tagged with the message (MAIL) it belongs to and whether it answers that message's end.
class destination {
 public:
  struct pending {
    std::string reply;
    int message = -1;
    bool ends_message = false;
    bool to_data = false;   // answers a message's end or a BDAT chunk: 250 or a failure only
  };

  void feed(std::string_view b) {
    buf_ += b;
    parse();
  }
  bool end_seen(int m) const { return m >= 0 && m < static_cast<int>(ends_.size()) && ends_[m]; }

  std::deque<pending> replies;

 private:
  enum class state { command, data, chunk };

  void push(std::string r, bool ends = false, bool to_data = false) {
    replies.push_back({std::move(r), message_, ends, to_data || ends});
  }
  void chunk_done() {
    state_ = state::command;
    if (chunk_last_) {
      if (message_ >= 0) ends_[message_] = true;
      push("250 2.0.0 Ok: queued as B" + std::to_string(message_) + "\r\n", true);
    } else {
      push("250 2.0.0 Ok: chunk\r\n", false, true);
    }
  }
  void parse() {
    for (int guard = 0; guard < 1000; ++guard) {
      if (state_ == state::command) {
        const auto p = buf_.find("\r\n");
        if (p == std::string::npos) return;
        const std::string line = buf_.substr(0, p);
        buf_.erase(0, p + 2);
        const std::string verb = line.substr(0, line.find(' '));
        if (verb == "EHLO") {
          push(plain_ehlo_reply);
        } else if (verb == "MAIL") {
          ++message_;
          ends_.push_back(false);
          push("250 2.1.0 Ok\r\n");
        } else if (verb == "RCPT") {
          push("250 2.1.5 Ok\r\n");
        } else if (verb == "DATA") {
          push("354 End data with <CR><LF>.<CR><LF>\r\n");
          state_ = state::data;
          body_ = "\r\n";
        } else if (verb == "BDAT") {
          const std::string rest = line.substr(5);
          chunk_left_ = std::stoul(rest);
          chunk_last_ = rest.find("LAST") != std::string::npos;
          state_ = state::chunk;
          if (chunk_left_ == 0) chunk_done();
        } else if (verb == "QUIT") {
          push("221 2.0.0 Bye\r\n");
        } else {
          push("250 2.0.0 Ok\r\n");
        }
      } else if (state_ == state::data) {
        body_ += buf_;
        buf_.clear();
        const auto p = body_.find("\r\n.\r\n");
        if (p == std::string::npos) return;
        buf_ = body_.substr(p + 5);
        body_.clear();
        state_ = state::command;
        if (message_ >= 0) ends_[message_] = true;
        push("250 2.0.0 Ok: queued as D" + std::to_string(message_) + "\r\n", true);
      } else {
        const std::size_t n = std::min(chunk_left_, buf_.size());
        buf_.erase(0, n);
        chunk_left_ -= n;
        if (chunk_left_ > 0) return;
        chunk_done();
      }
    }
  }

  state state_ = state::command;
  std::string buf_, body_;
  std::size_t chunk_left_ = 0;
  bool chunk_last_ = false;
  int message_ = -1;
  std::vector<bool> ends_;
};

// ---------------------------------------------------------------- the matrix

enum class who { client_reset, client_half_close, client_gave_up, upstream_eof, upstream_421, upstream_221, upstream_timeout };
enum class held { nothing, command, reply, data_end, stall, capture, bdat_waits };
enum class framing { data, bdat };

struct leaving_case {
  who w;
  held h;
  framing f;
  int messages;
};

std::string_view name_of(who w) {
  switch (w) {
    case who::client_reset: return "ClientReset";
    case who::client_half_close: return "ClientHalfClose";
    case who::client_gave_up: return "ClientGaveUp";
    case who::upstream_eof: return "UpstreamEof";
    case who::upstream_421: return "Upstream421";
    case who::upstream_221: return "Upstream221";
    case who::upstream_timeout: return "UpstreamTimeout";
  }
  return "?";
}
std::string_view name_of(held h) {
  switch (h) {
    case held::nothing: return "Nothing";
    case held::command: return "HeldCommand";
    case held::reply: return "HeldReply";
    case held::data_end: return "HeldEnd";
    case held::stall: return "Stall";
    case held::capture: return "CaptureWait";
    case held::bdat_waits: return "BdatLastWaitsForReplies";
  }
  return "?";
}
std::string case_name(const leaving_case& c) {
  return std::string(name_of(c.w)) + "_" + std::string(name_of(c.h)) + "_" + (c.f == framing::data ? "Data" : "Bdat") +
         (c.messages == 2 ? "_SecondMessage" : "_OneMessage");
}
bool client_leaves(who w) { return w == who::client_reset || w == who::client_half_close || w == who::client_gave_up; }

// Whether the destination has a command it has not answered when the leave comes (the upstream's
// 221, or its timeout, needs one: an unsolicited 221 is no closing the docs describe, and no
// reply timer runs while nothing is awaited).
bool upstream_awaited_at_leave(const leaving_case& c) {
  if (c.h == held::reply) return false;
  if (c.h == held::nothing || c.h == held::bdat_waits) return true;
  return c.f == framing::bdat && c.messages == 2;   // the first message's end, its reply withheld
}

std::vector<leaving_case> all_cases() {
  std::vector<leaving_case> out;
  for (who w : {who::client_reset, who::client_half_close, who::client_gave_up, who::upstream_eof, who::upstream_421,
                who::upstream_221, who::upstream_timeout})
    for (held h : {held::nothing, held::command, held::reply, held::data_end, held::stall, held::capture, held::bdat_waits})
      for (framing f : {framing::data, framing::bdat})
        for (int m : {1, 2}) {
          const leaving_case c{w, h, f, m};
          if (h == held::bdat_waits && f != framing::bdat) continue;   // DATA has no pipelined end
          if ((w == who::upstream_221 || w == who::upstream_timeout) && !upstream_awaited_at_leave(c)) continue;
          out.push_back(c);
        }
  return out;
}

// ---------------------------------------------------------------- the fixture

class LeavingFsm : public testing::TestWithParam<leaving_case> {
 protected:
  static constexpr int guard_steps = 200;
  static constexpr std::uint64_t bound_us = 3'600'000'000ull;   // an hour of fake time after the leave

  void make(relay_options o) {
    obs_ = std::make_unique<recording_observer>();
    adv_ = std::make_unique<leaving_advisor>();
    fsm_ = std::make_unique<relay_fsm>(std::move(o), obs_.get(), adv_.get());
  }

  std::uint64_t tick() { return now_ += 1000; }

  void take() {
    for (const auto& a : fsm_->take_actions()) {
      if (const auto* s = std::get_if<send_bytes>(&a)) {
        EXPECT_FALSE(closed_[s->to]) << "send after close: " << to_string(a);
        if (s->to == leg::upstream) {
          up_ += s->bytes;
          dest_.feed(s->bytes);
        } else {
          cl_ += s->bytes;
        }
      } else if (const auto* c = std::get_if<close_leg>(&a)) {
        closed_[c->which] = true;
      } else if (const auto* f = std::get_if<arm_fault_timer>(&a)) {
        fault_due_ = f->after.count() == 0 ? 0 : now_ + static_cast<std::uint64_t>(f->after.count());
      } else if (const auto* t = std::get_if<arm_timer>(&a)) {
        timer_due_[t->which] = t->after.count() == 0 ? 0 : now_ + static_cast<std::uint64_t>(t->after.count()) * 1000;
      } else if (std::holds_alternative<await_capture>(a)) {
        ++captures_awaited_;
      }
    }
  }

  void client(std::string_view b) {
    fsm_->on_client_bytes(tick(), b);
    take();
  }
  void upstream(std::string_view b) {
    fsm_->on_upstream_bytes(tick(), b);
    take();
  }
  void settle_captures(int upto) {
    for (int i = 0; i < guard_steps && captures_settled_ < std::min(captures_awaited_, upto) && !fsm_->finished(); ++i) {
      ++captures_settled_;
      fsm_->on_capture_settled(tick(), false);
      take();
    }
  }
  // The destination's replies go back, in order, up to the first `stop` says to withhold.
  template <typename Stop>
  bool pump(Stop stop) {
    bool any = false;
    for (int i = 0; i < guard_steps && !dest_.replies.empty() && !fsm_->finished() && !closed_[leg::upstream]; ++i) {
      if (stop(dest_.replies.front())) break;
      destination::pending p = dest_.replies.front();
      dest_.replies.pop_front();
      if (p.ends_message && p.reply[0] == '2') end_acked_[p.message] = true;
      upstream(p.reply);
      any = true;
    }
    return any;
  }

  // The client's requests, with the success code each expects, as sent.
  void send(std::string_view b, std::vector<int> codes) {
    for (int c : codes) expected_codes_.push_back(c);
    client(b);
  }
  static inline const std::string rcpt_line = "RCPT TO:<bob@example.org>\r\n";
  static std::string mail_of(int m) { return "MAIL FROM:<sender" + std::to_string(m) + "@example.org>\r\n"; }
  static std::string body_of(int m) { return "Subject: " + std::to_string(m) + "\r\n\r\nbody\r\n.\r\n"; }
  static std::string chunk_of(int m) { return "BDAT 7 LAST\r\nhello " + std::to_string(m); }

  // The replies the client received after the banner, as codes, in order.
  std::vector<int> client_codes() const {
    std::vector<int> out;
    std::size_t at = banner.size();
    for (int i = 0; i < 10'000 && at < cl_.size(); ++i) {
      const auto e = cl_.find("\r\n", at);
      if (e == std::string::npos) break;
      const std::string line = cl_.substr(at, e - at);
      at = e + 2;
      if (line.size() >= 3 && (line.size() == 3 || line[3] == ' ')) out.push_back(std::stoi(line.substr(0, 3)));
    }
    return out;
  }

  void run();

  std::unique_ptr<recording_observer> obs_;
  std::unique_ptr<leaving_advisor> adv_;
  std::unique_ptr<relay_fsm> fsm_;
  destination dest_;
  std::uint64_t now_ = 1'000'000;
  std::uint64_t fault_due_ = 0;
  std::map<leg, std::uint64_t> timer_due_;
  std::map<leg, bool> closed_;
  std::map<int, bool> end_acked_;   // the destination's 2xx to that message's end reached the relay
  std::string up_, cl_;
  int captures_awaited_ = 0, captures_settled_ = 0;
  int bodies_sent_ = 0;
  std::vector<int> expected_codes_;   // per client request, after the banner
};

void LeavingFsm::run() {
  const leaving_case c = GetParam();
  const int last = c.messages - 1;
  relay_options o;
  o.end_waits_for_capture = c.h == held::capture;
  make(std::move(o));

  // The hold is on the last message; an earlier one is asked the same question first, and proceeds.
  auto hold = [&](phase ph, fault_stage st, fault_decision d) {
    for (int m = 0; m < last; ++m) adv_->on(ph, st, fault_decision{});
    adv_->on(ph, st, std::move(d));
  };
  const phase command_phase = c.f == framing::data ? phase::data : phase::bdat;
  switch (c.h) {
    case held::nothing:
    case held::capture: break;
    case held::command: hold(command_phase, fault_stage::command, delay_of(5'000'000, "slow-command")); break;
    case held::reply: hold(phase::data_end, fault_stage::reply, delay_of(5'000'000, "slow-ack")); break;
    case held::data_end:
    case held::bdat_waits: hold(phase::data_end, fault_stage::command, delay_of(5'000'000, "slow-end")); break;
    case held::stall: hold(phase::data_end, fault_stage::command, stall_for(20'000'000, "hang-at-end")); break;
  }

  // Before the leave: the destination answers everything except, from the message under test on
  // (BDAT: from the first message, whose end's reply is then still awaited behind the second),
  // the reply to a message's end; and for the pipelined BDAT LAST, the envelope's replies too. A
  // held reply is delivered (the delay holds it). Fault timers do not fire; the recorder settles
  // every end but the last message's.
  const int stop_from = c.f == framing::bdat && c.messages == 2 ? 0 : last;
  auto stop = [&](const destination::pending& p) {
    if (c.h == held::reply) return false;
    if (p.message < stop_from) return false;
    if (p.ends_message) return true;
    return c.h == held::bdat_waits && p.message == last;
  };
  auto pump_before = [&] {
    for (int i = 0; i < 20; ++i) {
      settle_captures(last);
      if (!pump(stop)) break;
    }
    settle_captures(last);
  };

  fsm_->on_start(tick());
  take();
  fsm_->on_upstream_connected(tick());
  take();
  upstream(banner);
  send("EHLO client.example\r\n", {250});
  pump_before();
  ASSERT_EQ(cl_, banner + plain_ehlo_reply);

  if (c.f == framing::data) {
    send(mail_of(0) + rcpt_line + "DATA\r\n", {250, 250, 354});
    pump_before();
    for (int m = 0; m < c.messages; ++m) {
      if (bodies_sent_ > m) continue;
      if (c.h == held::command && m == last) break;   // DATA is held: no 354, no body yet
      ASSERT_EQ(std::count(expected_codes_.begin(), expected_codes_.end(), 354), m + 1);
      std::string b = body_of(m);
      std::vector<int> codes{250};
      if (m + 1 < c.messages) {   // the next message's envelope pipelined behind the dot
        b += mail_of(m + 1) + rcpt_line + "DATA\r\n";
        codes.insert(codes.end(), {250, 250, 354});
      }
      ++bodies_sent_;
      send(b, codes);
      pump_before();
    }
  } else {
    for (int m = 0; m < c.messages; ++m) {
      if (c.h == held::bdat_waits && m == last) {
        send(mail_of(m) + rcpt_line + chunk_of(m), {250, 250, 250});
      } else {
        send(mail_of(m) + rcpt_line, {250, 250});
        pump_before();
        send(chunk_of(m), {250});
      }
      pump_before();
    }
  }
  if (c.h == held::capture) {
    ASSERT_EQ(captures_awaited_, c.messages) << "the last message's end waits for the recorder";
  }
  ASSERT_FALSE(fsm_->finished()) << "the session ended before the leave";

  // ---------------------------------------------------------------- the leave
  const std::size_t up_at_leave = up_.size();
  const std::size_t cl_at_leave = cl_.size();
  std::vector<bool> end_before(c.messages);
  for (int m = 0; m < c.messages; ++m) end_before[m] = dest_.end_seen(m);
  bool closing_said = false;
  bool closing_221_to_data = false;   // the upstream's 221 answered a message's end or a chunk
  const bool stall_began = !obs_->faults_with("stall").empty();   // a stall planned for a message's end may not have acted yet
  switch (c.w) {
    case who::client_reset: fsm_->on_client_gone(tick(), "Connection reset by peer"); break;
    case who::client_half_close: fsm_->on_client_eof(tick()); break;
    case who::client_gave_up:
      now_ += client_gave_up_after_us;
      fsm_->on_client_eof(tick());
      break;
    case who::upstream_eof: fsm_->on_upstream_eof(tick()); break;
    case who::upstream_timeout:
      EXPECT_NE(timer_due_[leg::upstream], 0u) << "no upstream reply timer ran at the leave";
      now_ = std::max(now_, timer_due_[leg::upstream]);
      fsm_->on_timeout(tick(), leg::upstream);
      break;
    case who::upstream_421:
    case who::upstream_221: {
      const bool to_a_command = !dest_.replies.empty();
      EXPECT_TRUE(to_a_command || c.w == who::upstream_421);
      // A 221 to a message's end or a chunk is no reply those can have (RFC 5321 4.3.2, RFC 3030
      // 2): never passed on as the server closing, nor taken as an acceptance; what went is unknown.
      closing_221_to_data = c.w == who::upstream_221 && dest_.replies.front().to_data;
      dest_.replies.clear();
      closing_said = !closing_221_to_data;
      fsm_->on_upstream_bytes(tick(), c.w == who::upstream_421 ? "421 4.3.2 Service shutting down\r\n"
                                                               : "221 2.7.0 Error: I can break rules, too. Goodbye.\r\n");
      take();
      if (!closed_[leg::upstream] && !fsm_->finished()) fsm_->on_upstream_eof(tick());   // and it closes
      break;
    }
  }
  take();
  const std::uint64_t left_at = now_;
  const bool upstream_left = !client_leaves(c.w);
  const bool client_reset = c.w == who::client_reset;
  const bool client_can_send = !client_leaves(c.w);

  // ---------------------------------------------------------------- after it: the world goes on
  for (int i = 0; i < guard_steps && !fsm_->finished(); ++i) {
    bool progress = false;
    if (captures_settled_ < captures_awaited_) {
      settle_captures(captures_awaited_);
      progress = true;
    }
    if (!upstream_left && pump([](const destination::pending&) { return false; })) progress = true;
    if (client_can_send && c.f == framing::data) {
      const std::vector<int> now_codes = client_codes();
      const int got354 = static_cast<int>(std::count(now_codes.begin(), now_codes.end(), 354));
      if (got354 > bodies_sent_ && bodies_sent_ < c.messages && !closed_[leg::client]) {
        send(body_of(bodies_sent_++), {250});
        progress = true;
      }
    }
    if (progress || fsm_->finished()) continue;
    // Nothing else moves: the first timer due fires.
    std::uint64_t due = 0;
    int which = -1;
    auto consider = [&](std::uint64_t t, int w) {
      if (t != 0 && (due == 0 || t < due)) {
        due = t;
        which = w;
      }
    };
    consider(fault_due_, 0);
    if (!closed_[leg::client]) consider(timer_due_[leg::client], 1);
    if (!closed_[leg::upstream] && !upstream_left) consider(timer_due_[leg::upstream], 2);
    if (which < 0) break;
    now_ = std::max(now_, due);
    if (which == 0) {
      fault_due_ = 0;
      fsm_->on_fault_timer(now_);
    } else {
      timer_due_[which == 1 ? leg::client : leg::upstream] = 0;
      fsm_->on_timeout(now_, which == 1 ? leg::client : leg::upstream);
    }
    take();
  }

  // ---------------------------------------------------------------- invariants
  const std::string trace = "\nclient got: " + testing::PrintToString(cl_) + "\nupstream got: " +
                            testing::PrintToString(up_) + "\nnotes: " + testing::PrintToString(obs_->notes);
  ASSERT_TRUE(fsm_->finished()) << "the session never finished" << trace;
  EXPECT_LE(now_ - left_at, bound_us) << "finished only after an hour of fake time";
  EXPECT_EQ(obs_->ends.size(), 1u);
  const std::string reason = obs_->ends.empty() ? "(no end)" : obs_->ends.front().reason;
  const bool stalled = !obs_->faults_with("stall").empty();   // a stall acted, before the leave or after

  // Nothing goes upstream after a client reset; no held end after a client that gave up.
  if (client_reset) {
    EXPECT_EQ(up_.size(), up_at_leave) << "bytes went upstream after the client reset" << trace;
  }
  if (client_reset || (c.w == who::client_gave_up && c.h != held::capture)) {
    for (int m = 0; m < c.messages; ++m) {
      EXPECT_TRUE(end_before[m] || !dest_.end_seen(m)) << "message " << m << "'s end went upstream after the client left" << trace;
    }
  }

  // One transaction record per MAIL the relay took, each with its outcome.
  const auto mails = std::count_if(obs_->commands.begin(), obs_->commands.end(),
                                   [](const std::string& s) { return s.starts_with("MAIL"); });
  EXPECT_EQ(static_cast<long>(obs_->transactions.size()), mails) << "one transaction record per MAIL" << trace;
  for (int m = 0; m < c.messages; ++m) {
    const std::string from = "sender" + std::to_string(m) + "@example.org";
    std::vector<const transaction_record*> recs;
    for (const auto& t : obs_->transactions)
      if (t.mail_from == from) recs.push_back(&t);
    const bool mail_taken = std::any_of(obs_->commands.begin(), obs_->commands.end(),
                                        [&](const std::string& s) { return s.find(from) != std::string::npos; });
    if (!mail_taken) continue;
    ASSERT_EQ(recs.size(), 1u) << "message " << m << trace;
    const outcome got = recs.front()->result;
    const std::string which = "message " + std::to_string(m) + ": outcome " + std::string(to_string(got));
    if (end_acked_[m]) {
      EXPECT_EQ(got, outcome::delivered) << which << trace;
    } else if (closing_said) {
      EXPECT_EQ(got, outcome::tempfailed) << which << trace;
    } else if (dest_.end_seen(m)) {
      EXPECT_EQ(got, outcome::unknown) << which << trace;
    } else if (client_leaves(c.w)) {
      EXPECT_EQ(got, outcome::aborted) << which << trace;
    } else {
      EXPECT_TRUE(got == outcome::aborted || got == outcome::tempfailed) << which << trace;
    }
  }

  // What the client was sent.
  const std::vector<int> codes = client_codes();
  if (client_reset) {
    EXPECT_EQ(cl_.size(), cl_at_leave) << "bytes went to a client that was gone" << trace;
  } else {
    std::size_t closing_at = codes.size();
    for (std::size_t i = 0; i < codes.size(); ++i) {
      if (i >= expected_codes_.size()) {
        EXPECT_EQ(codes[i], 421) << "reply " << i << " answers nothing the client sent" << trace;
      } else {
        EXPECT_TRUE(codes[i] == expected_codes_[i] || codes[i] / 100 == 4 || codes[i] == 221)
            << "reply " << i << " is " << codes[i] << " where " << expected_codes_[i] << " was owed" << trace;
      }
      if (closing_at == codes.size() && (codes[i] == 421 || codes[i] == 221)) closing_at = i;
    }
    // A client that takes any 2xx would read a 221 to its end of data as the message accepted.
    if (closing_221_to_data) {
      EXPECT_EQ(std::count(codes.begin(), codes.end(), 221), 0) << "the 221 to a message's end was passed on" << trace;
    }
    if (closing_at < codes.size()) {
      EXPECT_LE(codes.size() - closing_at, 2u) << "replies after a 421/221 the client already had" << trace;
      if (codes.size() - closing_at == 2) {
        EXPECT_EQ(codes.back(), 421) << trace;
      }
    }
    // A stall answers nothing: an upstream lost meanwhile is not answered either, nor its 421
    // passed on.
    if (stall_began && (c.w == who::upstream_eof || c.w == who::upstream_timeout || c.w == who::upstream_421)) {
      EXPECT_EQ(cl_.size(), cl_at_leave) << "a stall answers nothing, yet the client was sent bytes" << trace;
    }
    if (c.w == who::client_half_close && !stalled) {
      EXPECT_EQ(codes, expected_codes_) << "a client that half-closed gets every reply it is owed" << trace;
    }
    if (upstream_left && !stalled) {
      EXPECT_TRUE(codes.size() >= expected_codes_.size() || closing_at < codes.size())
          << "a client still reading was left without its replies or a 421" << trace;
    }
  }

  // The end reason (FORMAT.md "End reasons").
  // A stall that began before the leave answers nothing and ends at its maximum, unless the
  // client leaves (it gave up): the upstream's close, 421 or not, is not passed on (the 421
  // still leaves what is open tempfailed); one that began after a half-close (the end it was
  // planned for waited for replies) runs out too.
  std::string want;
  switch (c.w) {
    case who::client_reset:
    case who::client_gave_up: want = "client_closed"; break;
    case who::client_half_close: want = !stall_began && stalled ? "fault_stall" : "client_closed"; break;
    case who::upstream_eof:
    case who::upstream_421: want = stall_began ? "fault_stall" : "upstream_closed"; break;
    case who::upstream_221: want = closing_221_to_data ? "upstream_protocol_error" : "upstream_closed"; break;
    case who::upstream_timeout: want = stall_began ? "fault_stall" : "upstream_timeout"; break;
  }
  EXPECT_EQ(reason, want) << trace;
}

void PrintTo(const leaving_case& c, std::ostream* os) { *os << case_name(c); }

TEST_P(LeavingFsm, KeepsTheInvariants) { run(); }

INSTANTIATE_TEST_SUITE_P(Matrix, LeavingFsm, testing::ValuesIn(all_cases()),
                         [](const testing::TestParamInfo<leaving_case>& i) { return case_name(i.param); });

}  // namespace
}  // namespace mailtap::protocol
