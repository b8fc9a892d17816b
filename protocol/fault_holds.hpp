// The fault holds of the relay machine: the one layer between relay_fsm and the optional
// fault_advisor (policies/). It asks the advisor at fixed points and carries out its one
// decision each:
//   connect (start): the session plan (shaping, split dot), then refuse, stall, delay;
//   banner: delay, mask or replace it, or answer and close instead of it;
//   each well-formed command, before it is forwarded: delay, reply, close, reset, stall, mask;
//   DATA / first BDAT: the end-of-data plan, so that a fault answering the message takes it
//     before any byte goes upstream (the upstream gets RSET and stays consistent);
//   the end of a message (the dot, or BDAT's last byte): a delay, a close, reset or stall, or
//     a message-stage failure, before it goes upstream;
//   each upstream reply, before it is relayed: delay, EHLO capability rewrites.
// Terminal faults (close, reset, stall) wait until the replies before them are out, so the
// client sees exactly the conversation a real server would have had. Owns every hold a fault
// puts on the conversation (a held greeting, command line or end of message, a stall, a
// refused session, a message the fault answers) and the fault timer; the machine consults it
// through the queries below and does the rest through fault_host. Without an advisor it holds
// nothing and every question is answered "no fault".
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <utility>
#include <string>
#include <string_view>

#include "protocol/capabilities.hpp"
#include "protocol/command.hpp"
#include "protocol/fault.hpp"
#include "protocol/heap_optional.hpp"
#include "protocol/observer.hpp"
#include "protocol/relay_options.hpp"
#include "protocol/relay_outbox.hpp"
#include "protocol/reply_queue.hpp"
#include "protocol/transaction_book.hpp"

namespace mailtap::protocol {

// What the fault holds need of the machine around them.
class fault_host {
 public:
  virtual bool ended() const = 0;
  virtual void end_session(std::uint64_t now, std::string_view reason, std::string_view detail) = 0;
  // `reason` goes in the client's reply; `detail` (when not empty) in place of it in the
  // capture's note and end detail.
  virtual void upstream_unreachable(std::uint64_t now, std::string_view reason, std::string_view detail) = 0;
  virtual void local_reply(std::uint64_t now, phase ph, int code, std::string_view enhanced, std::string_view text) = 0;
  virtual void flush_replies(std::uint64_t now) = 0;
  virtual void resume_client_input(std::uint64_t now) = 0;
  virtual void arm_upstream_for_head() = 0;
  // The greeting: whether the upstream's came; a fault's took its place; it went to the client.
  virtual bool greeted() const = 0;
  virtual void greeting_answered_by_fault() = 0;
  // `arrived_us`: when the upstream's greeting came (the stage's upstream part ends there).
  virtual void release_banner(std::uint64_t now, std::uint64_t arrived_us, const reply& r, std::string bytes) = 0;
  virtual void reply_sent(std::uint64_t now) = 0;
  virtual bool client_tls() const = 0;
  // Commands, as the machine records and forwards them.
  virtual void announce_command(std::uint64_t now, std::string_view body, const command& cmd) = 0;
  virtual void handle_command(std::uint64_t now, std::string_view line, const parsed_command& parsed, bool announce) = 0;
  virtual std::uint64_t begin_transaction(std::uint64_t now, const command& cmd) = 0;
  virtual bool record_recipient(std::uint64_t now, transaction& t, std::string address) = 0;
  // The client's side: a BDAT payload read (and dropped), a message's data, back to commands.
  virtual void expect_bdat_payload(const command& cmd, bool forward) = 0;
  virtual void take_empty_bdat_chunk(std::uint64_t now) = 0;
  virtual void client_awaits_data_go() = 0;
  virtual void begin_data(std::uint64_t now) = 0;
  virtual void client_back_to_commands() = 0;
  // What the client sent and nobody will read is recorded, then dropped (a stall).
  virtual void record_and_drop_client_input(std::uint64_t now) = 0;
  // The end of a message: recorded (DATA), sent upstream, or its withheld BDAT byte dropped.
  virtual transaction* close_message(std::uint64_t now) = 0;
  // `arrived`: when the client's end of data came (earlier than `now` when a delay held it).
  virtual void forward_end_of_data(std::uint64_t now, std::uint64_t txn, std::uint64_t arrived) = 0;
  virtual void release_withheld_bdat(std::uint64_t now, std::uint64_t txn) = 0;
  virtual void drop_withheld_bdat() = 0;
  // Closes the upstream leg with a message's end withheld, at once or, while commands
  // pipelined before that end (MAIL, RCPT, earlier chunks) still await their replies, once
  // they are in: they are owed to the client first.
  virtual void close_upstream_once_answered(std::uint64_t now) = 0;

 protected:
  virtual ~fault_host() = default;
};

class fault_holds {
 public:
  // `advisor` may be null (no fault injection).
  fault_holds(fault_advisor* advisor, const relay_options& options, relay_outbox& out, reply_queue& owed,
              transaction_book& txns, relay_stats& stats, session_observer* observer, fault_host& host);

  bool enabled() const { return advisor_ != nullptr; }

  // ---- what the machine asks before it goes on
  // The conversation is held: nothing the client sent may be parsed.
  bool holds_conversation() const { return held_banner_ || stalled_ || input_stopped_ || held_dot_; }
  // Parsing stops here: a held end of message, a terminal fault, a stall.
  bool stops_parsing() const { return held_dot_ || input_stopped_ || stalled_; }
  // Client input waits for a fault's timer (a held line, end of message or greeting).
  bool input_waits() const { return held_line_ || held_dot_ || held_banner_; }
  // A delay fault holds a message's end (the dot, or BDAT's last byte) before forwarding it.
  bool holds_end_of_data() const { return held_dot_.has_value(); }
  bool holds_dot() const { return held_dot_.has_value() && !bdat_end_withheld_; }   // DATA's, not BDAT's
  // BDAT ... LAST's last byte of transaction `txn`'s message, which a delay holds.
  bool holds_bdat_end_of(std::uint64_t txn) const {
    return held_dot_.has_value() && bdat_end_withheld_ && held_dot_txn_ == txn;
  }
  // The rule of the delay holding a message's end ("" when none does).
  std::string held_end_rule() const { return held_dot_ ? held_dot_->rule : std::string(); }
  // The client is gone: the held end is never forwarded (recorded as the fault's event).
  void drop_held_end_of_data(std::uint64_t now);
  // The upstream failed the message (it replied, said 421, or was lost: `why`, "the upstream
  // said 421") while a delay holds DATA's dot: the dot can never go, so the hold ends now,
  // recorded as the fault's event for the time it held ("... before it was forwarded"). The
  // dot's transaction and when the dot came (its stage starts there: the hold is the relay's
  // time), or none when no dot is held. A held BDAT end is dropped and recorded the same way,
  // and none returned: the machine answers its BDAT ... LAST as a chunk the upstream failed.
  struct dropped_dot {
    std::uint64_t txn = 0;
    std::uint64_t arrived_us = 0;
  };
  std::optional<dropped_dot> drop_held_dot(std::uint64_t now, std::string_view why);
  // The session ends: a delay still holding something (the greeting, the end of data, a reply)
  // acted, for as long as it held: it is recorded so, and counts. (A held command is recorded
  // by take_held_line, which relay_fsm calls first.)
  void session_ending(std::uint64_t now);
  // Something a fault holds is still due (the client is not the slow one).
  bool hold_active(std::uint64_t now) const;
  // A stall reads nothing, answers nothing, and ends only when the client gives up.
  bool stalled() const { return stalled_; }
  // The stage a stall holds (its phase and since when), for the stage record the session's end
  // gives it: none when nothing is stalled, or for the withheld dot, whose transaction gives it.
  std::optional<std::pair<phase, std::uint64_t>> stalled_stage() const {
    if (!stalled_ || withheld_dot_txn_ != 0) return std::nullopt;
    return std::make_pair(stall_phase_, stall_since_us_);
  }
  // A 5xx greeting was given: 503 to all but QUIT (RFC 5321 3.1).
  bool refusing() const { return refusing_; }
  // This message is answered by a fault: nothing of it goes upstream.
  bool absorbing() const { return absorbing_; }
  // A connect fault answers the client without an upstream.
  bool upstream_wanted() const { return upstream_wanted_; }
  // The rule of an upstream_unreachable fault with mode no_greeting (the greeting timeout
  // decides), or "" when none was injected.
  const std::string& no_greeting_rule() const { return no_greeting_rule_; }
  const session_plan& plan() const { return plan_; }

  // ---- connect and banner
  void start(std::uint64_t now);
  // The upstream's banner: true when a fault answered, held or ended it; `bytes` is what the
  // client is sent otherwise.
  bool banner(std::uint64_t now, reply& r, std::string& bytes);

  // ---- commands
  // The held line's delay still runs: its timer is set, nothing is parsed.
  bool line_waits(std::uint64_t now);
  bool line_held() const { return held_line_.has_value(); }
  bool line_held_is(phase ph) const { return held_line_ && held_line_->parsed.cmd.ph == ph; }
  // When the held line came (its stage starts there: the hold is the relay's time), which may
  // be before the hold began (it waited for the upstream leg to be secured).
  std::uint64_t held_line_since() const { return held_line_ ? held_line_->arrived_us : 0; }
  // The held line's delay is over: it goes on as it was parsed and decided then.
  parsed_command take_held_line(std::uint64_t now, std::optional<fault_decision>& decided);
  // A well-formed line before it is forwarded: true when a delay holds it (parsed once, kept
  // with its decision). Otherwise `decided` is set when a fault applies (a verdict, or rewrites).
  bool hold_line(std::uint64_t now, std::uint64_t arrived, std::string_view line, const parsed_command& parsed,
                 std::optional<fault_decision>& decided);
  // A line a fault decided about (take_command_line): true when the fault took it.
  bool take_decided_line(std::uint64_t now, std::string_view line, const parsed_command& parsed,
                         const std::optional<fault_decision>& decided);
  // After a refusing greeting: QUIT gets 221, every other command 503.
  void answer_refused_session(std::uint64_t now, std::string_view body, const command& cmd);

  // ---- the message
  // DATA or the first BDAT chunk: true when a fault answers the message itself.
  bool plan_end_of_data(std::uint64_t now, transaction& t, bool chunked);
  // The fault planned for a message has nothing left to apply to (DATA refused, the message
  // superseded or left): it is given back to the advisor, not applied.
  void drop_end_plan();
  // The upstream said 421 to the relay's RSET before the relay's own 354 (`go`) went out: the
  // client's DATA is answered with that 421 (RFC 5321 3.8), not a 354 and then a 421 while
  // it sends its message. The planned fault does not apply.
  void answer_absorbed_go_with_421(std::uint64_t now, reply_slot& go, const reply& r);
  // The first BDAT chunk of a message the fault answers.
  void absorb_message() { absorbing_ = true; }
  void stop_absorbing() { absorbing_ = false; }
  // The client left the message a fault was to answer (RSET, EHLO or HELO, or MAIL opening
  // another transaction, whoever answers it; after a 503 to one of its chunks it must): the
  // plan is given back and what the client sends next is its own, never absorbed.
  void end_absorbed_message() {
    absorbing_ = false;
    drop_end_plan();
  }
  // A fault is planned for the end of transaction `txn`'s message.
  bool plans_end_of(std::uint64_t txn) const { return end_plan_.has_value() && end_plan_txn_ == txn; }
  // The fault planned for transaction `txn`'s end will not act (`why`): given back, with a note.
  void give_back_end_plan(std::uint64_t now, std::uint64_t txn, std::string_view why);
  // The dot came: true when a fault holds, answers or closes instead.
  // `arrived_us`: when the dot came; a hold counts from `now` (after the recorder's wait, if
  // any), the dot's stage from its arrival.
  bool end_of_data(std::uint64_t now, transaction* t, std::uint64_t arrived_us);
  // The message stage (fail_then_pass by Message-ID): true when the message fails before its end goes upstream.
  // Not asked for a transaction whose every recipient was refused.
  bool message(std::uint64_t now, transaction* t);
  // The last BDAT chunk's last byte (or an empty last chunk's command), which the machine
  // withholds: true when a fault keeps it from the upstream, a delay for a while, a
  // disconnect, reset or stall for good (acting there, as at DATA's dot).
  // Asked once the replies before the last chunk are in (relay_fsm waits for them): a
  // transaction whose every recipient was refused is not delivered anyway, and the fault is
  // not applied, as DATA's 554 leaves it unapplied.
  bool hold_bdat_end(std::uint64_t now, const transaction& t);
  // A BDAT chunk of an answered message was read and dropped.
  void finish_absorbed_bdat(std::uint64_t now, bool last_chunk);
  // CSCds90792: the '.' and its CRLF came in separate reads. True when the plan's rule withholds
  // them; it is reserved now, and passes them when its max_count is spent.
  bool withhold_split_dot(std::uint64_t now);
  // A transaction was settled: a withheld dot's stall becomes its data_end stage.
  void transaction_settled(std::uint64_t now, std::uint64_t id);

  // ---- replies
  // An upstream reply before it is relayed: a delay, an EHLO rewrite (kept on the slot).
  void reply_stage(std::uint64_t now, reply_slot& p, const reply& r);
  // Reply-stage rules match on the address of the command the reply answers (and a RCPT's
  // on the recipients before it).
  void remember_address(reply_slot& p, const command& cmd) const;
  void apply_capability_rewrites(std::uint64_t now, capabilities& caps, const rewrite_set& rw, std::string& changes);
  // The head of the queue: true when a delay holds it past `now` (the timer is set).
  bool reply_delayed(std::uint64_t now, const reply_slot& head);
  // A reply goes to the client now: a delay it waited is recorded; a 354 of an answered
  // message opens its data (or becomes 554 without a recipient), a chunk's reply applies the
  // fault (or becomes 503 likewise).
  void reply_releasing(std::uint64_t now, reply_slot& p);
  // What follows a fault's reply or marker once it is out: close, reset, stall.
  void then(std::uint64_t now, const reply_slot& p);
  // The head of the queue carries a fault's reply or marker and the client is gone (reset,
  // lost): the fault never reaches it, so it is given back and true returned; the slot is
  // then dropped, neither its reply's effect on the transaction nor its close, reset or stall
  // taking place (the session ends as the client's leaving ends it).
  bool give_back_for_a_gone_client(std::uint64_t now, const reply_slot& p);

  // ---- the timer
  void timer(std::uint64_t now);
  // The machine's own wake-up on the same timer (a drain's grace): timer() then flushes replies,
  // and the machine looks again. The earliest of all requested wake-ups is kept.
  void wake_at(std::uint64_t now, std::uint64_t at_us) { schedule_wake(now, at_us); }

 private:
  struct held_command {   // delay(when=command): the line at the parse position, its command and decision
    fault_decision decision;
    parsed_command parsed;
    std::uint64_t since_us = 0;     // the hold began (its delay counts from here)
    std::uint64_t arrived_us = 0;   // the line came
  };

  fault_decision ask(const fault_query& q);
  // Counting follows what is applied (policies/README.md, "Precedence and determinism"): each
  // fault record is one applied rule, counted there (event); a decided rule dropped without a
  // record is given back to the advisor (its max_count) here. Rewrites and the verdict apart.
  void not_applied(const fault_decision& d);
  void rewrites_not_applied(const rewrite_set& rw);
  fault_query query_for(phase ph, fault_stage stage, const transaction* t) const;
  void event(std::uint64_t now, const fault_decision& d, phase ph, std::string detail, std::uint64_t actual_delay_us = 0);
  // Each rule contributing to a rewrite is recorded with what its own edits did: `own` says it
  // for the edits the rule asked for, or "" when they changed nothing, and then the rule is
  // given back (policies/README.md "Counted when applied"). A rewrite has no single rule.
  void credit_rewrites(std::uint64_t now, const rewrite_set& rw, phase ph,
                       const std::function<std::string(const rewrite_edits& asked)>& own);
  // What a capabilities rewrite did to an EHLO reply: the keywords removed, those masked, the
  // SIZE set; `of` says it for the edits one rule asked for ("stripped X, masked Y as XXXA").
  struct capability_edits_done {
    std::vector<std::string> stripped;
    std::vector<std::string> masked;
    std::optional<std::uint64_t> size;
    std::string of(const rewrite_edits& asked) const;
  };
  void schedule_wake(std::uint64_t now, std::uint64_t at_us);
  void release_held(std::uint64_t now);
  // A held BDAT end goes, or is dropped, now: the destination's time for its BDAT ... LAST counts from here.
  void bdat_end_hold_over(std::uint64_t now);
  bool greeting(std::uint64_t now, const fault_decision& d);
  void apply_command_fault(std::uint64_t now, std::string_view body, const command& cmd, const fault_decision& d);
  void forward_masked_command(std::uint64_t now, std::string_view line, const command& cmd, const rewrite_set& rw);
  // `ph` is the reply's phase (for the stage and the transaction); `shown` the fault's, for the
  // capture. The fault is recorded, and counted, as the reply goes out (fault_reply_out).
  reply_slot& queue_reply(std::uint64_t now, phase ph, phase shown, std::uint64_t txn, const fault_decision& d,
                          then_do then);
  void fault_reply_out(std::uint64_t now, const reply_slot& p);
  static bool makes_a_reply(verdict v);
  void open_absorbed_message(std::uint64_t now, reply_slot& p);
  void release_absorbed_chunk(std::uint64_t now, reply_slot& p);
  void begin_stall(std::uint64_t now, const fault_decision& d, phase ph);
  // A disconnect, reset or stall planned for a message's end acts in place of that end.
  void end_message_with(std::uint64_t now, const fault_decision& d, std::uint64_t txn);
  static bool every_recipient_refused(const transaction& t);
  void count_blackhole(std::uint64_t now, const fault_decision& d);

  fault_advisor* advisor_;
  const relay_options& options_;
  relay_outbox& out_;
  reply_queue& owed_;
  transaction_book& txns_;
  relay_stats& stats_;
  session_observer* observer_;
  fault_host& host_;

  session_plan plan_;
  std::uint64_t started_us_ = 0;
  bool upstream_wanted_ = true;
  std::string no_greeting_rule_;
  bool refusing_ = false;
  bool stalled_ = false;             // neither answering nor parsing until the peer gives up
  bool input_stopped_ = false;       // a fault ends the session once the replies before it are out
  std::uint64_t stall_until_us_ = 0;
  phase stall_phase_ = phase::other;  // the stage the stall holds, and since when
  std::uint64_t stall_since_us_ = 0;
  std::string ehlo_name_;
  heap_optional<held_command> held_line_;   // heap_optional: most sessions hold nothing (W6)
  heap_optional<reply> held_banner_;
  std::string held_banner_bytes_;
  heap_optional<fault_decision> banner_delay_;
  std::uint64_t banner_arrived_us_ = 0;
  std::uint64_t connect_delay_us_ = 0;
  heap_optional<fault_decision> connect_delay_;
  heap_optional<fault_decision> held_dot_;    // delay(when=command) at data_end
  bool bdat_end_withheld_ = false;           // held_dot_ holds a BDAT message, not a dot
  std::uint64_t held_dot_since_us_ = 0;
  std::uint64_t held_dot_arrived_us_ = 0;     // the dot came (its stage starts there)
  std::uint64_t held_dot_txn_ = 0;
  std::uint64_t withheld_dot_txn_ = 0;       // split_dot_withhold: the message whose dot never went
  std::uint64_t withheld_dot_since_us_ = 0;
  heap_optional<fault_decision> end_plan_;   // decided when DATA/BDAT arrived, for that message
  std::uint64_t end_plan_txn_ = 0;
  bool absorbing_ = false;
  std::uint64_t wake_us_ = 0;                // the fault timer's due time (0: not armed)
};

}  // namespace mailtap::protocol
