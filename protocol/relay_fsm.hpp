// The relay session machine: both legs of one SMTP conversation, sans-I/O, and the one
// entry point the shell feeds. Fed client and upstream bytes, connection results and timer
// expiries (each with the caller's monotonic time); returns actions and reports to a
// session_observer. Composes its parts (ARCHITECTURE.md, "The relay machine"): relay_outbox
// (what it says), client_input (the client's bytes and the parse position), reply_queue
// (reply pairing, RFC 2920), transaction_book (transactions and outcomes, README
// "Outcomes"), starttls_sequencer (STARTTLS on both legs). Itself it frames client input
// (command lines, DATA, BDAT, AUTH responses), holds the end of a message until the capture
// and the faults allow it, and keeps the timers. Faults come from an optional fault_advisor
// (policies/) asked at each decision point; relay_fsm_faults.cpp carries its decisions out.
// Single-threaded: one instance per session, driven from that session's strand.
#pragma once
#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "protocol/action.hpp"
#include "protocol/capabilities.hpp"
#include "protocol/client_input.hpp"
#include "protocol/command.hpp"
#include "protocol/data_framer.hpp"
#include "protocol/fault.hpp"
#include "protocol/header_scanner.hpp"
#include "protocol/observer.hpp"
#include "protocol/reply.hpp"
#include "protocol/relay_outbox.hpp"
#include "protocol/relay_options.hpp"
#include "protocol/reply_queue.hpp"
#include "protocol/starttls_sequencer.hpp"
#include "protocol/transaction_book.hpp"
#include "protocol/xclient_exchange.hpp"

namespace mailtap::protocol {

class relay_fsm : private starttls_host, private xclient_host {
 public:
  // `faults` may be null (no fault injection); it must outlive the machine.
  relay_fsm(relay_options options, session_observer* observer, fault_advisor* faults = nullptr);

  // The client is connected and the shell starts connecting upstream.
  void on_start(std::uint64_t now_us);
  void on_upstream_connected(std::uint64_t now_us);
  void on_upstream_unreachable(std::uint64_t now_us, std::string_view reason);
  void on_client_bytes(std::uint64_t now_us, std::string_view bytes);
  void on_upstream_bytes(std::uint64_t now_us, std::string_view bytes);
  // The client shut down its sending side (FIN): its input has ended, not the session.
  // Every reply still owed goes out; the session ends after the last one (RFC 5321 3.8 lets
  // a client close after QUIT; Exim half-closes after pipelining BDAT LAST and QUIT).
  void on_client_eof(std::uint64_t now_us);
  // The client is gone (reset, or a write failed): nothing more can reach it. A message whose
  // end already went upstream keeps the upstream leg until its reply (the proof of hand-off).
  void on_client_gone(std::uint64_t now_us, std::string_view reason);
  void on_upstream_eof(std::uint64_t now_us);
  void on_timeout(std::uint64_t now_us, leg which);
  // Shutdown: idle sessions get 421 now; busy ones after their transaction.
  void on_drain(std::uint64_t now_us);
  // The relay gives up on the session (unexpected error).
  void on_abort(std::uint64_t now_us, std::string_view reason);
  // Shutdown's deadline passed with the session still busy: 421 4.3.2 to the client, the
  // message in transfer (if any) recorded with the bytes received, end reason `drain`.
  void on_drain_deadline(std::uint64_t now_us);
  // A handshake asked for with start_tls (or done by the shell at connect: implicit TLS)
  // finished. Implicit TLS is reported before on_start (client) or after on_upstream_connected.
  void on_tls_ready(std::uint64_t now_us, leg which, const tls_summary& tls);
  void on_tls_failed(std::uint64_t now_us, leg which, std::string_view reason);
  // The new plaintext upstream connection asked for with reconnect_upstream is open (if it
  // cannot be opened, the shell calls on_upstream_unreachable). Its greeting is taken by the
  // relay, the client's EHLO (or HELO) replayed on it, then held client commands go on.
  void on_upstream_reconnected(std::uint64_t now_us);
  // The time asked for with arm_fault_timer has come (a held reply, command or banner is due).
  void on_fault_timer(std::uint64_t now_us);
  // The capture can no longer be written: no further end-of-data is released upstream.
  void on_capture_failed() { capture_failed_ = true; }

  // While held, client input already received is not parsed (the shell's backpressure when
  // its recorder falls behind); releasing it parses what waited.
  void hold_client_input(std::uint64_t now_us, bool held);

  // The actions asked for since the last call. on_start asks for connect_upstream unless a
  // connect-phase fault answers the client without an upstream (the shell still reads the client).
  std::vector<action> take_actions();
  bool finished() const { return ended_; }
  const relay_stats& stats() const { return stats_; }

 private:
  enum class client_mode { command, awaiting_data_go, data, bdat_payload, awaiting_auth, auth_response, starttls };
  // Where a STARTTLS (the client's, or the relay's own securing of the upstream) stands.
  enum class tls_step { idle, upstream_starttls_sent, upstream_handshake, client_handshake };

  // Input processing.
  void process_client_input(std::uint64_t now);
  bool take_command_line(std::uint64_t now);
  void take_data(std::uint64_t now);
  void take_bdat_payload(std::uint64_t now);
  // A BDAT chunk's payload follows its command: its bdat_size bytes are the chunk's, never
  // commands. Forwarded, or (`forward` false: a fault answers the chunk) read and dropped.
  void expect_bdat_payload(const command& cmd, bool forward);
  void take_empty_bdat_chunk(std::uint64_t now);
  bool take_auth_response(std::uint64_t now);
  // `announce`: record the command event (false when the caller recorded the client's own line).
  void handle_command(std::uint64_t now, std::string_view line, const parsed_command& parsed, bool announce = true);
  void note_auth_username(std::uint64_t now, std::string_view base64_response);
  void end_of_data(std::uint64_t now);
  transaction* close_message(std::uint64_t now);
  void take_message_id(transaction& t);
  void forward_end_of_data(std::uint64_t now, std::uint64_t txn);
  // The last BDAT chunk is in: like the dot, its last byte waits for the capture and the faults.
  void end_of_bdat_message(std::uint64_t now, transaction* t);
  void release_withheld_bdat(std::uint64_t now, std::uint64_t txn);
  // The message's end will not be sent: its BDAT LAST reply is no longer awaited (the
  // caller queues the relay's own answer in its place).
  void upstream_replied_in_data(std::uint64_t now, reply r);
  void announce_command(std::uint64_t now, std::string_view body, const command& cmd);

  // Replies.
  void take_upstream_reply(std::uint64_t now, reply r);
  void take_banner(std::uint64_t now, reply r);
  void local_reply(std::uint64_t now, phase ph, int code, std::string_view enhanced,
                   std::string_view text) override;
  void flush_replies(std::uint64_t now) override;
  void after_reply(std::uint64_t now, const reply_slot& p);
  std::string edit_ehlo_reply(std::uint64_t now, const reply& r, const rewrite_set* rewrites);
  void release_banner(std::uint64_t now, const reply& r, std::string bytes);

  // starttls_host: what the STARTTLS sequencer asks of the machine.
  bool ended() const override { return ended_; }
  void count_refused_command() override { ++stats_.refused_commands; }
  void client_awaits_handshake() override { mode_ = client_mode::starttls; }
  void client_back_to_commands() override { mode_ = client_mode::command; }
  std::size_t unread_client_bytes() const override { return in_.unparsed_size(); }
  bool in_transaction() const override { return !txns_.empty(); }
  void resume_client_input(std::uint64_t now) override { process_client_input(now); }
  void remember_upstream_loss(std::string_view reason, std::string_view detail) override;
  void forget_upstream_input() override { replies_ = reply_parser{}; }
  // No client command goes upstream while the upstream leg is prepared (TLS, a new
  // connection) or the XCLIENT exchange runs.
  bool upstream_prepared() const { return tls_.upstream_prepared() && !xclient_.in_flight(); }


  // Faults (relay_fsm_faults.cpp).
  enum class line_fault { none, held, handled };
  fault_decision ask(const fault_query& q);
  fault_query query_for(phase ph, fault_stage stage, const transaction* t) const;
  bool greeting_fault(std::uint64_t now, const fault_decision& d);
  void release_held(std::uint64_t now);
  void fault_event_for(std::uint64_t now, const fault_decision& d, phase ph, std::string detail,
                       std::uint64_t actual_delay_us = 0);
  void start_faults(std::uint64_t now);
  bool banner_fault(std::uint64_t now, reply& r, std::string& bytes);
  parsed_command take_held_line(std::uint64_t now, std::optional<fault_decision>& decided);
  line_fault command_fault(std::uint64_t now, std::string_view line, const parsed_command& parsed,
                           std::optional<fault_decision>& rewrites);
  void apply_command_fault(std::uint64_t now, std::string_view body, const command& cmd, const fault_decision& d);
  void forward_masked_command(std::uint64_t now, std::string_view line, const command& cmd, const rewrite_set& rw);
  // `ph` is the reply's phase (for the stage and the transaction); `shown` the fault's, for the capture.
  reply_slot& queue_fault_reply(std::uint64_t now, phase ph, phase shown, std::uint64_t txn, const fault_decision& d,
                             then_do then);
  void fault_marker(std::uint64_t now, phase ph, const fault_decision& d, then_do then);
  void fault_then(std::uint64_t now, const reply_slot& p);
  bool plan_end_of_data(std::uint64_t now, transaction& t, bool chunked);
  bool end_of_data_fault(std::uint64_t now, transaction* t);
  bool message_fault(std::uint64_t now, transaction* t);
  void finish_absorbed_bdat(std::uint64_t now);
  void open_absorbed_message(std::uint64_t now, reply_slot& p);
  void reply_stage_fault(std::uint64_t now, reply_slot& p, const reply& r);
  void begin_stall(std::uint64_t now, const fault_decision& d, phase ph);
  void answer_refused_session(std::uint64_t now, std::string_view body, const command& cmd);
  void withhold_split_dot(std::uint64_t now);
  void record_withheld_dot_stage(std::uint64_t now);
  void schedule_fault_wake(std::uint64_t now, std::uint64_t at_us);
  bool fault_hold_active(std::uint64_t now) const;
  void rewrite_events(std::uint64_t now, const rewrite_set& rw, phase ph, const std::string& detail);
  bool record_recipient(std::uint64_t now, transaction& t, std::string address);
  void apply_capability_rewrites(std::uint64_t now, capabilities& caps, const rewrite_set& rw, std::string& changes);

  // Transactions.
  std::uint64_t begin_transaction(std::uint64_t now, const command& cmd);
  void finish_transaction(std::uint64_t now, std::uint64_t id, outcome o, const std::optional<reply>& final_reply,
                          bool synthesized);
  // The session is ending: every transaction still in flight is aborted, or unknown when its
  // message already went upstream.
  void abandon_transactions(std::uint64_t now);

  // The client's side.
  bool in_message() const { return mode_ == client_mode::data || mode_ == client_mode::bdat_payload; }
  bool partial_line() const;
  void begin_message_input(std::uint64_t now);
  void credit_data_rate(std::uint64_t now, std::size_t n);
  void arm_client_deadline(std::uint64_t now);
  void client_timed_out(std::uint64_t now);
  // After the client's FIN (or loss): end the session once nothing more is owed.
  void end_if_client_done(std::uint64_t now) override;
  void record_received_size();

  // Leaving.
  void upstream_unreachable(std::uint64_t now, std::string_view reason);
  void upstream_lost(std::uint64_t now, std::string_view reason, std::string_view detail);
  void end_session(std::uint64_t now, std::string_view reason, std::string_view detail) override;
  // Reply, record, end: the one way a session ends with a word to the client.
  void end_with_reply(std::uint64_t now, const reply& r, std::string_view reason, std::string_view detail) override;
  void maybe_finish_drain(std::uint64_t now);

  // Output helpers.
  void arm_upstream_for_head() override;
  void record_consumed_client_input(std::uint64_t now);
  void report_client_pause();
  void request_capture_barrier();

  relay_options options_;
  session_observer* observer_;
  fault_advisor* faults_;
  relay_outbox out_;
  relay_stats stats_;

  // Client leg.
  client_input in_;
  client_mode mode_ = client_mode::command;
  std::optional<data_framer> framer_;
  std::uint64_t bdat_remaining_ = 0;
  bool bdat_last_ = false;
  std::uint64_t data_started_us_ = 0;        // 354 sent (body stage start)
  bool auth_open_ = false;
  std::string auth_mechanism_;         // upper-cased, for notes
  bool auth_username_pending_ = false; // the next client response carries the username
  bool input_held_ = false;
  bool client_paused_ = false;                   // pause_reading{client} was the last said
  bool client_input_ended_ = false;              // FIN seen (out_.closed(client): nothing can reach it either)
  // The command line in progress: where it starts in the client's stream and when its first
  // byte came (the per-line deadline).
  std::uint64_t partial_line_at_ = UINT64_MAX;
  std::uint64_t partial_line_since_us_ = 0;
  // DATA/BDAT: time left before the client is too slow (min_data_rate), as of the last read.
  std::uint64_t data_budget_us_ = 0;
  std::uint64_t data_last_read_us_ = 0;

  // Upstream leg.
  reply_parser replies_;
  bool greeted_ = false;
  std::uint64_t started_us_ = 0;
  std::uint64_t connected_us_ = 0;

  reply_queue owed_;   // replies the client is owed, in order (RFC 2920)
  std::uint64_t last_reply_sent_us_ = 0;
  int last_client_code_ = 0;          // the code of the last reply sent to the client
  transaction_book txns_;

  // Faults.
  bool upstream_wanted_ = true;
  bool refusing_ = false;            // a 5xx greeting was given: 503 to all but QUIT (RFC 5321 3.1)
  bool stalled_ = false;             // neither answering nor parsing until the peer gives up
  bool input_stopped_ = false;       // a fault ends the session once the replies before it are out
  std::uint64_t stall_until_us_ = 0;
  std::string ehlo_name_;
  // delay(when=command): the line at the parse position waits, with its command and the decision.
  struct held_command {
    fault_decision decision;
    parsed_command parsed;
    std::uint64_t since_us = 0;
  };
  std::optional<held_command> held_line_;
  std::optional<reply> held_banner_;
  std::string held_banner_bytes_;
  std::optional<fault_decision> banner_delay_;
  std::uint64_t banner_arrived_us_ = 0;
  std::uint64_t connect_delay_us_ = 0;
  std::optional<fault_decision> connect_delay_;
  std::optional<fault_decision> held_dot_;    // delay(when=command) at data_end
  std::string withheld_bdat_;                // the last BDAT chunk's last byte (or "BDAT 0 LAST" itself)
  bool bdat_end_withheld_ = false;           // held_dot_ holds a BDAT message, not a dot
  std::uint64_t held_dot_since_us_ = 0;
  std::uint64_t held_dot_txn_ = 0;
  std::uint64_t withheld_dot_txn_ = 0;       // split_dot_withhold: the message whose dot never went
  std::uint64_t withheld_dot_since_us_ = 0;
  std::optional<fault_decision> end_plan_;   // decided when DATA/BDAT arrived, for that message
  std::uint64_t end_plan_txn_ = 0;
  bool absorbing_ = false;           // this message is answered by a fault: nothing goes upstream
  bool discard_payload_ = false;     // this BDAT chunk is not forwarded
  std::uint64_t fault_wake_us_ = 0;  // the fault timer's due time (0: not armed)
  session_plan plan_;

  bool draining_ = false;
  bool capture_failed_ = false;
  // The body cannot be delivered (bad line endings, upstream lost): keep reading it and
  // answer at its end with this reply.
  std::optional<reply> data_failure_;
  bool data_failure_from_upstream_ = false;   // the upstream's own reply, given before the dot
  // Why the upstream went away, for the on_end that follows once reply_slot replies are flushed.
  std::string upstream_lost_reason_ = "upstream_closed";
  std::string upstream_lost_detail_;
  bool ended_ = false;
  starttls_sequencer tls_{options_, out_, owed_, observer_, *this};
  xclient_exchange xclient_{options_, out_, owed_, observer_, *this};
};

}  // namespace mailtap::protocol
