// The relay session machine: both legs of one SMTP conversation, sans-I/O, and the one
// entry point the shell feeds. Fed client and upstream bytes, connection results and timer
// expiries (each with the caller's monotonic time); returns actions and reports to a
// session_observer. Composes its parts (ARCHITECTURE.md, "The relay machine"): relay_outbox
// (what it says), client_input (the client's bytes and the parse position), reply_queue
// (reply pairing, RFC 2920), transaction_book (transactions and outcomes, README
// "Outcomes"), starttls_sequencer (STARTTLS on both legs, the plaintext fall-back),
// xclient_exchange (XCLIENT upstream) and fault_holds (the optional fault_advisor of
// policies/, asked at each decision point, and every hold a fault puts on the conversation).
// Itself it frames client input (command lines, DATA, BDAT, AUTH responses), holds the end of
// a message until the capture and the faults allow it, keeps the timers and ends the session
// in one place (end_session). Single-threaded: one instance per session, driven from that
// session's strand.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/action.hpp"
#include "protocol/capabilities.hpp"
#include "protocol/client_input.hpp"
#include "protocol/command.hpp"
#include "protocol/data_framer.hpp"
#include "protocol/fault.hpp"
#include "protocol/fault_holds.hpp"
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

// The note a session's capture gets when the client closes its connection (a FIN) while the
// reply to its end of data is still owed, without a QUIT: what a sender that gave up waiting
// does, and it then sends the message again (RFC 1047). diagnose reads it (a duplicate).
inline constexpr std::string_view note_closed_before_end_of_data_reply =
    "client closed its connection before the reply to its end of data, without QUIT";
// The same, for a client that had pipelined QUIT (RFC 2920) but closed long after its last
// bytes (client_gave_up_after_us): Postfix's smtp sends QUIT behind the dot when it has no more
// mail for the connection, and closes at its timeout. A client that half-closes to wait for its
// replies does so with its last bytes.
inline constexpr std::string_view note_closed_after_quit_before_end_of_data_reply =
    "client closed its connection before the reply to its end of data, long after its pipelined QUIT";
// A FIN this long after the client's last bytes, while the reply to its end of data is owed, is
// a client that gave up waiting, QUIT or not; one sooner, after a pipelined QUIT, is a client
// that half-closed and waits for its replies.
inline constexpr std::uint64_t client_gave_up_after_us = 1'000'000;
// The start of the note when the client's connection is lost (a reset, a failed write; the
// reason follows). Before the reply to its end of data, diagnose reads it as the FIN above.
inline constexpr std::string_view note_client_connection_lost = "client connection lost: ";
// The note when the session ends while a delay fault still holds the upstream's reply to a
// message's end (the relay's shutdown deadline, an abort): the transaction takes that reply's
// outcome, but the client never had it; a sender told nothing sends the message again, and
// diagnose reads it as a duplicate when the reply was an acceptance.
inline constexpr std::string_view note_end_of_data_reply_held_at_session_end =
    "the upstream's reply to the end of data was still held when the session ended: the client never had it";

// The `upstream_closed` end's detail when the upstream closed the connection (a FIN), and the
// start of it when the connection was lost otherwise (a reset, a failed write: the reason
// follows). diagnose reads both (destination_closed).
inline constexpr std::string_view upstream_closed_detail = "upstream closed the connection";
inline constexpr std::string_view upstream_lost_detail = "upstream connection lost";
// The start of the `upstream_protocol_error` end's detail when the upstream's TLS broke after
// its handshake (a TLS protocol error on a read: plaintext bytes, a fatal alert, a refused
// renegotiation it gave up on; relay/session.cpp read_leg). OpenSSL's reason follows.
inline constexpr std::string_view upstream_tls_broken_detail = "upstream broke TLS after the handshake";

class relay_fsm : private starttls_host, private xclient_host, private fault_host {
 public:
  // `faults` may be null (no fault injection); it must outlive the machine.
  relay_fsm(relay_options options, session_observer* observer, fault_advisor* faults = nullptr);
  // Its parts refer to each other (the outbox to the input, the fault holds to the outbox).
  relay_fsm(const relay_fsm&) = delete;
  relay_fsm& operator=(const relay_fsm&) = delete;

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
  // The upstream closed the connection (a FIN), or it is gone otherwise (`reason`: a reset, a
  // failed write). The same for the session: the upstream leg is lost (upstream_lost).
  void on_upstream_eof(std::uint64_t now_us);
  void on_upstream_gone(std::uint64_t now_us, std::string_view reason);
  // A TLS protocol error on the upstream's established TLS (not a FIN or a reset): the
  // upstream broke the protocol, `upstream_protocol_error` (upstream_tls_broken_detail).
  void on_upstream_tls_error(std::uint64_t now_us, std::string_view reason);
  void on_timeout(std::uint64_t now_us, leg which);
  // The leg's peer has taken none of what was written to it for `waited` (it stopped reading):
  // an upstream is lost (in DATA the client gets 451); a client that reads none of its replies
  // is closed with a reset, since a reply could not reach it either.
  void on_write_stalled(std::uint64_t now_us, leg which, std::chrono::milliseconds waited);
  // Shutdown: idle sessions get 421 now; busy ones after their transaction.
  void on_drain(std::uint64_t now_us);
  // The relay gives up on the session (unexpected error).
  void on_abort(std::uint64_t now_us, std::string_view reason);
  // Shutdown's deadline passed with the session still busy: 421 4.3.2 to the client, the
  // message in transfer (if any) recorded with the bytes received, end reason `drain`.
  void on_drain_deadline(std::uint64_t now_us);
  // A handshake asked for with start_tls (or done by the shell at connect: implicit TLS)
  // finished. Implicit TLS is reported after on_start and before the dial (client: the shell
  // dials once it is done) or after on_upstream_connected (upstream).
  void on_tls_ready(std::uint64_t now_us, leg which, const tls_summary& tls);
  void on_tls_failed(std::uint64_t now_us, leg which, std::string_view reason);
  // The upstream answered the relay's TLS handshake with bytes that are no TLS record (the
  // shell tells on_tls_failed next): recorded as the upstream's, never read, and noted.
  void on_upstream_plaintext_in_handshake(std::uint64_t now_us, std::string_view bytes);
  // The new plaintext upstream connection asked for with reconnect_upstream is open (if it
  // cannot be opened, the shell calls on_upstream_unreachable). Its greeting is taken by the
  // relay, the client's EHLO (or HELO) replayed on it, then held client commands go on.
  void on_upstream_reconnected(std::uint64_t now_us);
  // The time asked for with arm_fault_timer has come (a held reply, command or banner is due).
  void on_fault_timer(std::uint64_t now_us) { faults_.timer(now_us); }
  // The recorder has handled every record reported before await_capture: the message's end
  // goes upstream, or, if the capture failed, the client gets 451 4.3.0 and it never does.
  void on_capture_settled(std::uint64_t now_us, bool capture_failed);
  // The shell's outbox to the upstream went over its high watermark (true: the upstream is not
  // taking what it is sent, and the shell stops reading the client) or back under it. Within a
  // message that time is the upstream's, not the sender's (the body stage). No actions.
  void on_upstream_backlog(std::uint64_t now_us, bool backed_up);
  // The shell finished a write to the upstream that it paced (a throttle or slice fault), begun
  // at `began_us`: the commands in it reached the upstream now, and their stages' upstream time
  // starts here (README "Fault reference": pacing is the relay's). No actions.
  void on_paced_upstream_write(std::uint64_t now_us, std::uint64_t began_us);

  // While held, client input already received is not parsed (the shell's backpressure when
  // its recorder falls behind); releasing it parses what waited.
  void hold_client_input(std::uint64_t now_us, bool held);

  // The actions asked for since the last call. on_start asks for connect_upstream unless a
  // connect-phase fault answers the client without an upstream (the shell still reads the client).
  std::vector<action> take_actions();
  // A vector for the next event's actions to go into (relay_outbox::give_back).
  void give_back_actions(std::vector<action>&& used) { out_.give_back(std::move(used)); }
  bool finished() const { return ended_; }
  // The client was answered 220 to STARTTLS and its handshake is next (RFC 3207 4.2).
  bool awaiting_client_starttls_handshake() const { return mode_ == client_mode::starttls && !ended_; }
  // A message's end waits for the recorder (await_capture asked, on_capture_settled not yet fed).
  bool awaiting_capture() const { return awaiting_capture_.has_value(); }
  const relay_stats& stats() const { return stats_; }

 private:
  enum class client_mode { command, awaiting_data_go, data, bdat_payload, awaiting_auth, auth_response, starttls };

  // Input processing.
  void process_client_input(std::uint64_t now);
  bool take_command_line(std::uint64_t now);
  void take_data(std::uint64_t now);
  void refuse_bdat_without_chunking(std::uint64_t now);
  void bound_failed_message(std::uint64_t now);
  void take_bdat_payload(std::uint64_t now);
  // A BDAT chunk's payload follows its command: its bdat_size bytes are the chunk's, never
  // commands. Forwarded, or (`forward` false: a fault answers the chunk) read and dropped.
  void expect_bdat_payload(const command& cmd, bool forward) override;
  void take_empty_bdat_chunk(std::uint64_t now) override;
  bool take_auth_response(std::uint64_t now);
  bool ignore_after_quit(std::uint64_t now);
  // `announce`: record the command event (false when the caller recorded the client's own line).
  void handle_command(std::uint64_t now, std::string_view line, const parsed_command& parsed,
                      bool announce = true) override;
  // RSET, EHLO, HELO, or a MAIL opening a transaction: the client begins anew (RFC 3030 2 after
  // a refused chunk), whoever answers it, the destination or a fault. Asked before the command
  // is carried out; client_began_anew, after, ends a message a fault absorbs or whose chunk the
  // upstream refused: what the client sends next is its own.
  bool begins_anew(const parsed_command& parsed);
  void client_began_anew();
  void note_auth_username(std::uint64_t now, std::string_view base64_response);
  void end_of_data(std::uint64_t now);
  // What follows the dot once the capture has settled: 451 4.3.0 if it failed, a fault's
  // hold, or the dot upstream.
  void release_end_of_data(std::uint64_t now, std::uint64_t txn, std::uint64_t arrived);
  // With a recorder attached, the message's end waits for it (await_capture): true if it does.
  enum class message_end { data, bdat };
  bool wait_for_capture(message_end kind, std::uint64_t txn, std::uint64_t arrived);
  transaction* close_message(std::uint64_t now) override;
  void take_message_id(transaction& t);
  void forward_end_of_data(std::uint64_t now, std::uint64_t txn, std::uint64_t arrived) override;
  void answer_failed_message(std::uint64_t now, std::uint64_t txn, std::uint64_t arrived);
  // The upstream failed the message while a delay fault holds its dot: answered now, never sent.
  void answer_held_dot_now(std::uint64_t now, std::string_view why);
  // The upstream refused a chunk before the last while a delay fault holds the message's end.
  bool refuses_a_held_bdat_message(const reply_slot& p, const reply& r) const;
  void drop_held_bdat_end_of_refused_message(std::uint64_t now, std::uint64_t txn, const reply& refusal);
  // The last BDAT chunk is in: like the dot, its last byte waits for the capture and the faults.
  void end_of_bdat_message(std::uint64_t now, transaction* t);
  void release_bdat_message(std::uint64_t now, transaction* t);
  // The client is gone: the message end held here (by a delay fault, for the replies before it,
  // or for the recorder) is never sent, and a fault planned for it is given back.
  void drop_held_message_end(std::uint64_t now);
  // MAIL's or a recorded RCPT's reply to `t` has not gone out yet.
  bool replies_before_message_owed(const transaction& t) const;
  bool may_have_delivered(const transaction& t);
  const reply* held_end_reply(const transaction& t) const;
  static bool refuses(const reply_request& asked, const reply& r);
  // flush_replies: the replies release_bdat_message waited for are out.
  void resume_bdat_end(std::uint64_t now);
  void release_withheld_bdat(std::uint64_t now, std::uint64_t txn) override;
  // The message's end will not be sent: its BDAT LAST reply is no longer awaited (the
  // caller queues the relay's own answer in its place).
  void upstream_replied_in_data(std::uint64_t now, reply r);
  void give_back_failed_messages_end_plan(std::uint64_t now);
  void fail_message_on_early_reply(std::uint64_t now, reply r, std::string_view when, std::string_view command);
  // The upstream answered a BDAT before its chunk was all sent (RFC 3030 2: a chunk is
  // answered once it is in): as a reply during DATA, final for the message. The rest of the
  // chunk is read, never forwarded, and answered at its end (answer_failed_chunk).
  bool early_chunk_reply(const reply_slot& awaited) const;
  void upstream_replied_in_chunk(std::uint64_t now, reply r);
  void answer_failed_chunk(std::uint64_t now);
  static const char* not_a_reply_to(const reply_request& asked, const reply& r);
  static const char* not_a_reply_to_relay_command(command_kind kind, const reply& r);
  static const char* relay_command_name(command_kind kind);   // in a protocol error's detail
  bool answers_relay_xclient();   // the next upstream reply is the one to the relay's XCLIENT
  void upstream_said_421(std::uint64_t now, std::string_view detail, int code = 421);
  void pass_on_upstream_421(std::uint64_t now, const reply& r);
  void abandon_held_line(std::uint64_t now);
  void refuse_auth_response(std::uint64_t now);
  void announce_command(std::uint64_t now, std::string_view body, const command& cmd) override;

  // Replies.
  void take_upstream_reply(std::uint64_t now, reply r);
  void take_banner(std::uint64_t now, reply r);
  void local_reply(std::uint64_t now, phase ph, int code, std::string_view enhanced,
                   std::string_view text) override;
  void flush_replies(std::uint64_t now) override;
  void after_reply(std::uint64_t now, const reply_slot& p);
  void send_auth_challenge(std::uint64_t now, reply_slot& p);
  std::string edit_ehlo_reply(std::uint64_t now, const reply& r, const rewrite_set* rewrites);
  void release_banner(std::uint64_t now, std::uint64_t arrived_us, const reply& r, std::string bytes) override;

  // starttls_host: what the STARTTLS sequencer asks of the machine.
  bool ended() const override { return ended_; }
  void count_refused_command() override { ++stats_.refused_commands; }
  void client_awaits_handshake() override { mode_ = client_mode::starttls; }
  void upstream_hello_answered(const reply& r) override {
    upstream_chunking_ = r.code == 250 && capabilities::from_reply(r).has("CHUNKING");
  }
  void client_back_to_commands() override { mode_ = client_mode::command; }
  std::size_t unread_client_bytes() const override { return in_.unparsed_size(); }
  bool in_transaction() const override { return !txns_.empty(); }
  void resume_client_input(std::uint64_t now) override { process_client_input(now); }
  void remember_upstream_loss(std::string_view reason, std::string_view detail) override;
  void forget_upstream_input() override { replies_ = reply_parser{}; }
  // No client command goes upstream while the upstream leg is prepared (TLS, a new
  // connection) or the XCLIENT exchange runs.
  bool upstream_prepared() const { return tls_.upstream_prepared() && !xclient_.in_flight(); }

  // fault_host: what the fault holds ask of the machine.
  bool greeted() const override { return greeted_; }
  void greeting_answered_by_fault() override {
    greeted_ = true;
    client_greeted_ = true;   // what the client sends from here is no early talk
  }
  void reply_sent(std::uint64_t now) override { think_from_us_ = now; }
  bool client_tls() const override { return tls_.client_tls(); }
  void client_awaits_data_go() override { mode_ = client_mode::awaiting_data_go; }
  void record_and_drop_client_input(std::uint64_t now) override { record_rest_of_client_input(now); }
  void drop_withheld_bdat() override { withheld_bdat_.clear(); }
  void close_upstream_once_answered(std::uint64_t now) override;

  // Transactions.
  std::uint64_t begin_transaction(std::uint64_t now, const command& cmd) override;
  bool record_recipient(std::uint64_t now, transaction& t, std::string address) override;
  // `refused_mail`: o and final_reply are MAIL's refusal; the record is held for the recipients
  // sent after it (held_refusal_).
  void finish_transaction(std::uint64_t now, std::uint64_t id, outcome o, const std::optional<reply>& final_reply,
                          bool synthesized, bool refused_mail = false);
  void report_transaction(transaction_record&& rec);
  bool too_many_refusals(std::uint64_t now) override;
  // Reports the held record of a refused MAIL (held_refusal_), if there is one.
  void report_held_refusal();
  void follow_held_refusal(const command& cmd);
  // The session is ending: every transaction still in flight is aborted, or unknown when its
  // message already went upstream.
  void abandon_transactions(std::uint64_t now);

  // The client's side.
  bool in_message() const { return mode_ == client_mode::data || mode_ == client_mode::bdat_payload; }
  // The upstream is in DATA: after its 354 and before the dot reached it. The client's dot may
  // be in already, held while the capture settles or by a delay fault.
  bool upstream_in_data() const;
  bool partial_line() const;
  void begin_message_input(std::uint64_t now);
  // The 354 went out: the message's data follows.
  void begin_data(std::uint64_t now) override;
  void credit_data_rate(std::uint64_t now, std::size_t n);
  void arm_client_deadline(std::uint64_t now);
  void client_timed_out(std::uint64_t now);
  // After the client's FIN (or loss): end the session once nothing more is owed.
  void end_if_client_done(std::uint64_t now) override;
  // A protocol error that ends the session (a line too long, a bad BDAT size, an HTTP line),
  // its reply already queued: nothing the client sent after it is read, the replies owed to
  // the commands pipelined before it still come (RFC 2920 3.1: in order; a message whose end
  // went upstream still learns its fate), and then the session ends with `reason`.
  void close_after_owed(std::uint64_t now, std::string_view reason, std::string detail) override;
  void mask_auth_in_line(std::size_t line_start, std::string_view line);
  // No 334 or outcome can come to the AUTH the client awaits (the upstream is gone).
  void abandon_auth_exchange();
  void record_early_talk(std::uint64_t now);
  void record_received_size();

  // Leaving.
  void upstream_unreachable(std::uint64_t now, std::string_view reason, std::string_view detail) override;
  void upstream_lost(std::uint64_t now, std::string_view reason, std::string_view detail);
  void end_session(std::uint64_t now, std::string_view reason, std::string_view detail) override;
  // Reply, record, end: the one way a session ends with a word to the client.
  void end_with_reply(std::uint64_t now, const reply& r, std::string_view reason, std::string_view detail) override;
  reply upstream_loss_reply(std::string_view reason, std::string_view detail) const;
  void maybe_finish_drain(std::uint64_t now, bool at_once = false);
  bool drain_answers_with_421(phase ph) const;

  // Output helpers.
  void arm_upstream_for_head() override;
  void record_consumed_client_input(std::uint64_t now);
  // What nothing will parse any more (the session ends, or a stall holds it), recorded and
  // dropped: a line cut off by the end, lines behind what ended the session. AUTH material
  // among it is masked as a parsed AUTH line's would be.
  void record_rest_of_client_input(std::uint64_t now);
  // Masks AUTH material in what is unparsed, before it is recorded without being parsed.
  void mask_unparsed_auth();
  bool unparsed_secret_ = false;   // an AUTH line was among bytes recorded unparsed: mask the rest
  void report_client_pause();
  void request_capture_barrier();

  relay_options options_;
  session_observer* observer_;
  relay_outbox out_;
  relay_stats stats_;

  // Client leg.
  client_input in_;
  client_mode mode_ = client_mode::command;
  std::optional<data_framer> framer_;
  std::uint64_t bdat_remaining_ = 0;
  bool bdat_last_ = false;
  std::uint64_t bdat_txn_ = 0;               // the transaction the chunk in transfer belongs to (0: none)
  // The upstream refused a chunk of the last message before its LAST: chunks the client sends
  // anyway, until its next MAIL or RSET, are that failed message's (RFC 3030 2), not a new one.
  bool bdat_message_refused_ = false;
  std::uint64_t data_started_us_ = 0;        // 354 sent (body stage start)
  // The upstream's backlog within the current message (on_upstream_backlog): the time it held
  // the sender back so far, and since when it does now (0: not now).
  std::uint64_t body_backlog_us_ = 0;
  std::uint64_t backlog_since_us_ = 0;
  // The time the upstream's backlog has held the sender back in this message, up to `now`.
  std::uint64_t held_back_us(std::uint64_t now) const;
  bool auth_open_ = false;
  std::string auth_mechanism_;         // upper-cased, for notes
  bool auth_username_pending_ = false; // the next client response carries the username
  bool input_held_ = false;
  bool client_paused_ = false;                   // pause_reading{client} was the last said
  bool client_input_ended_ = false;              // FIN seen (out_.closed(client): nothing can reach it either)
  bool client_gave_up_ = false;                  // that FIN came client_gave_up_after_us after its last bytes
  // Lost (reset), or closed its side long after its last bytes: nothing held for it may go on.
  bool client_left() const { return out_.closed(leg::client) || client_gave_up_; }
  std::size_t own_refusals_ = 0;                 // commands the relay refused itself (limits::relay_hard_errors)
  std::size_t unsolicited_replies_ = 0;          // upstream replies no command asked for (limits.hpp)
  // Since when the shell reads the client again after its last pause (a backlog upstream or in
  // the recorder, the parse cap): a FIN is measured from here too (client_gave_up_).
  std::uint64_t client_reading_resumed_us_ = 0;
  // close_after_owed: the end reason and detail once the owed replies are out (reason empty: none).
  std::string closing_reason_;
  std::string closing_detail_;
  bool close_upstream_when_answered_ = false;    // close_upstream_once_answered is waiting
  // When the command line being handled came (earlier than now when a delay fault held it);
  // UINT64_MAX outside take_command_line.
  std::uint64_t line_arrived_us_ = UINT64_MAX;
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
  bool client_greeted_ = false;   // the greeting went to the client (record_early_talk before it)
  bool early_talk_noted_ = false;
  std::size_t early_scanned_ = 0;   // record_early_talk: the client's bytes before the greeting already scanned
  bool early_after_auth_ = false;   // an AUTH command among them: every line after it is masked
  // process_client_input: client input waited for upstream_prepared() from .. to (the last span).
  bool waiting_on_upstream_ = false;
  std::uint64_t upstream_wait_from_us_ = 0;
  std::uint64_t upstream_wait_to_us_ = 0;
  std::uint64_t started_us_ = 0;
  std::uint64_t connected_us_ = 0;

  reply_queue owed_;   // replies the client is owed, in order (RFC 2920)
  // Where the sender's think time before its next command starts: the last reply it was sent,
  // or the end of a message it sent (that transfer is the body stage's client time, not think).
  std::uint64_t think_from_us_ = 0;
  // Where the connect stage starts: on_start, or the end of an SMTPS client's handshake (the
  // shell dials after it).
  std::uint64_t dial_from_us_ = 0;
  // When the client's last bytes were read: a command line taken later (its input held) counts
  // from there (take_command_line).
  std::uint64_t client_bytes_at_us_ = UINT64_MAX;
  int last_client_code_ = 0;          // the code of the last reply sent to the client
  bool greeting_refused_ = false;     // the upstream's greeting, passed on, was 554 or 521
  transaction_book txns_;
  // A transaction whose MAIL was refused (none began, RFC 5321 3.3): settled, its record held
  // back to take the recipients the client sent after that MAIL, until the client's next other
  // command or the session's end. A pipelining client sends its RCPTs before MAIL's reply
  // comes (RFC 2920 3.1; Postfix's smtp does): a refusal made by the relay (a fault) goes out
  // before they are read, and without this the record named no recipient, while the
  // destination's own refusal, read after them, did. Their replies (a 503 "need MAIL") follow
  // from MAIL's refusal and are not recorded as theirs: MAIL's code is the attempt's answer.
  // On the heap: rare, and a transaction_record in every idle session cost README Performance's
  // W6 about 0.3 kB each.
  std::unique_ptr<transaction_record> held_refusal_;

  std::string withheld_bdat_;                // the last BDAT chunk's last byte (or "BDAT 0 LAST" itself)
  bool discard_payload_ = false;             // this BDAT chunk is not forwarded
  bool quit_taken_ = false;                  // the client's QUIT is in: nothing after it is a command
  bool after_quit_noted_ = false;

  bool draining_ = false;
  std::uint64_t drain_grace_until_us_ = 0;   // maybe_finish_drain: when a just-answered session's grace ends
  bool capture_failed_ = false;
  // A message's end waiting for the recorder (await_capture): which kind, and its transaction.
  struct capture_wait {
    message_end kind;
    std::uint64_t txn;
    std::uint64_t arrived_us;   // when the message's end came
  };
  std::optional<capture_wait> awaiting_capture_;
  // A pipelined BDAT LAST's withheld end waits for the replies before it (MAIL's, the RCPTs'):
  // whether a fault at its end applies depends on them (release_bdat_message). Its transaction.
  std::optional<std::uint64_t> bdat_end_awaits_replies_;
  // The reply being relayed is the upstream's 421: it is leaving (take_upstream_reply), and the
  // session ends with it.
  bool upstream_said_421_ = false;
  // The code with which the upstream said it was closing (upstream_said_421: 421, or 221 to a
  // command other than QUIT), for the relay's 421 to the commands still owed; 0: it did not.
  int upstream_closing_code_ = 0;
  // The body cannot be delivered (bad line endings, upstream lost): keep reading it and
  // answer at its end with this reply.
  std::optional<reply> data_failure_;
  // The message's bytes read after it failed (data_failure_, or the upstream gone in a BDAT
  // chunk): bounded by limits::failed_message_read_max.
  std::uint64_t failed_message_read_ = 0;
  // The destination's reply to the client's last EHLO offered CHUNKING: BDAT may go to it.
  bool upstream_chunking_ = false;
  // An upstream's 421 that came while a delay fault held replies it gave before it: sent to
  // the client once they are out (flush_replies), then the session ends.
  std::optional<reply> upstream_421_after_held_;
  bool data_failure_from_upstream_ = false;   // the upstream's own reply, given before the dot
  // Why the upstream went away, for the on_end that follows once reply_slot replies are flushed.
  std::string upstream_lost_reason_ = "upstream_closed";
  std::string upstream_lost_detail_;
  bool ended_ = false;
  starttls_sequencer tls_{options_, out_, owed_, observer_, *this};
  xclient_exchange xclient_{options_, out_, owed_, observer_, *this};
  fault_holds faults_;
};

}  // namespace mailtap::protocol
